"""The committed tiny Honeybee OCR fixture's held-out score (its training script: test_fixture_training_honeybee).

The fixture tests read renders of a seed the training script never uses, so they score the very
folder that ships (float32 and 4-bit NF4 on the CPU) through ``load_vlm`` and ``mllm_nb.text_reading.ocr``.
They are skipped, with the reason, only when the fixture folder is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mllm_nb.demo.text_scenes import ALPHABET, BACKGROUNDS, make_ocr_set
from mllm_nb.metrics import cer
from mllm_nb.text_reading import OCR_PROMPT, ocr

FIXTURE = Path(__file__).resolve().parents[1] / "mllm_nb" / "demo" / "fixtures" / "tiny-honeybee"
FRESH_SEED = 515151  # never used by the training script (training renders: seed 0, its held-out set: 1000)
N_RENDERS = 100  # fast (the model is tiny); more renders make the score steadier

needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "config.json").is_file(),
    reason=f"the tiny Honeybee fixture is missing ({FIXTURE}); regenerate it: python -m fixtures.train_honeybee",
)

# --------------------------------------------------------------------------- the committed fixture


@pytest.fixture(scope="module")
def scene_options() -> dict:
    """The render distribution of the training settings recorded next to the weights."""
    metrics = json.loads((FIXTURE / "training_metrics.json").read_text())
    return {
        "size": tuple(metrics["canvas"]),
        "fonts": tuple(metrics["fonts"]),
        "font_sizes": tuple(metrics["font_sizes"]),
        "polarity": metrics["polarity"],
        "backgrounds": BACKGROUNDS,
        "min_length": metrics["min_length"],
        "max_length": metrics["max_length"],
        "alphabet": ALPHABET,
    }


@pytest.fixture(scope="module")
def renders(scene_options: dict) -> tuple[list, list[str]]:
    return make_ocr_set(N_RENDERS, FRESH_SEED, **scene_options)


@pytest.fixture(scope="module")
def vlm():
    from mllm_nb.loading import load_vlm

    return load_vlm(str(FIXTURE), quantization=None, dtype=torch.float32, device_map="cpu")


@needs_fixture
def test_fixture_is_a_small_real_honeybee(vlm) -> None:
    import mllm_nb.honeybee as hb

    assert type(vlm.model) is hb.HoneybeeForConditionalGeneration and type(vlm.processor) is hb.HoneybeeProcessor
    assert vlm.model.config.projector_type == "c-abs" and vlm.model.dtype == torch.float32
    assert type(vlm.processor.tokenizer).__name__.startswith("LlamaTokenizer")
    assert sum(f.stat().st_size for f in FIXTURE.iterdir()) < 10 * 2**20
    for name in ("README.md", "training_metrics.json", "model.safetensors", "processor_config.json"):
        assert (FIXTURE / name).is_file(), name
    assert vlm.question_prompt(1, OCR_PROMPT).endswith(f"\nHuman: <image>\nHuman: {OCR_PROMPT}\nAI: ")


@needs_fixture
def test_float32_reads_held_out_renders(vlm, renders) -> None:
    images, texts = renders
    readings = ocr(vlm, images, batch_size=N_RENDERS, progress=False)
    assert len(readings) == N_RENDERS and all(isinstance(r, str) for r in readings)
    assert cer(texts, readings) <= 0.10, list(zip(texts, readings))
    assert ocr(vlm, images[0]) == readings[0]  # one image alone reads the same as in a batch


@needs_fixture
def test_nf4_on_the_cpu_loads_and_reads(renders) -> None:
    from mllm_nb.loading import load_vlm

    pytest.importorskip("bitsandbytes")
    vlm4 = load_vlm(str(FIXTURE), quantization="4bit", dtype=torch.float32, device_map="cpu")
    assert vlm4.quantization == "4bit"
    assert any("4bit" in type(m).__name__ for m in vlm4.model.model.language_model.modules())
    images, texts = renders
    readings = ocr(vlm4, images, batch_size=N_RENDERS, progress=False)
    assert cer(texts, readings) <= 0.10, list(zip(texts, readings))


@needs_fixture
def test_model_card_reports_the_measured_score() -> None:
    metrics = json.loads((FIXTURE / "training_metrics.json").read_text())
    card = (FIXTURE / "README.md").read_text()
    assert metrics["eval_float32"]["cer"] <= 0.10
    assert f"{metrics['eval_float32']['cer']:.1%}" in card and "Not a real model" in card
