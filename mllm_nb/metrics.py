"""Text-recognition scores: character error rate (CER) and word error rate (WER).

Both are the Levenshtein edit distance (insertions + deletions + substitutions, computed by
`rapidfuzz <https://github.com/rapidfuzz/RapidFuzz>`_) divided by the length of the reference.
Given lists, they are corpus-level: the summed distances over the summed reference lengths, so
long references weigh more than short ones (as in jiwer and most OCR papers). Rates can exceed 1
when the hypothesis is much longer than the reference.

>>> cer("HELLO", "HALLO")
0.2
>>> wer(["the cat sat", "on the mat"], ["the cat sat", "on a mat"])
0.16666666666666666
"""

from __future__ import annotations

from collections.abc import Sequence
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


__all__ = ["MetricError", "cer", "edit_distance", "wer"]
