"""Train the tiny demo LLaVA (``transformers.LlavaForConditionalGeneration``) on questions about synthetic scenes.

``python -m mllm_nb.demo.train_llava [--out DIR] [--seed 0] [--steps N]`` regenerates the committed
fixture ``mllm_nb/demo/fixtures/tiny-llava`` in about 8 minutes on two CPU threads (490 s with the data,
then a minute of evaluation), the committed fixture's setting (``TrainSettings.num_threads``; other thread
counts give other weights). The vision tower starts from the tiny CLIP fixture; the projector and a small
Llama are learnt here. The folder loads like any Hub checkpoint (``AutoProcessor``,
``AutoModelForImageTextToText``, ``LlavaForConditionalGeneration``) and answers the questions of
:mod:`mllm_nb.demo.scene_qa`.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import string
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
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
from transformers.models.llama.modeling_llama import rotate_half

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
    object_phrase,
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
    color_name,
    render_scene,
)
from mllm_nb.demo.training import (
    deterministic_algorithms,
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
    steps: int = 800  # LLaVA steps (vision tower frozen)
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
    # Attention supervision: each step the model needs is taught directly, because left to the answer loss the
    # lookups stayed at chance or moved with the seed by 20 points (the model card has the measurements).
    # - Lookup: a question that names an object ("is the red circle on the left or the right?") must find it among
    #   64-128 visual tokens. One head of one layer is taught to attend from the answer position (``ASSISTANT:``)
    #   to that object's visual tokens (loss: -log of that attention mass).
    attend_weight: float = 0.2  # of the attention loss (0: none, and none of the supervision below but the probe)
    attend_layer: int = 2  # of text_layers; the last layer is too late for a readout (side 46% there)
    attend_head: int = 2
    attend_turns: int = 4  # questions of each chat supervised; 1 (the first only) left which-image at 58%
    # - Query: the lookup needs the named colour and shape at the answer position. Without help the shape reached
    #   it but the colour did not (linear probes: 98% / 40%, chance 25%), so the lookup mixed up objects of the
    #   same shape. One head of an earlier layer is taught to attend from the answer position to the question's
    #   colour and shape words, and dropped linear probes read both from the lookup layer's input there. The
    #   probes made the difference: without them seed 0 reached 81.5% one-image, with them 93.5%.
    route_weight: float = 0.2
    route_layer: int = 1
    route_head: int = 0
    query_weight: float = 0.1  # of the two probes' cross-entropy
    # - Image: a dropped linear probe teaches every visual token which image it belongs to (first, second, ...)
    #   after ``image_index_layer`` layers, and another reads the named object's image from the lookup head's
    #   output at the answer position of two-image questions ("which image shows the blue circle?").
    image_index_weight: float = 0.1  # (0: none)
    image_index_layer: int = 1
    carry_weight: float = 0.2
    # - Places: captions and "which object is in the middle?" read the objects left to right. Another head of the
    #   lookup layer is taught to attend, from just before each object's colour word in such an answer, to that
    #   object's visual tokens.
    describe_weight: float = 0.2
    describe_layer: int = 2
    describe_head: int = 1
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
    """One training sequence: ids, labels (-100 outside the answers), the pixels of its images (replaced by
    ``vision_features`` once cached), and the supervision targets: ``(turn, query position, key mask)`` for the
    lookup (``attend_targets``, with the named ``(colour, shape)`` in ``named_labels``), the question's words
    (``route_targets``) and the objects answers name (``describe_targets``), and the image of every visual
    token (``image_index``: 0, 1, ...; -100 for text)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None
    attend_targets: list[tuple[int, int, torch.Tensor]] = field(default_factory=list)
    image_index: torch.Tensor | None = None
    route_targets: list[tuple[int, int, torch.Tensor]] = field(default_factory=list)
    describe_targets: list[tuple[int, int, torch.Tensor]] = field(default_factory=list)
    named_labels: list[tuple[int, int]] = field(default_factory=list)  # per attend target: colour, shape (-100: any)
    vision_features: torch.Tensor | None = None  # the frozen tower's features of its images, once cached


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


