"""A model's architecture built on the meta device (no memory, no weights), and what bitsandbytes quantizes in it.

transformers' bitsandbytes quantizer replaces every ``nn.Linear`` (and GPT-2 ``Conv1D``) except what it skips
by default: ``lm_head``, the module of the last parameter, tied weights, and what a model declares
(``_keep_in_fp32_modules``, Honeybee's ``quantization_skip_modules``). :func:`census` counts all that once
per distinct config.

>>> from mllm_nb import catalog
>>> counted = census(catalog.get("llava-hf/llava-1.5-7b-hf").build_config())
>>> counted.architecture, counted.quant_params > 20 * (counted.total_params - counted.quant_params)
('LlavaForConditionalGeneration', True)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mllm_nb.memory.arguments import PlanError

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig


@dataclass(frozen=True)
class Census:
    """What the meta-device model holds, independent of dtype and quantization."""

    architecture: str
    total_params: int
    quant_params: int  # weights of the linears bitsandbytes would quantize
    quant_tensors: int
    quant_rows: int  # their output features (8-bit keeps one fp32 scale per row)
    largest_quant: int  # numel of the biggest one (dequantized per matmul)
    fp32_params: int  # kept in fp32 when loading in float16 (``_keep_in_fp32_modules``)
    fp32_strict_params: int  # kept in fp32 in float16 and bfloat16 (``..._strict``)
    buffer_bytes: int
    can_generate: bool


class _ConfigKey:
    """Hashable wrapper of a config: equal when class and full JSON are equal (for ``lru_cache``)."""

    def __init__(self, config: PretrainedConfig) -> None:
        self.config = config
        self.key = (type(config), config.to_json_string(use_diff=False))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ConfigKey) and other.key == self.key


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers warnings (e.g. harmless default token ids) while building on meta.

    >>> with quiet_transformers():
    ...     pass
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def register_project_models() -> None:
    """Make ``AutoConfig`` know the model types this package adds (Honeybee).

    >>> register_project_models()
    """
    import mllm_nb.honeybee  # noqa: F401  registration happens at import


def as_config(config: PretrainedConfig | Mapping[str, Any]) -> PretrainedConfig:
    """Accept a transformers config or a plain config dict (with ``model_type``).

    >>> type(as_config({"model_type": "llama", "num_hidden_layers": 2})).__name__
    'LlamaConfig'
    """
    from transformers import AutoConfig, PretrainedConfig

    register_project_models()
    if isinstance(config, PretrainedConfig):
        return config
    if isinstance(config, Mapping) and "model_type" in config:
        with quiet_transformers():
            return AutoConfig.for_model(**copy.deepcopy(dict(config)))  # transformers writes into nested dicts
    raise PlanError("config must be a transformers PretrainedConfig or a config dict with a 'model_type' key.")


def text_config(config: Any) -> Any:
    """The decoder's config of a multimodal config (the config itself for text-only models).

    >>> from mllm_nb import catalog
    >>> text_config(catalog.get("llava-hf/llava-1.5-7b-hf").build_config()).model_type
    'llama'
    """
    getter = getattr(config, "get_text_config", None)
    return getter(decoder=True) if getter is not None else config


def config_context_length(config: Any) -> int | None:
    """The decoder's ``max_position_embeddings``, None when the config does not say.

    >>> from mllm_nb import catalog
    >>> config_context_length(catalog.get("llava-hf/llava-1.5-7b-hf").build_config())
    4096
    """
    value = getattr(text_config(config), "max_position_embeddings", None)
    return int(value) if value else None


def _instantiate(config: PretrainedConfig) -> nn.Module:
    """The model class transformers would pick, built on the meta device (no memory, no weights).

    An Auto class that does not know the config type is skipped; a known class that fails to build
    (a config field it cannot use) is reported with its own error.
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    with torch.device("meta"), quiet_transformers():
        for auto in (AutoModelForImageTextToText, AutoModelForCausalLM, AutoModel):
            try:
                return auto.from_config(config)
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                if not str(err).startswith("Unrecognized configuration class"):
                    raise PlanError(
                        f"transformers could not build {type(config).__name__} ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200]}); check the config or upgrade transformers."
                    ) from err
    raise PlanError(
        f"transformers has no model class for config type {type(config).__name__!r}; "
        "upgrade transformers or pick a catalog model (mllm_nb.catalog.table())."
    )


