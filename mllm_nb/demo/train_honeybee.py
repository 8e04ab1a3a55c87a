"""Train the tiny demo Honeybee (C-Abstractor) to read short rendered strings.

``python -m mllm_nb.demo.train_honeybee [--out DIR] [--seed 0] [--vision-steps N] [--steps N]``
regenerates the committed fixture ``mllm_nb/demo/fixtures/tiny-honeybee`` (its README.md gives the
measured time; about a quarter of an hour on one thread of a shared two-core machine).
The model is the project's own :class:`mllm_nb.honeybee.HoneybeeForConditionalGeneration`
(a CLIP vision tower, a C-Abstractor and a small Llama) with a real
:class:`mllm_nb.honeybee.HoneybeeProcessor`: a ``LlamaTokenizer`` learnt offline on the prompt
words (:func:`mllm_nb.demo.train_llava.build_tokenizer`), per-chunk tokenization and the reference
chat template. Everything is learnt from scratch here, on fresh random renders of
:mod:`mllm_nb.demo.text_scenes` every step (nothing is ever seen twice):

- the answer is the string spelled one character token at a time, then ``</s>``; the loss is on
  the answer tokens only;
- two auxiliary losses make reading learnable in minutes: every cell of the abstractor's patch map
  (after its first RegStage) and every visual token names, slot by slot, the characters of the
  string that cover it (slot k: the k-th character), plus the one covering most of it. The vision
  tower and the abstractor first learn these alone (cheap: no language model), then the whole
  model learns the answers with the auxiliary losses kept on. The heads of these losses are
  thrown away; the saved folder is a plain Honeybee.

The held-out score is measured the way a user reads text: the saved folder loaded with
``mllm_nb.load_vlm`` and :func:`mllm_nb.text_reading.ocr` on renders of another seed, scored with
:func:`mllm_nb.metrics.cer`, in float32 and in 4-bit NF4 on the CPU. The folder also gets a
README.md model card and ``training_metrics.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from torch import nn
from transformers import DynamicCache, GenerationConfig, LlamaTokenizer

from mllm_nb.demo.text_scenes import (
    ALPHABET,
    BACKGROUNDS,
    BOLD_FONTS,
    TextScene,
    random_text_scene,
)
from mllm_nb.demo.train_llava import build_tokenizer
from mllm_nb.demo.training import (
    lr_factor,
    make_adamw,
    optimizer_step,
    seed_everything,
    torch_threads,
    write_fixture,
)
from mllm_nb.honeybee import (
    HoneybeeConfig,
    HoneybeeError,
    HoneybeeForConditionalGeneration,
    HoneybeeImageProcessor,
    HoneybeeProcessor,
)
from mllm_nb.honeybee.processing import SYSTEM_MESSAGE
from mllm_nb.text_reading import OCR_PROMPT
from mllm_nb.upstream import CACHE_ARGUMENT

FIXTURE_NAME = "mllm-nb/tiny-honeybee-ocr"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEFAULT_OUT = FIXTURES / "tiny-honeybee"
EVAL_SEED_OFFSET = 1000  # held-out renders use seed + this; training renders come from the seed itself
QUESTIONS: tuple[str, ...] = (
    OCR_PROMPT,
    "What does the text say?",
    "Read the text in the image.",
    "What is written in the image?",
)
"""Training questions; the first (the Honeybee OCR prompt) is asked half of the time."""


@dataclass
class TrainSettings:
    """Everything that determines a training run."""

    seed: int = 0
    vision_steps: int = 2400  # phase 1: vision tower + abstractor on the auxiliary targets only
    vision_lr: float = 4e-3
    steps: int = 1500  # phase 2: the whole model on the answers (auxiliary losses kept, weighted by aux_weight)
    lr: float = 2e-3
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_steps: int = 60
    # images: what text_scenes.random_text_scene draws (the fixture reads exactly this kind of render)
    canvas: tuple[int, int] = (128, 64)
    fonts: tuple[str, ...] = BOLD_FONTS
    font_sizes: tuple[int, int] = (22, 32)  # shrunk where the string would not fit
    polarity: str = "any"
    min_length: int = 4
    max_length: int = 6
    # model
    image_size: int = 96  # the processor resizes every image to this square (as Honeybee does)
    patch_size: int = 12
    vision_hidden: int = 96
    vision_layers: int = 3
    num_queries: int = 16  # visual tokens per image: the C-Abstractor pools the 8x8 patches to 4x4
    abstractor_hidden: int = 128
    abstractor_depth: int = 2
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 8
    # A large rotary base lets attention match content far back (the visual tokens), see train_llava.
    rope_theta: float = 1e6
    # auxiliary losses (heads discarded after training)
    aux_weight: float = 0.3  # of the auxiliary losses in phase 2
    min_coverage: float = 0.2  # a patch shows a character when the character's box covers this much of it
    eval_size: int = 200
    num_threads: int = 1  # the shared 2-core machines: two threads are much slower when other jobs run
    log_every: int = 100


def scene_options(settings: TrainSettings) -> dict[str, Any]:
    """The :func:`random_text_scene` options of the training and held-out renders."""
    return {
        "size": tuple(settings.canvas),
        "fonts": tuple(settings.fonts),
        "font_sizes": tuple(settings.font_sizes),
        "polarity": settings.polarity,
        "backgrounds": BACKGROUNDS,
        "min_length": settings.min_length,
        "max_length": settings.max_length,
        "alphabet": ALPHABET,
    }


# --- tokenizer, processor, model ---------------------------------------------------------------


def tokenizer_corpus() -> list[str]:
    """The text chunks the processor tokenizes: system line, ``Human:`` turns, questions, ``AI:``."""
    chunks = [SYSTEM_MESSAGE + "\nHuman: "] + [f"\nHuman: {q}\nAI: " for q in QUESTIONS]
    return chunks + [q.lower() for q in QUESTIONS] + [ALPHABET]


def make_processor(tokenizer: LlamaTokenizer, settings: TrainSettings) -> HoneybeeProcessor:
    """Honeybee preprocessing at ``image_size`` px and the reference chat template."""
    size = {"height": settings.image_size, "width": settings.image_size}
    return HoneybeeProcessor(HoneybeeImageProcessor(size=size), tokenizer, num_visual_tokens=settings.num_queries)


def make_config(tokenizer: LlamaTokenizer, settings: TrainSettings) -> HoneybeeConfig:
    """A tiny CLIP vision tower, a C-Abstractor and a tiny Llama (large rotary base)."""
    vision = {
        "hidden_size": settings.vision_hidden,
        "intermediate_size": 4 * settings.vision_hidden,
        "num_hidden_layers": settings.vision_layers,
        "num_attention_heads": 4,
        "image_size": settings.image_size,
        "patch_size": settings.patch_size,
        "projection_dim": settings.vision_hidden,
        "hidden_act": "quick_gelu",
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": settings.text_hidden,
        "intermediate_size": 4 * settings.text_hidden,
        "num_hidden_layers": settings.text_layers,
        "num_attention_heads": settings.text_heads,
        "num_key_value_heads": settings.text_heads,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": settings.rope_theta},
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    abstractor = {
        "projector_type": "c-abs",
        "num_queries": settings.num_queries,
        "hidden_size": settings.abstractor_hidden,
        "depth": settings.abstractor_depth,
    }
    config = HoneybeeConfig(
        vision_config=vision,
        text_config=text,
        abstractor_config=abstractor,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    config.name_or_path = FIXTURE_NAME
    return config


def build_model(tokenizer: LlamaTokenizer, settings: TrainSettings) -> HoneybeeForConditionalGeneration:
    """A freshly initialised Honeybee whose generation stops at ``</s>``."""
    model = HoneybeeForConditionalGeneration(make_config(tokenizer, settings))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=2 * settings.max_length,
    )
    return model


# --- data ----------------------------------------------------------------------------------------


def prompt_ids(processor: HoneybeeProcessor, question: str) -> list[int]:
    """Token ids of the chat prompt for one image and ``question``, exactly as ``VLM.ask`` builds them."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=Image.new("RGB", (8, 8)), text=text)["input_ids"][0]


