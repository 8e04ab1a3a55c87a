"""Overhead of ``VLM.ask`` over the hand-written transformers code a tutorial would use.

Both run on the same randomly initialised ``LlavaForConditionalGeneration`` of the
llava-interleave-qwen-0.5b architecture (SigLIP 384 px / 14 px patches -> 729 image tokens, Qwen2
text model, 152k vocabulary), built from its config with no download, in float32 on the CPU. The
tokenizer is a word-level stand-in whose ids cover the whole vocabulary. Each call is greedy and
generates exactly 32 new tokens; calls alternate A/B/A/B and the medians are compared.

Hand-written: ``apply_chat_template`` + ``processor(...)`` + ``model.generate`` + ``decode``.
Bar: ask / hand-written <= 1.02.
Run: ``.venv/bin/python benchmarks/generate_overhead.py [--layers N] [--repeats N]``. The last line is the figure.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from mllm_nb.vlm import VLM

MODEL_ID = "llava-hf/llava-interleave-qwen-0.5b-hf"
NEW_TOKENS = 32
QUESTION = "t11 t12 t13 t14 t15 t16 t17 t18"
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + ' ' -}}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image> ' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] + ' ' -}}{%- endif -%}"
    "{%- endfor -%}{{- '<|im_end|> ' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|> assistant' -}}{%- endif -%}"
)


def interleave_config() -> dict[str, Any]:
    """The llava-interleave-qwen-0.5b config from mllm_nb's own catalog (a plain dict, as in config.json)."""
    from mllm_nb import catalog

    return catalog.get(MODEL_ID).config_dict()


def build_model(layers: int | None) -> tuple[Any, str]:
    """The model from the config; ``layers`` (if given) cuts both stacks to that depth, widths unchanged."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = interleave_config()
    note = "full depth"
    if layers is not None:
        text, vision = config["text_config"], config["vision_config"]
        note = (
            f"{layers} of {text['num_hidden_layers']} text layers and {layers} of "
            f"{vision['num_hidden_layers']} vision layers (widths unchanged)"
        )
        config = {**config, "text_config": {**text, "num_hidden_layers": layers, "max_window_layers": layers},
                  "vision_config": {**vision, "num_hidden_layers": layers}}
    config = {k: v for k, v in config.items() if k not in ("torch_dtype", "architectures")}
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(LlavaConfig(**config)).eval()
    return model, note


def build_processor(config: dict[str, Any]) -> Any:
    """SigLIP image processor at the config's size + a word-level tokenizer covering every id."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlavaProcessor, PreTrainedTokenizerFast, SiglipImageProcessorPil

    text, vision = config["text_config"], config["vision_config"]
    specials = {text["bos_token_id"]: "<|endoftext|>", text["eos_token_id"]: "<|im_end|>",
                config["image_token_index"]: "<image>", text["eos_token_id"] - 1: "<|im_start|>"}
    vocab = {specials.get(i, f"t{i}"): i for i in range(text["vocab_size"])}
    backend = Tokenizer(WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="t0", pad_token="<|endoftext|>", eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<image>"},
    )
    size = vision["image_size"]
    image_processor = SiglipImageProcessorPil(size={"height": size, "width": size})
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=vision["patch_size"],
        vision_feature_select_strategy=config["vision_feature_select_strategy"], num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
    )


def hand_written(model: Any, processor: Any, image: Image.Image, question: str) -> str:
    """The tutorial pattern, verbatim."""
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(model.device, torch.float32)
    output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return processor.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def with_mllm_nb(vlm: VLM, image: Image.Image, question: str) -> str:
    return vlm.ask(image, question, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)


def outside_generate(vlm: VLM, image: Image.Image, repeats: int = 20) -> float:
    """Median seconds ``ask`` spends around ``generate`` (prepare, generation defaults, decode), measured alone."""
    new_tokens = torch.arange(NEW_TOKENS).unsqueeze(0) + 100
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        vlm.prepare(image, QUESTION)
        vlm.generation_kwargs(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
        vlm._decode(new_tokens)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def timed(fn, *args) -> tuple[float, str]:
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="layers per stack (0: the full 24 + 26)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of each kind")
    args = parser.parse_args()

    model, note = build_model(args.layers or None)
    processor = build_processor(interleave_config())
    vlm = VLM(model=model, processor=processor, name=MODEL_ID)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{MODEL_ID} architecture, random weights, {note}: {params:.0f}M parameters, float32, "
          f"{torch.get_num_threads()} CPU threads, {NEW_TOKENS} new tokens per call")

    first_a, first_b = hand_written(model, processor, image, QUESTION), with_mllm_nb(vlm, image, QUESTION)  # warm-up
    assert first_a.strip() == first_b, (first_a, first_b)
    times_a, times_b = [], []
    for _ in range(args.repeats):
        times_a.append(timed(hand_written, model, processor, image, QUESTION)[0])
        times_b.append(timed(with_mllm_nb, vlm, image, QUESTION)[0])
    med_a, med_b = statistics.median(times_a), statistics.median(times_b)
    paired = statistics.median(b / a for a, b in zip(times_a, times_b))
    print(f"hand-written: median {med_a:.3f} s  ({', '.join(f'{t:.3f}' for t in times_a)})")
    print(f"VLM.ask:      median {med_b:.3f} s  ({', '.join(f'{t:.3f}' for t in times_b)})")
    print(f"median of the paired (adjacent) ratios ask / hand-written: {paired:.3f}")
    around = outside_generate(vlm, image)
    print(f"VLM.ask's steps around generate (images, prompt, processor, decode; the hand-written code does "
          f"the same ones): {around * 1e3:.1f} ms per call, {around / med_a:.2%} of a hand-written call")
    print(f"ask / hand-written = {med_b / med_a:.3f}  (bar <= 1.02)")


if __name__ == "__main__":
    main()
