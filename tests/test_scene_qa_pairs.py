"""Two-image questions of mllm_nb.demo.scene_qa: answers re-derived from the scenes, balance, determinism, swaps."""

from __future__ import annotations

import numpy as np
import pytest

from mllm_nb.demo.scene_qa import (
    PAIR_KINDS,
    QA,
    ask_pair,
    corpus,
    make_pair_qa,
    make_pair_qa_set,
    make_qa,
    number_word,
    pair_corpus,
    sample_scene,
    swap_pair,
)
from mllm_nb.demo.shapes import COLORS, SHAPES


def _check_pair_answer(qa: QA) -> None:
    """Re-derive the answer of a two-image question from its two scenes."""
    first, second = qa.scenes
    assert len(qa.images) == 2 and [im.tobytes() for im in qa.images] == [s.render().tobytes() for s in qa.scenes]
    if qa.kind == "which_image":
        (label,) = [f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" in qa.question]
        color, shape = label.split()
        counts = (first.count(color=color, shape=shape), second.count(color=color, shape=shape))
        assert sorted(counts) == [0, 1] and qa.answer == ("first" if counts[0] else "second")
    elif qa.kind == "same_shape":
        assert first.count() == second.count() == 1
        assert qa.answer == ("yes" if first.objects[0].shape == second.objects[0].shape else "no")
    elif qa.kind == "total_count":
        assert qa.answer == number_word(first.count() + second.count())
    else:  # pragma: no cover - a new kind needs a check here
        raise AssertionError(f"unchecked kind {qa.kind}")


def test_pair_questions_agree_with_scene_metadata_and_are_balanced() -> None:
    items = make_pair_qa_set(150, seed=22)
    assert [q.kind for q in items[:6]] == list(PAIR_KINDS) * 2
    for qa in items:
        _check_pair_answer(qa)
        _check_pair_answer(swap_pair(qa))
    answers = {kind: [q.answer for q in items if q.kind == kind] for kind in PAIR_KINDS}
    for kind, both in (("which_image", ("first", "second")), ("same_shape", ("yes", "no"))):
        assert 0.3 <= answers[kind].count(both[0]) / len(answers[kind]) <= 0.7
    assert {"two", "three", "four", "five"} <= set(answers["total_count"]) <= {"two", "three", "four", "five", "six"}


def test_pair_set_is_deterministic_and_seed_dependent() -> None:
    first, again, other = make_pair_qa_set(9, seed=5), make_pair_qa_set(9, seed=5), make_pair_qa_set(9, seed=6)
    key = lambda items: [(q.question, q.answer, [im.tobytes() for im in q.images]) for q in items]
    assert key(first) == key(again) and key(first) != key(other)
    assert make_pair_qa_set(4, seed=5, kinds=["total_count"])[0].kind == "total_count"


def test_swap_pair_swaps_images_and_first_second() -> None:
    qa = make_pair_qa(np.random.default_rng(3), "which_image")
    swapped = swap_pair(qa)
    assert swapped.images == qa.images[::-1] and swapped.scenes == qa.scenes[::-1]
    assert {qa.answer, swapped.answer} == {"first", "second"} and swapped.question == qa.question
    same = make_pair_qa(np.random.default_rng(3), "same_shape")
    assert swap_pair(same).answer == same.answer and swap_pair(swap_pair(same)).images == same.images


def test_pair_question_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="two-image question kind"):
        make_pair_qa(rng, "color")
    with pytest.raises(ValueError, match="exactly two scenes"):
        ask_pair(rng, [sample_scene(rng)], "total_count")
    with pytest.raises(ValueError, match="two-image question"):
        swap_pair(make_qa(rng, "count"))
    two_objects = [sample_scene(rng, 2), sample_scene(rng, 1)]
    assert ask_pair(rng, two_objects, "same_shape") is None  # needs one object per image
    assert ask_pair(rng, [two_objects[0], two_objects[0]], "which_image") is None  # nothing only in one image


def test_pair_phrasings_are_in_their_own_corpus() -> None:
    questions = {qa.question for qa in make_pair_qa_set(60, seed=1)}
    pair_texts, single_texts = set(pair_corpus()), set(corpus())
    assert questions <= pair_texts and not questions & single_texts
