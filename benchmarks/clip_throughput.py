"""CLIP zero-shot throughput: mllm_nb's batched, cached classify vs the per-image tutorial pattern.

The same randomly initialised CLIP of ViT-B/32 size (built from a config, no download) classifies
64 images over 12 labels three ways, measured side by side in one run:

* per-image pattern: ``processor(text=labels, images=[img])`` + ``model(**inputs)`` once per image;
* mllm_nb: ``Clip.classify(images, labels)`` (labels embedded once, images in batches);
* bare batched forward: one ``processor(text=labels, images=all)`` + one ``model(**inputs)``.

Bars: speed-up over the per-image pattern >= 3x; mllm_nb time <= 1.15x the bare batched forward.
Run: ``.venv/bin/python benchmarks/clip_throughput.py``. The last line is the figure.
"""

from __future__ import annotations

import time

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from mllm_nb.clip import Clip
from mllm_nb.demo.mode import fixture_path
from mllm_nb.demo.shapes import class_labels, make_classification_set

N_IMAGES, REPEATS = 64, 3


def build() -> tuple[CLIPModel, CLIPProcessor]:
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()  # the defaults are ViT-B/32's sizes
    tokenizer = CLIPProcessor.from_pretrained(fixture_path("tiny-clip")).tokenizer
    return model, CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)


def per_image_pattern(model, processor, images, prompts) -> None:
    with torch.no_grad():
        for image in images:
            inputs = processor(text=prompts, images=[image], return_tensors="pt", padding=True)
            model(**inputs).logits_per_image.softmax(dim=1)


def bare_batched(model, processor, images, prompts) -> None:
    with torch.inference_mode():
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
        model(**inputs).logits_per_image.softmax(dim=1)


def with_mllm_nb(model, processor, images, labels) -> None:
    Clip(model=model, processor=processor, name="random-vit-b-32").classify(images, labels, progress=False)


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def main() -> None:
    model, processor = build()
    labels = class_labels()
    prompts = [f"a photo of a {label}." for label in labels]
    images = [img for img, _, _ in make_classification_set(n_per_class=6, seed=1, size=96)][:N_IMAGES]
    print(f"random CLIP ViT-B/32 ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters), "
          f"{len(images)} images x {len(labels)} labels, {torch.get_num_threads()} threads, "
          f"best of {REPEATS} interleaved runs")
    bare_batched(model, processor, images[:4], prompts)  # warm-up
    runs: dict[str, list[float]] = {"loop": [], "ours": [], "bare": []}
    for _ in range(REPEATS):  # interleaved, so background load hits all three alike
        runs["loop"].append(timed(per_image_pattern, model, processor, images, prompts))
        runs["ours"].append(timed(with_mllm_nb, model, processor, images, labels))
        runs["bare"].append(timed(bare_batched, model, processor, images, prompts))
    t_loop, t_ours, t_bare = (min(runs[k]) for k in ("loop", "ours", "bare"))
    print(f"per-image pattern      {t_loop:7.2f} s")
    print(f"mllm_nb classify       {t_ours:7.2f} s")
    print(f"bare batched forward   {t_bare:7.2f} s")
    print(f"speed-up vs per-image pattern: {t_loop / t_ours:.2f}x (bar >= 3); "
          f"mllm_nb / bare batched forward: {t_ours / t_bare:.3f} (bar <= 1.15)")


if __name__ == "__main__":
    main()
