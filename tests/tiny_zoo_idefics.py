"""Tiny random models of the Idefics3 family (SmolVLM2, Idefics3) for tests.

``TINY[model_id](processor)`` builds a float32 ``AutoModelForImageTextToText`` from the catalog config of
``model_id``, shrunk to toy widths (32) and one or two layers per tower, but keeping everything that decides
how many tokens an image becomes: the vision tower's image size and patch size and the connector's
pixel-shuffle ``scale_factor`` (so a tile still yields the processor's ``image_seq_len`` features). Vocabulary
size and every token id come from ``processor``'s tokenizer, normally the stand-in tokenizer of
``mllm_nb.memory.twins.build_processor``; the models are a few hundred kB and generate in well under a second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MODEL_IDS = (
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
    "HuggingFaceM4/Idefics3-8B-Llama3",
)

_WIDTH = 32
_VISION_TOY = {"hidden_size": _WIDTH, "intermediate_size": 2 * _WIDTH, "num_hidden_layers": 1, "num_attention_heads": 2}
_TEXT_TOY = {
    "hidden_size": _WIDTH,
    "intermediate_size": 2 * _WIDTH,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": _WIDTH // 2,
}


def catalog_config(model_id: str) -> dict[str, Any]:
    """A fresh copy of the architecture config of ``model_id`` from the catalog."""
    from mllm_nb import catalog

    entry = catalog.get(model_id)
    if entry is None:
        raise KeyError(f"{model_id!r} is not in the catalog")
    return entry.config_dict()


def _token_ids(processor: Any) -> dict[str, int]:
    """The ids the model must agree on with ``processor``'s tokenizer."""
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {
        "vocab_size": len(tokenizer),
        "image_token_id": tokenizer.convert_tokens_to_ids(processor.image_token),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": pad,
    }


def tiny_config(config: dict[str, Any], processor: Any) -> dict[str, Any]:
    """``config`` with toy widths and depths and ``processor``'s token ids; image geometry unchanged."""
    ids = _token_ids(processor)
    text = {
        **config["text_config"],
        **_TEXT_TOY,
        "vocab_size": ids["vocab_size"],
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "pad_token_id": ids["pad_token_id"],
        "dtype": "float32",
    }
    vision = {**config["vision_config"], **_VISION_TOY}
    return {
        **config,
        "text_config": text,
        "vision_config": vision,
        "vocab_size": ids["vocab_size"],
        "image_token_id": ids["image_token_id"],
        "pad_token_id": ids["pad_token_id"],
        "dtype": "float32",
    }


def build_tiny(model_id: str, processor: Any) -> Any:
    """The tiny random model of ``model_id`` for ``processor`` (float32, eval mode, seed 0)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

    config = AutoConfig.for_model(**tiny_config(catalog_config(model_id), processor))
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32).eval()
    ids = _token_ids(processor)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"]
    )
    return model


def _builder(model_id: str) -> Callable[[Any], Any]:
    def build(processor: Any) -> Any:
        return build_tiny(model_id, processor)

    build.__name__ = f"build_{model_id.split('/')[-1].replace('-', '_').replace('.', '_')}"
    build.__doc__ = f"The tiny random {model_id} for ``processor``."
    return build


#: Model id -> ``build(processor) -> model``.
TINY: dict[str, Callable[[Any], Any]] = {model_id: _builder(model_id) for model_id in MODEL_IDS}
