"""Honeybee (Kakao Brain, arXiv 2312.06742) on transformers 5: model, processor, release conversion.

Importing this package registers ``HoneybeeConfig`` with ``AutoConfig``,
``HoneybeeForConditionalGeneration`` with ``AutoModelForImageTextToText`` and ``HoneybeeProcessor``
with ``AutoProcessor``, so a converted folder loads like any other model::

    import mllm_nb.honeybee as hb
    folder = hb.download("7B-C-Abs-M144", "checkpoints/")       # the official release archive
    hb.convert(folder, "honeybee-7b-c-abs-m144")                # -> safetensors + config + processor
    vlm = mllm_nb.load_vlm("honeybee-7b-c-abs-m144", quantization="4bit")

The released weights are CC-BY-NC-4.0 (non-commercial); the code is Apache-2.0.
"""

from __future__ import annotations

from mllm_nb.honeybee.configuration import C_ABS_DEFAULTS, D_ABS_DEFAULTS, HoneybeeConfig, HoneybeeError
from mllm_nb.honeybee.convert import convert, convert_config
from mllm_nb.honeybee.download import MODEL_ZOO, download
from mllm_nb.honeybee.modeling import (
    QUANTIZATION_SKIP_MODULES,
    HoneybeeForConditionalGeneration,
    HoneybeeModel,
)
from mllm_nb.honeybee.processing import CHAT_TEMPLATE, HoneybeeImageProcessor, HoneybeeProcessor


def register() -> None:
    """Register the Honeybee classes with the transformers Auto classes (idempotent; done at import).

    >>> register()
    >>> from transformers import AutoConfig
    >>> AutoConfig.for_model("honeybee").model_type
    'honeybee'
    """
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    AutoConfig.register("honeybee", HoneybeeConfig, exist_ok=True)
    AutoModel.register(HoneybeeConfig, HoneybeeModel, exist_ok=True)
    AutoModelForImageTextToText.register(HoneybeeConfig, HoneybeeForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(
        HoneybeeConfig,
        image_processor_classes={"pil": HoneybeeImageProcessor, "torchvision": HoneybeeImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(HoneybeeConfig, HoneybeeProcessor, exist_ok=True)


register()

__all__ = [
    "CHAT_TEMPLATE",
    "C_ABS_DEFAULTS",
    "D_ABS_DEFAULTS",
    "MODEL_ZOO",
    "QUANTIZATION_SKIP_MODULES",
    "HoneybeeConfig",
    "HoneybeeError",
    "HoneybeeForConditionalGeneration",
    "HoneybeeImageProcessor",
    "HoneybeeModel",
    "HoneybeeProcessor",
    "convert",
    "convert_config",
    "download",
    "register",
]
