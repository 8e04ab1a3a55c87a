"""Fixtures shared by the test modules: the tiny random LLaVA folder and the planner.

Helpers that are not fixtures (tiny model builders, stand-ins) live in ``tiny_llava.py``,
``tiny_honeybee.py``, ``catalog_models.py`` and ``serve_util.py``; test modules import those, never
each other. Tests that train a model or start a server carry ``@pytest.mark.slow``
(``make test-quick`` leaves them out).
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA with its processor, saved once per test session."""
    from tiny_llava import save_tiny_llava  # imports torch: only where a test asks for the folder

    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava-random"))


@pytest.fixture
def planner() -> types.ModuleType:
    """``mllm_nb.plan``, the module ``load_vlm`` asks before loading (tests monkeypatch its ``fit``)."""
    import mllm_nb.plan

    return mllm_nb.plan
