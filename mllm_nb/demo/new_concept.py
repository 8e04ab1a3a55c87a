"""A concept the demo LLaVA does not know (the shape "star"), data to teach it, and the grades before and after.

The tiny LLaVA fixture was trained on circles, squares and triangles; asked about a star it names one
of those. :func:`make_concept_examples` builds a training set of questions whose answer is the new
word ("What shape is the red object?" -> "star") mixed with replayed questions of the kinds the fixture
already answers (:mod:`mllm_nb.demo.scene_qa`, so fine-tuning does not wash them out), including
questions about the other objects of star scenes. :func:`make_concept_heldout` and
:func:`make_old_heldout` are fresh images for measuring; :func:`accuracy` grades by exact match.

>>> items = make_concept_heldout(3, seed=7)
>>> [qa.answer for qa in items]
['star', 'star', 'star']
>>> accuracy_line("new concept", 0.0, 0.925)
'new concept accuracy: before 0% -> after 92%'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mllm_nb.demo.scene_qa import (
    COLOR_QUESTIONS,
    IMAGE_SIZE,
    KINDS,
    QA,
    SHAPE_QUESTIONS,
    make_qa_set,
    number_word,
)
from mllm_nb.demo.shapes import COLORS, EXTRA_SHAPES, SHAPES, Scene, random_scene
from mllm_nb.errors import MllmNbError

CONCEPT: str = EXTRA_SHAPES[0]
"""The new word: a five-pointed star, drawn by :mod:`mllm_nb.demo.shapes` but never shown to the fixture."""
CONCEPT_KINDS: tuple[str, ...] = ("star_shape", "star_color", "other_shape", "star_count")
"""Question kinds about star scenes: the star's shape (answer ``star``), its colour, another object's shape, the count."""
REPLAY_KINDS: tuple[str, ...] = (*KINDS, "shape", "shape")
"""The replayed fixture questions, taken in turn: every kind, and shape questions three times as often, so that
"What shape is ...?" is not learnt to mean "star" (about as many shape questions answer an old shape as "star")."""
OLD_KINDS: tuple[str, ...] = tuple(kind for kind in KINDS if kind != "caption_ko")
"""The fixture's one-image question kinds that are graded as old skills (Korean captions left out)."""

DEMO_DATA: dict[str, Any] = {"n": 6400, "seed": 0, "replay": 0.6}
"""Arguments of :func:`make_concept_examples` for the demo: one fresh example per training row (400 x 16)."""
DEMO_SETTINGS: dict[str, Any] = {
    "steps": 400, "batch_size": 16, "learning_rate": 3e-3, "rank": 32, "output_head": True, "seed": 0,
}
"""Arguments of :func:`mllm_nb.finetune` that teach the tiny LLaVA "star" on two CPU threads in about 75 s.

LoRA on the output layer is what lets the model write a word it never wrote; the projector's LoRA (the default)
helped the star be seen among other objects."""


class ConceptDataError(MllmNbError, ValueError):
    """A demo concept set was asked for with settings that cannot make one.

    >>> str(ConceptDataError("replay must be a share between 0 and 1, got 2."))
    'replay must be a share between 0 and 1, got 2.'
    """


def star_scene(rng: np.random.Generator, n_objects: int | None = None, image_size: int = IMAGE_SIZE) -> Scene:
    """A scene of 1-3 objects, one of them a star; every object has its own colour.

    >>> scene = star_scene(np.random.default_rng(0), 2)
    >>> sorted(o.shape for o in scene.objects).count("star")
    1
    """
    n = int(rng.integers(1, 4)) if n_objects is None else n_objects
    colors = [str(c) for c in rng.choice(list(COLORS), size=n, replace=False)]
    shapes = [CONCEPT] + [str(rng.choice(SHAPES)) for _ in range(n - 1)]
    order = rng.permutation(n)
    return random_scene(rng, n, image_size=image_size, colors=colors, shapes=[shapes[i] for i in order])


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def concept_qa(
    rng: np.random.Generator, kind: str = "star_shape", n_objects: int | None = None, image_size: int = IMAGE_SIZE
) -> QA:
    """A star scene (``n_objects``, default random) and a question of ``kind`` (:data:`CONCEPT_KINDS`) with its answer.

    >>> concept_qa(np.random.default_rng(1), "star_shape").answer
    'star'
    """
    if kind not in CONCEPT_KINDS:
        raise ConceptDataError(f"Unknown concept question kind {kind!r}; use one of {CONCEPT_KINDS}.")
    if n_objects is None:
        single = kind == "star_shape" and rng.random() < 0.4
        n_objects = 1 if single else int(rng.integers(2 if kind == "other_shape" else 1, 4))
    n = n_objects
    scene = star_scene(rng, n, image_size)
    star = next(o for o in scene.objects if o.shape == CONCEPT)
    others = [o for o in scene.objects if o.shape != CONCEPT]
    if kind == "star_shape":
        question, answer = _pick(rng, SHAPE_QUESTIONS).format(color=star.color), CONCEPT
    elif kind == "star_color":
        question, answer = _pick(rng, COLOR_QUESTIONS).format(shape=CONCEPT), star.color
    elif kind == "other_shape":
        other = others[int(rng.integers(len(others)))]
        question, answer = _pick(rng, SHAPE_QUESTIONS).format(color=other.color), other.shape
    else:
        from mllm_nb.demo.scene_qa import COUNT_QUESTIONS

        question, answer = _pick(rng, COUNT_QUESTIONS), number_word(len(scene.objects))
    return QA([scene.render()], question, answer, kind, [scene])


