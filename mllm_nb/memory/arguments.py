"""What the memory planner accepts: quantization, dtype and count spellings, and ``PlanError`` for the rest.

>>> parse_quantization("NF4"), parse_dtype("bf16")
('4bit', 'bfloat16')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mllm_nb.errors import MllmNbError
from mllm_nb.hardware import dtype_name

if TYPE_CHECKING:
    import torch

QUANTIZATIONS = ("4bit", "8bit", None)
#: Bytes per element of the dtypes the planner sizes (float64 only for models already loaded in it).
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
QUANT_WORDS = {"4bit": "4-bit NF4 (double quant)", "8bit": "8-bit LLM.int8", None: "no quantization"}
_DTYPE_ALIASES = {
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "fp32": "float32", "float": "float32",
}  # fmt: skip
_QUANT_ALIASES = {
    "4bit": "4bit", "4-bit": "4bit", "nf4": "4bit", "int4": "4bit",
    "8bit": "8bit", "8-bit": "8bit", "int8": "8bit",
    "none": None, "": None,
}  # fmt: skip


class PlanError(MllmNbError, ValueError):
    """A fit could not be planned: unknown model offline, unreadable folder, or a bad argument."""


def parse_quantization(value: str | None) -> str | None:
    """Normalise ``"4bit"``/``"8bit"``/None (and spellings like ``"4-bit"``, ``"none"``).

    >>> parse_quantization("int8"), parse_quantization("none")
    ('8bit', None)
    """
    if value is None:
        return None
    key = str(value).strip().lower()
    if key not in _QUANT_ALIASES:
        raise PlanError(f"Unknown quantization {value!r}: use '4bit', '8bit' or None.")
    return _QUANT_ALIASES[key]


def parse_dtype(dtype: str | torch.dtype | None) -> str | None:
    """``torch.float16`` / ``"fp16"`` / ``"float16"`` -> ``"float16"``; None or ``"auto"`` -> None.

    >>> parse_dtype("half"), parse_dtype("auto")
    ('float16', None)
    """
    if dtype is None:
        return None
    key = dtype_name(dtype).strip().lower()
    if key == "auto":
        return None
    if key not in _DTYPE_ALIASES:
        raise PlanError(f"Unsupported dtype {dtype!r}: use 'float16', 'bfloat16' or 'float32'.")
    return _DTYPE_ALIASES[key]


def parse_count(value: int, what: str) -> int:
    """Check a non-negative integer argument.

    >>> parse_count(3, "n_images")
    3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(f"{what} must be a non-negative integer, got {value!r}.")
    return value