def attribute_word_ids(tokenizer: LlamaTokenizer) -> dict[int, str]:
    """Token id -> the colour or shape it spells (``▁red``, ``▁circle?``, Korean ``▁빨간`` -> ``red``, ...)."""
    names = {word: word for word in (*COLORS, *SHAPES)} | {color_name(c, "ko"): c for c in COLORS}
    words = {}
    for token, index in tokenizer.get_vocab().items():
        word = token.lstrip("▁").rstrip("?.,!").lower()
        if word in names:
            words[index] = names[word]
    return words


def named_words(
    input_ids: torch.Tensor, answer_at: int, named: tuple[str | None, str | None], word_ids: dict[int, str],
    stop_ids: set[int],
) -> torch.Tensor:
    """Which tokens of the question just before ``answer_at`` spell the named colour or shape (``word_ids``:
    :func:`attribute_word_ids`); the question starts after the last ``stop_ids`` token (an answer's end or an
    image token)."""
    ids = input_ids.tolist()
    start = answer_at
    while start > 0 and ids[start - 1] not in stop_ids:
        start -= 1
    mask = torch.zeros(len(ids), dtype=torch.bool)
    wanted = {word for word in named if word is not None}
    for i in range(start, answer_at):
        mask[i] = word_ids.get(ids[i]) in wanted
    return mask


def route_targets(
    input_ids: torch.Tensor, assistant_id: int, dialogue: Sequence[QA], word_ids: dict[int, str], stop_ids: set[int]
) -> list[tuple[int, int, torch.Tensor]]:
    """``(turn, position of its ASSISTANT: token, the question's tokens that name the object)`` for every turn of
    ``dialogue`` whose question names an object by colour or shape words."""
    answers = (input_ids == assistant_id).nonzero().squeeze(1).tolist()
    targets = []
    for turn, (qa, answer_at) in enumerate(zip(dialogue, answers)):
        named = named_object(qa)
        words = named_words(input_ids, answer_at, named, word_ids, stop_ids) if named else None
        if words is not None and words.any():
            targets.append((turn, answer_at, words))
    return targets


