"""load_vlm (mllm_nb.loading): planning before loading, precision choice, the one line, errors.

The unit tests load the tiny random LLaVA of ``tiny_llava.py`` from a folder (the ``tiny_llava_dir``
fixture in conftest.py). Tests of the trained demo fixture are skipped while it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_llava import (
    TINY_LLAVA,
    fake_fit,
    needs_fixture,
    save_tiny_llava,
)

from mllm_nb.demo.mode import FIXTURES_DIR
from mllm_nb.errors import DemoModeError, ModelLoadError
from mllm_nb.loading import load_vlm
from mllm_nb.vlm import VLM, VLMError

pytestmark = pytest.mark.usefixtures("planner")


class FromPretrainedSpy:
    """Counts calls to AutoModelForImageTextToText.from_pretrained and records their kwargs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from transformers import AutoModelForImageTextToText

        self.calls: list[dict] = []
        original = AutoModelForImageTextToText.from_pretrained

        def spy(*args, **kwargs):
            self.calls.append(kwargs)
            return original(*args, **kwargs)

        monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", spy)


# ----------------------------------------------------------------------------------- loading


def test_loads_a_folder_with_one_line_and_real_hf_objects(tiny_llava_dir, capsys):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    vlm = load_vlm(tiny_llava_dir)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Loaded {tiny_llava_dir} (LlavaForConditionalGeneration, ")
    assert " on cpu in float32: " in lines[0] and "fit" in lines[0]
    assert isinstance(vlm, VLM)
    assert isinstance(vlm.model, LlavaForConditionalGeneration)
    assert isinstance(vlm.processor, LlavaProcessor)
    assert vlm.quantization is None and vlm.plan is not None
    assert vlm.name == str(tiny_llava_dir)
    assert vlm.model.dtype == torch.float32 and not vlm.model.training


def test_loading_kwargs_on_cpu(tiny_llava_dir, monkeypatch, capsys):
    spy = FromPretrainedSpy(monkeypatch)
    load_vlm(tiny_llava_dir)
    load_vlm(tiny_llava_dir, quantization="4bit")
    full, four = spy.calls
    assert full == {"dtype": torch.float32, "device_map": "cpu"}  # no quantization_config=None: it would hide a saved one
    config = four["quantization_config"]
    assert four["dtype"] == torch.float32 and four["device_map"] == "cpu"
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float32
    assert "trust_remote_code" not in four


def test_4bit_on_cpu_gives_linear4bit_layers_and_answers(tiny_llava_dir, capsys):
    import bitsandbytes as bnb

    vlm = load_vlm(tiny_llava_dir, quantization="4bit")
    line = capsys.readouterr().out.strip()
    assert "in 4-bit NF4 + float32 compute" in line and "chosen by the caller" in line
    quantized = [m for m in vlm.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) >= 10  # vision MLPs, projector and Llama layers; lm_head stays full precision
    assert vlm.quantization == "4bit"
    assert "179K parameters" in line  # the packed 4-bit weights are counted at their original size
    answer = vlm.ask(None, "w1 w2 w3", max_new_tokens=4)
    assert isinstance(answer, str) and answer


def test_4bit_on_cpu_works_for_layers_the_packed_kernel_cannot_take(tmp_path, capsys):
    """bitsandbytes' AVX512-BF16 CPU kernel needs sizes that are multiples of 64; a 96-wide vision tower is not."""
    vlm = load_vlm(save_tiny_llava(tmp_path / "odd", vision_width=96), quantization="4bit")
    assert isinstance(vlm.ask(Image.new("RGB", (32, 32), "red"), "w1", max_new_tokens=3), str)


def test_auto_falls_back_to_4bit_when_full_precision_does_not_fit(tiny_llava_dir, planner, monkeypatch, capsys):
    import bitsandbytes as bnb

    calls: list = []
    monkeypatch.setattr(planner, "fit", fake_fit({None: False, "4bit": True}, calls))
    vlm = load_vlm(tiny_llava_dir)
    line = capsys.readouterr().out.strip()
    assert vlm.quantization == "4bit"
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in vlm.model.modules())
    assert "float32 weights (28.0 GB) don't fit" in line and "4-bit needs 4.0 GB" in line
    assert [c[1] for c in calls] == [None, "4bit"]
    assert all(c[0] == str(tiny_llava_dir) and c[2] == "auto" for c in calls)


def test_wont_fit_is_refused_before_any_weight_is_read(tiny_llava_dir, planner, monkeypatch, capsys):
    spy = FromPretrainedSpy(monkeypatch)
    monkeypatch.setattr(planner, "fit", fake_fit({None: False, "4bit": False, "8bit": False}))
    with pytest.raises(planner.WontFitError) as info:
        load_vlm(tiny_llava_dir)
    message = str(info.value)
    assert "4.0 GB" in message and "force=True" in message
    assert "Use a smaller model such as llava-interleave-qwen-0.5b" in message
    assert "Fit report" in message  # the report itself follows the sentence
    assert info.value.report is not None
    assert spy.calls == []
    with pytest.raises(planner.WontFitError):
        load_vlm(tiny_llava_dir, quantization="8bit")
    assert spy.calls == []


