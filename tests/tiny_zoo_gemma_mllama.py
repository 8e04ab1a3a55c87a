"""Tiny random Gemma 3, PaliGemma 2 and Llama 3.2 Vision (Mllama) models, one per catalog id.

Each builder shrinks the catalog config of its id (hidden sizes 16-32, one or two layers per tower) but keeps
what decides the image token counts: image sizes, patch sizes, tokens per image, tiles. The vocabulary
and every token id come from the given processor's stand-in tokenizer
(``mllm_nb.memory.twins.build_processor``), so the prompts that processor writes run through the model.

>>> sorted(TINY)[0]
'google/gemma-3-12b-it'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

WIDTH = 32  # hidden size of every tower but Mllama's vision tower
MLLAMA_VISION_WIDTH = 16  # its tile position embeddings hold 9 x 4 tiles x 1601 patches x width numbers
HEADS = 2
HEAD_DIM = WIDTH // HEADS


def catalog_config(model_id: str) -> dict[str, Any]:
    """The catalog config of ``model_id``, as a fresh dict."""
    from mllm_nb import catalog

    entry = catalog.get(model_id)
    if entry is None:
        raise KeyError(f"{model_id!r} is not in the catalog")
    return entry.config_dict()


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _token_ids(processor: Any) -> dict[str, Any]:
    """bos / eos / pad ids of the stand-in tokenizer and its vocabulary size."""
    tokenizer = processor.tokenizer
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _siglip(vision: Mapping[str, Any]) -> dict[str, Any]:
    """A one-layer SigLIP vision tower with the same image and patch size."""
    return {
        "hidden_size": WIDTH,
        "intermediate_size": 2 * WIDTH,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "image_size": vision["image_size"],
        "patch_size": vision["patch_size"],
    }


def _gemma3(model_id: str, processor: Any) -> dict[str, Any]:
    config = catalog_config(model_id)
    ids = _token_ids(processor)
    tokenizer = processor.tokenizer
    return _merge(
        config,
        {
            "image_token_index": tokenizer.image_token_id,
            "boi_token_index": tokenizer.convert_tokens_to_ids(tokenizer.boi_token),
            "eoi_token_index": tokenizer.convert_tokens_to_ids(tokenizer.eoi_token),
            "eos_token_id": ids["eos_token_id"],
            "text_config": {
                **ids,
                "hidden_size": WIDTH,
                "intermediate_size": 2 * WIDTH,
                "num_hidden_layers": 2,
                "num_attention_heads": HEADS,
                "num_key_value_heads": 1,
                "head_dim": HEAD_DIM,
                "query_pre_attn_scalar": HEAD_DIM,
                "layer_types": ["sliding_attention", "full_attention"],
            },
            "vision_config": _siglip(config["vision_config"]),
        },
    )


def _paligemma(model_id: str, processor: Any) -> dict[str, Any]:
    config = catalog_config(model_id)
    ids = _token_ids(processor)
    return _merge(
        config,
        {
            **ids,
            "image_token_index": processor.image_token_id,
            "hidden_size": WIDTH,
            "projection_dim": WIDTH,
            "text_config": {
                **ids,
                "hidden_size": WIDTH,
                "intermediate_size": 2 * WIDTH,
                "num_hidden_layers": 2,
                "num_attention_heads": HEADS,
                "num_key_value_heads": 1,
                "head_dim": HEAD_DIM,
                "query_pre_attn_scalar": HEAD_DIM,
                "layer_types": ["sliding_attention", "full_attention"],
            },
            "vision_config": {**_siglip(config["vision_config"]), "projection_dim": WIDTH},
        },
    )


def _mllama(model_id: str, processor: Any) -> dict[str, Any]:
    config = catalog_config(model_id)
    ids = _token_ids(processor)
    layers = [0, 1]  # vision layers whose states feed the cross-attention, besides the last one
    return _merge(
        config,
        {
            "image_token_index": processor.image_token_id,
            "text_config": {
                **ids,
                "hidden_size": WIDTH,
                "intermediate_size": 2 * WIDTH,
                "num_hidden_layers": 2,
                "num_attention_heads": HEADS,
                "num_key_value_heads": 1,
                "cross_attention_layers": [1],
            },
            "vision_config": {
                "hidden_size": MLLAMA_VISION_WIDTH,
                "intermediate_size": 2 * MLLAMA_VISION_WIDTH,
                "attention_heads": HEADS,
                "num_hidden_layers": 2,
                "num_global_layers": 1,
                "intermediate_layers_indices": layers,
                "vision_output_dim": MLLAMA_VISION_WIDTH * (len(layers) + 1),
            },
        },
    )


def _builder(model_id: str, shrink: Callable[[str, Any], dict[str, Any]]) -> Callable[[Any], Any]:
    """``build(processor) -> model``: the tiny random model of ``model_id`` for that processor's tokens."""

    def build(processor: Any) -> Any:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

        config = AutoConfig.for_model(**shrink(model_id, processor))
        config.dtype = "float32"
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32).eval()
        tokenizer = processor.tokenizer
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return model

    build.__name__ = build.__qualname__ = f"build_{shrink.__name__.lstrip('_')}"
    return build


TINY: dict[str, Callable[[Any], Any]] = {
    "google/gemma-3-4b-it": _builder("google/gemma-3-4b-it", _gemma3),
    "google/gemma-3-12b-it": _builder("google/gemma-3-12b-it", _gemma3),
    "google/paligemma2-3b-mix-224": _builder("google/paligemma2-3b-mix-224", _paligemma),
    "meta-llama/Llama-3.2-11B-Vision-Instruct": _builder("meta-llama/Llama-3.2-11B-Vision-Instruct", _mllama),
}
