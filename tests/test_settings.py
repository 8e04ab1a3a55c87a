"""Generation settings (mllm_nb.settings): one type, one validation, one sentence per bad value."""

from __future__ import annotations

import dataclasses

import pytest

from mllm_nb.errors import MllmNbError
from mllm_nb.settings import GenerationSettings, SettingsError, check_generation


def test_defaults_are_greedy_with_the_model_length():
    settings = GenerationSettings()
    assert (settings.max_new_tokens, settings.do_sample, settings.temperature, settings.top_p) == (None, False, None, None)
    assert settings.to_kwargs() == {"do_sample": False}


def test_sampling_settings_become_generate_keywords():
    settings = GenerationSettings(64, do_sample=True, temperature=0.7, top_p=0.9)
    assert settings.to_kwargs() == {"do_sample": True, "max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9}
    assert GenerationSettings.from_kwargs(settings.to_kwargs()) == settings


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GenerationSettings().max_new_tokens = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, sentence",
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1; got 0."),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer >= 1; got 2.5."),
        ({"max_new_tokens": True}, "max_new_tokens must be an integer >= 1; got True."),
        ({"do_sample": "yes"}, "do_sample must be True or False; got 'yes'."),
        ({"do_sample": True, "temperature": 0}, "temperature must be a number > 0; got 0."),
        ({"do_sample": True, "temperature": "hot"}, "temperature must be a number > 0; got 'hot'."),
        ({"do_sample": True, "top_p": 1.5}, "top_p must be a number > 0 and <= 1; got 1.5."),
        ({"do_sample": True, "top_p": 0}, "top_p must be a number > 0 and <= 1; got 0."),
        ({"temperature": 0.7}, "temperature= only matters when sampling; add do_sample=True (greedy is the default)."),
        ({"top_p": 0.9}, "top_p= only matters when sampling; add do_sample=True (greedy is the default)."),
    ],
)
def test_bad_settings_fail_with_one_sentence(kwargs, sentence):
    with pytest.raises(SettingsError) as info:
        GenerationSettings(**kwargs)
    assert str(info.value) == sentence
    assert isinstance(info.value, MllmNbError) and isinstance(info.value, ValueError)


def test_the_widest_ranges_are_accepted():
    GenerationSettings(1, do_sample=True, temperature=5.0, top_p=1.0)  # above the panel's old slider limit
    GenerationSettings(100_000, do_sample=True, temperature=0.01, top_p=0.01)  # below it


@pytest.mark.parametrize(
    "generation, sentence",
    [
        ({"min_new_tokens": -1}, "min_new_tokens must be an integer >= 0; got -1."),
        ({"num_beams": 0}, "num_beams must be an integer >= 1; got 0."),
        ({"do_sample": True, "top_k": 1.5}, "top_k must be an integer >= 0; got 1.5."),
        ({"repetition_penalty": 0}, "repetition_penalty must be a number > 0; got 0."),
        ({"top_k": 5}, "top_k= only matters when sampling; add do_sample=True (greedy is the default)."),
        ({"max_new_tokens": -3, "logits_processor": object()}, "max_new_tokens must be an integer >= 1; got -3."),
    ],
)
def test_check_generation_checks_the_common_extras(generation, sentence):
    with pytest.raises(SettingsError) as info:
        check_generation(generation)
    assert str(info.value) == sentence


def test_check_generation_returns_the_settings_and_ignores_unknown_keys():
    settings = check_generation({"max_new_tokens": 8, "do_sample": True, "top_k": 20, "streamer": object()})
    assert settings == GenerationSettings(8, do_sample=True)
