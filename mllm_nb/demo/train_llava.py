"""Train the tiny demo LLaVA (``transformers.LlavaForConditionalGeneration``) on questions about synthetic scenes.

``python -m mllm_nb.demo.train_llava [--out DIR] [--seed 0] [--steps N]`` regenerates the committed
fixture ``mllm_nb/demo/fixtures/tiny-llava`` in about 11 minutes on two CPU threads (632 s with the data,
then seconds of evaluation), the committed fixture's setting (``TrainSettings.num_threads``; other thread
counts give other weights). The vision tower starts from the tiny CLIP fixture; the projector and a small
Llama are learnt here. The folder loads like any Hub checkpoint (``AutoProcessor``,
``AutoModelForImageTextToText``, ``LlavaForConditionalGeneration``) and answers the questions of
:mod:`mllm_nb.demo.scene_qa`.
"""

from __future__ import annotations

import json
import random
import string
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import (
    BitsAndBytesConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    GenerationConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from mllm_nb.demo.scene_qa import (
    KINDS,
    PAIR_KINDS,
    QA,
    ask,
    ask_pair,
    corpus,
    make_pair_qa,
    make_pair_qa_set,
    make_qa,
    make_qa_set,
    pair_corpus,
    sample_scene,
    swap_pair,
)
from mllm_nb.demo.shapes import (
    COLORS,
    SHAPES,
    Background,
    Scene,
    SceneObject,
    render_scene,
)
from mllm_nb.demo.training import (
    lr_factor,
    make_adamw,
    optimizer_step,
    seed_everything,
    settings_from_command_line,
    torch_threads,
    write_fixture,
)

FIXTURE_NAME = "mllm-nb/tiny-llava-shapes"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEFAULT_OUT = FIXTURES / "tiny-llava"
TINY_CLIP = FIXTURES / "tiny-clip"
EVAL_SEED_OFFSET = 1000  # held-out questions use seed + this; the training pool uses the seed itself
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
PATCH_SIZE = 8
MAX_IMAGES = 4  # images per prompt the image-index probe tells apart in training

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- message['role'].upper() + ': ' -}}"
    "{%- if message['content'] is string -%}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}{{- message['content'] + eos_token -}}{% endgeneration %}"
    "{%- else -%}{{- message['content'] + ' ' -}}{%- endif -%}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif item['type'] == 'text' and message['role'] == 'assistant' -%}"
    "{% generation %}{{- item['text'] -}}{% endgeneration %}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}{{- eos_token -}}{% endgeneration %}"
    "{%- else -%}{{- ' ' -}}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)
"""llava-1.5 style: ``USER: <image>\\n{question} ASSISTANT: {answer}</s>``, one ``<image>`` per image item."""


@dataclass
class TrainSettings:
    """Everything that determines a training run."""

    seed: int = 0
    steps: int = 1100  # LLaVA steps (vision tower frozen)
    batch_size: int = 32
    length_groups: int = 2  # forward passes per batch, by length (less padding; the same loss)
    pool_size: int = 6000  # one-image training chats
    turns: int = 4  # questions per chat
    pair_pool_size: int = 1500  # two-image chats; each is also trained with its images swapped
    eval_size: int = 200
    pair_eval_size: int = 150
    # At 2e-3 some runs (other seeds, depths, auxiliary losses) stall for hundreds of steps in a state that no
    # longer reads colour: answer loss ~0.4 from step ~150, captions ~14%. 1e-3 avoided it in every trial.
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    vary_case_p: float = 0.1  # lower-case the first letter / drop the final mark of a training question
    vision_steps: int = 1500  # dense patch-label warm-up of the vision tower, before the LLaVA steps
    vision_batch_size: int = 64
    vision_pool_size: int = 16000
    vision_lr: float = 3e-3
    background_weight: float = 0.1  # weight of background patches in the warm-up loss
    shape_weight: float = 1.0  # of the shape target in the warm-up loss (shape is the hardest patch target)
    text_hidden: int = 128
    text_layers: int = 4
    # Rotary position embeddings. Lookups ("what colour is the triangle?") need attention that matches the
    # question's words with image patches 20-150 positions back, and Llama's usual base of 10,000 turns most
    # rotary dimensions too fast over that distance for content to match (side questions stayed at chance);
    # Llama 3's scheme keeps the fast dimensions (local word order, which captions need) and slows the others
    # down by ``rope_factor`` so they carry content. A plain large base (1e6) learns lookups faster but
    # captions and "what is on the left?" much slower (measured with the training script, see the model card).
    rope_type: str = "llama3"
    rope_theta: float = 1e4
    rope_factor: float = 64.0  # llama3: how much slower the slow dimensions turn
    rope_window: int = 32  # llama3: wavelengths below this many tokens keep turning
    weight_answers_equally: bool = False  # True: a one-word answer weighs as much as a caption (learnt slower)
    lookup_steps: int = 0  # first steps drawn only from chats that open with a lookup (colour, shape, side)
    # Attention supervision. A lookup ("is the red circle on the left or the right?") must find the named object
    # among 64-128 visual tokens and read its attribute back at the answer; left to the answer loss alone the
    # side and which-image lookups stayed at chance even on training data (the model card has the measurements).
    # So one head of one layer is taught to attend from the answer position (``ASSISTANT:``) of every question
    # that names an object to that object's visual tokens (loss: -log of that attention mass), and a linear probe
    # teaches every visual token which image it belongs to (first, second, ...) after ``image_index_layer``
    # layers; the probe is dropped. Tried and dropped: the same kind of supervision for captions and "what is on
    # the left?" (each object as the answer names it), on this head or another: side questions fell to 39-54%.
    attend_weight: float = 0.2  # of the attention loss (0: none)
    attend_layer: int = 2  # of text_layers; the last layer is too late for a readout (side 46% there)
    attend_head: int = 2
    attend_turns: int = 4  # questions of each chat supervised; 1 (the first only) left which-image at 58%
    image_index_weight: float = 0.1  # of the probe's cross-entropy (0: none)
    image_index_layer: int = 1
    vision_feature_layer: int = -1
    num_threads: int = 2  # the weights depend on it (float summation order); the committed fixture used 2
    log_every: int = 100


