"""Explicit, loud, offline demo mode.

Demo mode swaps real Hub checkpoints for the project's own tiny models of the same architectures,
trained on synthetic data (see ``mllm_nb/demo/``). It is never switched on silently: it needs
``MLLM_NB_DEMO=1`` in the environment or ``demo=True`` in the call, and every loader that uses a
fixture prints a line starting with ``DEMO MODE``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mllm_nb.errors import DemoModeError, ModelLoadError

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
DEMO_ENV_VAR = "MLLM_NB_DEMO"

# Hub id patterns (fnmatch, case-insensitive) -> fixture folder name, per task.
_FIXTURE_PATTERNS: dict[str, dict[str, str]] = {
    "clip": {
        "openai/clip-*": "tiny-clip",
        "google/siglip*": "tiny-clip",
        "laion/clip-*": "tiny-clip",
        "laion/*clip*": "tiny-clip",
    },
    "vlm": {
        "llava-hf/*": "tiny-llava",
        "kakaobrain/honeybee*": "tiny-honeybee",
    },
}


def is_demo(demo: bool | None = None) -> bool:
    """Return whether demo mode is on: ``demo`` when given, else the ``MLLM_NB_DEMO`` variable.

    >>> is_demo(True)
    True
    """
    if demo is not None:
        return bool(demo)
    return os.environ.get(DEMO_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def fixture_path(name: str) -> Path:
    """Path of a committed fixture model folder, e.g. ``fixture_path("tiny-clip")``."""
    path = FIXTURES_DIR / name
    if not (path / "config.json").is_file():
        raise DemoModeError(
            f"The demo fixture {name!r} is missing from {FIXTURES_DIR}; "
            "reinstall mllm-nb or, in a source checkout, regenerate it with `make fixtures`."
        )
    return path


def resolve_model(name_or_path: str | os.PathLike, task: str, demo: bool | None = None) -> tuple[str, bool]:
    """Map a model id to what should actually be loaded.

    Returns ``(name_or_path, is_fixture)``. A local folder is always used as it is. In demo mode a
    known Hub id resolves to the tiny fixture of its family; an unknown id raises ``DemoModeError``.

    >>> path, is_fixture = resolve_model("openai/clip-vit-base-patch32", "clip", demo=True)
    >>> is_fixture
    True
    """
    text = os.fspath(name_or_path)
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser()), False
    if Path(text).expanduser().is_file():
        raise ModelLoadError(
            f"{text!r} is a file, not a model folder; pass the folder that holds it "
            "(with config.json and the weights), or a Hub id such as 'llava-hf/llava-1.5-7b-hf'."
        )
    if looks_like_path(text):
        raise ModelLoadError(
            f"No model folder {text!r}; check the path (the current folder is {os.getcwd()!r}) "
            "or pass a Hub id such as 'llava-hf/llava-1.5-7b-hf'."
        )
    if not is_demo(demo):
        return text, False
    patterns = _FIXTURE_PATTERNS.get(task, {})
    for pattern, fixture in patterns.items():
        if fnmatch.fnmatch(text.lower(), pattern):
            return str(fixture_path(fixture)), True
    stand_in = _catalog_stand_in(text, task)
    if stand_in is not None:
        return str(fixture_path(stand_in)), True
    known = ", ".join(sorted(patterns)) or "none"
    also = " or a catalog model (mllm_nb.catalog.table())" if task == "vlm" else ""
    raise DemoModeError(
        f"Demo mode has no offline fixture for {text!r} ({task}); use one of the ids matching "
        f"{known}{also}, a local folder, or unset {DEMO_ENV_VAR} to download the real model."
    )


def _catalog_stand_in(model_id: str, task: str) -> str | None:
    """The fixture standing in for any other catalog chat model (Qwen-VL, Gemma 3, ...): the tiny LLaVA."""
    from mllm_nb import catalog

    entry = catalog.get(model_id) or catalog.original_of(model_id)
    if task != "vlm" or entry is None or entry.family in ("clip", "siglip"):
        return None
    return "tiny-llava"


def looks_like_path(text: str) -> bool:
    """Whether ``text`` is written as a file-system path rather than a Hub id like ``org/name``.

    >>> looks_like_path("./models/tiny"), looks_like_path("openai/clip-vit-base-patch32")
    (True, False)
    """
    return (
        text.startswith(("/", "./", "../", "~", "\\"))
        or text.count("/") > 1
        or (len(text) > 1 and text[1] == ":")  # a Windows drive
    )


def demo_banner(requested: str, fixture: str, what: str) -> str:
    """The loud one-line notice printed whenever a fixture stands in for a real model."""
    return (
        f"DEMO MODE: {requested!r} -> offline fixture {Path(fixture).name!r} ({what}); "
        "answers come from a tiny model trained on synthetic data, not from the real checkpoint."
    )


@contextmanager
def quiet_fixture_loading(quiet: bool) -> Iterator[None]:
    """Hide transformers' weight-loading bar while a demo fixture loads (it takes milliseconds).

    Real checkpoints keep the bar: ``quiet=False`` changes nothing.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was_enabled:
            hf_logging.enable_progress_bar()