def _skip_modules(model: nn.Module) -> list[str]:
    """Module names bitsandbytes leaves unquantized, found through the model's public methods.

    What transformers' bitsandbytes quantizer skips by default: the output embeddings (``lm_head``),
    the module of the last parameter, modules holding tied weights; plus what the model declares
    (``_keep_in_fp32_modules``, a model class's ``quantization_skip_modules`` such as Honeybee's).
    """
    names = {name for name, module in model.named_modules() if module is model.get_output_embeddings()}
    parameters = [name for name, _ in model.named_parameters()]
    if parameters:
        names.add(parameters[-1].removesuffix(".weight"))  # a last bias names no module: nothing skipped
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    names |= {key.removesuffix(".weight") for pair in tied.items() for key in pair}
    declared = [*sorted(getattr(model, "_keep_in_fp32_modules", None) or []), *getattr(model, "quantization_skip_modules", ())]
    return [*sorted(names - {""}), *declared]


def _matches(name: str, patterns: list[str]) -> bool:
    """Whether module ``name`` is covered by a skip pattern: the pattern names it, a module above it, or its tail."""
    return any(name == p or name.startswith(p + ".") or name.endswith("." + p) for p in patterns)


def _quantizable_types() -> tuple[type, ...]:
    """Module types bitsandbytes replaces: ``nn.Linear`` exactly, and GPT-2's ``Conv1D``."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def _quantized_weights(model: nn.Module) -> dict[int, int]:
    """id(weight) -> output rows, for every linear bitsandbytes would quantize."""
    from torch import nn

    skip = _skip_modules(model)
    found: dict[int, int] = {}
    for name, module in model.named_modules():
        if type(module) not in _quantizable_types() or _matches(name, skip):
            continue
        rows = module.out_features if type(module) is nn.Linear else module.weight.shape[1]
        found[id(module.weight)] = int(rows)
    return found


def _fp32_params(model: nn.Module, attr: str) -> int:
    """Parameters inside the modules listed in ``model.<attr>`` (kept in fp32 by transformers)."""
    patterns = sorted(getattr(model, attr, None) or [])
    if not patterns:
        return 0
    kept = re.compile("|".join(re.escape(pattern) for pattern in patterns))  # transformers' own rule: a search
    return sum(p.numel() for name, p in model.named_parameters() if kept.search(name))


@lru_cache(maxsize=64)
def _census(key: _ConfigKey) -> Census:
    """Build the model on meta once per distinct config and count what bitsandbytes would do."""
    model = _instantiate(key.config)
    quantized = _quantized_weights(model)
    quant = [(p.numel(), quantized[id(p)]) for _, p in model.named_parameters() if id(p) in quantized]
    can_generate = getattr(model, "can_generate", lambda: False)
    return Census(
        architecture=type(model).__name__,
        total_params=sum(p.numel() for p in model.parameters()),
        quant_params=sum(n for n, _ in quant),
        quant_tensors=len(quant),
        quant_rows=sum(rows for _, rows in quant),
        largest_quant=max((n for n, _ in quant), default=0),
        fp32_params=_fp32_params(model, "_keep_in_fp32_modules"),
        fp32_strict_params=_fp32_params(model, "_keep_in_fp32_modules_strict"),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        can_generate=bool(can_generate()),
    )


def census(config: PretrainedConfig | Mapping[str, Any]) -> Census:
    """What ``config``'s model holds and what bitsandbytes would quantize in it (cached per distinct config).

    >>> census({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
    ...         "num_attention_heads": 2, "vocab_size": 100}).quant_tensors
    7
    """
    return _census(_ConfigKey(as_config(config)))