# --- tokenizer, processor, model ---------------------------------------------------------------


def tokenizer_corpus() -> list[str]:
    """Every phrasing, also lower-cased and as it follows an image (``\\nWhat ...``), plus the chat words."""
    texts = list(corpus()) + list(pair_corpus()) + ["USER: ASSISTANT: SYSTEM:"]
    texts += [t[0].lower() + t[1:] for t in texts]
    return texts + ["\n" + t for t in texts]


def _learn_bpe(texts: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Tokens and merges of a BPE with Llama's ``▁`` word marker, big enough to keep every corpus word whole."""
    learner = Tokenizer(BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    alphabet = sorted(set("".join(texts)) | set(string.ascii_letters + string.digits + string.punctuation) | {"▁"})
    trainer = BpeTrainer(vocab_size=4000, min_frequency=1, initial_alphabet=alphabet, show_progress=False)
    learner.train_from_iterator(texts, trainer=trainer)
    model = json.loads(learner.to_str())["model"]
    tokens = [tok for tok, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else (m[0], m[1]) for m in model["merges"]]
    return tokens, merges  # type: ignore[return-value]


def build_tokenizer(texts: Iterable[str] | None = None) -> LlamaTokenizer:
    """A real :class:`transformers.LlamaTokenizer`: BPE with byte fallback, ``<s>`` added, left padding.

    Ids: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, the 256 byte tokens, the learnt pieces, then ``<pad>``
    and ``<image>``. Text outside the corpus falls back to smaller pieces and bytes, never fails.
    """
    tokens, merges = _learn_bpe(list(texts) if texts is not None else tokenizer_corpus())
    base = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    vocab = {tok: i for i, tok in enumerate(base)}
    for tok in tokens:
        vocab.setdefault(tok, len(vocab))
    return LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        legacy=False,
        add_bos_token=True,
        add_eos_token=False,
        model_max_length=256,
    )


def make_processor(tokenizer: LlamaTokenizer) -> LlavaProcessor:
    """The tiny CLIP's image processor (64 px) and ``tokenizer``; ``<image>`` expands to 64 tokens."""
    image_processor = CLIPImageProcessorPil.from_pretrained(TINY_CLIP)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def rope_parameters(settings: TrainSettings) -> dict:
    """The Llama ``rope_parameters`` of the text model."""
    rope: dict = {"rope_type": settings.rope_type, "rope_theta": settings.rope_theta}
    if settings.rope_type == "llama3":
        rope.update(
            factor=settings.rope_factor,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=settings.rope_window,
        )
    return rope


def make_config(
    tokenizer: LlamaTokenizer, vision_config: transformers.CLIPVisionConfig, settings: TrainSettings
) -> LlavaConfig:
    """LLaVA-1.5 layout: the CLIP vision tower, a 2-layer GELU projector and a tiny Llama."""
    hidden = settings.text_hidden
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=settings.text_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_parameters=rope_parameters(settings),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    image_tokens = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=image_tokens,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=settings.vision_feature_layer,
        tie_word_embeddings=False,
    )
    config.name_or_path = FIXTURE_NAME
    return config


def build_model(tokenizer: LlamaTokenizer, settings: TrainSettings) -> LlavaForConditionalGeneration:
    """A fresh LLaVA whose vision tower holds the trained tiny CLIP's vision weights."""
    clip = CLIPModel.from_pretrained(TINY_CLIP)
    model = LlavaForConditionalGeneration(make_config(tokenizer, clip.config.vision_config, settings))
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=24,
    )
    return model


# --- data ----------------------------------------------------------------------------------------


def chat_messages(qa: QA) -> list[dict]:
    """The user turn of ``qa``: its images in order, then the question."""
    content: list[dict] = [{"type": "image"} for _ in qa.images]
    content.append({"type": "text", "text": qa.question})
    return [{"role": "user", "content": content}]


def dialogue_messages(dialogue: Sequence[QA]) -> list[dict]:
    """A chat about the images of the first question: question, answer, next question, ..."""
    messages: list[dict] = []
    for turn, qa in enumerate(dialogue):
        user = chat_messages(qa)[0]
        if turn:
            user["content"] = user["content"][-1:]  # the images come with the first question only
        messages += [user, {"role": "assistant", "content": [{"type": "text", "text": qa.answer}]}]
    return messages


def vary_question(question: str, rng: random.Random, p: float) -> str:
    """With probability ``p`` each: lower-case the first letter, drop the final ``?``/``.``."""
    if rng.random() < p:
        question = question[0].lower() + question[1:]
    if rng.random() < p and question[-1] in "?.":
        question = question[:-1]
    return question


# Lookups by name (find the object a question names, then read another of its attributes) are the
# slowest to learn and the easiest to shortcut from earlier answers ("not the one already named"),
# so they open most chats and are never follow-ups; follow-ups read objects by place or count them.
LOOKUP_KINDS: tuple[str, ...] = ("color", "shape", "side")
FIRST_KINDS: tuple[str, ...] = KINDS + 2 * LOOKUP_KINDS
FOLLOW_UP_KINDS: tuple[str, ...] = ("count", "position", "caption", "caption_ko")


