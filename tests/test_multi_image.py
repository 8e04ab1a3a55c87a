"""Prompts with several images: order kept end to end, warn-once advice, mixed batches, numbered display.

Uses the tiny random LLaVA of tests/test_loading.py (32 px images, 16 tokens each), the tiny catalog-shaped
models of tests/test_budget.py (real OneVision image-token rules), and, end to end, the trained demo fixture:
swapping the two images of a "which image shows ...?" question must flip its answer.
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image
from catalog_models import IMAGE_ID, LLAVA, ONEVISION, tiny_vlm
from tiny_llava import IMAGE_TOKEN_ID, TOKENS_PER_IMAGE, save_tiny_llava

from mllm_nb import catalog
from mllm_nb.backends import LocalBackend
from mllm_nb.context_budget import budget
from mllm_nb.chat import Conversation
from mllm_nb.display import show
from mllm_nb.vlm import MULTI_IMAGE_MODELS, VLM, MultiImageWarning

RED = Image.new("RGB", (40, 40), (220, 30, 30))
BLUE = Image.new("RGB", (50, 30), (20, 40, 230))
NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 36, 3), dtype=np.uint8))
GREEN = Image.new("RGB", (30, 45), (30, 200, 60))


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> VLM:
    """The tiny random LLaVA, named like a model that was not trained on several images."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    folder = save_tiny_llava(tmp_path_factory.mktemp("tiny-llava-multi"), seed=3)
    model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    return VLM(model=model, processor=AutoProcessor.from_pretrained(folder), name=str(folder))


def runs(ids: torch.Tensor, token: int) -> list[tuple[int, int]]:
    """(start, length) of each run of ``token`` in a row of input ids."""
    found, start = [], None
    for i, value in enumerate([*ids.tolist(), -1]):
        if value == token and start is None:
            start = i
        elif value != token and start is not None:
            found.append((start, i - start))
            start = None
    return found


def image_embeddings(vlm: VLM, images: list[Image.Image]) -> torch.Tensor:
    """What the language model receives at the image-token positions of the prompt, in prompt order."""
    inputs = vlm.prepare(images, "w1")
    with torch.inference_mode():
        out = vlm.model.model(**inputs, output_hidden_states=True)
    embeds = out.hidden_states[0][0]  # the input embeddings, image features scattered in
    return embeds[inputs["input_ids"][0] == IMAGE_TOKEN_ID]


# ------------------------------------------------------------------------------ order


def test_swapping_two_images_swaps_pixels_and_features(vlm):
    red_blue = vlm.prepare([RED, BLUE], "w5")
    blue_red = vlm.prepare([BLUE, RED], "w5")
    assert torch.equal(red_blue["pixel_values"][0], blue_red["pixel_values"][1])
    assert torch.equal(red_blue["pixel_values"][1], blue_red["pixel_values"][0])
    assert not torch.equal(red_blue["pixel_values"][0], red_blue["pixel_values"][1])
    ids = red_blue["input_ids"][0]
    assert runs(ids, IMAGE_TOKEN_ID) == [(1, 2 * TOKENS_PER_IMAGE)]  # both images before the question
    red, blue = image_embeddings(vlm, [RED]), image_embeddings(vlm, [BLUE])
    both = image_embeddings(vlm, [RED, BLUE])
    swapped = image_embeddings(vlm, [BLUE, RED])
    torch.testing.assert_close(both, torch.cat([red, blue]))  # image 1's features fill the first slots
    torch.testing.assert_close(swapped, torch.cat([blue, red]))


SWAP_FLOOR = 0.9  # measured on these 40 pairs: all 40 flip correctly in float32 (39 in 4-bit NF4)


def test_swapping_two_images_flips_the_trained_fixture_answer():
    """End to end through ``load_vlm`` (demo fixture, float32): the same question about the same two images,
    once as given and once swapped, in one left-padded batch; the answer must follow the object's image."""
    from mllm_nb import load_vlm
    from mllm_nb.demo.scene_qa import make_pair_qa_set, swap_pair

    trained = load_vlm("llava-hf/llava-interleave-qwen-0.5b-hf", demo=True, quantization=None)
    pairs = make_pair_qa_set(40, seed=515151, kinds=["which_image"])
    swapped = [swap_pair(qa) for qa in pairs]
    assert {qa.answer for qa in pairs} == {"first", "second"}
    answers = trained.batch_ask([(qa.images, qa.question) for qa in pairs + swapped], max_new_tokens=4)
    as_given, after_swap = answers[: len(pairs)], answers[len(pairs) :]
    both_right = [a == qa.answer and b == sw.answer for a, b, qa, sw in zip(as_given, after_swap, pairs, swapped)]
    assert np.mean(both_right) >= SWAP_FLOOR, list(zip(as_given, after_swap))


