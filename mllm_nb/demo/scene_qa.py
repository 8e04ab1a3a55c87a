"""Questions and checkable answers about synthetic scenes, the training and test data of the demo LLaVA.

Every :class:`QA` holds the rendered image(s), one question, its one canonical answer and the
scene metadata behind them, so a model's answer can be checked by exact match. Each question
kind has a few phrasings; the answers have exactly one form (lower case, words for numbers,
objects listed from left to right). Everything is deterministic for a seed.
Two-image questions (:data:`PAIR_KINDS`, :func:`make_pair_qa`) are asked about two images in order
("which image has the red circle, the first or the second?").

>>> qa = make_qa(np.random.default_rng(0), kind="count")
>>> qa.answer in {"one", "two", "three"}
True
>>> pair = make_pair_qa(np.random.default_rng(0), kind="which_image")
>>> len(pair.images), pair.answer in {"first", "second"}
(2, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from mllm_nb.demo.shapes import (
    CLASSES,
    COLORS,
    SHAPES,
    Scene,
    color_name,
    random_scene,
    shape_name,
)

IMAGE_SIZE = 64
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
SIDES: tuple[str, ...] = ("left", "right")
ORDINALS: tuple[str, ...] = ("first", "second")

CAPTION_QUESTIONS: tuple[str, ...] = (
    "Describe the image.",
    "Caption this image.",
    "What is in the image?",
    "What do you see?",
    "Describe this picture.",
    "What does the image show?",
)
KOREAN_CAPTION_QUESTIONS: tuple[str, ...] = ("이 그림을 설명해 주세요.", "이미지를 설명해 주세요.", "그림에 무엇이 있나요?")
COLOR_QUESTIONS: tuple[str, ...] = (
    "What colour is the {shape}?",
    "What color is the {shape}?",
    "Which colour is the {shape}?",
    "What is the colour of the {shape}?",
    "What is the color of the {shape}?",
)
SHAPE_QUESTIONS: tuple[str, ...] = (
    "What shape is the {color} object?",
    "What shape is the {color} one?",
    "Which shape is {color}?",
    "What is the {color} shape?",
)
COUNT_QUESTIONS: tuple[str, ...] = (
    "How many objects are there?",
    "How many shapes are there?",
    "How many objects are in the image?",
    "How many shapes can you see?",
    "Count the objects.",
)
SIDE_QUESTIONS: tuple[str, ...] = (
    "Is the {label} on the left or on the right?",
    "Is the {label} on the left or the right?",
    "Is the {label} left or right?",
    "Which side is the {label} on?",
)
POSITION_QUESTIONS: dict[str, tuple[str, ...]] = {
    "left": ("What is on the left?", "Which object is on the left?", "What is the leftmost object?"),
    "right": ("What is on the right?", "Which object is on the right?", "What is the rightmost object?"),
    "middle": ("What is in the middle?", "Which object is in the middle?"),
}

WHICH_IMAGE_QUESTIONS: tuple[str, ...] = (
    "Which image has the {label}, the first or the second?",
    "Which image has the {label} — the first or the second?",
    "Which image shows the {label}: the first or the second?",
    "Is the {label} in the first or the second image?",
)
SAME_SHAPE_QUESTIONS: tuple[str, ...] = (
    "Do both images show the same shape?",
    "Is the shape the same in both images?",
    "Do the two images show the same shape?",
)
TOTAL_COUNT_QUESTIONS: tuple[str, ...] = (
    "How many shapes are there in total?",
    "How many objects are there in total?",
    "How many shapes are in the two images?",
    "How many objects do both images show together?",
)

QuestionMaker = Callable[[np.random.Generator, Scene], "tuple[str, str] | None"]


@dataclass
class QA:
    """One question about one or more images with its canonical answer and the scenes behind it."""

    images: list[Image.Image]
    question: str
    answer: str
    kind: str
    scenes: list[Scene] = field(default_factory=list)
    lang: str = "en"


def number_word(n: int) -> str:
    """``3`` -> ``"three"``: counts are answered in words."""
    return NUMBER_WORDS[n]


def object_phrase(color: str, shape: str, lang: str = "en") -> str:
    """``"a red circle"`` in English, ``"빨간 원"`` in Korean."""
    label = f"{color_name(color, lang)} {shape_name(shape, lang)}"
    return f"a {label}" if lang == "en" else label


def canonical_caption(scene: Scene, lang: str = "en") -> str:
    """The one caption of a scene, objects from left to right.

    English: ``"a red circle"``, ``"a red circle on the left and a blue square on the right"``,
    ``"a red circle, a blue square and a green triangle"``. Korean: ``"빨간 원"``,
    ``"빨간 원과 파란 사각형"``, ``"빨간 원, 파란 사각형과 초록 삼각형"`` (every Korean shape
    word ends in a consonant, so the particle is always 과).
    """
    phrases = [object_phrase(o.color, o.shape, lang) for o in scene.left_to_right()]
    if lang == "ko":
        return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-2] + [f"{phrases[-2]}과 {phrases[-1]}"])
    if len(phrases) == 1:
        return phrases[0]
    if len(phrases) == 2:
        return f"{phrases[0]} on the left and {phrases[1]} on the right"
    return ", ".join(phrases[:-1]) + f" and {phrases[-1]}"


def sample_scene(rng: np.random.Generator, n_objects: int | None = None, image_size: int = IMAGE_SIZE) -> Scene:
    """A scene of 1-3 objects (random count when ``None``) whose colour+shape classes all differ."""
    n = int(rng.integers(1, 4)) if n_objects is None else n_objects
    picks = rng.choice(len(CLASSES), size=n, replace=False)
    colors = [CLASSES[i][0] for i in picks]
    shapes = [CLASSES[i][1] for i in picks]
    return random_scene(rng, n, image_size=image_size, colors=colors, shapes=shapes)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _ask_caption(rng: np.random.Generator, scene: Scene) -> tuple[str, str]:
    return _pick(rng, CAPTION_QUESTIONS), canonical_caption(scene)


def _ask_caption_ko(rng: np.random.Generator, scene: Scene) -> tuple[str, str]:
    return _pick(rng, KOREAN_CAPTION_QUESTIONS), canonical_caption(scene, lang="ko")


def _ask_color(rng: np.random.Generator, scene: Scene) -> tuple[str, str] | None:
    """Colour of a shape that occurs exactly once."""
    unique = [o for o in scene.objects if scene.count(shape=o.shape) == 1]
    if not unique:
        return None
    target = unique[int(rng.integers(len(unique)))]
    return _pick(rng, COLOR_QUESTIONS).format(shape=target.shape), target.color


def _ask_shape(rng: np.random.Generator, scene: Scene) -> tuple[str, str] | None:
    """Shape of the object of a colour that occurs exactly once."""
    unique = [o for o in scene.objects if scene.count(color=o.color) == 1]
    if not unique:
        return None
    target = unique[int(rng.integers(len(unique)))]
    return _pick(rng, SHAPE_QUESTIONS).format(color=target.color), target.shape


def _ask_count(rng: np.random.Generator, scene: Scene) -> tuple[str, str]:
    return _pick(rng, COUNT_QUESTIONS), number_word(len(scene.objects))


def _ask_side(rng: np.random.Generator, scene: Scene) -> tuple[str, str] | None:
    """Left or right, for one of the two objects of a two-object scene."""
    if len(scene.objects) != 2:
        return None
    ordered = scene.left_to_right()
    index = int(rng.integers(2))
    label = ordered[index].label()
    return _pick(rng, SIDE_QUESTIONS).format(label=label), SIDES[index]


def _ask_position(rng: np.random.Generator, scene: Scene) -> tuple[str, str] | None:
    """The leftmost, rightmost or (three objects) middle object."""
    ordered = scene.left_to_right()
    if len(ordered) < 2:
        return None
    places = ["left", "right"] + (["middle"] if len(ordered) == 3 else [])
    place = _pick(rng, places)
    target = {"left": ordered[0], "right": ordered[-1], "middle": ordered[1]}[place]
    return _pick(rng, POSITION_QUESTIONS[place]), object_phrase(target.color, target.shape)


# kind -> (question maker, allowed object counts, language)
_SINGLE_IMAGE_KINDS: dict[str, tuple[QuestionMaker, tuple[int, ...], str]] = {
    "caption": (_ask_caption, (1, 2, 3), "en"),
    "color": (_ask_color, (1, 2, 3), "en"),
    "shape": (_ask_shape, (1, 2, 3), "en"),
    "count": (_ask_count, (1, 2, 3), "en"),
    "side": (_ask_side, (2,), "en"),
    "position": (_ask_position, (2, 3), "en"),
    "caption_ko": (_ask_caption_ko, (1, 2, 3), "ko"),
}
KINDS: tuple[str, ...] = tuple(_SINGLE_IMAGE_KINDS)
"""Every question kind :func:`make_qa` knows, each with a few phrasings and one answer form."""


def ask(rng: np.random.Generator, scene: Scene, kind: str, image: Image.Image | None = None) -> QA | None:
    """A question of ``kind`` about ``scene`` with its answer, or ``None`` if the kind does not fit the scene.

    ``image`` is the scene already rendered (rendered here when ``None``).
    """
    if kind not in _SINGLE_IMAGE_KINDS:
        raise ValueError(f"Unknown question kind {kind!r}; use one of {KINDS}.")
    maker, counts, lang = _SINGLE_IMAGE_KINDS[kind]
    asked = maker(rng, scene) if len(scene.objects) in counts else None
    if asked is None:
        return None
    return QA([image if image is not None else scene.render()], asked[0], asked[1], kind, [scene], lang)


def make_qa(rng: np.random.Generator, kind: str | None = None, image_size: int = IMAGE_SIZE) -> QA:
    """A random scene and a question of ``kind`` (random kind when ``None``) about it, with its answer."""
    kind = _pick(rng, KINDS) if kind is None else kind
    if kind not in _SINGLE_IMAGE_KINDS:
        raise ValueError(f"Unknown question kind {kind!r}; use one of {KINDS}.")
    counts = _SINGLE_IMAGE_KINDS[kind][1]
    for _ in range(100):
        qa = ask(rng, sample_scene(rng, int(counts[int(rng.integers(len(counts)))]), image_size), kind)
        if qa is not None:
            return qa
    raise RuntimeError(f"Could not make a {kind!r} question.")  # pragma: no cover - needs 100 unlucky scenes


def make_qa_set(n: int, seed: int, kinds: Sequence[str] | None = None, image_size: int = IMAGE_SIZE) -> list[QA]:
    """``n`` questions, the ``kinds`` (default :data:`KINDS`) taken in turn so each gets a fair share."""
    kinds = tuple(kinds) if kinds is not None else KINDS
    rng = np.random.default_rng(seed)
    return [make_qa(rng, kinds[i % len(kinds)], image_size) for i in range(n)]


# --- two-image questions -------------------------------------------------------------------------


def _ask_which_image(rng: np.random.Generator, scenes: Sequence[Scene]) -> tuple[str, str] | None:
    """``first``/``second``: the image that holds a colour+shape class the other image lacks."""
    in_first = {(o.color, o.shape) for o in scenes[0].objects}
    in_second = {(o.color, o.shape) for o in scenes[1].objects}
    only = sorted(in_first ^ in_second)
    if not only:
        return None
    color, shape = only[int(rng.integers(len(only)))]
    answer = ORDINALS[0] if (color, shape) in in_first else ORDINALS[1]
    return _pick(rng, WHICH_IMAGE_QUESTIONS).format(label=f"{color} {shape}"), answer


def _ask_same_shape(rng: np.random.Generator, scenes: Sequence[Scene]) -> tuple[str, str] | None:
    """``yes``/``no``: whether the one object of each image has the same shape."""
    if any(len(s.objects) != 1 for s in scenes):
        return None
    same = scenes[0].objects[0].shape == scenes[1].objects[0].shape
    return _pick(rng, SAME_SHAPE_QUESTIONS), "yes" if same else "no"


def _ask_total_count(rng: np.random.Generator, scenes: Sequence[Scene]) -> tuple[str, str]:
    """The number of objects in both images together, as a word."""
    return _pick(rng, TOTAL_COUNT_QUESTIONS), number_word(sum(len(s.objects) for s in scenes))


PairQuestionMaker = Callable[[np.random.Generator, Sequence[Scene]], "tuple[str, str] | None"]
_PAIR_KINDS: dict[str, PairQuestionMaker] = {
    "which_image": _ask_which_image,
    "same_shape": _ask_same_shape,
    "total_count": _ask_total_count,
}
PAIR_KINDS: tuple[str, ...] = tuple(_PAIR_KINDS)
"""Question kinds about two images in order (:func:`make_pair_qa`)."""


def _check_pair_kind(kind: str) -> None:
    if kind not in _PAIR_KINDS:
        raise ValueError(f"Unknown two-image question kind {kind!r}; use one of {PAIR_KINDS}.")


def ask_pair(
    rng: np.random.Generator, scenes: Sequence[Scene], kind: str, images: Sequence[Image.Image] | None = None
) -> QA | None:
    """A question of a two-image ``kind`` about ``scenes`` (in order), or ``None`` if the kind does not fit.

    >>> rng = np.random.default_rng(0)
    >>> ask_pair(rng, [sample_scene(rng, 2), sample_scene(rng, 1)], "total_count").answer
    'three'
    """
    _check_pair_kind(kind)
    if len(scenes) != 2:
        raise ValueError(f"Two-image questions need exactly two scenes, got {len(scenes)}.")
    asked = _PAIR_KINDS[kind](rng, scenes)
    if asked is None:
        return None
    rendered = list(images) if images is not None else [scene.render() for scene in scenes]
    return QA(rendered, asked[0], asked[1], kind, list(scenes))


def sample_pair(rng: np.random.Generator, kind: str) -> list[Scene]:
    """Two scenes for a question of ``kind``: one object each for ``same_shape`` (same shape half of the
    time), 1-3 objects each otherwise."""
    _check_pair_kind(kind)
    if kind != "same_shape":
        return [sample_scene(rng), sample_scene(rng)]
    first = sample_scene(rng, 1)
    shape = first.objects[0].shape
    if rng.random() >= 0.5:
        shape = _pick(rng, [s for s in SHAPES if s != shape])
    color = _pick(rng, list(COLORS))
    return [first, random_scene(rng, 1, image_size=first.size, colors=[color], shapes=[shape])]


def make_pair_qa(rng: np.random.Generator, kind: str | None = None) -> QA:
    """Two random scenes and a two-image question of ``kind`` (random when ``None``) about them, with its answer."""
    kind = _pick(rng, PAIR_KINDS) if kind is None else kind
    _check_pair_kind(kind)
    for _ in range(100):
        qa = ask_pair(rng, sample_pair(rng, kind), kind)
        if qa is not None:
            return qa
    raise RuntimeError(f"Could not make a {kind!r} question.")  # pragma: no cover - needs 100 unlucky pairs


def make_pair_qa_set(n: int, seed: int, kinds: Sequence[str] | None = None) -> list[QA]:
    """``n`` two-image questions, the ``kinds`` (default :data:`PAIR_KINDS`) taken in turn.

    >>> items = make_pair_qa_set(3, seed=0)
    >>> [qa.kind for qa in items], [len(qa.images) for qa in items]
    (['which_image', 'same_shape', 'total_count'], [2, 2, 2])
    """
    kinds = tuple(kinds) if kinds is not None else PAIR_KINDS
    for kind in kinds:
        _check_pair_kind(kind)
    rng = np.random.default_rng(seed)
    return [make_pair_qa(rng, kinds[i % len(kinds)]) for i in range(n)]


def swap_pair(qa: QA) -> QA:
    """The same two-image question with the images swapped (``first`` and ``second`` swap too).

    >>> qa = make_pair_qa(np.random.default_rng(1), "which_image")
    >>> swap_pair(qa).answer == {"first": "second", "second": "first"}[qa.answer]
    True
    """
    if len(qa.images) != 2:
        raise ValueError(f"swap_pair needs a two-image question, got {len(qa.images)} image(s).")
    answer = {ORDINALS[0]: ORDINALS[1], ORDINALS[1]: ORDINALS[0]}.get(qa.answer, qa.answer)
    return QA(qa.images[::-1], qa.question, answer, qa.kind, qa.scenes[::-1], qa.lang)


def corpus() -> Iterator[str]:
    """Every question phrasing and answer word the generator can produce (for building a vocabulary)."""
    yield from CAPTION_QUESTIONS
    yield from KOREAN_CAPTION_QUESTIONS
    yield from COUNT_QUESTIONS
    for questions in POSITION_QUESTIONS.values():
        yield from questions
    for shape in SHAPES:
        yield from (q.format(shape=shape) for q in COLOR_QUESTIONS)
    for color in COLORS:
        yield from (q.format(color=color) for q in SHAPE_QUESTIONS)
    for color, shape in CLASSES:
        yield from (q.format(label=f"{color} {shape}") for q in SIDE_QUESTIONS)
        yield object_phrase(color, shape) + " on the left and " + object_phrase(color, shape) + " on the right"
        yield object_phrase(color, shape) + ", " + object_phrase(color, shape, "ko") + "과"
    yield " ".join(NUMBER_WORDS[1:4] + SIDES + tuple(COLORS) + SHAPES)


def pair_corpus() -> Iterator[str]:
    """Every two-image question phrasing and answer word (apart from :func:`corpus`, so a vocabulary can be built
    for one-image questions only; the demo LLaVA's tokenizer takes both)."""
    yield from SAME_SHAPE_QUESTIONS
    yield from TOTAL_COUNT_QUESTIONS
    for color, shape in CLASSES:
        yield from (q.format(label=f"{color} {shape}") for q in WHICH_IMAGE_QUESTIONS)
    yield " ".join(NUMBER_WORDS[1:] + ORDINALS + ("yes", "no"))
