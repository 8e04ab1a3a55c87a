"""The exceptions mllm_nb raises.

Every message is one sentence that says what was wrong with which input and what to do about it,
so a notebook user can act on it without reading a traceback.
"""

from __future__ import annotations


class MllmNbError(Exception):
    """Base class of every error mllm_nb raises on purpose."""


class ImageLoadError(MllmNbError, ValueError):
    """An image source could not be turned into an RGB PIL image."""


class ModelLoadError(MllmNbError):
    """A model or processor could not be resolved or loaded."""


class DemoModeError(ModelLoadError):
    """Demo mode was asked for a model that has no offline fixture."""
