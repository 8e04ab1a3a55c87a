"""Parity of mllm_nb.honeybee with the reference implementation (kakaobrain/honeybee @ 4161ddf).

``tests/data/honeybee/`` holds tiny random checkpoints in the exact release layout (C-Abs and
D-Abs), fixed inputs and the reference's outputs (see the README there). Each test converts a
release with :func:`mllm_nb.honeybee.convert`, loads it in float32 and compares: CLIP features,
visual tokens, the merged input embeddings and the logits (max abs diff <= 1e-4), and the greedy
ids exactly; the processor must rebuild the reference's ``input_ids`` and ``pixel_values``.

The tiny LM has no SentencePiece model; the reference used a byte-level stand-in (byte ``b`` -> id
``3 + b``), which :func:`byte_tokenizer` rebuilds as a real ``tokenizers`` tokenizer (byte fallback).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny_honeybee import VECTORS, VOCAB, byte_tokenizer

import mllm_nb.honeybee as hb

KINDS = ("c-abs", "d-abs")
CASES = [(kind, images) for kind in KINDS for images in ("one", "two")]
LOGITS_TOL = 1e-4
FEATURES_TOL = 1e-4




def sharded_release(kind: str, folder: Path) -> Path:
    """The reference's sharded release: its config and index, shards rebuilt from the single .bin."""
    source = VECTORS / kind / "checkpoint_sharded" / "last"
    target = folder / "last"
    target.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "pytorch_model.bin.index.json"):
        (target / name).write_bytes((source / name).read_bytes())
    state = torch.load(VECTORS / kind / "checkpoint" / "last" / "pytorch_model.bin", weights_only=True)
    weight_map = json.loads((source / "pytorch_model.bin.index.json").read_text())["weight_map"]
    assert set(weight_map) == set(state)
    for shard in sorted(set(weight_map.values())):
        torch.save({k: state[k] for k, v in weight_map.items() if v == shard}, target / shard)
    return folder


