"""mllm_nb: multimodal LLMs made easy in Jupyter and Colab.

Three lines for a curious explorer::

    import mllm_nb as mn
    clip = mn.load_clip("openai/clip-vit-base-patch32")
    clip.classify(mn.load_image("cat.jpg"), ["cat", "dog"]).top(1)

Names are imported lazily so that ``import mllm_nb`` stays fast and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "MllmNbError": "mllm_nb.errors",
    "ImageLoadError": "mllm_nb.errors",
    "ModelLoadError": "mllm_nb.errors",
    "DemoModeError": "mllm_nb.errors",
    "load_image": "mllm_nb.images",
    "load_images": "mllm_nb.images",
    "show": "mllm_nb.display",
    "plot_probs": "mllm_nb.display",
    "plot_predictions": "mllm_nb.display",
    "plot_accuracy": "mllm_nb.display",
    "doctor": "mllm_nb.hardware",
    "best_dtype": "mllm_nb.hardware",
    "hardware_report": "mllm_nb.hardware",
    "load_clip": "mllm_nb.clip",
    "Clip": "mllm_nb.clip",
    "Classification": "mllm_nb.clip",
    "ImageIndex": "mllm_nb.clip",
    "is_demo": "mllm_nb.demo.mode",
    "sample_image": "mllm_nb.samples",
    "fit": "mllm_nb.plan",
    "FitReport": "mllm_nb.plan",
    "MeasuredMemory": "mllm_nb.memory.measured",
    "WontFitError": "mllm_nb.plan",
    "TrainingSettings": "mllm_nb.memory.training",
    "TrainingPlan": "mllm_nb.memory.training",
    "plan_training": "mllm_nb.memory.training",
    "compare_models": "mllm_nb.choosing",
    "load_vlm": "mllm_nb.loading",
    "VLM": "mllm_nb.vlm",
    "sample_images": "mllm_nb.samples",
    "Conversation": "mllm_nb.chat",
    "Turn": "mllm_nb.chat",
    "ConversationError": "mllm_nb.chat",
    "Backend": "mllm_nb.backends",
    "LocalBackend": "mllm_nb.backends",
    "OpenAIBackend": "mllm_nb.backends",
    "BackendError": "mllm_nb.backends",
    "as_backend": "mllm_nb.backends",
    "ChatPanel": "mllm_nb.widgets",
    "ChatPanelError": "mllm_nb.widgets",
    "ChatSession": "mllm_nb.backends",
    "TokenStreamer": "mllm_nb.streaming",
    "GenerationSettings": "mllm_nb.settings",
    "SettingsError": "mllm_nb.settings",
    "budget": "mllm_nb.context_budget",
    "BudgetReport": "mllm_nb.context_budget",
    "BudgetError": "mllm_nb.context_budget",
    "plot_image_tokens": "mllm_nb.context_budget",
    "MultiImageWarning": "mllm_nb.vlm",
    "ocr": "mllm_nb.text_reading",
    "cer": "mllm_nb.metrics",
    "wer": "mllm_nb.metrics",
    "answer_matches": "mllm_nb.metrics",
    "grade": "mllm_nb.metrics",
    "add_scratch": "mllm_nb.defects",
    "finetune": "mllm_nb.finetuning",
    "load_adapter": "mllm_nb.finetuning",
    "FinetunedVLM": "mllm_nb.finetuning",
    "FinetuneError": "mllm_nb.finetuning",
    "load_examples": "mllm_nb.finetune_data",
    "ExampleError": "mllm_nb.finetune_data",
    "draw_architecture": "mllm_nb.diagrams",
    "plot_fit": "mllm_nb.fit_chart",
    "plot_image_cost": "mllm_nb.fit_chart",
}

# submodules reachable as attributes without importing them first, e.g. ``mllm_nb.clip.ENSEMBLE_TEMPLATES``
_SUBMODULES = {
    "backends", "catalog", "chat", "clip", "cli", "context_budget", "defects", "demo", "display", "errors", "hardware",
    "honeybee", "images", "loading", "memory", "metrics", "plan", "samples", "settings", "streaming", "text_reading", "vlm",
    "widgets",
    "diagrams", "fit_chart",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"mllm_nb.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mllm_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
