"""The machines a fit is planned for: Colab's T4, L4 and A100 40GB, this machine's CPU, or this machine.

Usable GPU memory is what ``torch.cuda.get_device_properties().total_memory`` reports on Colab:
T4 14.75 GiB, L4 22.5 GiB (23,034 MiB of its 24 GB), A100-40GB 39.5 GiB.

>>> resolve_target("t4").describe()
'T4 (15.8 GB GPU, 12.7 GB RAM, float16)'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mllm_nb import hardware
from mllm_nb.hardware import BF16_MIN_CAPABILITY, GIB, format_bytes, ram_bytes
from mllm_nb.memory.arguments import PlanError


@dataclass(frozen=True)
class Target:
    """Where the model should run: GPU memory (None = CPU only), system RAM, native bf16.

    >>> Target("T4", gpu_bytes=15_837_691_904, ram_bytes=12_700_000_000, bf16=False).describe()
    'T4 (15.8 GB GPU, 12.7 GB RAM, float16)'
    """

    name: str
    gpu_bytes: int | None
    ram_bytes: int
    bf16: bool

    @property
    def is_cpu(self) -> bool:
        """True when the target has no GPU.

        >>> TARGETS["cpu"].is_cpu
        True
        """
        return self.gpu_bytes is None

    @property
    def dtype(self) -> str:
        """The dtype it computes in by default: bf16 where native, float16 on other GPUs, float32 on CPU.

        >>> TARGETS["l4"].dtype
        'bfloat16'
        """
        return "float32" if self.is_cpu else ("bfloat16" if self.bf16 else "float16")

    def describe(self) -> str:
        """One line: name, GPU memory, RAM and the 16-bit dtype it computes in.

        >>> TARGETS["a100-40"].describe()
        'A100 40GB (42.4 GB GPU, 83.5 GB RAM, bfloat16)'
        """
        gpu = "no GPU" if self.gpu_bytes is None else f"{format_bytes(self.gpu_bytes)} GPU"
        return f"{self.name} ({gpu}, {format_bytes(self.ram_bytes)} RAM, {self.dtype})"


#: The Colab GPUs, smallest first (suggestions try them in this order).
FIXED_TARGETS: Mapping[str, Target] = {
    "t4": Target("T4", gpu_bytes=int(14.75 * GIB), ram_bytes=12_700_000_000, bf16=False),
    "l4": Target("L4", gpu_bytes=int(22.5 * GIB), ram_bytes=53_000_000_000, bf16=True),
    "a100-40": Target("A100 40GB", gpu_bytes=int(39.5 * GIB), ram_bytes=83_500_000_000, bf16=True),
}


def _cpu_target() -> Target:
    """This machine without its GPU: the RAM available right now."""
    return Target("cpu", gpu_bytes=None, ram_bytes=ram_bytes()[1], bf16=False)


class _Targets(Mapping):
    """The preset targets; ``"cpu"`` is measured on each lookup (available RAM changes)."""

    def __getitem__(self, key: str) -> Target:
        return _cpu_target() if key == "cpu" else FIXED_TARGETS[key]

    def __iter__(self) -> Iterator[str]:
        return iter((*FIXED_TARGETS, "cpu"))

    def __len__(self) -> int:
        return len(FIXED_TARGETS) + 1


TARGETS: Mapping[str, Target] = _Targets()


def _auto_target() -> Target:
    """This machine: its CUDA GPU (total memory) when there is one, else the CPU target."""
    if hardware.cuda_impossible():  # no NVIDIA driver: answered without importing torch
        return _cpu_target()
    report = hardware.hardware_report()  # looked up on the module: tests replace it
    if report.device != "cuda" or not report.gpu_total_bytes:
        return _cpu_target()
    capability = report.compute_capability or (0, 0)
    return Target(
        name=f"this machine ({report.gpu_name or 'GPU'})",
        gpu_bytes=int(report.gpu_total_bytes),
        ram_bytes=int(report.ram_available_bytes or report.ram_total_bytes or 0),
        bf16=tuple(capability) >= BF16_MIN_CAPABILITY,
    )


def resolve_target(target: str | Target) -> Target:
    """``"auto"``, a preset name (``"t4"``, ``"l4"``, ``"a100-40"``, ``"cpu"``) or a ``Target`` -> ``Target``.

    >>> resolve_target("T4").name
    'T4'
    """
    if isinstance(target, Target):
        return target
    key = str(target).strip().lower()
    if key == "auto":
        return _auto_target()
    if key not in TARGETS:
        names = ", ".join(repr(name) for name in ("auto", *TARGETS))
        raise PlanError(f"Unknown target {target!r}: use one of {names} or a mllm_nb.plan.Target.")
    return TARGETS[key]
