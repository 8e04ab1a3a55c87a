"""What a loaded model really uses, beside what :func:`mllm_nb.fit` planned for it.

:func:`measure_memory` reads the weights' bytes per device from the parameters and buffers (4-bit
bitsandbytes weights by their packed storage plus their quantization statistics), on CUDA PyTorch's
allocator counters of the model's GPUs (allocated now, peak allocated, reserved), and the process's
resident memory. ``VLM.memory()`` calls it with the plan ``load_vlm`` made before loading.

>>> import torch
>>> used = measure_memory(torch.nn.Linear(256, 256))
>>> used.weights_bytes["cpu"]  # 256*256 weights + 256 biases, float32
263168
>>> print(str(used).splitlines()[1].split())
['planned', 'measured']
"""

from __future__ import annotations

import html
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mllm_nb.hardware import format_bytes

if TYPE_CHECKING:
    from mllm_nb.plan import FitReport

__all__ = ["MeasuredMemory", "measure_memory", "weights_by_device"]

_NOT_PLANNED = "—"
_QUANT_STATE_TENSORS = ("absmax", "code", "offset")


def _size(num: int | None) -> str:
    return _NOT_PLANNED if num is None else format_bytes(num, decimals=2, small_unit="MiB")


@dataclass(frozen=True)
class MeasuredMemory:
    """Measured memory of a loaded model with the plan beside it; ``str()`` is a planned-vs-measured table.

    Bytes are integers; None where a number does not apply (no CUDA counters on a CPU) or is
    unknown. ``weights_bytes`` maps a device (``"cuda:0"``, ``"cpu"``, ``"meta"`` for offloaded
    weights) to the bytes of the weights there. The CUDA counters are summed over the model's GPUs;
    the peaks count everything since the process started or since ``torch.cuda.reset_peak_memory_stats()``.

    >>> print(MeasuredMemory("tiny", {"cpu": 6_473_736}, rss_bytes=900_000_000))  # doctest: +NORMALIZE_WHITESPACE
    tiny: memory measured on cpu (no plan to compare with)
                         planned   measured
      weights            —         6.2 MiB
      process RAM in use —         0.90 GB
    """

    model: str
    weights_bytes: dict[str, int]
    allocated_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    reserved_bytes: int | None = None
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    planned: FitReport | None = field(default=None, repr=False)

    @property
    def devices(self) -> list[str]:
        """The devices holding weights, GPUs first."""
        return sorted(self.weights_bytes, key=lambda d: (not d.startswith("cuda"), d))

    @property
    def on_gpu(self) -> bool:
        """Whether any weight sits on a CUDA device."""
        return any(d.startswith("cuda") for d in self.weights_bytes)

    @property
    def total_weights_bytes(self) -> int:
        """The weights' bytes over all devices."""
        return sum(self.weights_bytes.values())

    def headline(self) -> str:
        """The first line of ``str()``: the model, where it was measured and what it was planned for."""
        where = ", ".join(self.devices) or "no device"
        plan = self.planned
        if plan is None:
            return f"{self.model}: memory measured on {where} (no plan to compare with)"
        how = plan.quantization or plan.compute_dtype
        return f"{self.model}: memory measured on {where}, planned for {plan.target.name} ({how})"

    def rows(self) -> list[tuple[str, str, str]]:
        """(what, planned, measured) rows of the table.

        >>> MeasuredMemory("m", {"cpu": 1024}).rows()[0]
        ('weights', '—', '0.0 MiB')
        """
        plan = self.planned
        weights = _size(self.total_weights_bytes)
        if len(self.weights_bytes) > 1:
            weights += " (" + ", ".join(f"{d} {_size(self.weights_bytes[d])}" for d in self.devices) + ")"
        rows = [("weights", _size(plan.weights_bytes if plan else None), weights)]
        if plan is not None:
            rows.append((f"KV cache for {plan.planned_tokens:,} tokens", _size(plan.kv_bytes), "not measured alone"))
        if self.on_gpu:
            gpu_plan = plan.gpu_need_bytes if plan else None
            rows += [
                ("GPU peak allocated", _size(gpu_plan), _size(self.peak_allocated_bytes)),
                ("GPU allocated now", _NOT_PLANNED, _size(self.allocated_bytes)),
                ("GPU reserved by PyTorch", _NOT_PLANNED, _size(self.reserved_bytes)),
            ]
        ram_plan = None if plan is None else (plan.ram_need_bytes if not self.on_gpu else None)
        rows.append(("process RAM in use", _size(ram_plan), _size(self.rss_bytes)))
        if self.peak_rss_bytes is not None:
            rows.append(("process RAM peak (plan: loading)", _size(plan.peak_load_ram_bytes if plan else None), _size(self.peak_rss_bytes)))
        return rows

    def __str__(self) -> str:
        rows = [("", "planned", "measured"), *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = [self.headline()]
        lines += [f"  {a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}".rstrip() for a, b, c in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "<tr><th></th><th style='text-align:left'>planned</th><th style='text-align:left'>measured</th></tr>"
        body = "".join(
            f"<tr><th style='text-align:left'>{esc(a)}</th><td style='text-align:left'>{esc(b)}</td>"
            f"<td style='text-align:left'>{esc(c)}</td></tr>"
            for a, b, c in self.rows()
        )
        return f"<div><b>{esc(self.headline())}</b><table>{head}{body}</table></div>"


def _quant_state_tensors(state: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """The tensors of a bitsandbytes QuantState (absmax, code, offset; the nested state of double quantization)."""
    if state is None or depth > 2:
        return
    for name in _QUANT_STATE_TENSORS:
        value = getattr(state, name, None)
        if isinstance(value, torch.Tensor):
            yield value
    yield from _quant_state_tensors(getattr(state, "state2", None), depth + 1)


def _storage_key(tensor: torch.Tensor) -> tuple[str, int] | int:
    """Tensors that share memory (tied embeddings) count once; meta tensors have no memory to share."""
    if tensor.device.type == "meta":
        return id(tensor)
    return (str(tensor.device), tensor.untyped_storage().data_ptr())


def weights_by_device(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of a model's parameters and buffers per device, as stored (a 4-bit weight by its packed bytes).

    Shared (tied) tensors count once; a bitsandbytes 4-bit weight adds its quantization statistics (absmax, code).

    >>> weights_by_device(torch.nn.Embedding(10, 4))
    {'cpu': 160}
    """
    seen: set[Any] = set()
    sizes: dict[str, int] = {}
    tensors = [*model.parameters(), *model.buffers()]
    for tensor in tensors:
        key = _storage_key(tensor)
        if key in seen:
            continue
        seen.add(key)
        device = str(tensor.device)
        sizes[device] = sizes.get(device, 0) + tensor.numel() * tensor.element_size()
        for extra in _quant_state_tensors(getattr(tensor, "quant_state", None)):
            if _storage_key(extra) not in seen:  # lookup tables may be shared between layers
                seen.add(_storage_key(extra))
                sizes[device] += extra.numel() * extra.element_size()
    return sizes


def _cuda_counters(devices: list[str]) -> tuple[int, int, int]:
    """(allocated, peak allocated, reserved) summed over ``devices`` (the CUDA ones among them)."""
    allocated = peak = reserved = 0
    for name in devices:
        device = torch.device(name)
        if device.type != "cuda":
            continue
        allocated += int(torch.cuda.memory_allocated(device))
        peak += int(torch.cuda.max_memory_allocated(device))
        reserved += int(torch.cuda.memory_reserved(device))
    return allocated, peak, reserved


def process_ram() -> tuple[int | None, int | None]:
    """(resident now, peak resident) bytes of this process; None where the system does not say.

    >>> now, peak = process_ram()
    >>> now is None or now > 0
    True
    """
    try:
        import psutil

        now: int | None = int(psutil.Process().memory_info().rss)
    except (ImportError, OSError):
        now = None
    try:
        import resource
    except ImportError:  # Windows
        return now, None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return now, int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def replan(model: torch.nn.Module, quantization: str | None = None) -> FitReport | None:
    """What :func:`mllm_nb.fit` plans for this model's config on this machine; None if it cannot plan it.

    >>> replan(torch.nn.Linear(2, 2)) is None  # no transformers config to plan from
    True
    """
    from mllm_nb.errors import MllmNbError
    from mllm_nb.plan import fit

    config = getattr(model, "config", None)
    if config is None:
        return None
    dtype = str(getattr(model, "dtype", "")).removeprefix("torch.") or None
    try:
        return fit(config, quantization=quantization, target="auto", dtype=dtype)
    except (MllmNbError, OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def measure_memory(model: torch.nn.Module, planned: FitReport | None = None, name: str = "") -> MeasuredMemory:
    """Measure what ``model`` uses now: weights per device, CUDA allocator counters, process RAM.

    ``planned`` is the :class:`~mllm_nb.plan.FitReport` to print beside it (``VLM.memory()`` passes
    the one ``load_vlm`` made). ``name`` titles the table (default: the model's class).

    >>> used = measure_memory(torch.nn.Linear(4, 4), name="probe")
    >>> used.model, used.on_gpu, used.total_weights_bytes
    ('probe', False, 80)
    """
    weights = weights_by_device(model)
    allocated = peak = reserved = None
    if any(device.startswith("cuda") for device in weights):
        allocated, peak, reserved = _cuda_counters(list(weights))
    rss, peak_rss = process_ram()
    return MeasuredMemory(
        model=name or type(model).__name__,
        weights_bytes=weights,
        allocated_bytes=allocated,
        peak_allocated_bytes=peak,
        reserved_bytes=reserved,
        rss_bytes=rss,
        peak_rss_bytes=peak_rss,
        planned=planned,
    )