def make_dialogue(rng: np.random.Generator, first_kind: str, turns: int) -> list[QA]:
    """A question of ``first_kind``, then up to ``turns - 1`` follow-ups of other kinds about the same scene."""
    first = make_qa(rng, first_kind)
    dialogue = [first]
    for kind in FOLLOW_UP_KINDS:
        qa = ask(rng, first.scenes[0], kind, first.images[0]) if kind != first_kind else None
        if qa is not None and len(dialogue) < turns:
            dialogue.append(qa)
    return dialogue


def make_pair_dialogue(rng: np.random.Generator, first_kind: str, turns: int) -> list[QA]:
    """A two-image question of ``first_kind``, then the other two-image kinds that fit the same pair."""
    first = make_pair_qa(rng, first_kind)
    dialogue = [first]
    for kind in PAIR_KINDS:
        qa = ask_pair(rng, first.scenes, kind, first.images) if kind != first_kind else None
        if qa is not None and len(dialogue) < turns:
            dialogue.append(qa)
    return dialogue


@dataclass
class Example:
    """One training sequence: ids, labels (-100 outside the answers), the pixels of its images, and the
    supervision targets: ``(turn, answer position, visual tokens of the object its question names)`` for
    every question that names one (``attend_targets``), and the image of every visual token (``image_index``:
    0, 1, ...; -100 for text)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor
    attend_targets: list[tuple[int, int, torch.Tensor]] = field(default_factory=list)
    image_index: torch.Tensor | None = None


def named_object(qa: QA) -> tuple[str | None, str | None] | None:
    """``(colour, shape)`` of the object ``qa`` asks about (``None``: any colour / any shape); ``None`` for
    questions that name no object (captions, counts, places)."""
    question = qa.question.lower()
    if qa.kind == "color":
        return None, next(s for s in SHAPES if s in question)
    if qa.kind == "shape":
        return next(c for c in COLORS if c in question), None
    if qa.kind in ("side", "which_image"):
        return next((c, s) for c in COLORS for s in SHAPES if f"{c} {s}" in question)
    return None


def object_patches(targets: torch.Tensor, color: str | None, shape: str | None) -> torch.Tensor:
    """Which patches (raster order) show an object of ``color`` and ``shape`` (``None``: any), given a scene's
    :func:`patch_targets`."""
    mask = targets[:, 0] > 0
    if color is not None:
        mask &= targets[:, 0] == list(COLORS).index(color) + 1
    if shape is not None:
        mask &= targets[:, 1] == SHAPES.index(shape) + 1
    return mask


def named_visual_tokens(
    input_ids: torch.Tensor, image_token_id: int, qa: QA, targets: Sequence[torch.Tensor]
) -> torch.Tensor | None:
    """Which tokens of ``input_ids`` are visual tokens of the object ``qa`` names, over all its images
    (``targets``: the :func:`patch_targets` of ``qa.scenes``)."""
    named = named_object(qa)
    if named is None:
        return None
    mask = torch.zeros(len(input_ids), dtype=torch.bool)
    mask[input_ids == image_token_id] = torch.cat([object_patches(t, *named) for t in targets])
    return mask


def attend_targets(
    input_ids: torch.Tensor, assistant_id: int, image_token_id: int, dialogue: Sequence[QA]
) -> list[tuple[int, int, torch.Tensor]]:
    """``(turn, position of its ASSISTANT: token, visual tokens of the named object)`` for every turn of
    ``dialogue`` whose question names an object."""
    answers = (input_ids == assistant_id).nonzero().squeeze(1).tolist()
    scenes = {id(scene): scene for qa in dialogue for scene in qa.scenes}  # the turns share their scenes
    patches = {key: patch_targets(scene) for key, scene in scenes.items()}
    targets = []
    for turn, (qa, answer_at) in enumerate(zip(dialogue, answers)):
        named = named_visual_tokens(input_ids, image_token_id, qa, [patches[id(scene)] for scene in qa.scenes])
        if named is not None:
            targets.append((turn, answer_at, named))
    return targets


def image_indices(input_ids: torch.Tensor, image_token_id: int, n_images: int) -> torch.Tensor:
    """The image (0, 1, ...) of every visual token of ``input_ids``; -100 for text tokens."""
    index = torch.full_like(input_ids, -100)
    visual = input_ids == image_token_id
    n_visual = int(visual.sum())
    index[visual] = torch.arange(n_visual) // (n_visual // n_images)
    return index


def answer_labels(input_ids: torch.Tensor, assistant_id: int, eos_id: int) -> torch.Tensor:
    """``input_ids`` where they belong to an answer (after ``ASSISTANT:`` up to and with ``</s>``), else -100."""
    labels = torch.full_like(input_ids, -100)
    inside = False
    for i, token in enumerate(input_ids.tolist()):
        if inside:
            labels[i] = token
            inside = token != eos_id
        elif token == assistant_id:
            inside = True
    return labels


def encode_dialogues(processor: LlavaProcessor, dialogues: Sequence[Sequence[QA]], chunk: int = 256) -> list[Example]:
    """Whole chats through the chat template and the processor, exactly as a prompt is at inference."""
    tokenizer = processor.tokenizer
    assistant_id = tokenizer.convert_tokens_to_ids("▁ASSISTANT:")
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    examples: list[Example] = []
    for start in range(0, len(dialogues), chunk):
        part = dialogues[start : start + chunk]
        texts = [processor.apply_chat_template(dialogue_messages(d)) for d in part]
        images = [img for d in part for img in d[0].images]
        enc = processor(images=images, text=texts, padding=True, return_tensors="pt")
        image_at = 0
        for row, dialogue in enumerate(part):
            ids = enc["input_ids"][row][enc["attention_mask"][row].bool()]
            n_images = len(dialogue[0].images)
            pixels = enc["pixel_values"][image_at : image_at + n_images]
            image_at += n_images
            examples.append(
                Example(
                    ids,
                    answer_labels(ids, assistant_id, tokenizer.eos_token_id),
                    pixels,
                    attend_targets(ids, assistant_id, image_token_id, dialogue),
                    image_index=image_indices(ids, image_token_id, n_images),
                )
            )
    return examples


def build_dialogues(settings: TrainSettings) -> list[list[QA]]:
    """The seeded training chats: one-image chats (first kinds taken in turn), then two-image chats each
    followed by its twin with the images swapped (so only the order tells them apart); some questions re-cased."""
    rng = np.random.default_rng(settings.seed)
    case_rng = random.Random(settings.seed)
    dialogues = [
        make_dialogue(rng, FIRST_KINDS[i % len(FIRST_KINDS)], settings.turns) for i in range(settings.pool_size)
    ]
    pair_rng = np.random.default_rng([settings.seed, 2])
    for i in range(settings.pair_pool_size):
        pair = make_pair_dialogue(pair_rng, PAIR_KINDS[i % len(PAIR_KINDS)], settings.turns)
        dialogues += [pair, [swap_pair(qa) for qa in pair]]
    for qa in (qa for d in dialogues for qa in d):
        if qa.lang == "en":
            qa.question = vary_question(qa.question, case_rng, settings.vary_case_p)
    return dialogues


def answer_weights(labels: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Per-token loss weights that give every answer the same total weight (1 / its length in tokens).

    A caption is fifteen tokens and a colour one or two; with a plain token average the captions
    would take nearly all the gradient and the one-word lookups would be learnt last.
    """
    weights = torch.zeros(labels.shape, dtype=torch.float32)
    start = None
    for i, token in enumerate(labels.tolist()):
        if token == -100:
            continue
        start = i if start is None else start
        if token == eos_id:
            weights[start : i + 1] = 1.0 / (i + 1 - start)
            start = None
    return weights


