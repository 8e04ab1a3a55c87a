"""Scores for a model's text against a reference: text recognition (CER, WER) and short answers (grade).

CER and WER are the Levenshtein edit distance (insertions + deletions + substitutions, computed by
`rapidfuzz <https://github.com/rapidfuzz/RapidFuzz>`_) divided by the length of the reference.
Given lists, they are corpus-level: the summed distances over the summed reference lengths, so
long references weigh more than short ones (as in jiwer and most OCR papers). Rates can exceed 1
when the hypothesis is much longer than the reference.

>>> cer("HELLO", "HALLO")
0.2
>>> wer(["the cat sat", "on the mat"], ["the cat sat", "on a mat"])
0.16666666666666666

A short expected answer ("second", "three", "yes") is graded against a sentence with
:func:`answer_matches` (one answer) or :func:`grade` (a list; see :func:`answer_matches` for the rules):

>>> answer_matches("The yellow triangle is in the second image.", "second")
True
>>> print(grade(["Yes, both are circles.", "3 objects", "the first or the second"], ["yes", "three", "first"]))
2 of 3 right (67%)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rapidfuzz.distance import Levenshtein

from mllm_nb.errors import MllmNbError


class MetricError(MllmNbError, ValueError):
    """The reference and hypothesis texts cannot be compared as given."""


def edit_distance(reference: Sequence[Any], hypothesis: Sequence[Any]) -> int:
    """Levenshtein distance between two strings (characters) or two lists of words.

    >>> edit_distance("kitten", "sitting"), edit_distance(["a", "b"], ["a", "c", "b"])
    (3, 1)
    """
    return int(Levenshtein.distance(reference, hypothesis))


def cer(reference: str | Sequence[str], hypothesis: str | Sequence[str], *, ignore_case: bool = False) -> float:
    """Character error rate of ``hypothesis`` against ``reference`` (two strings, or two equal-length lists).

    >>> cer("ABCD", "ABD"), cer(["AB", "CDEF"], ["AB", "CDXF"])
    (0.25, 0.16666666666666666)
    """
    return _rate(_pairs(reference, hypothesis, "cer", ignore_case), "characters")


def wer(reference: str | Sequence[str], hypothesis: str | Sequence[str], *, ignore_case: bool = False) -> float:
    """Word error rate: words are the whitespace-separated pieces of each text.

    >>> wer("a red fox", "a fox"), wer(["one two", "three"], ["one two", "tree"])
    (0.3333333333333333, 0.3333333333333333)
    """
    pairs = _pairs(reference, hypothesis, "wer", ignore_case)
    return _rate([(ref.split(), hyp.split()) for ref, hyp in pairs], "words")


def _rate(pairs: Sequence[tuple[Sequence[Any], Sequence[Any]]], unit: str) -> float:
    """Summed edit distances over summed reference lengths."""
    total = sum(len(ref) for ref, _ in pairs)
    errors = sum(edit_distance(ref, hyp) for ref, hyp in pairs)
    if total == 0:
        if errors == 0:
            return 0.0
        raise MetricError(
            f"The reference has no {unit}, so the error rate of a non-empty hypothesis is undefined; "
            "pass a non-empty reference."
        )
    return errors / total


def _pairs(reference: Any, hypothesis: Any, name: str, ignore_case: bool = False) -> list[tuple[str, str]]:
    """Check the inputs (two strings, or two lists of strings of the same length) and pair them up, case-folded
    when ``ignore_case``."""
    pairs = _checked_pairs(reference, hypothesis, name)
    return [(ref.casefold(), hyp.casefold()) for ref, hyp in pairs] if ignore_case else pairs


def _checked_pairs(reference: Any, hypothesis: Any, name: str) -> list[tuple[str, str]]:
    if isinstance(reference, str) and isinstance(hypothesis, str):
        return [(reference, hypothesis)]
    if isinstance(reference, str) or isinstance(hypothesis, str):
        raise MetricError(
            f"{name}() got a string and a {_kind(hypothesis if isinstance(reference, str) else reference)}; "
            "pass two strings or two lists of strings."
        )
    refs, hyps = _strings(reference, "reference", name), _strings(hypothesis, "hypothesis", name)
    if len(refs) != len(hyps):
        raise MetricError(
            f"{name}() got {len(refs)} reference(s) but {len(hyps)} hypothesis(es); pass one hypothesis per reference."
        )
    if not refs:
        raise MetricError(f"{name}() got empty lists; pass at least one reference and hypothesis.")
    return list(zip(refs, hyps))


def _strings(values: Any, what: str, name: str) -> list[str]:
    if not isinstance(values, (list, tuple)):
        raise MetricError(f"{name}() {what} must be a string or a list of strings; got {_kind(values)}.")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise MetricError(f"{name}() {what}[{index}] must be a string; got {_kind(value)}.")
    return list(values)


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


# --------------------------------------------------------------------------- short answers

_NEGATIONS = frozenset({"not", "never", "neither", "nor", "cannot", "without"})
_NEGATION_WINDOW = 3  # "not in the first image": a candidate this many words after a negation does not count
_YES = ("yes", "yeah", "yep", "yup")
_NO = ("no", "nope")
_IMAGE_NOUNS = ("image", "picture", "photo", "photograph", "img", "frame")
_LARGEST_NUMBER = 100  # numbers 0..100, as digits or words
_LARGEST_ORDINAL = 10  # first..tenth, 1st..10th, image 1..image 10


def _words(text: str) -> list[str]:
    """Lower-case words without punctuation; "isn't" becomes "is not", "twenty-one" becomes "twenty one".

    >>> _words("  Isn't it the SECOND image?! ")
    ['is', 'not', 'it', 'the', 'second', 'image']
    """
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    text = re.sub(r"n't\b", " not", text)
    return re.findall(r"[^\W_]+", text)


Label = tuple[str, Any]  # (kind, value): ("yes/no", "yes"), ("number", 3), ("ordinal", 2), ("choice", "red")


@lru_cache(maxsize=1)
def _vocabulary() -> dict[tuple[str, ...], Label]:
    """Word sequences the grader recognises, each with its kind and canonical value."""
    from num2words import num2words

    vocab: dict[tuple[str, ...], Label] = {}
    for word in _YES:
        vocab[(word,)] = ("yes/no", "yes")
    for word in _NO:
        vocab[(word,)] = ("yes/no", "no")
    for n in range(_LARGEST_NUMBER + 1):
        vocab[tuple(_words(num2words(n)))] = ("number", n)
        vocab[(str(n),)] = ("number", n)
    for n in range(1, _LARGEST_ORDINAL + 1):
        label = ("ordinal", n)
        vocab[tuple(_words(num2words(n, to="ordinal")))] = label
        vocab[(num2words(n, to="ordinal_num"),)] = label  # 1st, 2nd
        for noun in _IMAGE_NOUNS:  # "image 2", "picture two"
            vocab[(noun, str(n))] = label
            vocab[(noun, num2words(n))] = label
    return vocab


def _show(label: Label) -> str:
    kind, value = label
    if kind == "ordinal":
        from num2words import num2words

        return str(num2words(value, to="ordinal"))
    return str(value)


def _mentions(words: list[str], vocab: dict[tuple[str, ...], Label]) -> list[tuple[Label, bool]]:
    """Each recognised word sequence in ``words`` (longest first, left to right) and whether a negation
    (``not``, ``never`` ...) stands at most ``_NEGATION_WINDOW`` words before it."""
    longest = max(len(key) for key in vocab)
    found, i = [], 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 0, -1):
            label = vocab.get(tuple(words[i:i + size]))
            if label is not None:
                negated = any(word in _NEGATIONS for word in words[max(0, i - _NEGATION_WINDOW):i])
                found.append((label, negated))
                i += size
                break
        else:
            i += 1
    return found


def _judge(answer: str, expected: str, choices: Sequence[str] = ()) -> tuple[bool, str]:
    """(right, why) for one answer; see :func:`answer_matches` for the rules."""
    wanted = tuple(_words(expected))
    if not wanted:
        raise MetricError(f"The expected answer {expected!r} has no words; pass the word the answer should contain.")
    vocab = _vocabulary()
    label = vocab.get(wanted)
    if label is None:  # free text ("red", "bottom-left"): it and the other choices compete
        vocab = {tuple(_words(choice)): ("choice", " ".join(_words(choice))) for choice in choices}
        vocab = {key: value for key, value in vocab.items() if key}
        label = ("choice", " ".join(wanted))
        vocab[wanted] = label
    kind = label[0]
    mentions = _mentions(_words(answer), vocab)
    if kind == "yes/no":
        said = next((found for found, _ in mentions if found[0] == kind), None)
        if said is None:
            return False, "no yes or no"
        return said == label, "right" if said == label else f"wrong: says {_show(said)}"
    named = list(dict.fromkeys(found for found, negated in mentions if found[0] == kind and not negated))
    if named == [label]:
        return True, "right"
    if not named:
        what = {"number": "no count", "ordinal": "no image named"}.get(kind, f"does not say {' '.join(wanted)!r}")
        return False, what
    if label in named:
        return False, "ambiguous: names " + _listed(named)
    return False, "wrong: says " + _listed(named)


def _listed(labels: list[Label]) -> str:
    """``first``; ``first and second``; ``2, 1 and 3``."""
    shown = [_show(label) for label in labels]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MetricError(f"{what} must be a string; got {_kind(value)}.")
    return value


def answer_matches(answer: str, expected: str, choices: Sequence[str] = ()) -> bool:
    """True when a model's free-form ``answer`` gives the short ``expected`` answer, and only that one.

    Both texts are compared as lower-case words without punctuation. The expected answer's kind decides:

    * **yes/no** (``yes``, ``no``): the first yes/no word of the answer (yes, yeah, yep, no, nope) decides.
    * **a count** (``3``, ``three``; 0 to 100): digits and words are the same number.
    * **an image** (``first``, ``2nd``, ``image 2``, ``picture two``): the image's position, however named.
    * **anything else** (``red``, ``bottom-left``): the expected words, in order, as whole words; the other
      ``choices`` (if given) are its competitors.

    For the last three, the answer must name the expected one and no competitor of the same kind: "first or
    second" and "two or three" are wrong, because the grade would be a guess. A candidate at most three words
    after ``not`` / ``never`` does not count ("not the first, the second" names the second).

    >>> answer_matches("There are 3 objects in total.", "three"), answer_matches("Image 1.", "first")
    (True, True)
    >>> answer_matches("It is in the first or the second image.", "second")
    False
    """
    return _judge(_text(answer, "answer"), _text(expected, "expected"), _choices(choices))[0]


def _choices(choices: Any) -> tuple[str, ...]:
    if isinstance(choices, str) or not isinstance(choices, (list, tuple)):
        raise MetricError(f"choices must be a list of strings; got {_kind(choices)}.")
    return tuple(_text(choice, f"choices[{index}]") for index, choice in enumerate(choices))


@dataclass(frozen=True)
class Grade:
    """The grade of a list of answers: one mark and one reason per answer.

    >>> g = grade(["yes", "The second one."], ["yes", "first"])
    >>> g.marks, g.reasons, g.right, g.accuracy
    ((True, False), ('right', 'wrong: says second'), 1, 0.5)
    """

    marks: tuple[bool, ...]
    reasons: tuple[str, ...]

    @property
    def right(self) -> int:
        """How many answers are right."""
        return sum(self.marks)

    @property
    def total(self) -> int:
        """How many answers were graded."""
        return len(self.marks)

    @property
    def accuracy(self) -> float:
        """The share of right answers, 0.0 to 1.0."""
        return self.right / self.total

    def __str__(self) -> str:
        return f"{self.right} of {self.total} right ({self.accuracy:.0%})"


def grade(answers: Sequence[str], expected: Sequence[str], choices: Sequence[str] = ()) -> Grade:
    """Grade each of ``answers`` against the short answer at the same place in ``expected`` (by the rules of
    :func:`answer_matches`; ``choices`` apply to every free-text answer).

    >>> print(grade(["The second image.", "No."], ["second", "yes"]))
    1 of 2 right (50%)
    """
    for values, what in ((answers, "answers"), (expected, "expected")):
        if isinstance(values, str) or not isinstance(values, (list, tuple)):
            raise MetricError(f"grade() {what} must be a list of strings; got {_kind(values)}.")
    if len(answers) != len(expected):
        raise MetricError(
            f"grade() got {len(answers)} answer(s) but {len(expected)} expected answer(s); pass one expected answer "
            "per answer."
        )
    if not answers:
        raise MetricError("grade() got empty lists; pass at least one answer and its expected answer.")
    competing = _choices(choices)
    judged = [
        _judge(_text(answer, f"grade() answers[{i}]"), _text(wanted, f"grade() expected[{i}]"), competing)
        for i, (answer, wanted) in enumerate(zip(answers, expected))
    ]
    return Grade(tuple(right for right, _ in judged), tuple(why for _, why in judged))


__all__ = ["Grade", "MetricError", "answer_matches", "cer", "edit_distance", "grade", "wer"]
