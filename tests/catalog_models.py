"""Tiny models of the catalog's LLaVA architectures with their real processor rules (shared by the tests).

The vision settings (image size, patch size, grid pinpoints, feature strategy) are the catalog's real
ones, so every image-token count is the one the real checkpoint gets; only the tokenizer is a tiny
word-level one and the towers are shrunk to one 16-wide layer.
"""

from __future__ import annotations

import torch
from PIL import Image

from mllm_nb import catalog
from mllm_nb.vlm import VLM


LLAVA = "llava-hf/llava-1.5-7b-hf"


NEXT = "llava-hf/llava-v1.6-mistral-7b-hf"


NEXT_4K = "llava-hf/llava-v1.6-vicuna-7b-hf"


ONEVISION = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"


INTERLEAVE = "llava-hf/llava-interleave-qwen-0.5b-hf"


FAMILIES = (LLAVA, NEXT, ONEVISION, INTERLEAVE)


WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<video>", "USER:", "ASSISTANT:"] + [f"w{i}" for i in range(40)]


IMAGE_ID = WORDS.index("<image>")


TEMPLATE = (
    "{%- for message in messages -%}{{- message['role'].upper() + ': ' -}}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- ' ' + item['text'] + ' ' -}}{%- endif -%}"
    "{%- endfor -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


def tiny_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )


def processor_from_catalog(model_id: str):
    """The processor the llava-hf checkpoint ships, rebuilt from its catalog config (PIL image processors)."""
    import transformers as tf

    config = catalog.get(model_id).config
    vision = config["vision_config"]
    side, patch = vision["image_size"], vision["patch_size"]
    clip = vision["model_type"] == "clip_vision_model"
    strategy = config["vision_feature_select_strategy"]
    pinpoints = [list(p) for p in config.get("image_grid_pinpoints") or []]
    common = {"tokenizer": tiny_tokenizer(), "chat_template": TEMPLATE, "vision_feature_select_strategy": strategy}
    if config["model_type"] == "llava":
        image_processor = (
            tf.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
            if clip else tf.SiglipImageProcessorPil(size={"height": side, "width": side})
        )
        return tf.LlavaProcessor(image_processor=image_processor, patch_size=patch,
                                 num_additional_image_tokens=int(clip), **common)
    if config["model_type"] == "llava_next":
        image_processor = tf.LlavaNextImageProcessorPil(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pinpoints
        )
        return tf.LlavaNextProcessor(image_processor=image_processor, patch_size=patch,
                                     num_additional_image_tokens=int(clip), **common)

    image_processor = tf.LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side}, image_grid_pinpoints=pinpoints
    )
    return tf.LlavaOnevisionProcessor(
        image_processor=image_processor, video_processor=tf.LlavaOnevisionVideoProcessor(),
        num_image_tokens=(side // patch) ** 2, vision_aspect_ratio=config["vision_aspect_ratio"], **common,
    )


def model_from_catalog(model_id: str, context: int = 4096):
    """The catalog architecture with one 16-wide layer per tower and the tiny vocabulary."""
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

    config = catalog.get(model_id).config_dict()
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config["text_config"].update(small, num_key_value_heads=1, vocab_size=len(WORDS), max_position_embeddings=context)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        config["text_config"].pop(key, None)
        config.pop(key, None)
    config["vision_config"].update(small)
    config.update(vocab_size=len(WORDS), image_token_index=IMAGE_ID)
    if "video_token_index" in config:
        config["video_token_index"] = WORDS.index("<video>")
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**config)).float().eval()
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=3, pad_token_id=0)
    return model


def tiny_vlm(model_id: str, name: str | None = None, context: int = 4096) -> VLM:
    """A VLM of the catalog architecture: real processor rules, a tiny random model."""
    return VLM(model=model_from_catalog(model_id, context), processor=processor_from_catalog(model_id),
               name=model_id if name is None else name)


def image(width: int, height: int, color: tuple[int, int, int] = (200, 40, 40)) -> Image.Image:
    return Image.new("RGB", (width, height), color)