def scene_patches(dialogue: Sequence[QA], cache: dict[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
    """:func:`patch_targets` of every scene of ``dialogue`` by ``id(scene)``, each computed once (``cache``: kept
    across chats; a chat and its swapped twin share their scenes)."""
    cache = {} if cache is None else cache
    for scene in (scene for qa in dialogue for scene in qa.scenes):
        if id(scene) not in cache:
            cache[id(scene)] = patch_targets(scene)
    return cache


def described_objects(qa: QA) -> list[SceneObject] | None:
    """The objects ``qa``'s answer names, in the answer's order (captions: left to right; "which object is in the
    middle?": that one); ``None`` for answers that name no object."""
    if qa.kind in ("caption", "caption_ko"):
        return qa.scenes[0].left_to_right()
    if qa.kind == "position":
        return [o for o in qa.scenes[0].objects if object_phrase(o.color, o.shape) == qa.answer]
    return None


def describe_targets(
    input_ids: torch.Tensor,
    assistant_id: int,
    image_token_id: int,
    dialogue: Sequence[QA],
    word_ids: dict[int, str],
    patches: dict[int, torch.Tensor] | None = None,
) -> list[tuple[int, int, torch.Tensor]]:
    """``(turn, position just before an object's colour word in the answer, that object's visual tokens)`` for
    every object named by a caption or position answer of ``dialogue``: where the answer is about to name it
    (``patches``: :func:`scene_patches`)."""
    patches = scene_patches(dialogue, patches)
    ids = input_ids.tolist()
    answers = (input_ids == assistant_id).nonzero().squeeze(1).tolist()
    visual = input_ids == image_token_id
    targets = []
    for turn, (qa, answer_at) in enumerate(zip(dialogue, answers)):
        objects = described_objects(qa)
        if not objects:
            continue
        end = answer_at + 1
        while end < len(ids) and ids[end] != assistant_id:
            end += 1
        colour_at = [i for i in range(answer_at + 1, end) if word_ids.get(ids[i]) in COLORS]
        for at, obj in zip(colour_at, objects):
            mask = torch.zeros(len(ids), dtype=torch.bool)
            mask[visual] = object_patches(patches[id(qa.scenes[0])], obj.color, obj.shape)
            if mask.any():
                targets.append((turn, at - 1, mask))
    return targets


def attend_targets(
    input_ids: torch.Tensor,
    assistant_id: int,
    image_token_id: int,
    dialogue: Sequence[QA],
    patches: dict[int, torch.Tensor] | None = None,
) -> list[tuple[int, int, torch.Tensor]]:
    """``(turn, position of its ASSISTANT: token, visual tokens of the named object)`` for every turn of
    ``dialogue`` whose question names an object (``patches``: :func:`scene_patches`)."""
    answers = (input_ids == assistant_id).nonzero().squeeze(1).tolist()
    patches = scene_patches(dialogue, patches)
    targets = []
    for turn, (qa, answer_at) in enumerate(zip(dialogue, answers)):
        named = named_visual_tokens(input_ids, image_token_id, qa, [patches[id(scene)] for scene in qa.scenes])
        if named is not None:
            targets.append((turn, answer_at, named))
    return targets


def named_labels(dialogue: Sequence[QA], targets: Sequence[tuple[int, int, torch.Tensor]]) -> list[tuple[int, int]]:
    """``(colour, shape)`` class ids of the object each of ``targets`` (:func:`attend_targets`) names; -100 for
    an attribute the question leaves open."""
    labels = []
    for turn, _, _ in targets:
        color, shape = named_object(dialogue[turn])
        labels.append(
            (list(COLORS).index(color) if color else -100, SHAPES.index(shape) if shape else -100)
        )
    return labels


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
    word_ids, stop_ids = attribute_word_ids(tokenizer), {image_token_id, tokenizer.eos_token_id}
    patches: dict[int, torch.Tensor] = {}
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
            attend = attend_targets(ids, assistant_id, image_token_id, dialogue, patches)
            examples.append(
                Example(
                    ids,
                    answer_labels(ids, assistant_id, tokenizer.eos_token_id),
                    pixels,
                    attend,
                    image_index=image_indices(ids, image_token_id, n_images),
                    route_targets=route_targets(ids, assistant_id, dialogue, word_ids, stop_ids),
                    describe_targets=describe_targets(ids, assistant_id, image_token_id, dialogue, word_ids, patches),
                    named_labels=named_labels(dialogue, attend),
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


def _collate_targets(
    examples: Sequence[Example], key: str, width: int, turns: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows, query positions and key masks (batch width) of the ``key`` targets of the first ``turns`` turns."""
    kept = [(row, query, keys) for row, e in enumerate(examples) for turn, query, keys in getattr(e, key) if turn < turns]
    rows = torch.tensor([row for row, _, _ in kept], dtype=torch.long)
    queries = torch.tensor([query for _, query, _ in kept], dtype=torch.long)
    masks = [F.pad(keys, (0, width - len(keys))) for _, _, keys in kept]
    return rows, queries, torch.stack(masks) if masks else torch.zeros((0, width), dtype=torch.bool)


def collate(examples: Sequence[Example], pad_id: int, attend_turns: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded batch (positions then start at 0 as in left-padded generation), with the supervision
    targets of the first ``attend_turns`` turns, one per target: ``attend_row``, ``attend_from`` (its answer
    position), ``named_mask`` (batch width) and the named ``named_color`` / ``named_shape`` (-100: any); the same
    for the question words (``route_row``, ``route_from``, ``word_mask``) and the objects answers name
    (``describe_row``, ``describe_from``, ``object_mask``); ``image_index`` (-100 for text and padding); and the
    images as ``vision_features`` when every example has them cached, else ``pixel_values``."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    image_index = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n], labels[row, :n], mask[row, :n] = e.input_ids, e.labels, 1
        if e.image_index is not None:
            image_index[row, :n] = e.image_index
    if all(e.vision_features is not None for e in examples):
        images = {"vision_features": torch.cat([e.vision_features for e in examples])}
    else:
        images = {"pixel_values": torch.cat([e.pixel_values for e in examples])}
    attend_row, attend_from, named_mask = _collate_targets(examples, "attend_targets", width, attend_turns)
    named = [label for e in examples for target, label in zip(e.attend_targets, e.named_labels) if target[0] < attend_turns]
    named = torch.tensor(named, dtype=torch.long).reshape(-1, 2)
    route_row, route_from, word_mask = _collate_targets(examples, "route_targets", width, attend_turns)
    describe_row, describe_from, object_mask = _collate_targets(examples, "describe_targets", width, attend_turns)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        **images,
        "attend_row": attend_row,
        "attend_from": attend_from,
        "named_mask": named_mask,
        "named_color": named[:, 0],
        "named_shape": named[:, 1],
        "route_row": route_row,
        "route_from": route_from,
        "word_mask": word_mask,
        "describe_row": describe_row,
        "describe_from": describe_from,
        "object_mask": object_mask,
        "image_index": image_index,
    }


def attention_mass_losses(attention: torch.Tensor, named_mask: torch.Tensor) -> torch.Tensor:
    """``-log`` of the attention mass (``(targets, keys)``) on the ``named_mask`` keys, one per target."""
    mass = (attention * named_mask).sum(-1)
    return -torch.log(mass.clamp(min=1e-6))


def _head_projection(projection: torch.nn.Linear, x: torch.Tensor, head: int, head_dim: int) -> torch.Tensor:
    """One head's slice of a q/k/v projection of ``x``, without projecting the other heads."""
    rows = slice(head * head_dim, (head + 1) * head_dim)
    bias = projection.bias[rows] if projection.bias is not None else None
    return F.linear(x, projection.weight[rows], bias)


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
    supervised; positions run from 0 in every row (right padding), keys after the query are masked. Only that
    head's keys and the queries' own projections are computed.
    """
    language_model = model.model.language_model
    attention = language_model.layers[layer].self_attn
    head_dim = attention.head_dim
    x = language_model.layers[layer].input_layernorm(layer_input)
    seq = x.shape[1]
    cos, sin = (c[0] for c in language_model.rotary_emb(x, torch.arange(seq).unsqueeze(0)))  # (seq, head_dim)
    keys = _head_projection(attention.k_proj, x, head // attention.num_key_value_groups, head_dim)
    keys = keys * cos + rotate_half(keys) * sin  # (batch, seq, head_dim)
    q = _head_projection(attention.q_proj, x[rows, queries], head, head_dim)
    q = q * cos[queries] + rotate_half(q) * sin[queries]  # (len(rows), head_dim)
    scores = (keys[rows] @ q.unsqueeze(-1)).squeeze(-1) * attention.scaling
    scores = scores.masked_fill(torch.arange(seq) > queries.unsqueeze(1), float("-inf"))
    return F.softmax(scores, dim=-1, dtype=torch.float32)


def head_output(
    model: LlavaForConditionalGeneration,
    layer_input: torch.Tensor,
    layer: int,
    head: int,
    rows: torch.Tensor,
    attention: torch.Tensor,
) -> torch.Tensor:
    """What ``head`` of language-model ``layer`` writes at each query of :func:`head_attention` (``attention``:
    its weights, one row per query): the weighted sum of its values, ``(len(rows), head_dim)``."""
    language_model = model.model.language_model
    self_attn = language_model.layers[layer].self_attn
    x = language_model.layers[layer].input_layernorm(layer_input[rows])
    values = _head_projection(self_attn.v_proj, x, head // self_attn.num_key_value_groups, self_attn.head_dim)
    return (attention.unsqueeze(1).to(values.dtype) @ values).squeeze(1)


def named_images(named_mask: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
    """The image (0, 1, ...) that holds each target's named object when its chat has several images and the
    object lies in one of them; -100 otherwise (one-image chats, objects in several images)."""
    index = image_index.float().masked_fill(~named_mask, float("nan"))
    low = torch.nan_to_num(index, nan=float("inf")).amin(-1)
    high = torch.nan_to_num(index, nan=float("-inf")).amax(-1)
    several = image_index.amax(-1) > 0
    return torch.where(several & (low == high), low, -100.0).long()


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


def patch_target_array(scene: Scene) -> np.ndarray:
    """``(patches, 4)`` class ids in the vision tower's raster order: colour, shape, place, count."""
    n_patches = (scene.size // PATCH_SIZE) ** 2
    targets = np.zeros((n_patches, len(TARGET_SIZES)), dtype=np.int64)
    targets[:, 3] = len(scene.objects) - 1
    best = np.zeros(n_patches, dtype=np.float32)
    for place, obj in enumerate(scene.left_to_right()):
        cover = object_coverage(obj, scene.size).reshape(-1)
        take = (cover >= MIN_COVERAGE) & (cover > best)
        targets[take, 0] = list(COLORS).index(obj.color) + 1
        targets[take, 1] = SHAPES.index(obj.shape) + 1
        targets[take, 2] = place + 1
        best = np.maximum(best, cover)
    return targets


def patch_targets(scene: Scene) -> torch.Tensor:
    """:func:`patch_target_array` as a tensor."""
    return torch.from_numpy(patch_target_array(scene))


def images_to_pixels(images: np.ndarray, processor: LlavaProcessor) -> torch.Tensor:
    """``pixel_values`` of 64 px RGB images given as a ``(n, 64, 64, 3)`` uint8 array: the image processor's
    rescale and normalise (its resize and crop are no-ops at this size)."""
    image_processor = processor.image_processor
    size = image_processor.crop_size["height"]
    if images.shape[1:] != (size, size, 3):
        raise ValueError(f"Expected {size}x{size} px RGB images.")
    array = torch.from_numpy(images).permute(0, 3, 1, 2)
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return (array.float() * image_processor.rescale_factor - mean) / std


def render_vision_pool(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` fresh seeded scenes for the warm-up: RGB pixels ``(size, 64, 64, 3)`` and patch targets, as
    plain arrays so that a worker process can render them while the training chats are encoded."""
    rng = np.random.default_rng([seed, 1])
    scenes = [sample_scene(rng) for _ in range(size)]
    pixels = np.stack([np.asarray(scene.render()) for scene in scenes])
    return pixels, np.stack([patch_target_array(scene) for scene in scenes])


def encode_while_rendering(
    processor: LlavaProcessor, settings: TrainSettings
) -> tuple[list[list[QA]], list[Example], np.ndarray, np.ndarray]:
    """The training chats and their encoding, and the warm-up's scenes (:func:`render_vision_pool`), rendered at
    the same time in a forked process where the platform forks (the worker runs no torch code)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        dialogues = build_dialogues(settings)
        return dialogues, encode_dialogues(processor, dialogues), *render_vision_pool(settings.seed, settings.vision_pool_size)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as worker:
        rendering = worker.submit(render_vision_pool, settings.seed, settings.vision_pool_size)
        dialogues = build_dialogues(settings)
        pool = encode_dialogues(processor, dialogues)
        return dialogues, pool, *rendering.result()


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


def make_probes(model: LlavaForConditionalGeneration) -> torch.nn.ModuleDict:
    """The dropped linear probes: ``image`` reads a visual token's image from the residual stream, ``carry`` the
    named object's image from the lookup head's output, ``color`` and ``shape`` the named colour and shape from the
    lookup layer's input at the answer position."""
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    return torch.nn.ModuleDict(
        {
            "image": torch.nn.Linear(text.hidden_size, MAX_IMAGES),
            "carry": torch.nn.Linear(head_dim, MAX_IMAGES),
            "color": torch.nn.Linear(text.hidden_size, len(COLORS)),
            "shape": torch.nn.Linear(text.hidden_size, len(SHAPES)),
        }
    )


@torch.no_grad()
def cache_vision_features(
    model: LlavaForConditionalGeneration, pool: Sequence[Example], batch_size: int = 256
) -> None:
    """Run the frozen vision tower once over the pool's images: each example keeps the features the projector
    reads (``vision_feature_layer``, CLS dropped) instead of its pixels, so that a training step skips the tower."""
    tower = model.model.vision_tower
    layer = model.config.vision_feature_layer
    for start in range(0, len(pool), batch_size):
        part = pool[start : start + batch_size]
        pixels = torch.cat([e.pixel_values for e in part])
        features = tower(pixels, output_hidden_states=True).hidden_states[layer][:, 1:]
        at = 0
        for e in part:
            n = len(e.pixel_values)
            e.vision_features, e.pixel_values = features[at : at + n].clone(), None
            at += n


def image_embeddings(model: LlavaForConditionalGeneration, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The language model's input embeddings of ``batch`` with the projected cached vision features in the
    ``<image>`` slots: what ``LlavaModel`` builds from ``pixel_values``."""
    embeddings = model.get_input_embeddings()(batch["input_ids"])
    features = model.model.multi_modal_projector(batch["vision_features"]).reshape(-1, embeddings.shape[-1])
    slots = (batch["input_ids"] == model.config.image_token_id).unsqueeze(-1)
    return embeddings.masked_scatter(slots, features.to(embeddings.dtype))


def make_optimizer(
    model: LlavaForConditionalGeneration, settings: TrainSettings, probe: torch.nn.Module
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (projector, language model and the dropped probes); no decay on
    embeddings, norms, biases."""
    trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    trainable += [(f"probe.{name}", param) for name, param in probe.named_parameters()]
    return make_adamw(trainable, settings.lr, settings.weight_decay)


def needs_hidden_states(settings: TrainSettings) -> bool:
    """Whether the training forward must return the hidden states (an auxiliary loss reads them)."""
    return settings.attend_weight > 0 or settings.image_index_weight > 0


def _sum_and_count(losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return losses.sum(), torch.tensor(float(len(losses)))


def _head_mass_losses(
    model: LlavaForConditionalGeneration,
    hidden_states: Sequence[torch.Tensor],
    layer: int,
    head: int,
    rows: torch.Tensor,
    queries: torch.Tensor,
    keys: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`attention_mass_losses` of one supervised head (and its weights; ``None`` without targets)."""
    if not len(rows):
        return torch.zeros(0), None
    attention = head_attention(model, hidden_states[layer], layer, head, rows, queries)
    return attention_mass_losses(attention, keys), attention


def supervision_loss_sums(
    model: LlavaForConditionalGeneration,
    probe: torch.nn.ModuleDict,
    hidden_states: Sequence[torch.Tensor],
    batch: dict[str, torch.Tensor],
    settings: TrainSettings,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{part: (sum, count)}`` of the attention supervision (see :class:`TrainSettings`): ``attend`` (the lookup
    head on the named object), ``query`` (the named colour and shape read at the lookup layer's input), ``route``
    (the question's words), ``describe`` (the objects answers name) and ``carry`` (the named object's image read
    from the lookup head's output), each when its weight is not 0."""
    layer, head, rows = settings.attend_layer, settings.attend_head, batch["attend_row"]
    queries = batch["attend_from"]
    attend, attention = _head_mass_losses(model, hidden_states, layer, head, rows, queries, batch["named_mask"])
    carry = torch.zeros(0)
    if attention is not None:
        target = named_images(batch["named_mask"], batch["image_index"][rows])
        if settings.carry_weight > 0 and (target >= 0).any():
            known = target >= 0
            carried = head_output(model, hidden_states[layer], layer, head, rows[known], attention[known])
            carry = F.cross_entropy(probe["carry"](carried), target[known], reduction="none")
    sums = {"attend": _sum_and_count(attend)}
    if settings.query_weight > 0:
        at_answer = hidden_states[layer][rows, queries]
        named = [
            F.cross_entropy(probe[name](at_answer[labels >= 0]), labels[labels >= 0], reduction="none")
            for name, labels in (("color", batch["named_color"]), ("shape", batch["named_shape"]))
        ]
        sums["query"] = (sum(n.sum() for n in named), torch.tensor(float(sum(len(n) for n in named))))
    for part, keys in (("route", "word_mask"), ("describe", "object_mask")):
        if getattr(settings, f"{part}_weight") > 0:
            layer, head = getattr(settings, f"{part}_layer"), getattr(settings, f"{part}_head")
            rows, queries = batch[f"{part}_row"], batch[f"{part}_from"]
            sums[part] = _sum_and_count(_head_mass_losses(model, hidden_states, layer, head, rows, queries, batch[keys])[0])
    if settings.carry_weight > 0:
        sums["carry"] = _sum_and_count(carry)
    return sums


def batch_loss_sums(
    model: LlavaForConditionalGeneration,
    probe: torch.nn.ModuleDict,
    batch: dict[str, torch.Tensor],
    settings: TrainSettings,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{part: (sum, count)}`` over one collated batch: ``answer`` (next-token loss on the answers, each
    token weighted), the attention supervision (:func:`supervision_loss_sums`, when ``attend_weight`` is not 0)
    and ``image`` (the image-index probe, when its weight is not 0)."""
    if "vision_features" in batch:
        images = {"inputs_embeds": image_embeddings(model, batch)}
    else:
        images = {"input_ids": batch["input_ids"], "pixel_values": batch["pixel_values"]}
    out = model.model(
        **images, attention_mask=batch["attention_mask"], output_hidden_states=needs_hidden_states(settings)
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
        sums.update(supervision_loss_sums(model, probe, out.hidden_states, batch, settings))
    if settings.image_index_weight > 0:
        hidden = out.hidden_states[settings.image_index_layer]
        sums["image"] = _sum_and_count(image_index_losses(probe["image"], hidden, batch["image_index"]))
    return sums


def training_loss(
    model: LlavaForConditionalGeneration,
    probe: torch.nn.ModuleDict,
    batches: Sequence[dict[str, torch.Tensor]],
    settings: TrainSettings,
) -> dict[str, torch.Tensor]:
    """The weighted parts of the loss of one training batch given as ``batches`` (its length groups): each
    part is its mean over all of them, exactly as if they were one batch."""
    totals: dict[str, list[torch.Tensor]] = {}
    for batch in batches:
        for name, (total, count) in batch_loss_sums(model, probe, batch, settings).items():
            totals.setdefault(name, []).append(torch.stack([total, count]))
    weight = {
        "answer": 1.0,
        "attend": settings.attend_weight,
        "carry": settings.carry_weight,
        "route": settings.route_weight,
        "query": settings.query_weight,
        "describe": settings.describe_weight,
        "image": settings.image_index_weight,
    }
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
    probe = make_probes(model)  # dropped after training
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
    s = settings
    lookup = [
        (
            s.attend_weight,
            (
                f"head {s.attend_head} of layer {s.attend_layer} is taught to attend from the answer position of every "
                f"question that names an object (in the first {s.attend_turns} turns of a chat) to that object's "
                "visual tokens"
            ),
        ),
        (
            s.route_weight,
            (
                f"head {s.route_head} of layer {s.route_layer}, from the same position to the question's words that name "
                "the object"
            ),
        ),
        (
            s.query_weight,
            (
                "linear probes, dropped afterwards, read the named colour and shape from layer "
                f"{s.attend_layer}'s input at that position"
            ),
        ),
        (
            s.describe_weight,
            (
                f"head {s.describe_head} of layer {s.describe_layer}, from just before each object a caption or place "
                "answer names to that object's visual tokens"
            ),
        ),
        (
            s.carry_weight,
            (
                f"a linear probe, dropped afterwards, reads the named object's image from head {s.attend_head}'s output "
                "in two-image questions"
            ),
        ),
    ]
    image = (
        s.image_index_weight,
        (
            "a linear probe, dropped afterwards, teaches every visual token which image it belongs to after "
            f"{s.image_index_layer} layer(s)"
        ),
    )
    parts = [*(lookup if s.attend_weight > 0 else []), image]  # the other heads and probes use the lookup's targets
    notes = [f"{text} (weight {weight:g})" for weight, text in parts if weight > 0]
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
("is the red circle on the left or the right?") stayed at chance even on training questions (52%). Supervising only
the lookup head (from the answer position to the named object) brought side questions to 89-93%, but the result
moved with the seed (one-image exact match 69-91%), "which image shows ...?" answered "first" for every training
pair, and probes at the answer position found the named shape (98%) but not the named colour (40%, chance 25%).
Teaching the query as well (a head that reads the question's colour and shape words, probes for both at the lookup
layer's input), the named object's image, and where captions name each object made two seeds agree: with this
script's defaults on one CPU thread (another float order than the committed two), seed 0 reached 90.0% one-image /
95.3% pairs and seed 1 95.0% / 95.3%; the same recipe with 1,100 steps 93.5% / 96.7% and 94.5% / 97.3%, and
without the query probes 81.5% / 89.3% and 90.0% / 98.0%. The committed weights (seed 0, two threads) are the
tables below; on 400 fresh questions they score 94.8% (NF4 86.3%), on 300 fresh pairs 93.0% (83.0%), and swapping
the images of 40 fresh "which image?" questions flips all 40 answers correctly.

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
        with deterministic_algorithms():  # the same seed and thread count give the same weights
            seed_everything(settings.seed)
            tokenizer = build_tokenizer()
            processor = make_processor(tokenizer)
            model = build_model(tokenizer, settings)
            dialogues, pool, pixels, targets = encode_while_rendering(processor, settings)
            print(f"{len(pool)} training chats in {time.perf_counter() - started:.0f} s", flush=True)
            vision_losses = warm_up_vision(model, images_to_pixels(pixels, processor), torch.from_numpy(targets), settings)
            del pixels, targets
            cache_vision_features(model, pool)
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