def make_concept_examples(
    n: int, seed: int = 0, replay: float = 0.5, concept_mix: Sequence[float] = (0.55, 0.15, 0.2, 0.1)
) -> list[QA]:
    """``n`` training questions: a ``1 - replay`` share about star scenes (kinds :data:`CONCEPT_KINDS` in the
    proportions ``concept_mix``), the rest replayed fixture questions (:data:`REPLAY_KINDS`).

    >>> examples = make_concept_examples(8, seed=0)
    >>> len(examples), sum(qa.answer == "star" for qa in examples) > 0
    (8, True)
    """
    if not 0.0 <= replay <= 1.0:
        raise ConceptDataError(f"replay must be a share between 0 and 1, got {replay}.")
    rng = np.random.default_rng(seed)
    n_replay = round(n * replay)
    old = make_qa_set(n_replay, seed=seed + 10_000, kinds=REPLAY_KINDS) if n_replay else []
    weights = np.asarray(concept_mix, dtype=float) / float(np.sum(concept_mix))
    counts = np.floor(weights * (n - n_replay)).astype(int)
    counts[0] += (n - n_replay) - int(counts.sum())
    kinds = [kind for kind, count in zip(CONCEPT_KINDS, counts) for _ in range(int(count))]
    # stars among other objects are small and hard to tell: a third of the star questions each with 1, 2 and 3 objects
    new = [concept_qa(rng, kind, 1 + i % 3 if kind == "star_shape" else None) for i, kind in enumerate(kinds)]
    mixed = new + old
    order = rng.permutation(len(mixed))
    return [mixed[i] for i in order]


def make_concept_heldout(n: int, seed: int = 1000) -> list[QA]:
    """``n`` fresh star scenes, each asked the star's shape (answer ``star``): the new-concept test.

    >>> make_concept_heldout(2, seed=1)[0].kind
    'star_shape'
    """
    rng = np.random.default_rng(seed)
    return [concept_qa(rng, "star_shape") for _ in range(n)]


def make_old_heldout(n: int, seed: int = 2000) -> list[QA]:
    """``n`` fresh questions of the fixture's English kinds (:data:`OLD_KINDS`, taken in turn): the old-skills test.

    >>> sorted({qa.kind for qa in make_old_heldout(6, seed=1)}) == sorted(OLD_KINDS)
    True
    """
    return make_qa_set(n, seed=seed, kinds=OLD_KINDS)


def answers(vlm: Any, items: Sequence[QA], batch_size: int = 32) -> list[str]:
    """The VLM's greedy answers to ``items`` (one image and question each), in order.

    >>> answers(vlm, make_concept_heldout(2))  # doctest: +SKIP
    ['square', 'circle']
    """
    return vlm.batch_ask([(qa.images, qa.question) for qa in items], batch_size=batch_size, progress=False)


def accuracy(vlm: Any, items: Sequence[QA], batch_size: int = 32) -> float:
    """The share of ``items`` the VLM answers exactly (case and surrounding spaces ignored).

    >>> accuracy(vlm, make_concept_heldout(40))  # doctest: +SKIP
    0.0
    """
    if not items:
        raise ConceptDataError("accuracy needs at least one question.")
    given = answers(vlm, items, batch_size)
    return sum(a.strip().lower() == qa.answer for a, qa in zip(given, items)) / len(items)


def concept_accuracy(vlm: Any, heldout: Sequence[QA] | None = None) -> float:
    """Exact-match accuracy on the new concept (default: 100 held-out star questions).

    >>> concept_accuracy(vlm)  # doctest: +SKIP
    0.0
    """
    return accuracy(vlm, heldout if heldout is not None else make_concept_heldout(100))


def old_skills_accuracy(vlm: Any, heldout: Sequence[QA] | None = None) -> float:
    """Exact-match accuracy on the fixture's own question kinds (default: 100 held-out questions).

    >>> old_skills_accuracy(vlm)  # doctest: +SKIP
    0.95
    """
    return accuracy(vlm, heldout if heldout is not None else make_old_heldout(100))


def accuracy_line(name: str, before: float, after: float) -> str:
    """``"<name> accuracy: before B% -> after A%"`` with whole percentages.

    >>> accuracy_line("old skills", 0.925, 0.9)
    'old skills accuracy: before 92% -> after 90%'
    """
    return f"{name} accuracy: before {before * 100:.0f}% -> after {after * 100:.0f}%"
