"""fixtures.train_clip: the training script of the tiny CLIP fixture (a few steps, then load the folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

from fixtures.train_clip import TrainSettings, train
from mllm_nb.demo.shapes import class_labels, make_classification_set


@pytest.mark.slow
def test_training_smoke_produces_a_loadable_folder(tmp_path: Path) -> None:
    settings = TrainSettings(steps=3, batch_size=12, pool_per_class=2, eval_per_class=1, warmup_steps=1, log_every=0)
    metrics = train(tmp_path, settings)
    assert {"zero_shot_top1_en", "zero_shot_top1_ko", "seed", "train_seconds"} <= set(metrics)
    assert json.loads((tmp_path / "training_metrics.json").read_text(encoding="utf-8"))["steps"] == 3
    loaded = CLIPModel.from_pretrained(tmp_path)
    proc = CLIPProcessor.from_pretrained(tmp_path)
    image = make_classification_set(1, seed=1)[0][0]
    inputs = proc(text=class_labels("en")[:2], images=[image], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert loaded(**inputs).logits_per_image.shape == (1, 2)
