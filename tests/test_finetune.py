"""Fine-tuning (mllm_nb.finetuning): answer-only labels, LoRA training of tiny LLaVA and Qwen2.5-VL models,
the returned VLM through ask/stream/batch_ask, adapters saved and loaded back, and refusal before a step."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from PIL import Image
from tiny_llava import TINY_LLAVA, TOKENS_PER_IMAGE, needs_fixture

import mllm_nb as mn
from mllm_nb.finetuning import (
    FinetunedVLM,
    FinetuneError,
    finetune,
    load_adapter,
    lora_targets,
)
from mllm_nb.finetune_collate import (
    IGNORE_INDEX,
    AnswerCollator,
    completion_text,
    encode_example,
)
from mllm_nb.vlm import VLM

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

RED, BLUE = (200, 30, 30), (30, 30, 200)
QUESTION, ANSWER = "w1 w2 w3", "w7 w8"


def picture(color=RED, size=32) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def tiny_vlm(tiny_llava_dir) -> VLM:
    """The tiny random LLaVA, freshly loaded for each test (fine-tuning puts adapters into its model)."""
    return mn.load_vlm(str(tiny_llava_dir), quantization=None, device_map="cpu")


def memorise(vlm: VLM, steps: int = 12, **kwargs) -> FinetunedVLM:
    examples = [(picture(RED), QUESTION, ANSWER), (picture(BLUE), QUESTION, "w9")]
    settings = {"steps": steps, "batch_size": 2, "learning_rate": 3e-2, "rank": 8, "output_head": True, "progress": False, **kwargs}
    return finetune(vlm, examples, **settings)


# ------------------------------------------------------------------------------------------ masking


def test_labels_are_the_answer_tokens_and_the_end_only(tiny_vlm):
    tokenizer = tiny_vlm.processor.tokenizer
    row = encode_example(tiny_vlm, [picture()], QUESTION, ANSWER)
    ids, labels = row["input_ids"][0], row["labels"][0]
    learnt = labels != IGNORE_INDEX
    assert tokenizer.convert_ids_to_tokens(ids[learnt].tolist()) == ["w7", "w8", "</s>"]
    assert labels[learnt].tolist() == ids[learnt].tolist()
    assert learnt.sum() == 3  # the 16 image tokens and the prompt's words are not learnt
    assert bool(learnt[-3:].all()) and not bool(learnt[:-3].any())
    image_id = tiny_vlm.model.config.image_token_id
    assert int((ids == image_id).sum()) == TOKENS_PER_IMAGE
    assert row["attention_mask"].shape == row["input_ids"].shape and bool(row["attention_mask"].all())
    # the prompt part is exactly what ask sends to the model
    prompt = tiny_vlm.prepare(picture(), QUESTION)["input_ids"][0]
    assert ids[: len(prompt)].tolist() == prompt.tolist()


def test_batches_pad_on_the_right_without_learning_the_padding(tiny_vlm):
    class Row:
        def __init__(self, question, answer):
            self.images, self.question, self.answer = [picture()], question, answer

    batch = AnswerCollator(tiny_vlm)([Row("w1", "w5 w6 w7 w8"), Row("w1 w2 w3 w4 w5 w6 w7", "w9")])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["pixel_values"].shape[0] == 2
    short = batch["attention_mask"][1]
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    width = batch["input_ids"].shape[1]
    assert max(lengths) == width and min(lengths) < width
    padded = batch["attention_mask"] == 0
    assert bool((batch["labels"][padded] == IGNORE_INDEX).all())
    assert short.tolist() == sorted(short.tolist(), reverse=True)  # ones first: padding on the right
    assert [int((row != IGNORE_INDEX).sum()) for row in batch["labels"]] == [5, 2]


@needs_fixture
def test_the_demo_fixture_learns_its_answer_word_and_the_end_of_turn():
    vlm = mn.load_vlm("llava-hf/llava-1.5-7b-hf", demo=True)
    prompt, completion = completion_text(vlm, 1, "What color is the circle?", "blue")
    assert (prompt, completion) == ("USER: <image>\nWhat color is the circle? ASSISTANT:", " blue</s>")
    row = encode_example(vlm, [picture(size=64)], "What color is the circle?", "blue")
    learnt = row["input_ids"][0][row["labels"][0] != IGNORE_INDEX]
    assert vlm.processor.tokenizer.convert_ids_to_tokens(learnt.tolist()) == ["▁blue", "</s>"]


def test_lora_goes_on_the_language_model_and_projector_not_the_vision_tower(tiny_vlm):
    import re

    pattern, save = lora_targets(tiny_vlm.model)
    chosen = [name for name, _ in tiny_vlm.model.named_modules() if re.fullmatch(pattern, name)]
    assert chosen and save == []
    assert not any("vision_tower" in name for name in chosen)
    assert any("language_model" in name and name.endswith("q_proj") for name in chosen)
    assert any("multi_modal_projector" in name for name in chosen)
    assert not any(name.endswith("lm_head") for name in chosen)
    frozen_pattern, _ = lora_targets(tiny_vlm.model, projector="frozen")
    assert not any("projector" in n for n, _ in tiny_vlm.model.named_modules() if re.fullmatch(frozen_pattern, n))
    assert lora_targets(tiny_vlm.model, projector="full")[1] == ["multi_modal_projector"]


# ------------------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_llava_memorises_its_examples_and_answers_through_every_entry_point(tiny_vlm):
    before = tiny_vlm.ask(picture(RED), QUESTION, max_new_tokens=4)
    tuned = memorise(tiny_vlm, steps=25)
    assert isinstance(tuned, FinetunedVLM) and isinstance(tuned, VLM)
    losses = tuned.training_log.losses
    assert len(losses) == 25 and losses[-1] < 0.2 * losses[0]
    assert before != ANSWER
    assert tuned.ask(picture(RED), QUESTION) == ANSWER
    assert tuned.ask(picture(BLUE), QUESTION) == "w9"
    assert "".join(tuned.stream(picture(RED), QUESTION)) == ANSWER
    assert tuned.batch_ask([(picture(RED), QUESTION), (picture(BLUE), QUESTION)]) == [ANSWER, "w9"]
    with tuned.adapter_disabled():
        assert tuned.ask(picture(RED), QUESTION, max_new_tokens=4) == before
    from matplotlib.figure import Figure

    assert isinstance(tuned.plot_loss(), Figure)


@pytest.mark.slow
def test_the_chat_panel_answers_with_the_adapters(tiny_vlm):
    tuned = memorise(tiny_vlm, steps=25)
    panel = mn.ChatPanel(tuned)
    assert panel.send(QUESTION, images=picture(RED)) == ANSWER


@pytest.mark.slow
def test_qlora_on_a_4bit_base_trains_the_adapters_and_keeps_the_base_4bit(tiny_llava_dir):
    pytest.importorskip("bitsandbytes")
    vlm = mn.load_vlm(str(tiny_llava_dir), quantization="4bit", device_map="cpu")
    examples = [(picture(RED), QUESTION, ANSWER)] * 2
    tuned = finetune(vlm, examples, steps=25, batch_size=2, learning_rate=1e-2, rank=8, output_head=True, progress=False)
    losses = tuned.training_log.losses
    assert losses[-1] < 0.1 * losses[0]
    assert tuned.quantization == "4bit"
    assert any(type(m).__name__ == "Linear4bit" for m in tuned.model.modules())
    trainable = [name for name, p in tuned.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert tuned.ask(picture(RED), QUESTION) == ANSWER


@pytest.mark.slow
def test_the_same_seed_gives_the_same_training(tiny_llava_dir):
    runs = []
    for _ in range(2):
        vlm = mn.load_vlm(str(tiny_llava_dir), quantization=None, device_map="cpu")
        runs.append(memorise(vlm, steps=4, seed=3).training_log.losses)
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_saved_adapter_loads_back_to_the_same_answers_and_the_base_is_untouched(tiny_llava_dir, tmp_path):
    hashes = folder_hashes(tiny_llava_dir)
    tuned = memorise(mn.load_vlm(str(tiny_llava_dir), quantization=None, device_map="cpu"), steps=10)
    questions = [(picture(RED), QUESTION), (picture(BLUE), QUESTION), (picture(BLUE), "w4 w5")]
    expected = tuned.batch_ask(questions)
    target = tmp_path / "adapter"
    assert tuned.save_adapter(target) == str(target)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in target.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no partial folder left behind
    with pytest.raises(FinetuneError, match="already exists"):
        tuned.save_adapter(target)
    tuned.save_adapter(target, overwrite=True)
    with pytest.raises(FinetuneError, match="base model's folder"):
        tuned.save_adapter(tiny_llava_dir / "adapter")
    reloaded = load_adapter(mn.load_vlm(str(tiny_llava_dir), quantization=None, device_map="cpu"), target)
    assert reloaded.batch_ask(questions) == expected
    merged = reloaded.merge()
    assert type(merged) is VLM and merged.batch_ask(questions) == expected
    assert folder_hashes(tiny_llava_dir) == hashes


def test_an_interrupted_save_leaves_nothing_half_written(tiny_vlm, tmp_path, monkeypatch):
    tuned = memorise(tiny_vlm, steps=1)

    def fail_halfway(folder, **kwargs):
        (Path(folder) / "adapter_config.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(tuned.model, "save_pretrained", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        tuned.save_adapter(tmp_path / "adapter")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_checkpointing_gives_the_same_losses(tiny_llava_dir):
    losses = []
    for checkpointing in (False, True):
        vlm = mn.load_vlm(str(tiny_llava_dir), quantization=None, device_map="cpu")
        losses.append(memorise(vlm, steps=3, gradient_checkpointing=checkpointing).training_log.losses)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_load_adapter_refuses_a_folder_without_an_adapter(tiny_vlm, tmp_path):
    with pytest.raises(FinetuneError, match="not a saved adapter"):
        load_adapter(tiny_vlm, tmp_path)


@pytest.mark.slow
def test_qwen25_vl_trains_and_its_loss_falls():
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_zoo_qwen import QWEN25_VL_3B, TINY

    from mllm_nb import catalog
    from mllm_nb.memory.twins import build_processor

    entry = catalog.get(QWEN25_VL_3B)
    processor = build_processor(entry.processor, entry.config["model_type"])
    vlm = VLM(model=TINY[QWEN25_VL_3B](processor), processor=processor, name=QWEN25_VL_3B)
    image = picture(size=56)
    row = encode_example(vlm, [image], "What is it?", "x")
    learnt = row["input_ids"][0][row["labels"][0] != IGNORE_INDEX]
    assert processor.tokenizer.convert_ids_to_tokens(learnt.tolist())[-1] == "<|im_end|>"
    assert int((row["labels"][0] != IGNORE_INDEX).sum()) == len(learnt) < row["input_ids"].shape[1] // 2
    pattern, _ = lora_targets(vlm.model)
    assert "merger" in pattern and "visual.blocks" not in pattern
    tuned = finetune(
        vlm, [(image, "What is it?", "x")] * 2, steps=20, batch_size=2, learning_rate=5e-2, output_head=True, progress=False
    )
    losses = tuned.training_log.losses
    assert losses[-1] < 0.4 * losses[0]
    assert isinstance(tuned.ask(image, "What is it?", max_new_tokens=3), str)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava-1.5", "llava-next", "onevision", "interleave"])
def test_every_llava_family_trains_with_its_own_processor(family):
    from catalog_models import FAMILIES, image
    from catalog_models import tiny_vlm as family_vlm

    model_id = dict(zip(["llava-1.5", "llava-next", "onevision", "interleave"], FAMILIES))[family]
    vlm = family_vlm(model_id, context=32768)
    examples = [(image(60, 40), "w1 w2", "w5 w6"), (image(40, 70, (30, 30, 200)), "w1 w2", "w7")]
    tuned = finetune(vlm, examples, steps=20, batch_size=2, learning_rate=3e-2, rank=8, output_head=True, progress=False)
    losses = tuned.training_log.losses
    assert losses[-1] < 0.5 * losses[0]
    assert isinstance(tuned.ask(examples[0][0], "w1 w2", max_new_tokens=3), str)


# ------------------------------------------------------------------------------------------ refusals


def test_training_that_wont_fit_is_refused_before_any_adapter_is_made(tiny_vlm):
    from mllm_nb.memory.targets import Target

    tiny_machine = Target("a toaster", gpu_bytes=None, ram_bytes=1_000_000, bf16=False)
    with pytest.raises(mn.WontFitError):
        finetune(tiny_vlm, [(picture(), QUESTION, ANSWER)], steps=1, target=tiny_machine, progress=False)
    assert not any("lora_" in name for name, _ in tiny_vlm.model.named_modules())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be a positive whole number"),
        ({"batch_size": 2.5}, "batch_size must be"),
        ({"learning_rate": -1}, "learning_rate must be a number"),
        ({"projector": "all"}, "projector='all' is not known"),
        ({"rank": True}, "rank must be"),
    ],
)
def test_bad_arguments_are_one_sentence_each(tiny_vlm, kwargs, match):
    with pytest.raises(FinetuneError, match=match):
        finetune(tiny_vlm, [(picture(), QUESTION, ANSWER)], **kwargs)


@pytest.mark.slow
def test_a_vlm_with_adapters_is_not_fine_tuned_again(tiny_vlm):
    tuned = memorise(tiny_vlm, steps=1)
    with pytest.raises(FinetuneError, match="already has LoRA adapters"):
        finetune(tuned, [(picture(), QUESTION, ANSWER)], steps=1)


@needs_fixture
def test_demo_fixture_folder_is_never_a_save_target(tmp_path):
    vlm = mn.load_vlm("llava-hf/llava-1.5-7b-hf", demo=True)
    tuned = finetune(vlm, [(picture(size=64), "What color is the circle?", "red")], steps=1, progress=False)
    with pytest.raises(FinetuneError, match="base model's folder"):
        tuned.save_adapter(TINY_LLAVA)