def test_force_loads_anyway_with_a_warning(tiny_llava_dir, planner, monkeypatch, capsys):
    monkeypatch.setattr(planner, "fit", fake_fit({None: False, "4bit": False}))
    vlm = load_vlm(tiny_llava_dir, quantization=None, force=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("WARNING: ") and "force=True" in lines[0]
    assert lines[1].startswith("Loaded ") and "forced past the planner" in lines[1]
    assert vlm.quantization is None


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"quantization": "3bit"}, "quantization='3bit'"),
        ({"quantization": "4-bit"}, "'auto', '4bit', '8bit' or None"),
        ({"dtype": "float33"}, "dtype='float33'"),
        ({"dtype": torch.int8}, "floating torch dtype"),
        ({"force": "yes"}, "force must be True or False"),
        ({"device_map": 0}, "device_map=0"),
    ],
)
def test_bad_arguments_fail_with_one_line(tiny_llava_dir, kwargs, fragment):
    with pytest.raises(VLMError) as info:
        load_vlm(tiny_llava_dir, **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_folder_is_a_one_line_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError) as info:
        load_vlm(tmp_path / "no-such-model")
    message = str(info.value)
    assert "no-such-model" in message and "\n" not in message and "check the path" in message


def test_a_clip_folder_is_not_a_vlm():
    with pytest.raises(ModelLoadError, match="not an image-text-to-text chat model"):
        load_vlm(FIXTURES_DIR / "tiny-clip")


def test_demo_mode_unknown_id_raises_demo_mode_error():
    with pytest.raises(DemoModeError, match="no offline fixture"):
        load_vlm("someone/unknown-vlm", demo=True)


def test_demo_mode_does_not_touch_a_local_folder(tiny_llava_dir, capsys):
    load_vlm(tiny_llava_dir, demo=True)
    assert "DEMO MODE" not in capsys.readouterr().out


# --------------------------------------------------------------------------- the demo fixture


@needs_fixture
def test_demo_fixture_loads_loudly_and_quietly(capsys):
    from transformers import LlavaForConditionalGeneration

    vlm = load_vlm("llava-hf/llava-1.5-7b-hf", demo=True)
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("DEMO MODE: 'llava-hf/llava-1.5-7b-hf' -> offline fixture 'tiny-llava'")
    assert lines[1].startswith("Loaded llava-hf/llava-1.5-7b-hf (LlavaForConditionalGeneration, ")
    assert "Loading weights" not in captured.err
    assert isinstance(vlm.model, LlavaForConditionalGeneration)


@needs_fixture
def test_demo_fixture_plans_the_fixture_folder(planner, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(planner, "fit", fake_fit({None: True, "4bit": True}, calls))
    load_vlm("llava-hf/llava-1.5-7b-hf", demo=True)
    assert calls and Path(calls[0][0]) == TINY_LLAVA


def test_freed_memory_is_handed_back_before_every_tensor_read(tiny_llava_dir, monkeypatch, capsys):
    """glibc keeps freed read buffers for reuse (a shard's worth of RAM while loading); load_vlm trims
    before every tensor transformers materialises, and puts transformers' function back afterwards."""
    from transformers import core_model_loading

    from mllm_nb import loading

    if loading._malloc_trim() is None:
        pytest.skip("not glibc: nothing to trim")
    events: list[str] = []
    monkeypatch.setattr(loading, "_malloc_trim", lambda: lambda: events.append("trim"))
    original = core_model_loading._materialize_copy

    def spy(*args, **kwargs):
        events.append("read")
        return original(*args, **kwargs)

    monkeypatch.setattr(core_model_loading, "_materialize_copy", spy)
    vlm = load_vlm(str(tiny_llava_dir), quantization=None)
    reads = events.count("read")
    assert reads == len(vlm.model.state_dict())
    assert events[:-1] == ["trim", "read"] * reads and events[-1] == "trim"
    assert core_model_loading._materialize_copy is spy


def test_malloc_trim_runs_on_this_machine():
    from mllm_nb import loading

    trim = loading._malloc_trim()
    assert trim is None or trim() in (0, 1)


def test_a_checkpoint_saved_in_4bit_loads_as_saved_and_plans_its_own_bytes(tiny_llava_dir, tmp_path, capsys):
    """A pre-quantized repo (config.json with a bitsandbytes quantization_config, like unsloth's -bnb-4bit)."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    import mllm_nb as mn
    from mllm_nb.vlm import VLMError

    four_bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir, quantization_config=four_bit, device_map="cpu")
    model.save_pretrained(tmp_path)
    AutoProcessor.from_pretrained(tiny_llava_dir).save_pretrained(tmp_path)
    saved = sum(f.stat().st_size for f in tmp_path.glob("*.safetensors"))
    original = sum(f.stat().st_size for f in Path(tiny_llava_dir).glob("*.safetensors"))
    assert saved < original / 2

    report = mn.fit(tmp_path, target="cpu")
    assert report.download_bytes == saved
    vlm = mn.load_vlm(tmp_path)
    assert "4-bit NF4" in capsys.readouterr().out and vlm.quantization == "4bit"
    assert any(type(m).__name__ == "Linear4bit" for m in vlm.model.modules())
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    assert isinstance(vlm.ask(image, "w1", max_new_tokens=3), str)
    with pytest.raises(VLMError, match="saved in 4bit by bitsandbytes and cannot be loaded in full precision"):
        mn.load_vlm(tmp_path, quantization=None)
