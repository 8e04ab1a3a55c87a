"""Every image-text-to-text architecture of the catalog, as a tiny random model, through the whole public API.

Each model is the catalog config shrunk (tiny towers, a stand-in vocabulary) with the real processor class
and the checkpoint's image settings (``mllm_nb.memory.twins``), so the prompts the processor writes are the
ones the real checkpoint gets, and the model's forward pass rejects any mismatch between image tokens and
image features. Rows: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3, PaliGemma 2, Mllama, SmolVLM 2, Idefics3,
InternVL, Mistral3 and Aya Vision (processor twins), and LLaVA-1.5, LLaVA-NeXT, OneVision, Interleave
(their processors rebuilt from the catalog config, ``catalog_models``) and Honeybee (the project's processor).
For the last five, ``budget(model_id)`` applies the processor rules of ``mllm_nb.memory.tokens``, which count the
image tokens themselves (Honeybee's template also gives each image a line of its own, which counts as text there).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from catalog_models import FAMILIES as LLAVA_FAMILIES  # noqa: E402
from catalog_models import tiny_vlm as llava_vlm  # noqa: E402
from PIL import Image  # noqa: E402
from tiny_zoo_gemma_mllama import TINY as GEMMA_MLLAMA  # noqa: E402
from tiny_zoo_idefics import TINY as IDEFICS  # noqa: E402
from tiny_zoo_internvl_mistral import TINY as INTERNVL_MISTRAL  # noqa: E402
from tiny_zoo_qwen import TINY as QWEN  # noqa: E402

import mllm_nb as mn  # noqa: E402
from mllm_nb import catalog  # noqa: E402
from mllm_nb.backends import ChatSession  # noqa: E402
from mllm_nb.memory.twins import build_processor, prompt_length  # noqa: E402
from mllm_nb.vlm import VLM  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::mllm_nb.vlm.MultiImageWarning")

ZOO = {**QWEN, **GEMMA_MLLAMA, **IDEFICS, **INTERNVL_MISTRAL}
#: One catalog id per architecture (the matrix's rows); the other ids of an architecture differ only in size.
ARCHITECTURES: dict[str, str] = {}
for _model_id in ZOO:
    _entry = catalog.get(_model_id)
    if _entry is not None:
        ARCHITECTURES.setdefault(_entry.architecture, _model_id)
HONEYBEE = "kakaobrain/honeybee-7B-C-Abs-M144"
#: Rows whose model-id budget uses the processor rules (image tokens only) instead of a processor twin.
RULE_ROWS = (*LLAVA_FAMILIES, HONEYBEE)
ROWS = sorted(ARCHITECTURES.values()) + list(RULE_ROWS)

RED, BLUE, GREEN = (200, 30, 30), (30, 30, 200), (30, 160, 30)


def picture(width: int, height: int, color: tuple[int, int, int] = RED) -> Image.Image:
    return Image.new("RGB", (width, height), color)


_BUILT: dict[str, VLM] = {}


def _honeybee_vlm() -> VLM:
    from tiny_honeybee import tiny_config, tiny_processor

    import mllm_nb.honeybee as hb

    torch.manual_seed(0)
    model = hb.HoneybeeForConditionalGeneration(tiny_config()).eval()
    return VLM(model=model, processor=tiny_processor(), name=HONEYBEE)


def tiny_vlm(model_id: str) -> VLM:
    """The tiny model of ``model_id`` with its processor (built once per session)."""
    if model_id not in _BUILT:
        if model_id in LLAVA_FAMILIES:
            _BUILT[model_id] = llava_vlm(model_id, context=32768)  # room for several anyres images
        elif model_id == HONEYBEE:
            _BUILT[model_id] = _honeybee_vlm()
        else:
            entry = catalog.get(model_id)
            processor = build_processor(entry.processor, entry.config["model_type"])
            _BUILT[model_id] = VLM(model=ZOO[model_id](processor), processor=processor, name=model_id)
    return _BUILT[model_id]


def image_token_ids(vlm: VLM, inputs) -> int:
    """How many image-token ids the processor wrote (what the processor rules count)."""
    token_id = getattr(vlm.processor, "image_token_id", None) or vlm.model.config.image_token_id
    return int((inputs["input_ids"] == token_id).sum())


def processor_image_cost(vlm: VLM, images: list[Image.Image], question: str) -> int:
    """What the images cost in one prompt, straight from the processor: with them minus without them."""
    with_images = prompt_length(vlm.processor, images, vlm.question_prompt(len(images), question))
    return with_images - prompt_length(vlm.processor, [], vlm.question_prompt(0, question))


def test_the_matrix_covers_every_architecture_the_issue_names():
    wanted = {
        "Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration", "Qwen3VLForConditionalGeneration",
        "Gemma3ForConditionalGeneration", "PaliGemmaForConditionalGeneration", "MllamaForConditionalGeneration",
        "SmolVLMForConditionalGeneration", "Idefics3ForConditionalGeneration", "InternVLForConditionalGeneration",
        "Mistral3ForConditionalGeneration",
    }  # fmt: skip
    assert wanted <= set(ARCHITECTURES)
    assert all(catalog.get(model_id) is not None for model_id in ZOO)  # every tiny model is of a catalog id


@pytest.mark.parametrize("model_id", ROWS)
def test_ask_stream_and_batch_agree(model_id):
    vlm = tiny_vlm(model_id)
    one, two = [picture(640, 480)], [picture(300, 900, BLUE), picture(640, 480, GREEN)]
    answer = vlm.ask(one, "What is it?", max_new_tokens=6)
    assert isinstance(answer, str)
    assert "".join(vlm.stream(one, "What is it?", max_new_tokens=6)) == answer
    several = vlm.ask(two, "Compare them.", max_new_tokens=6)
    # one list of images per prompt: a batch with 1, 2 and 1 images answers like one question at a time
    batch = vlm.batch_ask([(one, "What is it?"), (two, "Compare them."), (one, "What is it?")], max_new_tokens=6)
    assert batch == [answer, several, answer]


@pytest.mark.parametrize("model_id", ROWS)
def test_budget_counts_what_the_processor_writes(model_id):
    vlm = tiny_vlm(model_id)
    for sizes in ([(640, 480)], [(300, 900), (640, 480)], [(64, 64)]):
        images = [picture(*size) for size in sizes]
        loaded = mn.budget(vlm, images, "What is it?", max_new_tokens=4)
        planned = mn.budget(model_id, sizes, "What is it?", max_new_tokens=4)
        cost = processor_image_cost(vlm, images, "What is it?")
        inputs = vlm.prepare(images, "What is it?")
        assert loaded.image_tokens_total == cost and sum(loaded.image_tokens) == cost, sizes
        assert loaded.prompt_tokens == inputs["input_ids"].shape[1]  # image + text = what the model is fed
        if model_id == HONEYBEE:  # the tiny Honeybee has 4 queries; the catalog's real one 144
            assert planned.image_tokens == (catalog.get(HONEYBEE).image_tokens.max,) * len(sizes)
            assert image_token_ids(vlm, inputs) == vlm.model.config.num_visual_tokens * len(sizes)
        elif model_id in RULE_ROWS:
            assert sum(planned.image_tokens) == image_token_ids(vlm, inputs), sizes
            assert loaded.image_tokens == planned.image_tokens, sizes
        else:
            assert loaded.image_tokens == planned.image_tokens, sizes  # per image, the same on both paths
    report = mn.fit(model_id, target="t4")
    entry = catalog.get(model_id)
    assert report.image_tokens_max == entry.image_tokens.max >= max(planned.image_tokens)
    assert report.image_tokens_max >= max(loaded.image_tokens) or model_id == HONEYBEE
    assert report.download_bytes == sum(entry.shard_bytes)


@pytest.mark.parametrize("model_id", ROWS)
def test_conversation_and_panel_answer(model_id):
    vlm = tiny_vlm(model_id)
    session = ChatSession(vlm)
    first = session.ask("What is it?", images=picture(320, 240), max_new_tokens=4)
    second = session.ask("And now?", max_new_tokens=4)
    assert [turn.role for turn in session.conversation.turns] == ["user", "assistant", "user", "assistant"]
    assert session.conversation.turns[-1].text == second and session.conversation.turns[1].text == first
    panel = mn.ChatPanel(vlm, max_new_tokens=4)
    panel.send("What is it?", images=[picture(200, 200)])
    assert panel.conversation.turns[-1].role == "assistant" and not panel.busy


@pytest.mark.parametrize("model_id", ROWS)
def test_caption_folder_writes_one_line_per_image(model_id, tmp_path):
    vlm = tiny_vlm(model_id)
    for i, (size, color) in enumerate([((300, 200), RED), ((200, 300), BLUE), ((256, 256), GREEN)]):
        picture(*size, color).save(tmp_path / f"{i}.png")
    counts = vlm.caption_folder(tmp_path, tmp_path / "out" / "captions.jsonl", batch_size=2)
    assert counts == {"captioned": 3, "skipped": 0, "failed": 0}
    lines = [json.loads(line) for line in (tmp_path / "out" / "captions.jsonl").read_text().splitlines()]
    assert sorted(line["file"] for line in lines) == ["0.png", "1.png", "2.png"]
    assert [line["caption"] for line in lines] == [vlm.caption(tmp_path / line["file"]) for line in lines]


@pytest.mark.parametrize("model_id", ROWS)
def test_load_vlm_loads_the_saved_checkpoint_and_answers_the_same(model_id, tmp_path, capsys):
    vlm = tiny_vlm(model_id)
    vlm.model.save_pretrained(tmp_path)
    vlm.processor.save_pretrained(tmp_path)
    loaded = mn.load_vlm(tmp_path)
    assert f"Loaded {tmp_path}" in capsys.readouterr().out
    assert type(loaded.model) is type(vlm.model)
    image = picture(400, 300)
    assert loaded.ask(image, "What is it?", max_new_tokens=5) == vlm.ask(image, "What is it?", max_new_tokens=5)


def test_every_catalog_chat_model_plans_offline_and_has_a_demo_stand_in(capsys):
    from mllm_nb.demo.mode import resolve_model

    chat_models = [entry for entry in catalog.entries() if entry.family not in ("clip", "siglip")]
    assert len(chat_models) >= 30
    for entry in chat_models:
        report = mn.fit(entry.id, target="t4")
        assert report.weights_bytes > 0 and report.image_tokens_max == entry.image_tokens.per_image(1)
        path, is_fixture = resolve_model(entry.id, "vlm", demo=True)
        assert is_fixture and Path(path).is_dir()
        for copy_id in entry.prequantized:  # the pre-quantized copies fit suggests work offline too
            assert resolve_model(copy_id, "vlm", demo=True) == (path, True)
            assert mn.fit(copy_id, target="t4").prequantized
    vlm = mn.load_vlm("Qwen/Qwen2.5-VL-3B-Instruct", demo=True)
    out = capsys.readouterr().out
    assert "DEMO MODE" in out and "standing in for Qwen2_5_VLForConditionalGeneration" in out
    assert vlm.ask(picture(64, 64), "What color is the shape?")


@pytest.mark.parametrize("model_id", ROWS[:3] + [LLAVA_FAMILIES[0]])
def test_a_saved_checkpoint_is_counted_by_its_own_processor(model_id, tmp_path):
    vlm = tiny_vlm(model_id)
    vlm.model.save_pretrained(tmp_path)
    vlm.processor.save_pretrained(tmp_path)
    sizes = [(640, 480), (300, 900)]
    report = mn.budget(tmp_path, sizes, "What is it?", max_new_tokens=4)
    assert "the checkpoint's own processor" in report.source
    assert report.image_tokens == mn.budget(vlm, [picture(*s) for s in sizes], "What is it?").image_tokens
