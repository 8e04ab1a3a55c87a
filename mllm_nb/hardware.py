"""What hardware is this notebook running on, where do models go, and which dtype do they compute in?

``doctor()`` prints a one-screen report (GPU, compute capability, memory, RAM, disk, package
versions, hints). ``choose_placement()`` is the device and dtype every loader uses; ``free_memory()``
what is free for new tensors; ``format_bytes()`` how the package writes byte counts.
``best_dtype()`` is the dtype policy:

* CUDA with compute capability >= 8.0 (A100, L4, H100, ...): ``torch.bfloat16``;
* older CUDA GPUs (T4 is 7.5, V100 is 7.0): ``torch.float16``;
* Apple MPS: ``torch.float16``; CPU: ``torch.float32``.

bf16 is decided by compute capability alone: on a T4 ``torch.cuda.is_bf16_supported()`` can answer
True because bf16 is emulated, which is slow. Importing this module imports neither torch nor CUDA.
"""

from __future__ import annotations

import html
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from mllm_nb.errors import MllmNbError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

BF16_MIN_CAPABILITY: tuple[int, int] = (8, 0)
LOW_RAM_BYTES = 16 * 10**9
LOW_DISK_BYTES = 10 * 10**9
GIB = 2**30
GB = 10**9
BYTE_UNITS: dict[str, int] = {"GB": GB, "GiB": GIB, "MB": 10**6, "MiB": 2**20}

VERSIONED_PACKAGES: tuple[str, ...] = (
    "torch",
    "transformers",
    "bitsandbytes",
    "accelerate",
    "ipywidgets",
)
NOT_INSTALLED = "not installed"
_COLAB_ENV_VARS = ("COLAB_RELEASE_TAG", "COLAB_GPU")
_NO_GPU_NOTE = (
    "No GPU: 4-bit loading of large models won't work; use demo mode or a GPU runtime "
    "(Colab: Runtime > Change runtime type > T4 GPU)"
)


class PlacementError(MllmNbError, ValueError):
    """A device or dtype argument that no model can be loaded with."""


# --------------------------------------------------------------------------- environment


def is_colab() -> bool:
    """Return whether this Python runs inside Google Colab.

    >>> isinstance(is_colab(), bool)
    True
    """
    if "google.colab" in sys.modules:
        return True
    return any(name in os.environ for name in _COLAB_ENV_VARS)


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``"not installed"``; never imports it.

    >>> package_version("surely-not-a-real-package-xyz")
    'not installed'
    """
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED
    except Exception as exc:  # a broken install must not break the report
        return f"unknown ({type(exc).__name__})"


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages mllm_nb depends on (torch with its build, once imported).

    >>> sorted(package_versions())[:2]
    ['accelerate', 'bitsandbytes']
    """
    versions = {"python": platform.python_version()}
    versions.update({name: package_version(name) for name in VERSIONED_PACKAGES})
    torch = sys.modules.get("torch")
    if torch is not None and versions.get("torch") != NOT_INSTALLED:
        # torch's own string names the build (2.14.1+cu130, 2.13.0+cpu); PyPI's metadata may not
        versions["torch"] = str(getattr(torch, "__version__", versions["torch"]))
    return versions


# --------------------------------------------------------------------------- dtype policy


def _auto_device_type() -> str:
    """``"cuda"`` if CUDA is available, else ``"mps"`` if available, else ``"cpu"``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn ``None`` (auto), a string or a ``torch.device`` into a ``torch.device``."""
    import torch

    if device is None:
        return torch.device(_auto_device_type())
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise PlacementError(f"Unknown device {device!r}: use None (auto), 'cuda', 'cuda:N', 'mps' or 'cpu'.") from exc


def _cuda_capability(device: torch.device) -> tuple[int, int]:
    """Compute capability of a CUDA device (its index, or the current device when it has none)."""
    import torch

    if not torch.cuda.is_available():
        raise MllmNbError(
            f"Device {str(device)!r} was asked for but CUDA is not available; "
            "pass device='cpu' or switch to a GPU runtime."
        )
    major, minor = torch.cuda.get_device_capability(device.index)
    return int(major), int(minor)


def _dtype_for(device_type: str, capability: tuple[int, int] | None) -> torch.dtype:
    """The policy itself: bf16 from sm 8.0 up, fp16 on older CUDA and MPS, fp32 elsewhere."""
    import torch

    if device_type == "cuda":
        if capability is not None and tuple(capability) >= BF16_MIN_CAPABILITY:
            return torch.bfloat16
        return torch.float16
    if device_type == "mps":
        return torch.float16
    return torch.float32


