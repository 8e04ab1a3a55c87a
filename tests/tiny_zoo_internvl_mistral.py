"""Tiny random models of the InternVL3 (-hf), Mistral Small 3.1 and Aya Vision catalog entries.

``TINY[model_id](processor)`` builds the entry's architecture from its catalog config shrunk to a few
MB (one or two layers per tower, widths 32-64) while keeping everything that decides how many tokens
an image becomes: tile / image sizes, patch sizes, pixel-shuffle and spatial-merge factors and tokens
per tile. The vocabulary and every special-token id come from ``processor``'s tokenizer, normally the
entry's processor twin (``mllm_nb.memory.twins.build_processor``), so the twin's prompts run through
the tiny model as they would through the real checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch

#: Width of every tiny text model (a multiple of 64, as bitsandbytes wants for its Linear layers).
TEXT_WIDTH = 64

#: Width of every tiny vision tower.
VISION_WIDTH = 32


def catalog_config(model_id: str) -> dict[str, Any]:
    """A fresh copy of the catalog config of ``model_id``."""
    from mllm_nb import catalog

    entry = catalog.get(model_id)
    if entry is None:
        raise KeyError(f"{model_id!r} is not in the catalog")
    return entry.config_dict()


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``changes``; nested dicts are merged key by key."""
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _float32(config: dict[str, Any]) -> None:
    """Mark the config and its sub-configs float32 (the catalog keeps the checkpoint's storage dtype)."""
    config["dtype"] = "float32"
    for value in config.values():
        if isinstance(value, dict) and "model_type" in value:
            _float32(value)


def _token_ids(processor: Any) -> dict[str, int | None]:
    """The stand-in tokenizer's vocabulary size and the ids the model config must agree on."""
    tokenizer = processor.tokenizer
    return {
        "vocab_size": len(tokenizer),
        "image": int(processor.image_token_id),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _build(model_id: str, shrink: Mapping[str, Any], processor: Any) -> Any:
    """``AutoModelForImageTextToText`` of the catalog config of ``model_id`` with ``shrink`` applied and the
    token ids of ``processor``; float32, seeded, in eval mode, with a matching generation config."""
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

    config = _merge(catalog_config(model_id), shrink)
    ids = _token_ids(processor)
    text = config["text_config"]
    text["vocab_size"] = ids["vocab_size"]
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        text[name] = ids[name]
    image_key = "image_token_index" if "image_token_index" in config else "image_token_id"
    config[image_key] = ids["image"]
    _float32(config)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**config), dtype=torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"]
    )
    return model


def _tiny_text(**extra: Any) -> dict[str, Any]:
    """A two-layer text model: 4 query heads, 2 key/value heads of 16 dims."""
    return {
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 2 * TEXT_WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        **extra,
    }


def _tiny_vision(**extra: Any) -> dict[str, Any]:
    """A one-layer vision tower, 2 heads of 16 dims (image and patch sizes stay the checkpoint's)."""
    return {
        "hidden_size": VISION_WIDTH,
        "intermediate_size": 2 * VISION_WIDTH,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        **extra,
    }


#: InternVL3: 448 px tiles, 14 px patches, 0.5 pixel shuffle -> 256 tokens per tile (image_seq_length).
_INTERNVL = {"text_config": _tiny_text(), "vision_config": _tiny_vision()}

#: Mistral Small 3.1: Pixtral tower at 1540 px, 14 px patches, 2x2 spatial merge.
_MISTRAL3 = {"text_config": _tiny_text(head_dim=16), "vision_config": _tiny_vision(head_dim=16)}

#: Aya Vision: SigLIP at 364 px, 14 px patches, 2x2 pixel shuffle -> 169 tokens per tile; one sliding and
#: one global attention layer, as the checkpoint interleaves them.
_AYA_VISION = {
    "alignment_intermediate_size": 2 * TEXT_WIDTH,
    "text_config": _tiny_text(layer_types=["sliding_attention", "full_attention"]),
    "vision_config": _tiny_vision(),
}

_SHRINK: dict[str, Mapping[str, Any]] = {
    "OpenGVLab/InternVL3-2B-hf": _INTERNVL,
    "OpenGVLab/InternVL3-8B-hf": _INTERNVL,
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": _MISTRAL3,
    "CohereLabs/aya-vision-8b": _AYA_VISION,
}


def _builder(model_id: str) -> Callable[[Any], Any]:
    def build(processor: Any) -> Any:
        return _build(model_id, _SHRINK[model_id], processor)

    build.__name__ = f"build_{model_id.split('/')[-1].replace('-', '_').replace('.', '_')}"
    build.__doc__ = f"A tiny random {model_id} whose token ids are those of ``processor``."
    return build


#: Catalog id -> ``build(processor) -> model``.
TINY: dict[str, Callable[[Any], Any]] = {model_id: _builder(model_id) for model_id in _SHRINK}