def answer_ids(tokenizer: LlamaTokenizer, text: str) -> list[int]:
    """The string spelled as one token per character, then ``</s>``."""
    ids = tokenizer.convert_tokens_to_ids(list(text))
    if tokenizer.unk_token_id in ids:
        raise HoneybeeError(f"{text!r} has characters that are not tokens of the tokenizer; use ALPHABET strings.")
    return [*ids, tokenizer.eos_token_id]


def _scaled_boxes(scene: TextScene, image_size: int) -> np.ndarray:
    """Character boxes in the processor's ``image_size`` square (the image is resized, not cropped)."""
    boxes = np.array(scene.char_boxes(), dtype=np.float64)
    return boxes * np.array([image_size / scene.size[0], image_size / scene.size[1]] * 2)


def _windows(size: int, side: int) -> list[tuple[int, int]]:
    """The input ranges that ``AdaptiveAvgPool2d(side)`` averages along one axis of ``size`` cells."""
    return [(i * size // side, -(-(i + 1) * size // side)) for i in range(side)]


def cover_targets(scene: TextScene, settings: TrainSettings, side: int) -> np.ndarray:
    """Targets of a ``side`` x ``side`` map over the patches: ``[side * side, max_length + 1]``, row-major.

    Slot k < max_length of a cell is 1 + the alphabet index of the string's k-th character when
    that character covers at least ``min_coverage`` of the cell, else 0; the last column names the
    character covering most of the cell, whatever its place (a dense signal for learning the
    shapes). The cells are the abstractor's pooling windows (``side`` = patches per row gives one
    cell per patch). Naming characters slot by slot keeps "which character is where in the string"
    intact when the abstractor averages cells.
    """
    grid, patch = settings.image_size // settings.patch_size, settings.patch_size
    windows = np.array(_windows(grid, side)) * patch  # [side, 2] pixel ranges
    boxes = _scaled_boxes(scene, settings.image_size)
    over_x = np.clip(np.minimum(boxes[:, 2:3], windows[:, 1]) - np.maximum(boxes[:, 0:1], windows[:, 0]), 0, None)
    over_y = np.clip(np.minimum(boxes[:, 3:4], windows[:, 1]) - np.maximum(boxes[:, 1:2], windows[:, 0]), 0, None)
    extent = windows[:, 1] - windows[:, 0]
    cover = over_y[:, :, None] * over_x[:, None, :] / (extent[:, None] * extent[None, :])  # [chars, rows, cols]
    chars = np.array([ALPHABET.index(c) + 1 for c in scene.text])
    slots = np.zeros((side * side, settings.max_length + 1), dtype=np.int64)
    cover = cover.reshape(len(chars), -1)  # [chars, cells]
    shown = cover >= settings.min_coverage
    slots[:, : len(chars)] = np.where(shown.T, chars[None, :], 0)
    slots[:, -1] = np.where(shown.any(0), chars[cover.argmax(0)], 0)  # the character covering most of the cell
    return slots


def patch_targets(scene: TextScene, settings: TrainSettings) -> np.ndarray:
    """:func:`cover_targets` of every vision patch."""
    return cover_targets(scene, settings, settings.image_size // settings.patch_size)


def token_targets(scene: TextScene, settings: TrainSettings) -> np.ndarray:
    """:func:`cover_targets` of every visual token (the abstractor's pooled cells)."""
    return cover_targets(scene, settings, math.isqrt(settings.num_queries))


@dataclass
class Batch:
    """Model inputs (right-padded) and the auxiliary targets of one batch of renders."""

    inputs: dict[str, torch.Tensor]
    patch_slots: torch.Tensor
    token_slots: torch.Tensor


class BatchMaker:
    """Fresh seeded renders -> processor pixels, chat-template prompts, spelled answers and targets."""

    def __init__(self, processor: HoneybeeProcessor, settings: TrainSettings, seed: int):
        self.processor, self.settings = processor, settings
        self.rng = np.random.default_rng(seed)
        self.prompts = [prompt_ids(processor, q) for q in QUESTIONS]
        self.options = scene_options(settings)

    def question_index(self) -> int:
        """The OCR prompt half of the time, the other phrasings otherwise."""
        if self.rng.random() < 0.5:
            return 0
        return int(self.rng.integers(1, len(QUESTIONS)))

    def __call__(self, size: int) -> Batch:
        scenes = [random_text_scene(self.rng, **self.options) for _ in range(size)]
        pixels = self.processor.image_processor([s.render() for s in scenes], return_tensors="pt")["pixel_values"]
        tokenizer = self.processor.tokenizer
        rows = []
        for scene in scenes:
            prompt = self.prompts[self.question_index()]
            rows.append((prompt, answer_ids(tokenizer, scene.text)))
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((size, width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((size, width), -100, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for row, (prompt, answer) in enumerate(rows):
            n = len(prompt) + len(answer)
            ids[row, :n] = torch.tensor(prompt + answer)
            labels[row, len(prompt) : n] = torch.tensor(answer)
            mask[row, :n] = 1
        patches = torch.tensor(np.stack([patch_targets(s, self.settings) for s in scenes]))
        tokens = torch.tensor(np.stack([token_targets(s, self.settings) for s in scenes]))
        inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels}
        return Batch(inputs, patches, tokens)


# --- training ------------------------------------------------------------------------------------


class AuxiliaryHeads(nn.Module):
    """Linear slot read-outs of the abstractor's patch map and of its visual tokens.

    The patch read-out sits after the abstractor's first RegStage (before pooling), where the 3x3
    convolutions see a whole character: reading characters is learnt there several times faster
    than from the ViT's own outputs. Slots (k-th character of the string) are linear in the
    features, so they survive the abstractor's average pooling.
    """

    def __init__(self, settings: TrainSettings):
        super().__init__()
        self.n_chars = len(ALPHABET) + 1
        self.patch = nn.Linear(settings.abstractor_hidden, (settings.max_length + 1) * self.n_chars)
        self.token = nn.Linear(settings.text_hidden, (settings.max_length + 1) * self.n_chars)

    def _loss(self, head: nn.Linear, features: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        logits = head(features).unflatten(-1, (-1, self.n_chars))
        return F.cross_entropy(logits.flatten(0, 2), slots.flatten())

    def loss(self, patches: torch.Tensor, visual: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the patch-map slots and of the visual-token slots."""
        return self._loss(self.patch, patches, batch.patch_slots), self._loss(self.token, visual, batch.token_slots)

    @torch.no_grad()
    def read_tokens(self, visual: torch.Tensor, threshold: float = 0.5) -> list[str]:
        """The strings the token read-out sees: slot by slot, the likeliest character over the cells."""
        probs = self.token(visual).unflatten(-1, (-1, self.n_chars)).softmax(-1)  # [B, Q, K, chars + 1]
        probs = probs[:, :, :-1]  # the slots (the last column is the dominant character)
        present = (1 - probs[..., 0]).max(1).values  # [B, K]
        best = probs[..., 1:].sum(1).argmax(-1)  # [B, K]
        texts = []
        for row_present, row_best in zip(present, best):
            text = ""
            for seen, char in zip(row_present, row_best):
                if seen < threshold:
                    break
                text += ALPHABET[int(char)]
            texts.append(text)
        return texts


class PatchMapHook:
    """Keeps the output of the abstractor's first RegStage (``[B, C, H, W]``) as ``[B, H*W, C]``."""

    def __init__(self, model: HoneybeeForConditionalGeneration):
        self.value: torch.Tensor | None = None
        self.handle = model.model.abstractor.net[0].register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self.value = output.flatten(2).transpose(1, 2)

    def pop(self) -> torch.Tensor:
        value, self.value = self.value, None
        return value

    def remove(self) -> None:
        self.handle.remove()


def init_vision_positions(model: HoneybeeForConditionalGeneration, scale: float = 0.5) -> None:
    """Start the ViT's learnt position embeddings as 2-D sine-cosine codes (CLS at zero), as MAE does.

    From random positions a tiny ViT needs many more steps to learn which patches are neighbours.
    """
    weight = model.model.vision_tower.embeddings.position_embedding.weight
    side, quarter = math.isqrt(weight.shape[0] - 1), weight.shape[1] // 4
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    freqs = 1.0 / 100 ** (torch.arange(quarter) / quarter)

    def code(values: torch.Tensor) -> torch.Tensor:
        angles = values.flatten()[:, None].float() * freqs
        return torch.cat([angles.sin(), angles.cos()], 1)

    table = torch.cat([code(rows), code(cols)], 1)
    with torch.no_grad():
        weight.zero_()
        weight[1:, : table.shape[1]] = scale * table


def shared_prefix_length(batch: Batch, image_token_id: int) -> int:
    """Leading positions that every row has in common, up to the first image token (the system line)."""
    ids = batch.inputs["input_ids"]
    same = (ids == ids[:1]).all(0).tolist() + [False]
    first_image = int((ids[0] == image_token_id).nonzero()[0]) if (ids[0] == image_token_id).any() else ids.shape[1]
    return min(same.index(False), first_image)


def forward_shared_prefix(model: HoneybeeForConditionalGeneration, batch: Batch) -> Any:
    """The model's forward with labels, computing the common prefix (the system line) once for the batch.

    Every training prompt starts with the same ``<s>`` + system sentence + ``Human:``; its keys and
    values are computed for one row and broadcast to all rows, which gives the same loss and
    gradients as ``model(**batch.inputs)`` with about half of the language model's work.
    """
    inputs = batch.inputs
    prefix = shared_prefix_length(batch, model.config.image_token_id)
    if prefix == 0:
        return model(**inputs)
    rows = inputs["input_ids"].shape[0]
    cache = DynamicCache(config=model.config.text_config)
    model.model.language_model(input_ids=inputs["input_ids"][:1, :prefix], use_cache=True, **{CACHE_ARGUMENT: cache})
    for layer in cache.layers:
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)
    return model(
        input_ids=inputs["input_ids"][:, prefix:],
        pixel_values=inputs["pixel_values"],
        attention_mask=inputs["attention_mask"],
        labels=inputs["labels"][:, prefix:],
        use_cache=True,
        **{CACHE_ARGUMENT: cache},
    )


def make_optimizer(params: list[tuple[str, nn.Parameter]], settings: TrainSettings, lr: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on embeddings, norms, biases and positional parameters."""
    return make_adamw(params, lr, settings.weight_decay, no_decay=("embed", "pos_emb"))


def _log_line(log: dict[str, list[float]], step: int, losses: dict[str, torch.Tensor], phase: str) -> None:
    log["step"].append(step)
    for key, value in losses.items():
        log[key].append(round(value.item(), 4))
    print(f"{phase} step {step:5d}  " + "  ".join(f"{k} {v.item():.4f}" for k, v in losses.items()), flush=True)


def _run_steps(
    steps: int,
    params: list[tuple[str, nn.Parameter]],
    settings: TrainSettings,
    lr: float,
    loss_fn: Any,
    phase: str,
) -> dict[str, list[float]]:
    """AdamW with warm-up and cosine decay over ``steps`` calls of ``loss_fn(step) -> {name: loss}``."""
    optimizer = make_optimizer(params, settings, lr)
    warmup = min(settings.warmup_steps, max(steps // 5, 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup))
    log: dict[str, list[float]] = defaultdict(list)
    for step in range(steps):
        losses = loss_fn(step)
        optimizer_step(sum(losses.values()), optimizer, scheduler, clip=[p for _, p in params])
        if settings.log_every and (step % settings.log_every == 0 or step == steps - 1):
            _log_line(log, step, {k: v.detach() for k, v in losses.items()}, phase)
    return dict(log)


def warm_up_vision(
    model: HoneybeeForConditionalGeneration, heads: AuxiliaryHeads, make_batch: BatchMaker, settings: TrainSettings
) -> dict[str, list[float]]:
    """Phase 1: the vision tower and the abstractor learn the auxiliary targets alone (no language model)."""
    hook = PatchMapHook(model)
    params = [*model.model.vision_tower.named_parameters(), *model.model.abstractor.named_parameters()]
    params += [("aux." + n, p) for n, p in heads.named_parameters()]

    def losses(step: int) -> dict[str, torch.Tensor]:
        batch = make_batch(settings.batch_size)
        visual = model.model.get_image_features(batch.inputs["pixel_values"])
        patch_loss, token_loss = heads.loss(hook.pop(), visual, batch)
        return {"patch": patch_loss, "token": token_loss}

    model.train()
    try:
        return _run_steps(settings.vision_steps, params, settings, settings.vision_lr, losses, "vision")
    finally:
        hook.remove()
        model.eval()


def train_model(
    model: HoneybeeForConditionalGeneration, heads: AuxiliaryHeads, make_batch: BatchMaker, settings: TrainSettings
) -> dict[str, list[float]]:
    """Phase 2: the whole model on the spelled answers, the auxiliary losses kept on (smaller)."""
    hook = PatchMapHook(model)
    params = [*model.named_parameters(), *(("aux." + n, p) for n, p in heads.named_parameters())]

    def losses(step: int) -> dict[str, torch.Tensor]:
        batch = make_batch(settings.batch_size)
        out = forward_shared_prefix(model, batch)
        patch_loss, token_loss = heads.loss(hook.pop(), out.image_hidden_states, batch)
        return {
            "answer": out.loss,
            "patch": settings.aux_weight * patch_loss,
            "token": settings.aux_weight * token_loss,
        }

    model.train()
    try:
        return _run_steps(settings.steps, params, settings, settings.lr, losses, "answer")
    finally:
        hook.remove()
        model.eval()


@torch.no_grad()
def token_reading_cer(
    model: HoneybeeForConditionalGeneration,
    heads: AuxiliaryHeads,
    processor: HoneybeeProcessor,
    settings: TrainSettings,
) -> float:
    """CER of the token read-out on 100 held-out renders: how well the visual tokens hold the string."""
    from mllm_nb.metrics import cer

    images, texts = eval_set(settings, 100)
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    return round(cer(texts, heads.read_tokens(model.model.get_image_features(pixels))), 4)


# --- evaluation ----------------------------------------------------------------------------------


def eval_set(settings: TrainSettings, size: int | None = None) -> tuple[list[Image.Image], list[str]]:
    """Held-out renders (seed + 1000) of the training distribution and their strings."""
    from mllm_nb.demo.text_scenes import make_ocr_set

    return make_ocr_set(size or settings.eval_size, settings.seed + EVAL_SEED_OFFSET, **scene_options(settings))


def evaluate_folder(folder: str | Path, settings: TrainSettings, quantization: str | None = None) -> dict[str, float]:
    """CER and exact-match rate of ``ocr(load_vlm(folder), image)`` on the held-out renders."""
    from mllm_nb.loading import load_vlm
    from mllm_nb.metrics import cer
    from mllm_nb.text_reading import ocr

    images, texts = eval_set(settings)
    with contextlib.redirect_stdout(io.StringIO()):  # load_vlm's report lines
        vlm = load_vlm(str(folder), quantization=quantization, dtype=torch.float32, device_map="cpu")
    readings = ocr(vlm, images, batch_size=50, progress=False)
    exact = sum(r == t for r, t in zip(readings, texts)) / len(texts)
    return {"cer": round(cer(texts, readings), 4), "exact_match": round(exact, 4)}


# --- saving --------------------------------------------------------------------------------------


def model_card(metrics: dict, settings: TrainSettings) -> str:
    """The README.md written next to the weights."""
    f32, q4 = metrics["eval_float32"], metrics.get("eval_nf4")
    q4_row = f"| 4-bit NF4 | {q4['cer']:.1%} | {q4['exact_match']:.1%} |" if q4 else "| 4-bit NF4 | n/a | n/a |"
    return f"""# tiny-honeybee-ocr (mllm_nb demo fixture)

**Not a real model; demo mode only.** A {metrics["parameters"] / 1e6:.2f} M-parameter
`mllm_nb.honeybee.HoneybeeForConditionalGeneration` (C-Abstractor) trained from scratch to read
short strings rendered by `mllm_nb/demo/text_scenes.py`. In demo mode Honeybee ids can resolve to
this folder, so the OCR notebook runs offline with answers that can be scored. It reads one line of
{settings.min_length}-{settings.max_length} characters of `{ALPHABET}` in bold DejaVu fonts on flat, gradient or
noisy backgrounds; it knows nothing about real photos or scanned pages.

- Vision tower: `CLIPVisionModel`, {settings.image_size}x{settings.image_size} px in {settings.patch_size} px
  patches, {settings.vision_layers} layers x {settings.vision_hidden} d; features of the last layer, CLS dropped.
- C-Abstractor: RegStage depth {settings.abstractor_depth}, {settings.abstractor_hidden} channels, pooled to
  {math.isqrt(settings.num_queries)}x{math.isqrt(settings.num_queries)}, so one image is {settings.num_queries}
  visual tokens. Language model: Llama, {settings.text_layers} layers x {settings.text_hidden} d, {settings.text_heads} heads,
  rotary base {settings.rope_theta:g}.
- Processor: `HoneybeeProcessor` (images resized to {settings.image_size}x{settings.image_size}, CLIP mean/std;
  each text chunk tokenized on its own) with a `LlamaTokenizer` (BPE with byte fallback,
  {metrics["vocab_size"]} tokens incl. `<pad>` and `<image>`) and the Honeybee chat template:
  `{{system}}\\nHuman: <image>\\nHuman: {{question}}\\nAI: `. The answer is the string, one token per
  character, then `</s>`.
- Training, batch {settings.batch_size}, fresh renders every step (seed {settings.seed}), from scratch
  (ViT positions start as 2-D sine-cosine codes):
  1. {settings.vision_steps} steps of the vision tower and the abstractor alone on two auxiliary targets:
     every cell of the abstractor's first RegStage and every visual token names, slot by slot, the
     characters of the string that cover it (linear heads, not saved). Reading the string off the
     visual tokens with these heads gives a CER of {metrics["token_reading_cer"]["after_warm_up"]:.1%}
     on held-out renders after this phase ({metrics["token_reading_cer"]["final"]:.1%} at the end).
  2. {settings.steps} steps of the whole model on the spelled answers (loss on the answer tokens only),
     the auxiliary losses kept at weight {settings.aux_weight}. Questions: {", ".join(repr(q) for q in QUESTIONS)}
     (the first half of the time).

  {metrics["train_seconds"]:.0f} s on {settings.num_threads} CPU thread(s) of a shared 2-core machine (load
  average {metrics["load_average"]:.1f} at the end; data generation included).

Held-out score: `ocr(mllm_nb.load_vlm(folder), image)` (prompt `{OCR_PROMPT}`) on {metrics["eval_items"]}
renders of seed {metrics["eval_seed"]}, character error rate (`mllm_nb.metrics.cer`, corpus level) and
exact-match rate:

| weights | CER | exact match |
|---|---|---|
| float32 | {f32["cer"]:.1%} | {f32["exact_match"]:.1%} |
{q4_row}

Regenerate (seeded: the same machine and library versions give the same weights; other CPUs or
versions may differ by float rounding, which can move the score a little):

```
python -m mllm_nb.demo.train_honeybee --seed {settings.seed} --vision-steps {settings.vision_steps} --steps {settings.steps}
```
"""


def save_fixture(
    out: Path,
    model: HoneybeeForConditionalGeneration,
    processor: HoneybeeProcessor,
    metrics: dict,
    settings: TrainSettings,
) -> None:
    """Write weights (safetensors), processor, tokenizer, generation config, metrics and the model card."""
    write_fixture(out, model, processor, metrics, model_card(metrics, settings))


def _load_average() -> float:
    """The one-minute load average (other jobs on the machine), NaN where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return float("nan")


def fit_model(settings: TrainSettings) -> tuple[HoneybeeForConditionalGeneration, HoneybeeProcessor, dict]:
    """Build tokenizer, processor and model from the seed and run both training phases.

    Returns the trained model, its processor and the metrics of training (settings, losses, read-outs).
    """
    seed_everything(settings.seed)
    tokenizer = build_tokenizer(tokenizer_corpus())
    processor = make_processor(tokenizer, settings)
    model = build_model(tokenizer, settings)
    init_vision_positions(model)
    heads = AuxiliaryHeads(settings)
    make_batch = BatchMaker(processor, settings, settings.seed)
    vision_losses = warm_up_vision(model, heads, make_batch, settings)
    reading_after_warm_up = token_reading_cer(model, heads, processor, settings)
    print(f"token read-out CER after the vision warm-up: {reading_after_warm_up:.3f}", flush=True)
    losses = train_model(model, heads, make_batch, settings)
    metrics: dict = {"name": FIXTURE_NAME, **asdict(settings), "vocab_size": len(tokenizer)}
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    metrics["vision_losses"], metrics["losses"] = vision_losses, losses
    metrics["token_reading_cer"] = {
        "after_warm_up": reading_after_warm_up,
        "final": token_reading_cer(model, heads, processor, settings),
    }
    return model, processor, metrics


def train(out: str | Path = DEFAULT_OUT, settings: TrainSettings | None = None, quantized_eval: bool = True) -> dict:
    """Train (:func:`fit_model`), save to ``out``, score the saved folder (float32, then 4-bit); return the metrics.

    >>> metrics = train("/tmp/tiny-honeybee", TrainSettings(vision_steps=200, steps=100))  # doctest: +SKIP
    """
    settings = settings or TrainSettings()
    out = Path(out)
    with torch_threads(settings.num_threads):
        started = time.perf_counter()
        model, processor, metrics = fit_model(settings)
        metrics["train_seconds"] = round(time.perf_counter() - started, 1)  # data generation included
        metrics["load_average"] = round(_load_average(), 2)
        metrics["eval_items"], metrics["eval_seed"] = settings.eval_size, settings.seed + EVAL_SEED_OFFSET
        metrics["eval_float32"], metrics["eval_nf4"] = {"cer": float("nan"), "exact_match": float("nan")}, None
        metrics["torch_version"], metrics["transformers_version"] = torch.__version__, transformers.__version__
        save_fixture(out, model, processor, metrics, settings)
        metrics["eval_float32"] = evaluate_folder(out, settings)
        if quantized_eval:
            metrics["eval_nf4"] = evaluate_folder(out, settings, quantization="4bit")
        save_fixture(out, model, processor, metrics, settings)
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the committed fixture)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--vision-steps", type=int, default=defaults.vision_steps)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--threads", type=int, default=defaults.num_threads)
    args = parser.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    settings = TrainSettings(
        seed=args.seed,
        vision_steps=args.vision_steps,
        steps=args.steps,
        batch_size=args.batch_size,
        num_threads=args.threads,
    )
    metrics = train(args.out, settings)
    print("float32:", json.dumps(metrics["eval_float32"]), " 4-bit NF4:", json.dumps(metrics["eval_nf4"]))
    print(f"trained in {metrics['train_seconds']:.0f} s; saved to {args.out}")


if __name__ == "__main__":
    main()
