"""Questions about synthetic scenes and the committed tiny LLaVA fixture (its training script: test_fixture_training_llava)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from mllm_nb.demo.scene_qa import (
    KINDS,
    PAIR_KINDS,
    QA,
    canonical_caption,
    make_pair_qa_set,
    make_qa,
    make_qa_set,
    number_word,
    object_phrase,
    sample_scene,
)
from mllm_nb.demo.shapes import COLORS, SHAPES, Background, Scene, SceneObject

FIXTURE = Path(__file__).resolve().parents[1] / "mllm_nb" / "demo" / "fixtures" / "tiny-llava"
FRESH_SEED = 424242  # never used by the training script (pool: seed 0, held-out: seed 1000)
IMAGE_TOKENS = 64  # (64 px / 8 px patches)^2, CLS dropped
# Floors set from the committed fixture's measured exact match (training_metrics.json, 200 held-out questions):
# 93.0% in float32 (the target is 90%) and 86.5% in 4-bit NF4 on the CPU; on 400 fresh questions 94.8% and 86.3%.
# The floors sit a little below so that float rounding on another CPU does not fail them, while a broken prompt,
# processor or loader (which costs tens of points) does. NF4 loses several points (counts and Korean captions
# most): every Linear of a 128-wide model is quantized in blocks of 64 weights, a large relative error for so few.
FLOAT32_FLOOR = 0.90
NF4_FLOOR = 0.82
# Two-image questions (150 held-out pairs): 91.3% float32 (which image 98%, total count 90%, same shape 86%) and
# 82.0% NF4; 93.0% / 83.0% on 300 fresh pairs. The pair floor is the target itself.
PAIR_FLOAT32_FLOOR = 0.90
PAIR_NF4_FLOOR = 0.78


def _messages(question: str, n_images: int = 1) -> list[dict]:
    content: list[dict] = [{"type": "image"} for _ in range(n_images)]
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


def _scene(*objects: tuple[str, str, float]) -> Scene:
    """A scene with objects ``(color, shape, x)`` given in any order."""
    return Scene([SceneObject(c, s, (x, 32.0), 6.0) for c, s, x in objects], Background())


# --- scene_qa ----------------------------------------------------------------------------------


def test_qa_set_is_deterministic_and_seed_dependent() -> None:
    first, again, other = make_qa_set(14, seed=3), make_qa_set(14, seed=3), make_qa_set(14, seed=4)
    assert [(q.kind, q.question, q.answer) for q in first] == [(q.kind, q.question, q.answer) for q in again]
    assert [q.images[0].tobytes() for q in first] == [q.images[0].tobytes() for q in again]
    assert [q.images[0].tobytes() for q in first] != [q.images[0].tobytes() for q in other]
    assert [q.kind for q in first] == [KINDS[i % len(KINDS)] for i in range(14)]
    assert all(len(q.images) == len(q.scenes) == 1 and q.images[0].size == (64, 64) for q in first)


def test_canonical_captions_list_objects_left_to_right() -> None:
    one = _scene(("red", "circle", 30.0))
    two = _scene(("blue", "square", 50.0), ("red", "circle", 12.0))
    three = _scene(("green", "triangle", 55.0), ("red", "circle", 10.0), ("blue", "square", 32.0))
    assert canonical_caption(one) == "a red circle"
    assert canonical_caption(two) == "a red circle on the left and a blue square on the right"
    assert canonical_caption(three) == "a red circle, a blue square and a green triangle"
    assert canonical_caption(one, lang="ko") == "빨간 원"
    assert canonical_caption(two, lang="ko") == "빨간 원과 파란 사각형"
    assert canonical_caption(three, lang="ko") == "빨간 원, 파란 사각형과 초록 삼각형"


def _check_answer(qa: QA) -> None:
    """Re-derive the answer of ``qa`` from its scene metadata."""
    scene = qa.scenes[0]
    ordered = scene.left_to_right()
    xs = [o.center[0] for o in ordered]
    assert xs == sorted(xs) and len({(o.color, o.shape) for o in scene.objects}) == len(scene.objects)
    if qa.kind == "caption":
        assert qa.answer == canonical_caption(scene)
        assert [m.group(1) for m in re.finditer(r"an? (\w+ \w+)", qa.answer)] == scene.labels()
    elif qa.kind == "caption_ko":
        assert qa.answer == canonical_caption(scene, lang="ko") and qa.lang == "ko"
    elif qa.kind == "count":
        assert qa.answer == number_word(len(scene.objects))
    elif qa.kind == "color":
        (shape,) = [s for s in SHAPES if re.search(rf"\b{s}\b", qa.question)]
        assert scene.count(shape=shape) == 1
        assert scene.count(color=qa.answer, shape=shape) == 1
    elif qa.kind == "shape":
        (color,) = [c for c in COLORS if re.search(rf"\b{c}\b", qa.question)]
        assert scene.count(color=color) == 1
        assert scene.count(color=color, shape=qa.answer) == 1
    elif qa.kind == "side":
        (target,) = [o for o in scene.objects if o.label() in qa.question]
        (other,) = [o for o in scene.objects if o is not target]
        assert qa.answer == ("left" if target.center[0] < other.center[0] else "right")
    elif qa.kind == "position":
        place = next(p for p in ("left", "right", "middle") if p in qa.question)
        target = {"left": ordered[0], "right": ordered[-1], "middle": ordered[len(ordered) // 2]}[place]
        assert qa.answer == object_phrase(target.color, target.shape)
        assert place != "middle" or len(ordered) == 3
    else:  # pragma: no cover - a new kind needs a check here
        raise AssertionError(f"unchecked kind {qa.kind}")


def test_answers_agree_with_scene_metadata() -> None:
    items = make_qa_set(140, seed=21)
    for qa in items:
        _check_answer(qa)
    assert {q.answer for q in items if q.kind == "side"} == {"left", "right"}
    assert {q.answer for q in items if q.kind == "count"} == {"one", "two", "three"}


def test_make_qa_kinds_and_errors() -> None:
    rng = np.random.default_rng(0)
    assert make_qa(rng).kind in KINDS
    assert make_qa(rng, "side").scenes[0].count() == 2
    with pytest.raises(ValueError):
        make_qa(rng, "haiku")
    assert sample_scene(np.random.default_rng(1), 3).count() == 3


# --- committed fixture ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processor() -> LlavaProcessor:
    return AutoProcessor.from_pretrained(FIXTURE)


@pytest.fixture(scope="module")
def model() -> LlavaForConditionalGeneration:
    return AutoModelForImageTextToText.from_pretrained(FIXTURE).eval()


def _generate(model: LlavaForConditionalGeneration, inputs: dict, **kwargs: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, do_sample=False, **kwargs)


def test_fixture_folder_is_small_and_complete() -> None:
    names = {p.name for p in FIXTURE.iterdir()}
    expected = {"config.json", "model.safetensors", "generation_config.json", "processor_config.json"}
    assert expected | {"tokenizer.json", "tokenizer_config.json", "README.md", "training_metrics.json"} <= names
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) <= 10 * 1024 * 1024
    card = (FIXTURE / "README.md").read_text(encoding="utf-8")
    assert "demo mode only" in card and "python -m fixtures.train_llava" in card


def test_fixture_recorded_metrics_meet_the_floor() -> None:
    metrics = json.loads((FIXTURE / "training_metrics.json").read_text(encoding="utf-8"))
    assert metrics["accuracy_float32"]["overall"] >= FLOAT32_FLOOR
    assert metrics["accuracy_nf4"]["overall"] >= NF4_FLOOR
    assert set(KINDS) <= set(metrics["accuracy_float32"])
    assert metrics["eval_items"] >= 200 and isinstance(metrics["seed"], int)
    assert metrics["pair_accuracy_float32"]["overall"] >= PAIR_FLOAT32_FLOOR
    assert metrics["pair_accuracy_nf4"]["overall"] >= PAIR_NF4_FLOOR
    assert set(PAIR_KINDS) <= set(metrics["pair_accuracy_float32"]) and metrics["pair_eval_items"] >= 150


def _exact_match(vlm, items: list[QA]) -> float:
    answers = vlm.batch_ask([(qa.images, qa.question) for qa in items], batch_size=35, max_new_tokens=24)
    return float(np.mean([answer == qa.answer for answer, qa in zip(answers, items)]))


def test_exact_match_through_load_vlm_in_float32_and_4bit(capsys: pytest.CaptureFixture) -> None:
    """What a notebook user gets: ``load_vlm(...).ask`` on fresh held-out questions, float32 and 4-bit NF4 on CPU."""
    from mllm_nb import load_vlm

    items = make_qa_set(70, seed=FRESH_SEED + 7)
    full = load_vlm("llava-hf/llava-1.5-7b-hf", demo=True, quantization=None)
    assert full.ask(items[0].images, items[0].question) == full.batch_ask([(items[0].images, items[0].question)])[0]
    assert _exact_match(full, items) >= FLOAT32_FLOOR - 0.05  # 70 questions: a few points of sampling noise
    nf4 = load_vlm("llava-hf/llava-1.5-7b-hf", demo=True, quantization="4bit")
    assert "4-bit" in capsys.readouterr().out
    assert _exact_match(nf4, items) >= NF4_FLOOR - 0.05


def test_two_image_questions_through_load_vlm_in_one_mixed_batch() -> None:
    """One- and two-image prompts shuffled into the same left-padded batches; answers come back in order."""
    from mllm_nb import load_vlm

    pairs = make_pair_qa_set(30, seed=FRESH_SEED + 12)
    mixed = [*make_qa_set(30, seed=FRESH_SEED + 13), *pairs]
    mixed = [mixed[i] for i in np.random.default_rng(0).permutation(len(mixed))]
    vlm = load_vlm("llava-hf/llava-interleave-qwen-0.5b-hf", demo=True, quantization=None)
    answers = vlm.batch_ask([(qa.images, qa.question) for qa in mixed], batch_size=20, max_new_tokens=24)
    hits = [answer == qa.answer for answer, qa in zip(answers, mixed)]
    assert np.mean(hits) >= min(FLOAT32_FLOOR, PAIR_FLOAT32_FLOOR) - 0.08  # 60 questions
    pair_hits = [hit for hit, qa in zip(hits, mixed) if len(qa.images) == 2]
    assert np.mean(pair_hits) >= PAIR_FLOAT32_FLOOR - 0.1  # 30 pairs


def test_fixture_loads_like_a_hub_llava(processor: LlavaProcessor, model: LlavaForConditionalGeneration) -> None:
    assert isinstance(processor, LlavaProcessor) and isinstance(model, LlavaForConditionalGeneration)
    assert type(LlavaForConditionalGeneration.from_pretrained(FIXTURE)) is LlavaForConditionalGeneration
    tokenizer = processor.tokenizer
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>") == processor.image_token_id
    assert model.config.vision_config.model_type == "clip_vision_model"
    assert model.config.text_config.model_type == "llama"
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>"
    gen = model.generation_config
    assert (gen.eos_token_id, gen.pad_token_id, gen.do_sample) == (tokenizer.eos_token_id, tokenizer.pad_token_id, False)


def test_chat_template_renders_images_and_question(processor: LlavaProcessor) -> None:
    prompt = processor.apply_chat_template(_messages("What colour is the circle?"), add_generation_prompt=True)
    assert prompt == "USER: <image>\nWhat colour is the circle? ASSISTANT:"
    two = processor.apply_chat_template(_messages("Do both images show the same shape?", 2), add_generation_prompt=True)
    assert two == "USER: <image>\n<image>\nDo both images show the same shape? ASSISTANT:"
    turn = [*_messages("How many objects are there?"), {"role": "assistant", "content": [{"type": "text", "text": "two"}]}]
    assert processor.apply_chat_template(turn).endswith("ASSISTANT: two</s>")


def test_processor_expands_image_tokens_and_both_prompt_forms_agree(processor: LlavaProcessor) -> None:
    qa = make_qa_set(1, seed=FRESH_SEED)[0]
    prompt = processor.apply_chat_template(_messages(qa.question), add_generation_prompt=True)
    two_step = processor(images=qa.images, text=prompt, return_tensors="pt")
    ids = two_step["input_ids"][0]
    assert int((ids == processor.image_token_id).sum()) == IMAGE_TOKENS
    assert ids[0] == processor.tokenizer.bos_token_id and two_step["pixel_values"].shape == (1, 3, 64, 64)
    content = [{"type": "image", "image": qa.images[0]}, {"type": "text", "text": qa.question}]
    one_step = processor.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    images_kwarg = processor.apply_chat_template(
        _messages(qa.question),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"images": qa.images},
    )
    for other in (one_step, images_kwarg):
        assert torch.equal(other["input_ids"], two_step["input_ids"])
        assert torch.equal(other["pixel_values"], two_step["pixel_values"])


def test_tokenizer_survives_unknown_text(processor: LlavaProcessor) -> None:
    tokenizer = processor.tokenizer
    for text in ("a red circle on the left", "빨간 원과 파란 사각형", "Wie geht's? purple hexagon 😀 보라색"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text


def test_greedy_answers_on_fresh_questions(processor: LlavaProcessor, model: LlavaForConditionalGeneration) -> None:
    items = make_qa_set(42, seed=FRESH_SEED)
    prompts = [processor.apply_chat_template(_messages(qa.question), add_generation_prompt=True) for qa in items]
    inputs = processor(images=[qa.images[0] for qa in items], text=prompts, padding=True, return_tensors="pt")
    out = _generate(model, inputs, max_new_tokens=24)
    answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    hits = [a.strip() == qa.answer for a, qa in zip(answers, items)]
    misses = [(qa.question, qa.answer, a) for a, qa, hit in zip(answers, items, hits) if not hit]
    assert np.mean(hits) >= FLOAT32_FLOOR - 0.08, misses  # 42 questions


def test_generation_stops_at_eos_by_itself(processor: LlavaProcessor, model: LlavaForConditionalGeneration) -> None:
    qa = make_qa(np.random.default_rng(FRESH_SEED), "count")
    prompt = processor.apply_chat_template(_messages(qa.question), add_generation_prompt=True)
    inputs = processor(images=qa.images, text=prompt, return_tensors="pt")
    new = _generate(model, inputs)[0, inputs["input_ids"].shape[1] :]
    assert new[-1] == processor.tokenizer.eos_token_id and len(new) < model.generation_config.max_new_tokens
    assert processor.decode(new, skip_special_tokens=True).strip() == qa.answer


def test_left_padded_batch_matches_one_by_one(processor: LlavaProcessor, model: LlavaForConditionalGeneration) -> None:
    rng = np.random.default_rng(FRESH_SEED + 1)
    items = [make_qa(rng, kind) for kind in ("caption", "count", "side", "color")]
    prompts = [processor.apply_chat_template(_messages(qa.question), add_generation_prompt=True) for qa in items]
    batch = processor(images=[qa.images[0] for qa in items], text=prompts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"][:, 0] == 0).any()  # prompts differ in length: some rows are left-padded
    out = _generate(model, batch, max_new_tokens=24)
    batched = processor.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    for qa, prompt, answer in zip(items, prompts, batched):
        single = processor(images=qa.images, text=prompt, return_tensors="pt")
        alone = _generate(model, single, max_new_tokens=24)[0, single["input_ids"].shape[1] :]
        assert processor.decode(alone, skip_special_tokens=True).strip() == answer.strip()
