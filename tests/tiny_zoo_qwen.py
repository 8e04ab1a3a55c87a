"""Tiny random models of the catalog's Qwen VL checkpoints (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) for tests.

Each builder takes the entry's processor twin (``mllm_nb.memory.twins.build_processor``) and returns a
float32 ``...ForConditionalGeneration`` of the real architecture with one or two narrow layers per tower.
Everything that decides how many tokens an image costs is the checkpoint's own: patch size, temporal
patch size, spatial merge size (and Qwen2.5-VL's attention window); the vocabulary and every special
token id are the stand-in tokenizer's, so the twin's prompts feed the tiny model directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

QWEN2_VL_2B = "Qwen/Qwen2-VL-2B-Instruct"
QWEN25_VL_3B = "Qwen/Qwen2.5-VL-3B-Instruct"
QWEN25_VL_7B = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN3_VL_2B = "Qwen/Qwen3-VL-2B-Instruct"
QWEN3_VL_4B = "Qwen/Qwen3-VL-4B-Instruct"
QWEN3_VL_8B = "Qwen/Qwen3-VL-8B-Instruct"

#: Tiny sizes: text width, heads and head width (mrope sections sum to half the head width).
TEXT_WIDTH, TEXT_HEADS, TEXT_LAYERS = 32, 2, 2
VISION_WIDTH, VISION_HEADS, VISION_DEPTH = 32, 2, 2


def catalog_config(model_id: str) -> dict[str, Any]:
    """A fresh copy of the real config of ``model_id`` from the catalog."""
    from mllm_nb import catalog

    entry = catalog.get(model_id)
    if entry is None:
        raise KeyError(f"{model_id!r} is not in the catalog")
    return entry.config_dict()


def _token_ids(processor: Any) -> dict[str, int]:
    """The stand-in tokenizer's ids of the tokens the model and generation need."""
    tokenizer = processor.tokenizer
    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in {
            "image_token_id": "<|image_pad|>",
            "video_token_id": "<|video_pad|>",
            "vision_start_token_id": "<|vision_start|>",
            "vision_end_token_id": "<|vision_end|>",
        }.items()
    }
    unknown = tokenizer.unk_token_id
    missing = [name for name, value in ids.items() if value is None or value == unknown]
    if missing:
        raise ValueError(f"the processor's tokenizer lacks {missing}")
    ids.update(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return ids


def _shrink_text(text: dict[str, Any], ids: dict[str, int], vocab: int, head_dim: int | None) -> dict[str, Any]:
    """The decoder shrunk to a few narrow layers; rope kind and theta kept, mrope sections rescaled."""
    text = {
        **text,
        "vocab_size": vocab,
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 2 * TEXT_WIDTH,
        "num_hidden_layers": TEXT_LAYERS,
        "num_attention_heads": TEXT_HEADS,
        "num_key_value_heads": 1,
        "max_window_layers": TEXT_LAYERS,
        "max_position_embeddings": 4096,
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "pad_token_id": ids["pad_token_id"],
        "dtype": "float32",
    }
    half = (head_dim or TEXT_WIDTH // TEXT_HEADS) // 2  # rotary frequencies per head, split over t/h/w
    if head_dim is not None:
        text["head_dim"] = head_dim
    rope = dict(text.get("rope_scaling") or text.get("rope_parameters") or {})
    rope["mrope_section"] = [half - 2 * (half // 4), half // 4, half // 4]
    text.pop("rope_parameters", None)
    text["rope_scaling"] = rope
    return text


def _shrink_vision(vision: dict[str, Any], model_type: str) -> dict[str, Any]:
    """The vision tower shrunk to two narrow blocks; patch, temporal patch and merge sizes kept."""
    vision = {**vision, "depth": VISION_DEPTH, "num_heads": VISION_HEADS}
    if model_type == "qwen2_vl":
        vision.update(embed_dim=VISION_WIDTH, mlp_ratio=2, hidden_size=TEXT_WIDTH)
        return vision
    vision.update(hidden_size=VISION_WIDTH, intermediate_size=2 * VISION_WIDTH, out_hidden_size=TEXT_WIDTH)
    if model_type == "qwen2_5_vl":
        vision["fullatt_block_indexes"] = [VISION_DEPTH - 1]  # one windowed block, one full-attention block
    else:  # qwen3_vl
        vision["deepstack_visual_indexes"] = [0]
        vision["num_position_embeddings"] = 64  # an 8x8 learned grid, interpolated to any image like the real 48x48
    return vision


def tiny_config(model_id: str, processor: Any) -> Any:
    """The tiny transformers config of ``model_id`` for ``processor``'s stand-in tokenizer."""
    from transformers import AutoConfig

    real = catalog_config(model_id)
    model_type = real["model_type"]
    ids = _token_ids(processor)
    head_dim = 16 if model_type == "qwen3_vl" else None
    config = {
        **real,
        "text_config": _shrink_text(real["text_config"], ids, len(processor.tokenizer), head_dim),
        "vision_config": _shrink_vision(real["vision_config"], model_type),
        "image_token_id": ids["image_token_id"],
        "video_token_id": ids["video_token_id"],
        "vision_start_token_id": ids["vision_start_token_id"],
        "vision_end_token_id": ids["vision_end_token_id"],
        "dtype": "float32",
    }
    return AutoConfig.for_model(**config)


def build(model_id: str, processor: Any) -> Any:
    """A seeded, float32, eval-mode tiny model of ``model_id`` whose generation config uses the stand-in ids."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    config = tiny_config(model_id, processor)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32).eval()
    text = config.get_text_config()
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id
    )
    return model


def _builder(model_id: str) -> Callable[[Any], Any]:
    def build_tiny(processor: Any) -> Any:
        return build(model_id, processor)

    build_tiny.__name__ = f"build_{model_id.split('/')[-1].replace('-', '_').replace('.', '_')}"
    return build_tiny


#: Hub id -> ``build(processor) -> model``.
TINY: dict[str, Callable[[Any], Any]] = {
    model_id: _builder(model_id)
    for model_id in (QWEN2_VL_2B, QWEN25_VL_3B, QWEN25_VL_7B, QWEN3_VL_2B, QWEN3_VL_4B, QWEN3_VL_8B)
}
