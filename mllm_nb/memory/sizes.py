"""Bytes: the weights as transformers + bitsandbytes load them, the KV cache per token, prefill activations.

* **Quantized weights**: NF4 + double quantization costs ``0.515869`` bytes per parameter (4-bit codes,
  a uint8 absmax per 64 values, an fp32 absmax per 256 blocks) plus ``1092`` bytes per tensor (code
  books); 8-bit costs 1 byte per parameter plus the fp32 per-row scale ``Int8Params.SCB``. Everything
  else stays in the compute dtype; modules a model keeps in fp32 stay fp32; buffers count at their own dtype.
* **KV cache**: ``2 (K, V) x layers x kv_heads x head_dim x dtype bytes`` per token of the decoder.
* **Activations**: the prefill of one decoder layer, ``tokens x (6 x hidden + 3 x intermediate) x dtype bytes``.

>>> from mllm_nb import catalog
>>> config = catalog.get("llava-hf/llava-1.5-7b-hf").build_config()
>>> kv_bytes_per_token(config), activation_bytes(config, 1000, "float16")
(524288, 115200000)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mllm_nb.memory.architecture import Census, as_config, census, text_config
from mllm_nb.memory.arguments import DTYPE_BYTES, parse_dtype, parse_quantization

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 0.515869: codes + uint8 absmax + nested fp32 absmax
NF4_BYTES_PER_TENSOR = 16 * 4 + 4 + 256 * 4  # 1092: NF4 code book, absmax offset, nested code book
INT8_ROW_SCALE_BYTES = 4  # Int8Params.SCB: one fp32 absmax per output row


def _fp32_kept(counted: Census, dtype: str) -> int:
    """How many kept parameters transformers upcasts to fp32 for this compute dtype."""
    if dtype == "float16":
        return counted.fp32_params + counted.fp32_strict_params
    if dtype == "bfloat16":
        return counted.fp32_strict_params
    return 0


def _quantized_bytes(counted: Census, quantization: str | None) -> int:
    """Bytes of the quantized linear weights with their quantization state."""
    if quantization == "4bit":
        return math.ceil(counted.quant_params * NF4_BYTES_PER_PARAM) + counted.quant_tensors * NF4_BYTES_PER_TENSOR
    if quantization == "8bit":
        return counted.quant_params + counted.quant_rows * INT8_ROW_SCALE_BYTES
    return 0


def weight_bytes(
    config: PretrainedConfig | Mapping[str, Any] | Census,
    quantization: str | None = "4bit",
    dtype: str | torch.dtype = "float16",
) -> tuple[int, int, int]:
    """``(bytes, quantized_params, kept_params)`` of the loaded weights; kept params are in ``dtype``.

    ``config`` is a model config (its architecture is counted on the meta device) or a :class:`Census`.

    >>> from mllm_nb import catalog
    >>> size, quantized, kept = weight_bytes(catalog.get("llava-hf/llava-1.5-7b-hf").build_config(), "4bit")
    >>> round(size / 1e9, 2), quantized > 20 * kept
    (4.04, True)
    """
    quant = parse_quantization(quantization)
    name = parse_dtype(dtype) or "float16"
    counted = config if isinstance(config, Census) else census(as_config(config))
    quantized = counted.quant_params if quant else 0
    kept = counted.total_params - quantized
    fp32 = min(_fp32_kept(counted, name), kept)
    size = _quantized_bytes(counted, quant) + (kept - fp32) * DTYPE_BYTES[name] + fp32 * 4 + counted.buffer_bytes
    return size, quantized, kept


@dataclass(frozen=True)
class DecoderShape:
    """The decoder sizes the KV cache and the prefill activations depend on.

    >>> DecoderShape(layers=32, kv_heads=32, head_dim=128, hidden=4096, intermediate=11008).kv_values_per_token
    262144
    """

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int

    @property
    def kv_values_per_token(self) -> int:
        """Values cached per token: ``2 (K, V) x layers x kv_heads x head_dim``."""
        return 2 * self.layers * self.kv_heads * self.head_dim


def decoder_shape(config: Any) -> DecoderShape:
    """The decoder's sizes read from a config (zeros where the config does not say).

    >>> from mllm_nb import catalog
    >>> decoder_shape(catalog.get("llava-hf/llava-1.5-7b-hf").build_config()).kv_heads
    32
    """
    if isinstance(config, DecoderShape):
        return config
    text = text_config(config)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    return DecoderShape(
        layers=int(getattr(text, "num_hidden_layers", 0) or 0),
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or (hidden // heads if heads else 0)),
        hidden=hidden,
        intermediate=int(getattr(text, "intermediate_size", 0) or 4 * hidden),
    )


def kv_bytes_per_token(config: Any, dtype: str | torch.dtype = "float16") -> int:
    """KV-cache bytes per token: ``2 x layers x kv_heads x head_dim x dtype bytes`` of the decoder.

    ``config`` is a model config or a :class:`DecoderShape`.

    >>> from mllm_nb import catalog
    >>> kv_bytes_per_token(catalog.get("llava-hf/llava-1.5-7b-hf").build_config())
    524288
    """
    return decoder_shape(config).kv_values_per_token * DTYPE_BYTES[parse_dtype(dtype) or "float16"]


def activation_bytes(config: Any, tokens: int, dtype: str) -> int:
    """Prefill activations of one decoder layer for ``tokens`` tokens (2 bytes per value for unknown dtypes).

    >>> from mllm_nb import catalog
    >>> activation_bytes(catalog.get("llava-hf/llava-1.5-7b-hf").build_config(), 1, "float32")
    230400
    """
    shape = decoder_shape(config)
    return tokens * (6 * shape.hidden + 3 * shape.intermediate) * DTYPE_BYTES.get(dtype, 2)
