"""The transformers facts mllm_nb depends on hold for the installed release (fail loudly when upstream changes)."""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mllm_nb import upstream

ROOT = Path(__file__).resolve().parents[1]


def declared(name: str) -> Requirement:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(Requirement(line) for line in dependencies if re.match(rf"{name}\b", line))


def test_installed_transformers_is_in_the_declared_range() -> None:
    requirement = declared("transformers")
    assert upstream.TRANSFORMERS_VERSION in requirement.specifier, (
        f"transformers {upstream.TRANSFORMERS_VERSION} is outside the declared {requirement.specifier}"
    )


def test_the_cache_argument_is_the_one_the_language_models_take() -> None:
    from transformers import LlamaModel

    parameters = inspect.signature(LlamaModel.forward).parameters
    assert upstream.CACHE_ARGUMENT in parameters
    other = ({"cache", "past_key_values"} - {upstream.CACHE_ARGUMENT}).pop()
    assert other not in parameters  # if both appear, upstream changed again: re-check mllm_nb.upstream


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_pop_cache_takes_either_name_and_removes_both(name: str) -> None:
    kwargs = {name: "kv", "use_cache": True}
    assert upstream.pop_cache(kwargs) == "kv" and kwargs == {"use_cache": True}
    kwargs = {"cache": None, "past_key_values": "kv"}  # generate may pass an empty slot beside the real one
    assert upstream.pop_cache(kwargs) == "kv" and kwargs == {}
    assert upstream.pop_cache({}) is None


def test_the_tensor_read_hook_covers_every_declared_transformers_release() -> None:
    """The hook is used on the releases it was checked on; those must include the whole declared range's floor."""
    requirement = declared("transformers")
    floor = next(spec.version for spec in requirement.specifier if spec.operator == ">=")
    assert floor in upstream.TENSOR_READ_HOOK_RELEASES
    assert upstream.tensor_read_hook_expected() == (upstream.TRANSFORMERS_VERSION in requirement.specifier)


def test_the_tensor_read_hook_point_exists_in_the_installed_release() -> None:
    """mllm_nb.loading hands freed memory back before each tensor through this private function.

    If this fails, transformers renamed or removed it: the loader then silently stops trimming (private
    memory on Colab grows; benchmarks/load_memory.py measures how much). Find the new hook point or drop
    the hook and its release range in mllm_nb/upstream.py.
    """
    module_name, function_name = upstream.TENSOR_READ_HOOK
    module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    assert callable(function), (
        f"transformers {upstream.TRANSFORMERS_VERSION} has no {module_name}.{function_name}: "
        "mllm_nb.loading's memory hook no longer applies"
    )


def test_the_planners_skip_list_is_what_transformers_skips() -> None:
    """mllm_nb.plan finds bitsandbytes' default skip list through public methods; it must equal transformers' own."""
    import torch
    from transformers import AutoModel, AutoModelForImageTextToText, LlavaConfig
    from transformers.quantizers.base import get_keys_to_not_convert  # the reference, in this test only

    from mllm_nb import catalog
    from mllm_nb.memory import architecture as plan  # the planner's meta-device census

    config = LlavaConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 28, "patch_size": 14, "model_type": "clip_vision_model"},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": 64, "model_type": "llama"},
        image_token_id=63,
    )
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    assert set(get_keys_to_not_convert(model)) <= set(plan._skip_modules(model))
    for model_id in ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "google/siglip-base-patch16-224", "openai/clip-vit-base-patch32"):
        with torch.device("meta"):
            model = AutoModel.from_config(catalog.get(model_id).build_config())
        assert set(get_keys_to_not_convert(model)) <= set(plan._skip_modules(model)), model_id


def test_the_video_processors_colab_builds_build_here_too() -> None:
    """Qwen2-VL/2.5-VL, LLaVA-OneVision and SmolVLM processors build a video processor that needs torchvision.

    Colab has torchvision; so do the test environments (the lock, the newest and the oldest runs), so that
    these processors are tested as users meet them.
    """
    from transformers import LlavaOnevisionVideoProcessor, Qwen2VLVideoProcessor, SmolVLMVideoProcessor

    for processor_class in (Qwen2VLVideoProcessor, LlavaOnevisionVideoProcessor, SmolVLMVideoProcessor):
        assert isinstance(processor_class(), processor_class)