def supports_bf16(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` computes natively in bfloat16 (a CUDA GPU of compute capability >= 8.0).

    Emulated bf16 (what ``torch.cuda.is_bf16_supported()`` may report on a T4) does not count.

    >>> supports_bf16("cpu")
    False
    """
    resolved = _resolve_device(device)
    if resolved.type != "cuda":
        return False
    return _cuda_capability(resolved) >= BF16_MIN_CAPABILITY


def best_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """The dtype models should compute in on ``device`` (None: the best available device).

    >>> import torch
    >>> best_dtype("cpu") == torch.float32
    True
    """
    resolved = _resolve_device(device)
    capability = _cuda_capability(resolved) if resolved.type == "cuda" else None
    return _dtype_for(resolved.type, capability)


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.float16`` (or ``"torch.float16"``) -> ``"float16"``.

    >>> import torch
    >>> dtype_name(torch.bfloat16)
    'bfloat16'
    """
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- where a loader puts a model


@dataclass(frozen=True)
class Placement:
    """The device a loader puts a model on, the dtype it computes in, and why that dtype."""

    device: torch.device
    dtype: torch.dtype
    why: str


def _load_device(device: str | torch.device | None) -> torch.device:
    """The device asked for, else the current CUDA GPU, else the CPU (MPS only when asked for)."""
    import torch

    if device is not None:
        return _resolve_device(device)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _floating_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float16``, ``"float16"`` or ``"torch.float16"`` -> the floating torch dtype."""
    import torch

    resolved = getattr(torch, dtype_name(dtype), None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise PlacementError(f"dtype={dtype!r} is not a floating torch dtype; use 'auto', torch.float16 or 'float32'.")
    return resolved


def _dtype_reason(device: torch.device, dtype: torch.dtype) -> str:
    """Why :func:`best_dtype` chose ``dtype`` on ``device``, in words."""
    import torch

    if device.type == "cpu":
        return "float32 is the fast, exact choice on a CPU"
    if dtype == torch.bfloat16:
        return "this GPU has native bfloat16 (compute capability >= 8.0)"
    return "this GPU has no native bfloat16 (e.g. a T4), so float16"


def choose_placement(device: str | torch.device | None = None, dtype: torch.dtype | str | None = "auto") -> Placement:
    """Where ``load_clip`` / ``load_vlm`` put a model and its compute dtype (None or ``"auto"``: :func:`best_dtype`).

    >>> choose_placement("cpu").why
    'float32 is the fast, exact choice on a CPU'
    >>> choose_placement("cpu", "bfloat16").dtype
    torch.bfloat16
    """
    resolved = _load_device(device)
    if dtype is None or dtype == "auto":
        chosen = best_dtype(resolved)
        return Placement(resolved, chosen, _dtype_reason(resolved, chosen))
    return Placement(resolved, _floating_dtype(dtype), "dtype chosen by the caller")


# --------------------------------------------------------------------------- memory


def format_bytes(num: float | None, unit: str = "GB", decimals: int | None = None, small_unit: str | None = None) -> str:
    """Bytes in ``unit`` (a key of ``BYTE_UNITS``); None -> ``"unknown"``.

    ``decimals`` None: two below 10 units, one above. With ``small_unit``, amounts too small for
    ``decimals`` places are written in that unit with one decimal.

    >>> format_bytes(4_036_701_768), format_bytes(19_294_774_872), format_bytes(None)
    ('4.04 GB', '19.3 GB', 'unknown')
    >>> format_bytes(3_200_000, decimals=2, small_unit="MB"), format_bytes(14.6 * GIB, "GiB", 1)
    ('3.2 MB', '14.6 GiB')
    """
    if num is None:
        return "unknown"
    scale = BYTE_UNITS[unit]
    if small_unit is not None and decimals is not None and abs(num) < scale / 10**decimals:
        return f"{num / BYTE_UNITS[small_unit]:.1f} {small_unit}"
    value = num / scale
    places = decimals if decimals is not None else (2 if abs(value) < 10 else 1)
    return f"{value:.{places}f} {unit}"


def cuda_impossible() -> bool:
    """True when this machine has no NVIDIA driver (Linux: no ``/proc/driver/nvidia``, no ``/dev/nvidiactl``),
    so no CUDA device can exist and torch need not be imported to know it; False elsewhere or when unsure.

    >>> isinstance(cuda_impossible(), bool)
    True
    """
    if not sys.platform.startswith("linux"):
        return sys.platform == "darwin"  # macOS has no CUDA
    return not (os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl"))


def ram_bytes() -> tuple[int, int]:
    """``(total, available)`` system RAM in bytes, right now.

    >>> total, available = ram_bytes()
    >>> 0 < available <= total
    True
    """
    import psutil

    memory = psutil.virtual_memory()
    return int(memory.total), int(memory.available)


def free_memory(device: str | torch.device | None = None) -> tuple[int | None, str]:
    """``(bytes, where)`` free for new tensors on ``device``: CUDA free memory, else available system RAM.

    On CUDA this is ``torch.cuda.mem_get_info`` plus what PyTorch's allocator holds but does not use.

    >>> free, where = free_memory("cpu")
    >>> where
    'system RAM'
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(index)
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return int(free + max(cached, 0)), f"GPU cuda:{index}"
    return ram_bytes()[1], "system RAM"


# --------------------------------------------------------------------------- the report


def _fmt_pair(free: int | None, total: int | None, unit: str, word: str) -> str:
    """``"10.2 GiB free / 14.7 GiB total"``."""
    return f"{format_bytes(free, unit, 1)} {word} / {format_bytes(total, unit, 1)} total"


@dataclass(frozen=True)
class HardwareReport:
    """What ``hardware_report()`` found; ``None`` means unknown or not applicable.

    >>> r = HardwareReport(device="cpu", recommended_dtype="float32")
    >>> r.to_dict()["device"]
    'cpu'
    """

    device: str
    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    gpu_total_bytes: int | None = None
    gpu_free_bytes: int | None = None
    ram_total_bytes: int | None = None
    ram_available_bytes: int | None = None
    disk_free_bytes: int | None = None
    disk_path: str = "."
    is_colab: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    recommended_dtype: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy (JSON-serialisable).

        >>> HardwareReport(device="cpu").to_dict()["notes"]
        []
        """
        data = asdict(self)
        if self.compute_capability is not None:
            data["compute_capability"] = list(self.compute_capability)
        return data

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs shown by ``str()`` and the HTML table.

        >>> HardwareReport(device="cpu").rows()[0]
        ('Device', 'cpu')
        """
        cap = self.compute_capability
        rows = [
            ("Device", self.device),
            ("GPU", self.gpu_name or ("none" if self.device == "cpu" else "unknown")),
            ("Compute capability", f"{cap[0]}.{cap[1]}" if cap else "-"),
        ]
        if self.device == "cuda":
            rows.append(("GPU memory", _fmt_pair(self.gpu_free_bytes, self.gpu_total_bytes, "GiB", "free")))
        rows += [
            ("System RAM", _fmt_pair(self.ram_available_bytes, self.ram_total_bytes, "GB", "available")),
            ("Disk free", f"{format_bytes(self.disk_free_bytes, 'GB', 1)} ({self.disk_path})"),
            ("Colab", "yes" if self.is_colab else "no"),
            ("Recommended dtype", self.recommended_dtype or "unknown"),
        ]
        rows += list(self.versions.items())
        return rows

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        lines = ["mllm_nb hardware report"]
        lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
        if self.notes:
            lines.append("Notes:")
            lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        cells = "".join(
            f"<tr><th style='text-align:left'>{esc(label)}</th><td style='text-align:left'>{esc(value)}</td></tr>"
            for label, value in self.rows()
        )
        notes = "".join(f"<li>{esc(note)}</li>" for note in self.notes)
        notes_html = f"<b>Notes</b><ul>{notes}</ul>" if notes else ""
        return f"<div><b>mllm_nb hardware report</b><table>{cells}</table>{notes_html}</div>"


def _probe(what: str, fn: Callable[[], T], notes: list[str]) -> T | None:
    """Run one probe; on any exception return None and append a note instead of raising."""
    try:
        return fn()
    except Exception as exc:
        notes.append(f"Could not read {what} ({type(exc).__name__}: {exc})")
        return None


def _probe_cuda(notes: list[str]) -> dict[str, Any]:
    """GPU name, capability and memory of the current CUDA device, each probed on its own."""
    import torch

    capability = _probe("the GPU compute capability", lambda: _cuda_capability(torch.device("cuda")), notes)
    mem = _probe("the GPU memory", torch.cuda.mem_get_info, notes)
    return {
        "gpu_name": _probe("the GPU name", torch.cuda.get_device_name, notes),
        "compute_capability": capability,
        "gpu_free_bytes": int(mem[0]) if mem else None,
        "gpu_total_bytes": int(mem[1]) if mem else None,
    }


def _probe_ram(notes: list[str]) -> tuple[int | None, int | None]:
    """(total, available) system RAM in bytes; (None, None) with a note when it cannot be read."""
    return _probe("the system RAM", ram_bytes, notes) or (None, None)


def _dtype_note(device: str, capability: tuple[int, int] | None) -> str | None:
    """The hint explaining the recommended dtype."""
    if device == "cpu":
        return _NO_GPU_NOTE
    if device == "mps":
        return "Apple MPS: computing in float16; 4-bit bitsandbytes loading needs a CUDA GPU"
    if capability is None:
        return None
    sm = f"sm {capability[0]}.{capability[1]}"
    if capability >= BF16_MIN_CAPABILITY:
        return f"bf16-capable GPU ({sm}): computing in bfloat16"
    kind = "T4-class GPU" if capability == (7, 5) else "Pre-Ampere GPU"
    return f"{kind} ({sm}): no native bf16, computing in float16"


def _resource_notes(report: dict[str, Any]) -> list[str]:
    """Hints about GPU memory, RAM, disk and packages."""
    notes = []
    free, total = report.get("gpu_free_bytes"), report.get("gpu_total_bytes")
    if free is not None and total and free < total / 2:
        notes.append(
            f"Only {format_bytes(free, 'GiB', 1)} of GPU memory free: another model may still be loaded; "
            "delete it and run gc.collect(); torch.cuda.empty_cache(), or restart the runtime"
        )
    ram = report.get("ram_total_bytes")
    if ram is not None and ram < LOW_RAM_BYTES:
        notes.append("Low system RAM (< 16 GB): load checkpoints with small shards")
    disk = report.get("disk_free_bytes")
    if disk is not None and disk < LOW_DISK_BYTES:
        notes.append("Low disk space (< 10 GB free): large model downloads may fail")
    versions = report.get("versions", {})
    widgets = versions.get("ipywidgets", NOT_INSTALLED)
    if widgets == NOT_INSTALLED:
        notes.append("ipywidgets not installed: interactive panels are unavailable (pip install ipywidgets)")
    elif widgets.startswith("7."):
        notes.append(
            "ipywidgets 7.x (Colab's default): supported; if a panel does not show, run "
            "from google.colab import output; output.enable_custom_widget_manager()"
        )
    if report.get("device") == "cuda" and versions.get("bitsandbytes") == NOT_INSTALLED:
        notes.append("bitsandbytes not installed: 4-bit loading is unavailable (pip install bitsandbytes)")
    return notes


def hardware_report(disk_path: str | os.PathLike[str] = ".") -> HardwareReport:
    """Gather device, GPU, memory, disk and version facts; a failing probe becomes None plus a note.

    >>> hardware_report().device in {"cuda", "mps", "cpu"}
    True
    """
    notes: list[str] = []
    device = _probe("the available devices", _auto_device_type, notes) or "cpu"
    data: dict[str, Any] = {"device": device, "disk_path": os.fspath(disk_path)}
    if device == "cuda":
        data.update(_probe_cuda(notes))
    elif device == "mps":
        data["gpu_name"] = "Apple GPU (MPS)"
    data["ram_total_bytes"], data["ram_available_bytes"] = _probe_ram(notes)
    usage = _probe(f"the free disk space of {data['disk_path']!r}", lambda: shutil.disk_usage(disk_path), notes)
    data["disk_free_bytes"] = int(usage.free) if usage is not None else None
    data["is_colab"] = bool(_probe("whether this is Colab", is_colab, notes))
    data["versions"] = _probe("the package versions", package_versions, notes) or {}
    capability = data.get("compute_capability")
    data["recommended_dtype"] = dtype_name(_dtype_for(device, capability))
    if device == "cuda" and capability is None:
        notes.append("Compute capability unknown: recommending float16, which every CUDA GPU supports")
    dtype_note = _dtype_note(device, capability)
    notes[:0] = [dtype_note] if dtype_note else []
    notes += _resource_notes(data)
    return HardwareReport(**data, notes=notes)


def doctor(disk_path: str | os.PathLike[str] = ".") -> HardwareReport:
    """Print the hardware report and return it (``mllm-nb doctor`` calls this).

    >>> report = doctor()  # doctest: +ELLIPSIS
    mllm_nb hardware report
    ...
    """
    report = hardware_report(disk_path)
    print(report)
    return report