def test_conversation_turns_keep_every_image_in_order(vlm):
    chat = Conversation()
    chat.add_user("w1", images=[RED, BLUE])
    chat.add_assistant("w2")
    chat.add_user("w3", images=NOISE)
    inputs = LocalBackend(vlm).prepare(chat)
    alone = vlm.processor.image_processor(images=[RED, BLUE, NOISE], return_tensors="pt")["pixel_values"]
    assert torch.equal(inputs["pixel_values"], alone)
    ids = inputs["input_ids"][0]
    assert [length for _, length in runs(ids, IMAGE_TOKEN_ID)] == [2 * TOKENS_PER_IMAGE, TOKENS_PER_IMAGE]
    assert [m["content"][0] for m in chat.to_messages() if m["role"] == "user"] == [{"type": "image"}] * 2
    assert "[image 1] [image 2] w1" in chat.transcript() and "[image 3] w3" in chat.transcript()
    titles = [ax.get_title() for ax in show(chat).axes]
    assert titles == ["Image 1", "Image 2", "Image 3"]  # as the transcript and the prompt number them


# ------------------------------------------------------------------------------ numbered display


def test_show_numbered_prefixes_captions_and_keeps_the_default():
    titles = [ax.get_title() for ax in show([RED, BLUE], captions=["left", "right"], numbered=True).axes]
    assert titles == ["Image 1: left", "Image 2: right"]
    assert [ax.get_title() for ax in show(RED, numbered=True).axes] == ["Image 1"]
    assert [ax.get_title() for ax in show([RED, BLUE], captions=["left", "right"]).axes] == ["left", "right"]
    assert [ax.get_title() for ax in show(RED).axes] == [""]


def test_show_numbered_must_be_a_bool():
    from mllm_nb.display import DisplayError

    with pytest.raises(DisplayError, match="numbered must be True or False, got 'yes'"):
        show(RED, numbered="yes")


# ------------------------------------------------------------------------------ warn once


def fake_generate(**kwargs):
    """Stands in for ``generate``: one EOS per row; ends a stream's streamer like generate does."""
    if kwargs.get("streamer") is not None:
        kwargs["streamer"].end()
    return torch.cat([kwargs["input_ids"], torch.full_like(kwargs["input_ids"][:, :1], 3)], dim=1)


def named(vlm: VLM, name: str, monkeypatch) -> VLM:
    """A fresh VLM around the same tiny model (a fresh warn-once flag) whose generate does not run."""
    fresh = VLM(model=vlm.model, processor=vlm.processor, name=name)
    monkeypatch.setattr(vlm.model, "generate", fake_generate)
    return fresh


def multi_warnings(caught) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, MultiImageWarning)]


