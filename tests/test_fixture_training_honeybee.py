"""fixtures.train_honeybee: the pieces of the tiny Honeybee OCR fixture's training script, and a two-step run
whose folder ``load_vlm`` reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fixtures import train_honeybee as th
from mllm_nb.demo.text_scenes import ALPHABET, TextScene, make_ocr_set
from mllm_nb.text_reading import ocr


def _tiny_settings(**changes) -> th.TrainSettings:
    """A model small enough to train for a step or two inside a unit test."""
    small = {"vision_hidden": 32, "vision_layers": 1, "abstractor_hidden": 32, "text_hidden": 32, "text_layers": 1,
             "batch_size": 4, "warmup_steps": 1, "vision_steps": 1, "steps": 2, "eval_size": 4, "log_every": 1}  # fmt: skip
    return th.TrainSettings(**{**small, **changes})


def test_slot_targets_follow_the_drawn_characters() -> None:
    settings = th.TrainSettings()
    scene = TextScene("AB2CD", font="dejavu-sans-mono-bold", font_size=22, size=(128, 64), position=(10, 20))
    codes = [ALPHABET.index(c) + 1 for c in scene.text]
    grid = settings.image_size // settings.patch_size
    side = int(settings.num_queries**0.5)
    for cells, targets in ((grid, th.patch_targets(scene, settings)), (side, th.token_targets(scene, settings))):
        assert targets.shape == (cells * cells, settings.max_length + 1)
        for k, code in enumerate(codes):  # slot k names the k-th character, in at least one cell, nothing else
            assert set(targets[:, k].tolist()) == {0, code}
        assert (targets[:, len(codes) : settings.max_length] == 0).all()
        dominant = targets[:, -1]  # the character covering most of each cell, whatever its place
        assert ((dominant > 0) == (targets[:, :-1] > 0).any(1)).all()
        assert all(d in row for d, row in zip(dominant.tolist(), targets[:, :-1].tolist()) if d)
        lefts = [int(np.nonzero(targets[:, k].reshape(cells, cells))[1].min()) for k in range(len(codes))]
        assert lefts == sorted(lefts)  # the string reads left to right
        rows = np.nonzero(targets[:, :-1].reshape(cells, cells, -1).any((1, 2)))[0]
        top, bottom = 20 * settings.image_size / 64, 37 * settings.image_size / 64  # the line, scaled to the input
        cell = settings.image_size / cells
        assert top - cell < rows.min() * cell and (rows.max() + 1) * cell < bottom + cell  # only the line's rows
    assert th._windows(8, 6) == [(0, 2), (1, 3), (2, 4), (4, 6), (5, 7), (6, 8)]  # AdaptiveAvgPool2d(6) on 8


def test_the_fixture_reads_what_text_scenes_draws_by_default() -> None:
    default_images, default_texts = make_ocr_set(6, seed=9)
    images, texts = make_ocr_set(6, seed=9, **th.scene_options(th.TrainSettings()))
    assert texts == default_texts and [i.tobytes() for i in images] == [i.tobytes() for i in default_images]


def test_batches_spell_the_answer_after_the_chat_prompt() -> None:
    settings = _tiny_settings()
    tokenizer = th.build_tokenizer(th.tokenizer_corpus())
    processor = th.make_processor(tokenizer, settings)
    batch = th.BatchMaker(processor, settings, seed=3)(4)
    ids, labels = batch.inputs["input_ids"], batch.inputs["labels"]
    assert batch.inputs["pixel_values"].shape == (4, 3, settings.image_size, settings.image_size)
    for row in range(4):
        answer = labels[row][labels[row] != -100].tolist()
        assert answer[-1] == tokenizer.eos_token_id and len(answer) - 1 in range(4, 7)
        text = tokenizer.decode(answer, skip_special_tokens=True)
        assert set(text) <= set(ALPHABET) and len(text) == len(answer) - 1  # one token per character
        start = int((labels[row] != -100).nonzero()[0])
        prompt = tokenizer.decode(ids[row, :start])
        assert any(f"Human: {q}\nAI:" in prompt for q in th.QUESTIONS), prompt
    assert (ids == processor.image_token_id).sum(1).tolist() == [settings.num_queries] * 4


def test_shared_prefix_forward_gives_the_plain_loss_and_gradients() -> None:
    settings = _tiny_settings()
    torch.manual_seed(0)
    tokenizer = th.build_tokenizer(th.tokenizer_corpus())
    processor = th.make_processor(tokenizer, settings)
    model = th.build_model(tokenizer, settings)
    batch = th.BatchMaker(processor, settings, seed=1)(3)
    assert th.shared_prefix_length(batch, model.config.image_token_id) > 10
    plain = model(**batch.inputs).loss
    plain.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    shared = th.forward_shared_prefix(model, batch).loss
    shared.backward()
    assert torch.allclose(plain, shared, atol=1e-5)
    for name, param in model.named_parameters():
        if name in grads:
            assert torch.allclose(grads[name], param.grad, atol=1e-5), name


def test_train_writes_a_folder_that_load_vlm_reads(tmp_path: Path) -> None:
    metrics = th.train(tmp_path / "hb", _tiny_settings(), quantized_eval=False)
    folder = tmp_path / "hb"
    saved = json.loads((folder / "training_metrics.json").read_text())
    assert saved["eval_float32"] == metrics["eval_float32"] and 0.0 <= saved["eval_float32"]["cer"]
    assert saved["losses"]["step"] == [0, 1] and "tiny-honeybee-ocr" in (folder / "README.md").read_text()
    from mllm_nb.loading import load_vlm

    vlm = load_vlm(str(folder), quantization=None)
    assert isinstance(ocr(vlm, make_ocr_set(1, seed=2)[0][0]), str)