def load_case(kind: str, images: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    suffix = "" if images == "one" else "_two_images"
    inputs = load_file(VECTORS / kind / f"inputs{suffix}.safetensors")
    expected = load_file(VECTORS / kind / f"expected{suffix}.safetensors")
    return inputs, expected


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each tiny release converted once, with the byte tokenizer (so the processor is saved too)."""
    root = tmp_path_factory.mktemp("honeybee-converted")
    return {
        kind: hb.convert(VECTORS / kind / "checkpoint", root / kind, tokenizer=byte_tokenizer(), progress=False)
        for kind in KINDS
    }


@pytest.fixture(scope="session")
def models(converted: dict[str, Path]) -> dict[str, hb.HoneybeeForConditionalGeneration]:
    torch.manual_seed(0)
    return {
        kind: hb.HoneybeeForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        for kind, folder in converted.items()
    }


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


# ------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("kind,images", CASES)
def test_features_visual_tokens_embeddings_and_logits_match_reference(models, kind: str, images: str) -> None:
    model = models[kind]
    inputs, expected = load_case(kind, images)
    captured = {}

    def grab(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured["inputs_embeds"] = kwargs["inputs_embeds"]

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            features = model.model.get_vision_features(inputs["pixel_values"])
            tokens = model.get_image_features(inputs["pixel_values"])
            logits = model(**inputs).logits
    finally:
        handle.remove()
    assert _max_diff(features, expected["vision_features"]) <= FEATURES_TOL
    assert _max_diff(tokens, expected["visual_tokens"]) <= FEATURES_TOL
    assert _max_diff(captured["inputs_embeds"], expected["inputs_embeds"]) <= FEATURES_TOL
    assert _max_diff(logits, expected["logits"]) <= LOGITS_TOL


@pytest.mark.parametrize("kind,images", CASES)
def test_greedy_generation_matches_reference_ids(models, kind: str, images: str) -> None:
    inputs, expected = load_case(kind, images)
    with torch.no_grad():
        reference_extras = {"is_null_image": torch.tensor([False]), "num_images": [2 if images == "two" else 1]}
        output = models[kind].generate(**inputs, **reference_extras, do_sample=False, max_new_tokens=12)
    prompt_length = inputs["input_ids"].shape[1]
    assert torch.equal(output[:, :prompt_length], inputs["input_ids"])
    assert output[:, prompt_length:].tolist() == expected["generated_ids"].tolist()


def test_reference_generate_output_is_bos_plus_the_expected_ids() -> None:
    """The vectors agree with themselves: transformers 4.30 returned BOS + the 12 new ids."""
    for kind in KINDS:
        prompt = json.loads((VECTORS / kind / "prompt.json").read_text())
        _, expected = load_case(kind, "one")
        assert prompt["prompt"]["generate_raw_output"][0] == [1] + expected["generated_ids"][0].tolist()


# ------------------------------------------------------------------------------------ processor


@pytest.mark.parametrize("kind,images", CASES)
def test_processor_rebuilds_reference_prompt_ids_and_pixels(converted, kind: str, images: str) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(converted[kind])
    assert type(processor).__name__ == "HoneybeeProcessor"
    prompts = json.loads((VECTORS / kind / "prompt.json").read_text())
    prompt = prompts["prompt" if images == "one" else "prompt_two_images"]
    question = prompt["text"].rsplit("Human: ", 1)[1].removesuffix("\nAI: ")
    content = [{"type": "image"} for _ in prompt["images"]] + [{"type": "text", "text": question}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    assert text == prompt["text"]
    pictures = [Image.open(VECTORS / kind / name) for name in prompt["images"]]
    encoded = processor(images=pictures, text=text, return_tensors="pt")
    inputs, _ = load_case(kind, images)
    ids = encoded["input_ids"].masked_fill(encoded["input_ids"] == processor.image_token_id, -1)
    assert ids.tolist() == inputs["input_ids"].tolist() == [prompt["input_ids"]]
    assert encoded["attention_mask"].tolist() == inputs["attention_mask"].tolist()
    assert _max_diff(encoded["pixel_values"], inputs["pixel_values"]) <= 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_image_token_ids_and_reference_minus_ones_give_identical_logits(converted, models, kind: str) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(converted[kind])
    inputs, _ = load_case(kind, "two")
    ours = inputs["input_ids"].masked_fill(inputs["input_ids"] < 0, processor.image_token_id)
    assert processor.image_token_id == models[kind].config.image_token_id == VOCAB
    with torch.no_grad():
        reference = models[kind](**inputs).logits
        with_tokens = models[kind](**{**inputs, "input_ids": ours}).logits
    assert torch.equal(reference, with_tokens)


# ------------------------------------------------------------------------------------ sharded release


@pytest.mark.parametrize("kind", KINDS)
def test_sharded_release_converts_to_the_same_weights(converted, tmp_path: Path, kind: str) -> None:
    folder = hb.convert(sharded_release(kind, tmp_path / "release"), tmp_path / "out", tokenizer=None, progress=False)
    single, sharded = load_file(converted[kind] / "model.safetensors"), load_file(folder / "model.safetensors")
    assert single.keys() == sharded.keys()
    assert all(torch.equal(single[key], sharded[key]) for key in single)


# ------------------------------------------------------------------------------------ 4-bit


@pytest.mark.parametrize("kind", KINDS)
def test_load_vlm_4bit_on_cpu_quantizes_only_the_llm_and_stays_close(converted, kind: str) -> None:
    import bitsandbytes as bnb

    import mllm_nb

    vlm = mllm_nb.load_vlm(converted[kind], quantization="4bit")
    model = vlm.model
    quantized = {name for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    plain = {name for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    assert quantized and all(name.startswith("model.language_model.layers.") for name in quantized)
    assert "lm_head" in plain
    assert any(name.startswith("model.vision_tower.") for name in plain)
    assert any(name.startswith("model.abstractor.") for name in plain)
    assert {p.dtype for p in model.model.vision_tower.parameters()} == {torch.float32}
    inputs, expected = load_case(kind, "one")
    with torch.no_grad():
        logits = model(**inputs).logits
    diff = (logits - expected["logits"]).abs()
    correlation = torch.corrcoef(torch.stack([logits.flatten(), expected["logits"].flatten()]))[0, 1].item()
    print(f"{kind} 4-bit NF4 logits vs reference: max {diff.max():.3f}, mean {diff.mean():.4f}, r {correlation:.4f}")
    assert diff.max().item() < 1.5 and diff.mean().item() < 0.2 and correlation > 0.97
    answer = vlm.ask(VECTORS / kind / "image.png", "Describe this image.", max_new_tokens=4)
    assert isinstance(answer, str)
