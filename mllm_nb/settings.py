"""Generation settings: one frozen type, one validation, for every place that generates.

:class:`GenerationSettings` holds ``max_new_tokens``, ``do_sample``, ``temperature`` and ``top_p``
and refuses bad values with one sentence (:class:`SettingsError`) when it is built.
:func:`check_generation` validates a whole dict of ``generate`` keywords: those four plus the
common extras (``min_new_tokens``, ``num_beams``, ``top_k``, ``repetition_penalty``).

    >>> GenerationSettings(max_new_tokens=64).to_kwargs()
    {'do_sample': False, 'max_new_tokens': 64}
    >>> GenerationSettings(temperature=0.7)
    Traceback (most recent call last):
    ...
    mllm_nb.settings.SettingsError: temperature= only matters when sampling; add do_sample=True (greedy is the default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mllm_nb.errors import MllmNbError

#: Keywords that only matter when sampling (``do_sample=True``).
SAMPLING_KEYS = ("temperature", "top_p", "top_k")


class SettingsError(MllmNbError, ValueError):
    """A generation setting has the wrong type or is out of range."""


@dataclass(frozen=True)
class _Limit:
    """What a number must be: an integer or any number, above ``low`` (or at least it), at most ``high``."""

    integer: bool
    low: float
    open_low: bool = False
    high: float | None = None

    def check(self, key: str, value: Any) -> None:
        if value is None:
            return
        allowed = (int,) if self.integer else (int, float)
        bad_type = isinstance(value, bool) or not isinstance(value, allowed)
        too_low = not bad_type and (value <= self.low if self.open_low else value < self.low)
        too_high = not bad_type and self.high is not None and value > self.high
        if bad_type or too_low or too_high:
            bounds = f"{'>' if self.open_low else '>='} {self.low:g}"
            bounds += f" and <= {self.high:g}" if self.high is not None else ""
            what = "an integer" if self.integer else "a number"
            raise SettingsError(f"{key} must be {what} {bounds}; got {value!r}.")


#: The accepted range of each numeric keyword (the widest any caller needs).
LIMITS: dict[str, _Limit] = {
    "max_new_tokens": _Limit(integer=True, low=1),
    "temperature": _Limit(integer=False, low=0, open_low=True),
    "top_p": _Limit(integer=False, low=0, open_low=True, high=1),
    "min_new_tokens": _Limit(integer=True, low=0),
    "num_beams": _Limit(integer=True, low=1),
    "top_k": _Limit(integer=True, low=0),
    "repetition_penalty": _Limit(integer=False, low=0, open_low=True),
}


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate: answer length, greedy or sampling, and the sampling knobs; validated when built.

    ``max_new_tokens=None`` means the model's (or server's) default; ``temperature`` and ``top_p``
    may only be given with ``do_sample=True``.

    >>> GenerationSettings(128, do_sample=True, temperature=0.7, top_p=0.9).to_kwargs()["top_p"]
    0.9
    >>> GenerationSettings(max_new_tokens=0)
    Traceback (most recent call last):
    ...
    mllm_nb.settings.SettingsError: max_new_tokens must be an integer >= 1; got 0.
    """

    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        for key in ("max_new_tokens", "temperature", "top_p"):
            LIMITS[key].check(key, getattr(self, key))
        if not isinstance(self.do_sample, bool):
            raise SettingsError(f"do_sample must be True or False; got {self.do_sample!r}.")
        if not self.do_sample:
            _refuse_sampling_keys({"temperature": self.temperature, "top_p": self.top_p})

    @classmethod
    def from_kwargs(cls, generation: Mapping[str, Any]) -> GenerationSettings:
        """The settings among ``generate`` keywords (other keys are ignored), validated.

        >>> GenerationSettings.from_kwargs({"max_new_tokens": 8, "top_k": 5}).max_new_tokens
        8
        """
        return cls(
            max_new_tokens=generation.get("max_new_tokens"),
            do_sample=generation.get("do_sample", False),
            temperature=generation.get("temperature"),
            top_p=generation.get("top_p"),
        )

    def to_kwargs(self) -> dict[str, Any]:
        """``generate`` keywords: ``do_sample`` always, the others when set.

        >>> GenerationSettings().to_kwargs()
        {'do_sample': False}
        """
        kwargs: dict[str, Any] = {"do_sample": self.do_sample}
        for key in ("max_new_tokens", "temperature", "top_p"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        return kwargs


def check_generation(generation: Mapping[str, Any]) -> GenerationSettings:
    """Validate ``generate`` keywords (the settings and the common extras); return the settings among them.

    Keys this does not know (``streamer``, ``logits_processor``, ...) pass unchecked.

    >>> check_generation({"max_new_tokens": 8, "do_sample": True, "top_k": 20}).do_sample
    True
    >>> check_generation({"top_k": 20})
    Traceback (most recent call last):
    ...
    mllm_nb.settings.SettingsError: top_k= only matters when sampling; add do_sample=True (greedy is the default).
    """
    settings = GenerationSettings.from_kwargs(generation)
    for key in ("min_new_tokens", "num_beams", "top_k", "repetition_penalty"):
        LIMITS[key].check(key, generation.get(key))
    if not settings.do_sample:
        _refuse_sampling_keys({"top_k": generation.get("top_k")})
    return settings


def _refuse_sampling_keys(values: Mapping[str, Any]) -> None:
    given = [key for key in SAMPLING_KEYS if values.get(key) is not None]
    if given:
        raise SettingsError(f"{given[0]}= only matters when sampling; add do_sample=True (greedy is the default).")
