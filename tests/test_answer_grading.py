"""mllm_nb.metrics.answer_matches / grade: short expected answers graded against free-form model answers."""

from __future__ import annotations

import pytest

import mllm_nb as mn
from mllm_nb.errors import MllmNbError
from mllm_nb.metrics import Grade, MetricError, answer_matches, grade


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("second", "second"),  # the demo model's one-word answers
        ("The yellow triangle is in the second image.", "second"),
        ("  SECOND!! ", "second"),  # case, punctuation and whitespace do not matter
        ("It is in Image 2.", "second"),
        ("The 2nd picture.", "second"),
        ("picture two", "second"),
        ("The blue circle is in image #1", "first"),
        ("The blue circle is in the first image.", "image 1"),  # the expected side may use any form too
        ("It is not in the first image but in the second one.", "second"),  # a negated candidate does not count
        ("There are 3 objects in total.", "three"),
        ("Three objects.", "3"),
        ("I count twenty-one shapes", "21"),
        ("Yes, both images show a circle.", "yes"),
        ("No. The first is a square, the second a circle.", "no"),
        ("Nope", "no"),
        ("The scratch is in the bottom-left corner.", "bottom-left"),
        ("A red square.", "red"),
    ],
)
def test_right_answers(answer: str, expected: str) -> None:
    assert answer_matches(answer, expected)


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("The yellow triangle is in the first image.", "second"),
        ("Image 1", "second"),
        ("There are two objects.", "three"),
        ("3", "two"),
        ("No, they differ.", "yes"),
        ("yes", "no"),
        ("It is not in the second image.", "second"),  # the only mention is negated
        ("The shapes are the same.", "yes"),  # no yes/no word: nothing to grade
        ("I cannot tell.", "first"),
        ("", "three"),
        ("threefold", "three"),  # whole words only
        ("The colour is reddish.", "red"),
        ("It is not red.", "red"),
    ],
)
def test_wrong_answers(answer: str, expected: str) -> None:
    assert not answer_matches(answer, expected)


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("The first or the second.", "second"),
        ("It could be the first or the second image.", "first"),
        ("Both image 1 and image 2 show it.", "first"),
        ("Two or three.", "three"),
        ("3 or 4 objects", "3"),
        ("Two in the first image, one in the second: three in total.", "three"),
    ],
)
def test_answers_naming_competing_candidates_are_not_right(answer: str, expected: str) -> None:
    assert not answer_matches(answer, expected)
    assert grade([answer], [expected]).reasons[0].startswith("ambiguous: names ")


def test_yes_no_is_judged_by_the_first_yes_or_no_word() -> None:
    assert answer_matches("Yes. There is no difference in shape.", "yes")
    assert not answer_matches("No, but yes in colour.", "yes")
    assert answer_matches("Yeah, no doubt.", "yes")


def test_ordinals_and_counts_do_not_compete_with_each_other() -> None:
    # "first"/"second" are image positions, not counts: a count answer may mention them freely, and "one" in
    # "the first one" is not an image position
    assert answer_matches("The first image has three objects in all.", "three")
    assert answer_matches("The first one.", "first")


def test_choices_compete_for_free_text_answers() -> None:
    corners = ["top-left", "top-right", "bottom-left", "bottom-right"]
    assert answer_matches("Bottom left.", "bottom-left", corners)
    assert not answer_matches("Bottom left or top right.", "bottom-left", corners)
    assert answer_matches("Bottom left or top right.", "bottom-left")  # without choices nothing competes
    assert not answer_matches("top-right", "bottom-left", corners)


def test_grade_counts_and_explains() -> None:
    result = grade(
        ["The second image.", "Yes.", "3 objects", "The first or the second.", "There are two."],
        ["second", "no", "three", "first", "four"],
    )
    assert isinstance(result, Grade)
    assert result.marks == (True, False, True, False, False)
    assert result.reasons == ("right", "wrong: says yes", "right", "ambiguous: names first and second", "wrong: says 2")
    assert (result.right, result.total) == (2, 5)
    assert result.accuracy == pytest.approx(0.4)
    assert str(result) == "2 of 5 right (40%)"


def test_one_word_answers_all_right() -> None:
    # the demo notebook's case: exact one-word answers grade exactly like exact match
    truth = ["second", "yes", "three", "first", "no", "three", "second", "yes", "two"]
    assert str(grade(list(truth), truth)) == "9 of 9 right (100%)"
    assert grade(list(truth), truth).marks == (True,) * 9


def test_public_names() -> None:
    assert mn.answer_matches is answer_matches
    assert mn.grade is grade


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda: answer_matches(None, "yes"), "answer must be a string; got None"),
        (lambda: answer_matches("yes", 3), "expected must be a string; got int"),
        (lambda: answer_matches("yes", " ?! "), "has no words"),
        (lambda: answer_matches("yes", "red", "blue"), "choices must be a list of strings"),
        (lambda: grade(["yes", "no"], ["yes"]), "got 2 answer(s) but 1 expected answer(s)"),
        (lambda: grade("yes", "yes"), "answers must be a list of strings; got str"),
        (lambda: grade(["yes", 2], ["yes", "two"]), "grade() answers[1] must be a string; got int"),
        (lambda: grade(["yes"], [None]), "grade() expected[0] must be a string; got None"),
        (lambda: grade([], []), "empty lists"),
    ],
)
def test_bad_input_is_one_sentence(call, fragment: str) -> None:
    with pytest.raises(MetricError) as caught:
        call()
    assert isinstance(caught.value, MllmNbError)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message and message.endswith(".")