def test_warns_once_per_vlm_when_the_model_was_not_trained_on_several_images(vlm, monkeypatch):
    llava = named(vlm, LLAVA, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llava.ask(RED, "w1")
        assert not multi_warnings(caught)  # one image: nothing to say
        llava.ask([RED, BLUE], "w1")
        llava.ask([RED, BLUE], "w1")
        list(llava.stream([RED, BLUE], "w1"))
        llava.batch_ask([(RED, "w1"), ([RED, BLUE], "w2")])
    found = multi_warnings(caught)
    assert len(found) == 1
    message = str(found[0].message)
    assert message.startswith(f"{LLAVA} was not trained on prompts with several images (")
    assert all(model in message for model in MULTI_IMAGE_MODELS) and message.count(". ") == 0
    assert found[0].filename == __file__  # points at the caller's line


@pytest.mark.parametrize("call", ["stream", "batch_ask"])
def test_stream_and_batch_ask_warn_too(vlm, monkeypatch, call):
    next_ = named(vlm, "llava-hf/llava-v1.6-mistral-7b-hf", monkeypatch)
    run = {
        "stream": lambda: list(next_.stream([RED, BLUE], "w1")),
        "batch_ask": lambda: next_.batch_ask([(RED, "w1"), ([RED, BLUE, NOISE], "w2")]),
    }[call]
    with pytest.warns(MultiImageWarning, match="llava-v1.6-mistral-7b-hf was not trained"):
        run()


@pytest.mark.parametrize("name", [ONEVISION, "llava-hf/llava-interleave-qwen-7b-hf", "someone/unknown-model", ""])
def test_no_warning_for_multi_image_models_and_unknown_ones(vlm, monkeypatch, name):
    quiet = named(vlm, name, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultiImageWarning)
        quiet.ask([RED, BLUE], "w1")


def test_the_config_name_is_looked_up_too(vlm, monkeypatch):
    unnamed = named(vlm, "", monkeypatch)
    monkeypatch.setattr(vlm.model.config, "_name_or_path", LLAVA.upper())
    with pytest.warns(MultiImageWarning, match="llava-1.5-7b-hf was not trained"):
        unnamed.ask([RED, BLUE], "w1")


def test_honeybee_warning_states_what_is_known(vlm, monkeypatch):
    entries = catalog.entries("honeybee")
    if not entries:
        pytest.skip("the catalog lists no Honeybee model")
    honeybee = named(vlm, entries[0].id, monkeypatch)
    with pytest.warns(MultiImageWarning) as caught:
        honeybee.ask([RED, BLUE], "w1")
    assert entries[0].trained_multi_image.note in str(caught[0].message)


def test_suggested_models_are_catalog_models_trained_on_several_images():
    for model_id in MULTI_IMAGE_MODELS:
        assert catalog.get(model_id).trained_multi_image.value is True


# ------------------------------------------------------------------------------ mixed batches


def test_batch_ask_with_different_image_counts_equals_one_by_one(vlm):
    items = [
        ([RED, BLUE, NOISE], "w1 w2"),
        (None, "w3 w4 w5 w6 w7"),
        (GREEN, "w8"),
        ([NOISE, RED], "w9 w10 w11"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a local folder name: no advice to give
        expected = [vlm.ask(images, question, max_new_tokens=4) for images, question in items]
        assert vlm.batch_ask(items, batch_size=4, max_new_tokens=4) == expected
        assert vlm.batch_ask(items[::-1], batch_size=4, max_new_tokens=4) == expected[::-1]
    inputs = vlm.encode([[RED, BLUE, NOISE], [], [GREEN], [NOISE, RED]], ["USER: <image> <image> <image> w1",
                                                                           "USER: w3", "USER: <image> w8",
                                                                           "USER: <image> <image> w9"])
    counts = (inputs["input_ids"] == IMAGE_TOKEN_ID).sum(dim=1).tolist()
    assert counts == [3 * TOKENS_PER_IMAGE, 0, TOKENS_PER_IMAGE, 2 * TOKENS_PER_IMAGE]
    assert (inputs["attention_mask"][:, -1] == 1).all()  # left padding: every prompt ends at the right


@pytest.fixture(scope="module")
def onevision() -> VLM:
    return tiny_vlm(ONEVISION)


def test_onevision_groups_each_prompts_images(onevision):
    pair = onevision.prepare([RED, BLUE], "w1")
    single = onevision.prepare(GREEN, "w1")
    assert int((pair["input_ids"] == IMAGE_ID).sum()) == 2 * 730  # several images: base features + newline
    alone = budget(ONEVISION, [GREEN.size]).image_tokens[0]  # alone: anyres_max_9 tiles
    assert int((single["input_ids"] == IMAGE_ID).sum()) == alone > 730
    assert pair["batch_num_images"].tolist() == [2]


def test_onevision_batch_with_different_image_counts_equals_one_by_one(onevision):
    items = [([RED, BLUE], "w1 w2"), (GREEN, "w3"), (None, "w4 w5")]
    expected = [onevision.ask(images, question, max_new_tokens=3) for images, question in items]
    assert onevision.batch_ask(items, batch_size=3, max_new_tokens=3) == expected
    inputs = onevision.encode([[RED, BLUE], [GREEN], []], ["USER: <image><image> w1", "USER: <image> w3", "USER: w4"])
    green = budget(ONEVISION, [GREEN.size]).image_tokens[0]
    assert (inputs["input_ids"] == IMAGE_ID).sum(dim=1).tolist() == [1460, green, 0]
    assert inputs["batch_num_images"].tolist() == [2, 1]
