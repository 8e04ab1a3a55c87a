"""VLM (mllm_nb.vlm): ask / stream / batch_ask / caption_folder against hand-written transformers code.

Uses the tiny random LLaVA of ``tests/tiny_llava.py`` (and the planner fixture of conftest.py); the
trained demo fixture is exercised too when it exists.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_llava import IMAGE_TOKEN_ID, TOKENS_PER_IMAGE, needs_fixture, save_tiny_llava

from mllm_nb.errors import ImageLoadError
from mllm_nb.images import load_image
from mllm_nb.loading import load_vlm
from mllm_nb.settings import SettingsError
from mllm_nb.vlm import VLM, VLMError

RED = Image.new("RGB", (40, 40), (220, 30, 30))
BLUE = Image.new("RGB", (50, 30), (20, 40, 230))
NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 36, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> VLM:
    folder = save_tiny_llava(tmp_path_factory.mktemp("tiny-llava-vlm"), seed=1)
    return load_vlm(folder)


def hand_written(model, processor, images, prompt, **generate_kwargs) -> str:
    """What a tutorial writes: processor, generate, decode the new tokens."""
    inputs = processor(images=images, text=prompt, return_tensors="pt").to(model.device, torch.float32)
    with torch.inference_mode():
        output = model.generate(**inputs, **generate_kwargs)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return processor.decode(new_tokens, skip_special_tokens=True).strip()


def image_runs(input_ids: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each run of image tokens in one row of input ids."""
    runs, start = [], None
    ids = input_ids.tolist() + [-1]
    for i, token in enumerate(ids):
        if token == IMAGE_TOKEN_ID and start is None:
            start = i
        elif token != IMAGE_TOKEN_ID and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


# ------------------------------------------------------------------------------------- ask


