"""A tiny random LLaVA saved to a folder, and a stand-in for the planner's report (shared by the tests).

CLIP vision 32 px / 8 px patches, a 2-layer Llama, a word-level tokenizer, every Linear a multiple
of 64 wide so that bitsandbytes can quantize it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from mllm_nb.demo.mode import FIXTURES_DIR

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:"] + [f"w{i}" for i in range(57)]


IMAGE_TOKEN_ID = WORDS.index("<image>")


TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}{{- message['role'].upper() + ': ' -}}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image> ' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] + ' ' -}}{%- endif -%}"
    "{%- endfor -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


IMAGE_SIZE, PATCH_SIZE = 32, 8


TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2


TINY_LLAVA = FIXTURES_DIR / "tiny-llava"


needs_fixture = pytest.mark.skipif(
    not (TINY_LLAVA / "config.json").is_file(), reason="the trained tiny-llava demo fixture is not built yet"
)


def save_tiny_llava(folder: Path, seed: int = 0, vision_width: int = 64) -> Path:
    """Save a tiny random LlavaForConditionalGeneration and its LlavaProcessor to ``folder``."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=TINY_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision_width, intermediate_size=2 * vision_width, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
        ),
        text_config=LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, vocab_size=len(WORDS), bos_token_id=2, eos_token_id=3, pad_token_id=0,
        ),
        image_token_index=IMAGE_TOKEN_ID, vision_feature_select_strategy="default", image_seq_length=TOKENS_PER_IMAGE,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=3, pad_token_id=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@dataclass
class FakeTarget:
    name: str = "cpu"
    gpu_bytes: int | None = None


@dataclass
class FakeReport:
    """A FitReport-shaped stand-in (the contract of mllm_nb.plan.fit)."""

    fits: bool
    weights_bytes: int = 14_100_000_000
    compute_dtype: str = "float32"
    target: FakeTarget = field(default_factory=FakeTarget)
    suggestions: list[str] = field(default_factory=lambda: ["Use a smaller model such as llava-interleave-qwen-0.5b."])

    @property
    def gpu_fits(self) -> bool | None:
        return None if self.target.gpu_bytes is None else self.fits

    @property
    def ram_fits(self) -> bool:
        return self.fits

    def __str__(self) -> str:
        return f"Fit report: {'fits' if self.fits else 'does not fit'} ({self.weights_bytes / 1e9:.1f} GB of weights)"


def fake_fit(fits_by_quantization: dict[str | None, bool], calls: list | None = None):
    """A ``fit`` whose answer depends only on the quantization asked for."""

    def fit(model, quantization="4bit", target="auto", dtype=None, **kwargs):
        if calls is not None:
            calls.append((model, quantization, target, dtype))
        gb = {None: 28_000_000_000, "8bit": 7_500_000_000, "4bit": 4_000_000_000}[quantization]
        return FakeReport(fits=fits_by_quantization[quantization], weights_bytes=gb)

    return fit