def answer_token_losses(
    model: LlavaForConditionalGeneration, last_hidden: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Next-token cross-entropy at every answer token (where ``labels`` is not -100), in row order; the
    language-model head runs only there, not over the image and question tokens."""
    targets = labels[:, 1:]
    answer = targets != -100
    logits = model.lm_head(last_hidden[:, :-1][answer]).float()
    return F.cross_entropy(logits, targets[answer], reduction="none")


def length_groups(examples: Sequence[Example], groups: int) -> list[list[Example]]:
    """``examples`` sorted by length and cut into ``groups`` parts of (nearly) equal size, so that each part
    pads to a width close to its own lengths (one-image chats are ~115 tokens, two-image ones ~165)."""
    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    bounds = np.linspace(0, len(ordered), min(groups, len(ordered)) + 1).round().astype(int)
    return [ordered[start:end] for start, end in pairwise(bounds)]


def collate(examples: Sequence[Example], pad_id: int, attend_turns: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded batch (positions then start at 0 as in left-padded generation), with the supervision
    targets of the first ``attend_turns`` turns, one per target: ``attend_row``, ``attend_from`` (its answer
    position) and ``named_mask`` (batch width); and ``image_index`` (-100 for text and padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    image_index = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    attend_row, attend_from, named_masks = [], [], []
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n], labels[row, :n], mask[row, :n] = e.input_ids, e.labels, 1
        if e.image_index is not None:
            image_index[row, :n] = e.image_index
        for turn, answer_at, named in e.attend_targets:
            if turn < attend_turns:
                attend_row.append(row), attend_from.append(answer_at)
                named_masks.append(F.pad(named, (0, width - n)))
    pixels = torch.cat([e.pixel_values for e in examples])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "pixel_values": pixels,
        "attend_row": torch.tensor(attend_row, dtype=torch.long),
        "attend_from": torch.tensor(attend_from, dtype=torch.long),
        "named_mask": torch.stack(named_masks) if named_masks else torch.zeros((0, width), dtype=torch.bool),
        "image_index": image_index,
    }


def attention_mass_losses(attention: torch.Tensor, named_mask: torch.Tensor) -> torch.Tensor:
    """``-log`` of the attention mass (``(targets, keys)``) on the ``named_mask`` keys, one per target."""
    mass = (attention * named_mask).sum(-1)
    return -torch.log(mass.clamp(min=1e-6))


def head_attention(
    model: LlavaForConditionalGeneration,
    layer_input: torch.Tensor,
    layer: int,
    head: int,
    rows: torch.Tensor,
    queries: torch.Tensor,
) -> torch.Tensor:
    """Attention weights ``(len(rows), keys)`` of ``head`` of language-model ``layer`` from position
    ``queries[i]`` of batch row ``rows[i]``, recomputed from the layer's input (``hidden_states[layer]``).

    They equal what eager attention returns, so the model itself can run with SDPA while one head is
    supervised; positions run from 0 in every row (right padding), keys after the query are masked.
    """
    language_model = model.model.language_model
    attention = language_model.layers[layer].self_attn
    x = language_model.layers[layer].input_layernorm(layer_input[rows])
    n, seq, _ = x.shape
    shape = (n, seq, -1, attention.head_dim)
    q = attention.q_proj(x).view(shape)[:, :, head].unsqueeze(1)  # (n, 1, seq, head_dim)
    k = attention.k_proj(x).view(shape)[:, :, head // attention.num_key_value_groups].unsqueeze(1)
    cos, sin = language_model.rotary_emb(x, torch.arange(seq).expand(n, seq))
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    scores = (k[:, 0] @ q[torch.arange(n), 0, queries].unsqueeze(-1)).squeeze(-1) * attention.scaling
    scores = scores.masked_fill(torch.arange(seq) > queries.unsqueeze(1), float("-inf"))
    return F.softmax(scores, dim=-1, dtype=torch.float32)


def image_index_losses(probe: torch.nn.Linear, hidden: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``probe`` reading every visual token's image (first, second, ...) from ``hidden``,
    one per visual token."""
    visual = image_index >= 0
    return F.cross_entropy(probe(hidden[visual]), image_index[visual], reduction="none")


# --- vision warm-up -----------------------------------------------------------------------------

# Per-patch targets: colour and shape of the object under the patch, its place from the left
# (0 = background for all three) and the number of objects in the image.
TARGET_SIZES: tuple[int, ...] = (len(COLORS) + 1, len(SHAPES) + 1, 4, 3)
MIN_COVERAGE = 0.25  # a patch belongs to an object when the object covers at least this fraction of it


def object_coverage(obj: SceneObject, image_size: int) -> np.ndarray:
    """Fraction of every patch covered by ``obj``, as a (rows, columns) grid."""
    mask = render_scene([replace(obj, rgb=(255, 255, 255))], image_size, Background(color=(0, 0, 0)))
    alpha = np.asarray(mask, dtype=np.float32)[..., 0] / 255.0
    grid = image_size // PATCH_SIZE
    return alpha.reshape(grid, PATCH_SIZE, grid, PATCH_SIZE).mean(axis=(1, 3))


def patch_targets(scene: Scene) -> torch.Tensor:
    """``(patches, 4)`` class ids in the vision tower's raster order: colour, shape, place, count."""
    n_patches = (scene.size // PATCH_SIZE) ** 2
    targets = torch.zeros((n_patches, len(TARGET_SIZES)), dtype=torch.long)
    targets[:, 3] = len(scene.objects) - 1
    best = np.zeros(n_patches, dtype=np.float32)
    for place, obj in enumerate(scene.left_to_right()):
        cover = object_coverage(obj, scene.size).reshape(-1)
        take = torch.from_numpy((cover >= MIN_COVERAGE) & (cover > best))
        targets[take, 0] = list(COLORS).index(obj.color) + 1
        targets[take, 1] = SHAPES.index(obj.shape) + 1
        targets[take, 2] = place + 1
        best = np.maximum(best, cover)
    return targets


def images_to_pixels(images: Sequence[Image.Image], processor: LlavaProcessor) -> torch.Tensor:
    """``pixel_values`` of 64 px images: the image processor's rescale and normalise (resize and crop are no-ops)."""
    image_processor = processor.image_processor
    size = image_processor.crop_size["height"]
    if any(img.size != (size, size) for img in images):
        raise ValueError(f"Expected {size}x{size} px images.")
    array = torch.from_numpy(np.stack([np.asarray(img.convert("RGB")) for img in images])).permute(0, 3, 1, 2)
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return (array.float() * image_processor.rescale_factor - mean) / std


def vision_pool(processor: LlavaProcessor, settings: TrainSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh seeded scenes for the warm-up: pixels and patch targets."""
    rng = np.random.default_rng([settings.seed, 1])
    scenes = [sample_scene(rng) for _ in range(settings.vision_pool_size)]
    pixels = images_to_pixels([scene.render() for scene in scenes], processor)
    return pixels, torch.stack([patch_targets(scene) for scene in scenes])


def _patch_loss(
    logits: torch.Tensor, targets: torch.Tensor, background_weight: float, shape_weight: float = 1.0
) -> torch.Tensor:
    """Cross-entropy of every target over every patch, background patches down-weighted, shape weighted up."""
    weight = torch.where(targets[..., 0] > 0, 1.0, background_weight).reshape(-1)
    target_weights = [1.0] * len(TARGET_SIZES)
    target_weights[1] = shape_weight
    loss = torch.zeros(())
    for i, part in enumerate(logits.split(TARGET_SIZES, dim=-1)):
        ce = F.cross_entropy(part.reshape(-1, TARGET_SIZES[i]), targets[..., i].reshape(-1), reduction="none")
        loss = loss + target_weights[i] * (ce * weight).sum() / weight.sum()
    return loss


def warm_up_vision(
    model: LlavaForConditionalGeneration, pixels: torch.Tensor, targets: torch.Tensor, settings: TrainSettings
) -> list[float]:
    """Teach the vision tower's patch features what object they show and where it stands.

    The tiny CLIP only learnt to name one big object from its CLS token; here linear heads on the
    patches of the feature layer the projector reads learn colour, shape, place from the left and
    object count for every patch. The heads are thrown away afterwards; returns the logged losses.
    """
    generator = seed_everything(settings.seed)
    tower = model.model.vision_tower
    heads = torch.nn.Linear(tower.config.hidden_size, sum(TARGET_SIZES))
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=settings.vision_lr)
    warmup = max(settings.vision_steps // 10, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, settings.vision_steps, warmup))
    tower.train()
    losses: list[float] = []
    for step in range(settings.vision_steps):
        pick = torch.randint(len(pixels), (settings.vision_batch_size,), generator=generator)
        hidden = tower(pixels[pick], output_hidden_states=True).hidden_states[settings.vision_feature_layer]
        loss = _patch_loss(heads(hidden[:, 1:]), targets[pick], settings.background_weight, settings.shape_weight)
        optimizer_step(loss, optimizer, scheduler)
        if settings.log_every and (step % settings.log_every == 0 or step == settings.vision_steps - 1):
            losses.append(round(loss.item(), 4))
            print(f"vision step {step:5d}  loss {loss.item():.4f}", flush=True)
    tower.eval()
    return losses


# --- training ------------------------------------------------------------------------------------


def make_optimizer(
    model: LlavaForConditionalGeneration, settings: TrainSettings, probe: torch.nn.Module
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (projector, language model and the image-index probe); no decay on
    embeddings, norms, biases."""
    trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    trainable += [(f"probe.{name}", param) for name, param in probe.named_parameters()]
    return make_adamw(trainable, settings.lr, settings.weight_decay)


def needs_hidden_states(settings: TrainSettings) -> bool:
    """Whether the training forward must return the hidden states (an auxiliary loss reads them)."""
    return settings.attend_weight > 0 or settings.image_index_weight > 0


def batch_loss_sums(
    model: LlavaForConditionalGeneration,
    probe: torch.nn.Linear,
    batch: dict[str, torch.Tensor],
    settings: TrainSettings,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{part: (sum, count)}`` over one collated batch: ``answer`` (next-token loss on the answers, each
    token weighted), ``attend`` and ``image`` (the auxiliary losses, when their weight is not 0)."""
    out = model.model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        pixel_values=batch["pixel_values"],
        output_hidden_states=needs_hidden_states(settings),
    )
    labels = batch["labels"]
    if settings.weight_answers_equally:
        weights = torch.stack([answer_weights(row, model.config.text_config.eos_token_id) for row in labels])
    else:
        weights = (labels != -100).float()
    weights = weights[:, 1:][labels[:, 1:] != -100]
    answer = answer_token_losses(model, out.last_hidden_state, labels)
    sums = {"answer": ((answer * weights).sum(), weights.sum())}
    if settings.attend_weight > 0:
        layer, head, rows = settings.attend_layer, settings.attend_head, batch["attend_row"]
        attend = torch.zeros(0)
        if len(rows):
            attention = head_attention(model, out.hidden_states[layer], layer, head, rows, batch["attend_from"])
            attend = attention_mass_losses(attention, batch["named_mask"])
        sums["attend"] = (attend.sum(), torch.tensor(float(len(attend))))
    if settings.image_index_weight > 0:
        image = image_index_losses(probe, out.hidden_states[settings.image_index_layer], batch["image_index"])
        sums["image"] = (image.sum(), torch.tensor(float(len(image))))
    return sums


def training_loss(
    model: LlavaForConditionalGeneration,
    probe: torch.nn.Linear,
    batches: Sequence[dict[str, torch.Tensor]],
    settings: TrainSettings,
) -> dict[str, torch.Tensor]:
    """The weighted parts of the loss of one training batch given as ``batches`` (its length groups): each
    part is its mean over all of them, exactly as if they were one batch."""
    totals: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        for name, (total, count) in batch_loss_sums(model, probe, batch, settings).items():
            totals.setdefault(name, []).append(torch.stack([total, count]))
    weight = {"answer": 1.0, "attend": settings.attend_weight, "image": settings.image_index_weight}
    parts = {}
    for name, pieces in totals.items():
        total, count = torch.stack(pieces).sum(0)
        parts[name] = weight[name] * total / count.clamp(min=1e-6)
    return parts


def train_model(
    model: LlavaForConditionalGeneration,
    pool: Sequence[Example],
    settings: TrainSettings,
    lookups: Sequence[int] = (),
) -> list[float]:
    """Next-token loss on the answers of random pool batches, plus the attention supervision; returns the
    logged losses (the sum of the parts).

    The first ``settings.lookup_steps`` batches come only from the chats at ``lookups`` (those that
    open with a lookup question).
    """
    generator = seed_everything(settings.seed)
    pad_id = model.config.text_config.pad_token_id
    model.model.vision_tower.requires_grad_(False)  # already taught by warm_up_vision
    probe = torch.nn.Linear(model.config.text_config.hidden_size, MAX_IMAGES)  # dropped after training
    optimizer = make_optimizer(model, settings, probe)
    clipped = [p for p in [*model.parameters(), *probe.parameters()] if p.requires_grad]
    schedule = lambda s: lr_factor(s, settings.steps, settings.warmup_steps)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    model.model.vision_tower.eval()
    losses: list[float] = []
    for step in range(settings.steps):
        source = lookups if step < settings.lookup_steps and lookups else range(len(pool))
        pick = [source[i] for i in torch.randint(len(source), (settings.batch_size,), generator=generator).tolist()]
        groups = length_groups([pool[i] for i in pick], settings.length_groups)
        batches = [collate(g, pad_id, settings.attend_turns) for g in groups]
        parts = training_loss(model, probe, batches, settings)
        loss = sum(parts.values())
        optimizer_step(loss, optimizer, scheduler, clip=clipped)
        if settings.log_every and (step % settings.log_every == 0 or step == settings.steps - 1):
            losses.append(round(loss.item(), 4))
            detail = "  ".join(f"{name} {part.item():.4f}" for name, part in parts.items())
            print(f"step {step:5d}  loss {loss.item():.4f}  ({detail})", flush=True)
    model.eval()
    return losses


# --- evaluation ----------------------------------------------------------------------------------


@torch.no_grad()
def answer_questions(
    model: LlavaForConditionalGeneration, processor: LlavaProcessor, items: Sequence[QA], batch_size: int = 50
) -> list[str]:
    """Greedy answers through the chat template and processor, left-padded batches."""
    answers: list[str] = []
    for start in range(0, len(items), batch_size):
        part = items[start : start + batch_size]
        prompts = [processor.apply_chat_template(chat_messages(qa), add_generation_prompt=True) for qa in part]
        images = [img for qa in part for img in qa.images]
        inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        answers += [a.strip() for a in processor.batch_decode(new, skip_special_tokens=True)]
    return answers


def accuracy_by_kind(items: Sequence[QA], answers: Sequence[str]) -> dict[str, float]:
    """Exact-match accuracy per kind and ``"overall"``."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for qa, answer in zip(items, answers):
        hits[qa.kind].append(answer == qa.answer)
        hits["overall"].append(answer == qa.answer)
    return {kind: round(sum(v) / len(v), 4) for kind, v in hits.items()}


def eval_set(settings: TrainSettings) -> list[QA]:
    """Held-out questions: every kind in turn, seed + 1000."""
    return make_qa_set(settings.eval_size, settings.seed + EVAL_SEED_OFFSET)


def pair_eval_set(settings: TrainSettings) -> list[QA]:
    """Held-out two-image questions: every two-image kind in turn, seed + 1000."""
    return make_pair_qa_set(settings.pair_eval_size, settings.seed + EVAL_SEED_OFFSET)


def load_4bit(path: str | Path) -> LlavaForConditionalGeneration:
    """The saved folder in 4-bit NF4 (double quantisation, float32 compute) on the CPU."""
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    from mllm_nb.loading import _avoid_packed_cpu_kernel

    model = LlavaForConditionalGeneration.from_pretrained(path, quantization_config=quantization, device_map="cpu")
    _avoid_packed_cpu_kernel(model)  # bitsandbytes' packed CPU kernel can't take the 96-wide vision layers
    return model


def evaluate(model: LlavaForConditionalGeneration, processor: LlavaProcessor, items: Sequence[QA]) -> dict[str, float]:
    """Exact-match accuracy of greedy answers on ``items``, per kind and overall."""
    return accuracy_by_kind(items, answer_questions(model, processor, items))


# --- saving --------------------------------------------------------------------------------------


def _examples_table() -> str:
    """One example question and answer of every kind (seed 7), one-image kinds then two-image kinds, as Markdown rows."""
    rows = []
    for kind in KINDS:
        qa = make_qa(np.random.default_rng(7), kind)
        rows.append(f"| `{kind}` | {qa.question} | {qa.answer} |")
    for kind in PAIR_KINDS:
        qa = make_pair_qa(np.random.default_rng(7), kind)
        rows.append(f"| `{kind}` (two images) | {qa.question} | {qa.answer} |")
    return "\n".join(rows)


def _accuracy_table(metrics: dict, prefix: str = "", kinds: Sequence[str] = KINDS) -> str:
    f32, q4 = metrics.get(f"{prefix}accuracy_float32") or {}, metrics.get(f"{prefix}accuracy_nf4") or {}
    rows = []
    for kind in ("overall", *kinds):
        four_bit = f"{q4[kind]:.1%}" if kind in q4 else "n/a"
        rows.append(f"| {kind} | {f32.get(kind, 0.0):.1%} | {four_bit} |")
    return "\n".join(rows)


def _rope_note(settings: TrainSettings) -> str:
    if settings.rope_type != "llama3":
        return ""
    return f"; dimensions with wavelengths over {settings.rope_window} tokens turn {settings.rope_factor:g}x slower"


def _supervision_note(settings: TrainSettings) -> str:
    notes = []
    if settings.attend_weight > 0:
        notes.append(
            f"head {settings.attend_head} of layer {settings.attend_layer} is taught to attend from the answer "
            f"position of every question that names an object (in the first {settings.attend_turns} turns of a chat) "
            f"to that object's visual tokens (weight {settings.attend_weight:g})"
        )
    if settings.image_index_weight > 0:
        notes.append(
            f"a linear probe, dropped afterwards, teaches every visual token which image it belongs to after "
            f"{settings.image_index_layer} layer(s) (weight {settings.image_index_weight:g})"
        )
    return f", plus attention supervision: {'; '.join(notes)}" if notes else " only"


def model_card(metrics: dict, settings: TrainSettings) -> str:
    """The README.md written next to the weights."""
    return f"""# tiny-llava-shapes (mllm_nb demo fixture)

**Not a real model; demo mode only.** A {metrics["parameters"] / 1e6:.2f} M-parameter
`transformers.LlavaForConditionalGeneration` trained on questions about synthetic images of
coloured shapes (`mllm_nb/demo/scene_qa.py`). In demo mode LLaVA-style Hub ids can resolve to this
folder, so the notebooks run offline and give answers that can be checked. It knows nothing about
real photos and cannot hold a conversation; anything off its question kinds gets a shape-ish answer.

- Vision tower: `CLIPVisionModel` from the tiny CLIP fixture (64x64 px, 8 px patches, 3 layers x 96 d),
  fine-tuned here; features of layer {settings.vision_feature_layer}, CLS dropped (`default`), so one image
  is 64 `<image>` tokens.
- Vision warm-up: {settings.vision_steps} steps in which linear heads on every patch feature learn the colour,
  shape and place (from the left) of the object under the patch and the object count; the heads are dropped.
- Projector: LLaVA's 2-layer GELU MLP. Language model: Llama, {settings.text_layers} layers x
  {settings.text_hidden} d, 4 heads, 256 positions; rotary embeddings `{settings.rope_type}` (base
  {settings.rope_theta:g}{_rope_note(settings)}), so attention can match a question's words with image patches far back.
- Tokenizer: `LlamaTokenizer` (BPE with byte fallback, {metrics["vocab_size"]} tokens incl. `<pad>` and `<image>`),
  left padding. Prompt (llava-1.5 style chat template): `USER: <image>\\n{{question}} ASSISTANT:`;
  the answer ends with `</s>`.
- Training: {settings.steps} steps of batch {settings.batch_size} over {settings.pool_size} seeded one-image chats
  and {settings.pair_pool_size} two-image chats, each also with its images swapped (seed {settings.seed}), loss on
  the answer tokens{_supervision_note(settings)}; {metrics["train_seconds"]:.0f} s on {settings.num_threads} CPU
  thread{"s" if settings.num_threads > 1 else ""}, data generation included.

Why the attention supervision: trained on the answers alone, the lookups that need the named object's place
("is the red circle on the left or the right?") stayed at chance even on training questions (52%); no head
of the answer position separated the named object from the others, and linear probes found the side in no
layer's hidden state at the answer. With one head of layer 2 supervised as above, side questions reached
89-93% on held-out scenes with seed 0 and 61-75% with seed 1 (the same head in the last layer: 46%, too late to be
read). Measured while writing this script; the runs also showed how much the result moves with the seed and the
thread count (one-image exact match 69-91% for this recipe and its first-question-only variant; seed 1 of this
one: 69%, with captions and places failing), so other seeds can land well below the figures above.

Question kinds (one phrasing each shown; answers have exactly one form):

| kind | question | answer |
|---|---|---|
{_examples_table()}

Exact-match accuracy of greedy answers on {metrics["eval_items"]} held-out questions (seed {metrics["eval_seed"]}),
float32 and loaded in 4-bit NF4 on the CPU (bitsandbytes, double quantisation, float32 compute):

| kind | float32 | 4-bit NF4 |
|---|---|---|
{_accuracy_table(metrics)}

Two-image questions (`USER: <image>\\n<image>\\n{{question}} ASSISTANT:`), {metrics.get("pair_eval_items", 0)} held-out
pairs (seed {metrics["eval_seed"]}):

| kind | float32 | 4-bit NF4 |
|---|---|---|
{_accuracy_table(metrics, "pair_", PAIR_KINDS)}

Regenerate (seeded: the same machine, thread count and library versions give the same weights; other CPUs,
thread counts or versions differ by float rounding, which can move the accuracies by several points):

```
python -m mllm_nb.demo.train_llava --seed {settings.seed} --steps {settings.steps}
```
"""


def save_fixture(
    out: Path, model: LlavaForConditionalGeneration, processor: LlavaProcessor, metrics: dict, settings: TrainSettings
) -> None:
    """Write weights (safetensors), processor, tokenizer, generation config, metrics and the model card."""
    write_fixture(out, model, processor, metrics, model_card(metrics, settings))


def train(out: str | Path = DEFAULT_OUT, settings: TrainSettings | None = None, quantized_eval: bool = True) -> dict:
    """Build tokenizer and model, train, evaluate (float32, then 4-bit), save to ``out``; return the metrics."""
    settings = settings or TrainSettings()
    with torch_threads(settings.num_threads):
        started = time.perf_counter()
        seed_everything(settings.seed)
        tokenizer = build_tokenizer()
        processor = make_processor(tokenizer)
        model = build_model(tokenizer, settings)
        dialogues = build_dialogues(settings)
        pool = encode_dialogues(processor, dialogues)
        print(f"{len(pool)} training chats in {time.perf_counter() - started:.0f} s", flush=True)
        vision_losses = warm_up_vision(model, *vision_pool(processor, settings), settings)
        print(f"vision warm-up done at {time.perf_counter() - started:.0f} s", flush=True)
        lookups = [i for i, dialogue in enumerate(dialogues) if dialogue[0].kind in LOOKUP_KINDS]
        losses = train_model(model, pool, settings, lookups)
        train_seconds = time.perf_counter() - started
        items, pairs = eval_set(settings), pair_eval_set(settings)
        metrics: dict = {"name": FIXTURE_NAME, **asdict(settings), "vocab_size": len(tokenizer)}
        metrics["parameters"] = sum(p.numel() for p in model.parameters())
        metrics["vision_losses"], metrics["losses"] = vision_losses, losses
        metrics["train_seconds"] = round(train_seconds, 1)  # data generation included
        metrics["eval_items"], metrics["eval_seed"] = len(items), settings.seed + EVAL_SEED_OFFSET
        metrics["accuracy_float32"] = evaluate(model, processor, items)
        metrics["pair_eval_items"] = len(pairs)
        metrics["pair_accuracy_float32"] = evaluate(model, processor, pairs)
        metrics["accuracy_nf4"] = metrics["pair_accuracy_nf4"] = None
        metrics["torch_version"] = torch.__version__
        metrics["transformers_version"] = transformers.__version__
        save_fixture(Path(out), model, processor, metrics, settings)
        if quantized_eval:
            quantized = load_4bit(out)
            metrics["accuracy_nf4"] = evaluate(quantized, processor, items)
            metrics["pair_accuracy_nf4"] = evaluate(quantized, processor, pairs)
            save_fixture(Path(out), model, processor, metrics, settings)
        return metrics


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    out, settings = settings_from_command_line(__doc__.splitlines()[0], TrainSettings(), DEFAULT_OUT, argv)
    metrics = train(out, settings)
    print("float32 exact match:", json.dumps(metrics["accuracy_float32"]))
    print("4-bit NF4 exact match:", json.dumps(metrics["accuracy_nf4"]))
    print(f"trained in {metrics['train_seconds']:.0f} s; saved to {out}")


if __name__ == "__main__":
    main()