def test_ask_equals_hand_written_transformers_code(vlm):
    prompt = "USER: <image> w1 w2 w3 ASSISTANT:"
    expected = hand_written(vlm.model, vlm.processor, RED, prompt, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert vlm.ask(RED, "w1 w2 w3", max_new_tokens=10) == expected
    assert expected  # a random model still says something


def test_prompt_comes_from_the_chat_template_with_images_first(vlm):
    inputs = vlm.prepare([RED, BLUE], "w5 w6")
    text = vlm.processor.batch_decode(inputs["input_ids"])[0]
    assert text.startswith("USER: <image>") and text.endswith("w5 w6 ASSISTANT:")


def test_several_images_keep_their_order(vlm):
    red_blue = vlm.prepare([RED, BLUE], "w5 w6")
    blue_red = vlm.prepare([BLUE, RED], "w5 w6")
    words = vlm.processor.tokenizer.convert_tokens_to_ids(["USER:", "w5", "w6", "ASSISTANT:"])
    expected_ids = words[:1] + [IMAGE_TOKEN_ID] * (2 * TOKENS_PER_IMAGE) + words[1:]
    assert red_blue["input_ids"][0].tolist() == expected_ids == blue_red["input_ids"][0].tolist()
    assert image_runs(red_blue["input_ids"][0]) == [(1, 2 * TOKENS_PER_IMAGE)]
    assert red_blue["pixel_values"].shape[0] == 2
    assert torch.equal(red_blue["pixel_values"][0], blue_red["pixel_values"][1])
    assert torch.equal(red_blue["pixel_values"][1], blue_red["pixel_values"][0])
    alone = vlm.processor.image_processor(images=[RED], return_tensors="pt")["pixel_values"][0]
    assert torch.equal(red_blue["pixel_values"][0], alone)
    assert red_blue["pixel_values"].dtype == vlm.model.dtype


def test_several_images_match_hand_written(vlm):
    prompt = "USER: <image> <image> w7 ASSISTANT:"
    expected = hand_written(
        vlm.model, vlm.processor, [NOISE, BLUE], prompt, max_new_tokens=8, do_sample=False, pad_token_id=0
    )
    assert vlm.ask([NOISE, BLUE], "w7", max_new_tokens=8) == expected


def test_text_only_question(vlm):
    inputs = vlm.prepare(None, "w1 w9")
    assert "pixel_values" not in inputs and IMAGE_TOKEN_ID not in inputs["input_ids"][0].tolist()
    assert vlm.ask(None, "w1 w9", max_new_tokens=5) == vlm.ask([], "w1 w9", max_new_tokens=5)


def test_images_from_files_and_arrays(vlm, tmp_path):
    RED.save(tmp_path / "red.png")
    from_file = vlm.ask(tmp_path / "red.png", "w3", max_new_tokens=6)
    assert from_file == vlm.ask(np.asarray(RED), "w3", max_new_tokens=6) == vlm.ask(RED, "w3", max_new_tokens=6)


def test_caption_uses_the_family_prompt(vlm):
    assert vlm.family.caption_prompt == "Describe this image in one sentence."
    assert vlm.caption(RED, max_new_tokens=6) == vlm.ask(RED, "Describe this image in one sentence.", max_new_tokens=6)
    assert vlm.caption(RED, prompt="w4", max_new_tokens=6) == vlm.ask(RED, "w4", max_new_tokens=6)


def test_generation_defaults_are_greedy_with_a_pad_token(vlm):
    kwargs = vlm.generation_kwargs()
    assert kwargs == {"do_sample": False, "max_new_tokens": 256, "pad_token_id": 0}
    assert vlm.generation_kwargs(max_new_tokens=3)["max_new_tokens"] == 3


def test_sampling_when_asked(vlm):
    torch.manual_seed(0)
    answer = vlm.ask(RED, "w1", do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=6)
    assert isinstance(answer, str)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
        ({"temperature": 0.7}, "add do_sample=True"),
        ({"do_sample": "yes"}, "do_sample must be True or False"),
        ({"do_sample": True, "top_p": 1.5}, "top_p must be a number > 0 and <= 1"),
        ({"do_sample": True, "temperature": 0}, "temperature must be a number > 0"),
        ({"input_ids": torch.ones(1, 3)}, "input_ids= is built from the images and the question"),
    ],
)
def test_bad_generation_arguments_fail_with_one_line(vlm, kwargs, fragment):
    with pytest.raises((VLMError, SettingsError)) as info:  # settings: the one validation of mllm_nb.settings
        vlm.ask(RED, "w1", **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bad_question_and_image(vlm):
    with pytest.raises(VLMError, match="non-empty string"):
        vlm.ask(RED, "  ")
    with pytest.raises(ImageLoadError):
        vlm.ask("/no/such/image.png", "w1")


def test_repr_is_short(vlm):
    text = repr(vlm)
    assert text.startswith("VLM(") and "LlavaForConditionalGeneration" in text and "float32" in text and "cpu" in text
    assert len(text) < 200


# ----------------------------------------------------------------------------------- stream


def test_stream_pieces_join_to_the_ask_answer(vlm):
    pieces = list(vlm.stream(RED, "w1 w2", max_new_tokens=12))
    assert len(pieces) > 1
    assert "".join(pieces) == vlm.ask(RED, "w1 w2", max_new_tokens=12)
    assert not any(t.name == "mllm_nb-stream" for t in threading.enumerate())


def test_stream_reraises_the_generate_error_in_the_caller(vlm, monkeypatch):
    def broken_generate(*args, **kwargs):
        raise RuntimeError("generate exploded")

    monkeypatch.setattr(vlm.model, "generate", broken_generate)
    with pytest.raises(RuntimeError, match="generate exploded"):
        list(vlm.stream(RED, "w1", max_new_tokens=4))
    assert not any(t.name == "mllm_nb-stream" for t in threading.enumerate())


def test_closing_a_stream_early_stops_generation(vlm, monkeypatch):
    lengths: list[int] = []
    original = vlm.model.generate

    def counting_generate(*args, **kwargs):
        output = original(*args, **kwargs)
        lengths.append(output.shape[1] - kwargs["input_ids"].shape[1])
        return output

    monkeypatch.setattr(vlm.model, "generate", counting_generate)
    stream = vlm.stream(RED, "w1", max_new_tokens=200, min_new_tokens=200)
    next(stream)
    stream.close()
    assert lengths and lengths[0] < 200


def test_stream_validates_before_starting(vlm):
    with pytest.raises(SettingsError, match="add do_sample=True"):
        next(vlm.stream(RED, "w1", top_k=5))


# -------------------------------------------------------------------------------- batch_ask


def test_batch_ask_equals_one_by_one_with_left_padding(vlm, monkeypatch):
    items = [
        (RED, "w1"),
        ([BLUE, NOISE], "w2 w3 w4 w5 w6 w7 w8 w9 w10 w11"),
        (None, "w12 w13 w14"),
        (NOISE, "w15 w16 w17 w18 w19 w20"),
        ([RED, BLUE], "w21"),
    ]
    expected = [vlm.ask(images, question, max_new_tokens=8) for images, question in items]
    masks: list[torch.Tensor] = []
    original = vlm.model.generate

    def recording_generate(*args, **kwargs):
        masks.append(kwargs["attention_mask"])
        return original(*args, **kwargs)

    monkeypatch.setattr(vlm.model, "generate", recording_generate)
    answers = vlm.batch_ask(items, batch_size=3, max_new_tokens=8)
    assert answers == expected
    assert [m.shape[0] for m in masks] == [3, 2]  # one generate per batch
    assert (masks[0][:, 0] == 0).any() and (masks[0][:, -1] == 1).all()  # padded on the left


def test_batch_ask_keeps_the_tokenizer_padding_side(vlm):
    before = vlm.processor.tokenizer.padding_side
    vlm.batch_ask([(RED, "w1"), (None, "w2 w3")], max_new_tokens=2)
    assert vlm.processor.tokenizer.padding_side == before


def test_batch_ask_bad_items(vlm):
    with pytest.raises(VLMError, match="Item 1 of batch_ask must be an \\(images, question\\) pair"):
        vlm.batch_ask([(RED, "w1"), "w2"])
    with pytest.raises(VLMError, match="batch_size must be a positive integer"):
        vlm.batch_ask([(RED, "w1")], batch_size=0)
    assert vlm.batch_ask([]) == []


# ---------------------------------------------------------------------------- caption_folder


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_caption_folder_is_resumable_and_logs_broken_files(vlm, tmp_path):
    folder, out = tmp_path / "photos", tmp_path / "out" / "captions.jsonl"
    folder.mkdir()
    for name, image in [("a.png", RED), ("b.png", BLUE), ("c.jpg", NOISE)]:
        image.save(folder / name)
    (folder / "notes.txt").write_text("not an image")

    first = vlm.caption_folder(folder, out, batch_size=2)
    assert first == {"captioned": 3, "skipped": 0, "failed": 0}
    records = read_jsonl(out)
    assert [r["file"] for r in records] == ["a.png", "b.png", "c.jpg"]
    assert records[1]["caption"] == vlm.caption(folder / "b.png")

    assert vlm.caption_folder(folder, out) == {"captioned": 0, "skipped": 3, "failed": 0}
    assert len(read_jsonl(out)) == 3

    NOISE.save(folder / "d.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    third = vlm.caption_folder(folder, out, batch_size=8)
    assert third == {"captioned": 1, "skipped": 3, "failed": 1}
    records = read_jsonl(out)
    assert [r["file"] for r in records[3:]] == ["broken.png", "d.png"]
    with pytest.raises(ImageLoadError) as info:
        load_image(folder / "broken.png")
    assert records[3] == {"file": "broken.png", "error": str(info.value)}
    assert set(records[4]) == {"file", "caption"}

    assert vlm.caption_folder(folder, out) == {"captioned": 0, "skipped": 5, "failed": 0}
    assert vlm.caption_folder(folder, out, retry_failed=True) == {"captioned": 0, "skipped": 4, "failed": 1}


def test_caption_folder_survives_a_line_cut_short(vlm, tmp_path):
    folder, out = tmp_path / "photos", tmp_path / "captions.jsonl"
    folder.mkdir()
    RED.save(folder / "a.png")
    BLUE.save(folder / "b.png")
    out.write_text('{"file": "a.png", "caption": "w1"}\n{"file": "b.p', encoding="utf-8")
    with pytest.warns(UserWarning, match="line 2 is not valid JSON"):
        counts = vlm.caption_folder(folder, out, prompt="w9")
    assert counts == {"captioned": 1, "skipped": 1, "failed": 0}
    last = json.loads(out.read_text(encoding="utf-8").splitlines()[-1])
    assert last == {"file": "b.png", "caption": vlm.ask(BLUE, "w9")}


def test_caption_folder_missing_folder(vlm, tmp_path):
    with pytest.raises(ImageLoadError, match="No such folder"):
        vlm.caption_folder(tmp_path / "nope", tmp_path / "out.jsonl")


# ---------------------------------------------------------------------------- the demo fixture


@pytest.fixture(scope="module")
def demo_vlm() -> VLM:
    return load_vlm("llava-hf/llava-1.5-7b-hf", demo=True)


@needs_fixture
def test_demo_fixture_ask_equals_hand_written(demo_vlm):
    from mllm_nb.demo.scene_qa import make_qa_set

    qa = make_qa_set(1, seed=4242)[0]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": qa.question}]}]
    prompt = demo_vlm.processor.apply_chat_template(messages, add_generation_prompt=True)
    pad = demo_vlm.generation_kwargs()["pad_token_id"]
    expected = hand_written(
        demo_vlm.model, demo_vlm.processor, qa.images, prompt, max_new_tokens=24, do_sample=False, pad_token_id=pad
    )
    assert demo_vlm.ask(qa.images, qa.question, max_new_tokens=24) == expected


@needs_fixture
def test_demo_fixture_batch_and_stream_agree_with_ask(demo_vlm):
    from mllm_nb.demo.scene_qa import make_qa_set

    items = [(qa.images, qa.question) for qa in make_qa_set(6, seed=4243)]
    one_by_one = [demo_vlm.ask(images, question, max_new_tokens=24) for images, question in items]
    assert demo_vlm.batch_ask(items, batch_size=4, max_new_tokens=24) == one_by_one
    assert "".join(demo_vlm.stream(*items[0], max_new_tokens=24)) == one_by_one[0]


@needs_fixture
def test_demo_fixture_answers_held_out_questions(demo_vlm):
    from mllm_nb.demo.scene_qa import make_qa_set

    questions = make_qa_set(16, seed=987_654, kinds=["color", "count"])
    answers = demo_vlm.batch_ask([(qa.images, qa.question) for qa in questions], max_new_tokens=8)
    correct = sum(a.lower().rstrip(".") == qa.answer for a, qa in zip(answers, questions))
    assert correct >= 8, list(zip(answers, [qa.answer for qa in questions]))


def test_a_broken_chat_template_set_after_loading_is_one_sentence():
    from catalog_models import LLAVA, image, tiny_vlm

    from mllm_nb.vlm import VLMError

    vlm = tiny_vlm(LLAVA)
    vlm.processor.chat_template = "{{ messages.__class__.__mro__ }}{% for %}"
    with pytest.raises(VLMError, match="chat template of .* is broken .*; set processor.chat_template"):
        vlm.ask(image(64, 64), "w1")
    vlm.processor.chat_template = "{{ ''.__class__.__mro__[1].__subclasses__() }}"  # the sandbox refuses
    with pytest.raises(VLMError, match="chat template of .* is broken"):
        vlm.ask(image(64, 64), "w1")
