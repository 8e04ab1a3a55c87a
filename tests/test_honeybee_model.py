"""HoneybeeConfig / HoneybeeForConditionalGeneration / HoneybeeProcessor on tiny random models.

Registration with the Auto classes, generation (KV cache, batches with left padding, text only),
dtypes (the D-Abstractor stays float32), device_map, error messages, the chat template and the
per-chunk tokenization, and the mllm_nb front door (``load_vlm``, ``fit``, ``VLM.ask`` & co.).
Parity with the reference implementation is in test_honeybee_parity.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_honeybee import (
    QUERIES,
    VOCAB,
    byte_tokenizer,
    save_tiny_honeybee,
    tiny_config,
    tiny_processor,
)

import mllm_nb.honeybee as hb


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-honeybee")
    return {kind: save_tiny_honeybee(root / kind, kind) for kind in ("c-abs", "d-abs")}


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(3)]


def prompt(processor: hb.HoneybeeProcessor, n_images: int, question: str) -> str:
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


# ------------------------------------------------------------------------------------ config


def test_config_defaults_are_the_7b_release_shape() -> None:
    config = hb.HoneybeeConfig()
    assert (config.vision_config.hidden_size, config.vision_config.image_size, config.num_patches) == (1024, 224, 256)
    assert (config.text_config.model_type, config.text_config.hidden_size) == ("llama", 4096)
    assert config.num_visual_tokens == config.image_seq_length == 144 and config.image_token_id == 32000


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"num_queries": 150}, "num_queries must be a square number"),
        ({"projector_type": "resampler"}, "projector_type 'resampler' is not supported"),
        ({"projector_type": "d-abs", "num_feature_levels": 3}, "Only single-level D-Abstractors"),
        ({"num_queries": 1024}, "fewer than the 1024 queries"),
    ],
)
def test_config_refuses_what_cannot_be_built(settings: dict, message: str) -> None:
    with pytest.raises(hb.HoneybeeError, match=message):
        hb.HoneybeeConfig(abstractor_config=settings)


# ------------------------------------------------------------------------------------ auto classes


def test_auto_classes_load_a_saved_honeybee(tiny_dirs: dict[str, Path]) -> None:
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    folder = tiny_dirs["d-abs"]
    assert type(AutoConfig.from_pretrained(folder)) is hb.HoneybeeConfig
    assert type(AutoModelForImageTextToText.from_pretrained(folder)) is hb.HoneybeeForConditionalGeneration
    assert type(AutoModel.from_config(AutoConfig.from_pretrained(folder))) is hb.HoneybeeModel
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor) is hb.HoneybeeProcessor and type(processor.image_processor) is hb.HoneybeeImageProcessor
    assert (processor.num_visual_tokens, processor.image_token_id, processor.chat_template) == (
        QUERIES, VOCAB, hb.CHAT_TEMPLATE
    )


# ------------------------------------------------------------------------------------ generation


@pytest.mark.parametrize("kind", ["c-abs", "d-abs"])
def test_generate_with_and_without_kv_cache_agree(tiny_dirs, images, kind: str) -> None:
    model = hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs[kind]).eval()
    processor = tiny_processor()
    inputs = processor(images=images[:2], text=prompt(processor, 2, "Which is brighter?"), return_tensors="pt")
    with torch.no_grad():
        cached = model.generate(**inputs, do_sample=False, max_new_tokens=8)
        uncached = model.generate(**inputs, do_sample=False, max_new_tokens=8, use_cache=False)
    assert cached.shape == (1, inputs["input_ids"].shape[1] + 8)
    assert torch.equal(cached, uncached)


def test_batch_with_left_padding_answers_like_single_prompts(tiny_dirs, images) -> None:
    model = hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs["c-abs"]).eval()
    processor = tiny_processor()
    long, short = prompt(processor, 2, "Compare the two pictures, please."), prompt(processor, 1, "Hi")
    batch = processor(images=images, text=[long, short], return_tensors="pt")
    assert batch["attention_mask"][1, 0] == 0 and batch["input_ids"][1, 0] == 0  # padded on the left with id 0
    with torch.no_grad():
        together = model.generate(**batch, do_sample=False, max_new_tokens=6)[:, -6:]
        alone = [
            model.generate(**processor(images=pics, text=text, return_tensors="pt"), do_sample=False, max_new_tokens=6)
            for pics, text in ((images[:2], long), (images[2:], short))
        ]
    assert together.tolist() == [row[0, -6:].tolist() for row in alone]


def test_text_only_prompts_and_labels(tiny_dirs) -> None:
    model = hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs["c-abs"]).eval()
    processor = tiny_processor()
    inputs = processor(text=prompt(processor, 0, "Say something."), return_tensors="pt")
    assert "pixel_values" not in inputs
    with torch.no_grad():
        output = model(**inputs, labels=inputs["input_ids"])
        generated = model.generate(**inputs, do_sample=False, max_new_tokens=3)
    assert output.loss.item() > 0 and output.logits.shape == (1, inputs["input_ids"].shape[1], VOCAB)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3


# ------------------------------------------------------------------------------------ dtypes and devices


def test_d_abstractor_stays_float32_while_the_rest_follows_the_load_dtype(tiny_dirs, images) -> None:
    d_abs = hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs["d-abs"], dtype=torch.bfloat16)
    assert {p.dtype for p in d_abs.model.abstractor.parameters()} == {torch.float32}
    assert {p.dtype for p in d_abs.model.vision_tower.parameters()} == {torch.bfloat16}
    assert d_abs.model.language_model.embed_tokens.weight.dtype == d_abs.lm_head.weight.dtype == torch.bfloat16
    c_abs = hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs["c-abs"], dtype=torch.bfloat16)
    assert {p.dtype for p in c_abs.model.abstractor.parameters()} == {torch.bfloat16}
    processor = tiny_processor()
    inputs = processor(images=images[:1], text=prompt(processor, 1, "What?"), return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        tokens = d_abs.get_image_features(inputs["pixel_values"])
        logits = d_abs(**inputs).logits
    assert tokens.dtype == torch.bfloat16 and tokens.shape == (1, QUERIES, 64)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_vision_feature_layer_picks_the_clip_hidden_state(images) -> None:
    config = tiny_config()
    config.vision_feature_layer = -2
    torch.manual_seed(0)
    model = hb.HoneybeeForConditionalGeneration(config).eval()
    pixels = tiny_processor()(images=images[:1])["pixel_values"]
    pixels = torch.as_tensor(np.asarray(pixels))
    with torch.no_grad():
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
        assert torch.equal(model.model.get_vision_features(pixels), hidden[-2])
        config.vision_feature_layer = -1
        assert torch.equal(model.model.get_vision_features(pixels), hidden[-1])
        assert not torch.equal(hidden[-1], hidden[-2])


def test_device_map_loading_and_generation(tiny_dirs, images) -> None:
    device_map = dict.fromkeys(("model.vision_tower", "model.abstractor", "model.language_model", "lm_head"), "cpu")
    model = hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs["d-abs"], device_map=device_map)
    assert getattr(model, "hf_device_map", device_map) == device_map and model.device.type == "cpu"
    assert {"HoneybeeDAbstractor", "CLIPEncoderLayer", "LlamaDecoderLayer"} <= set(model._no_split_modules)
    auto = hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs["d-abs"], device_map="auto")
    processor = tiny_processor()
    inputs = processor(images=images[:1], text=prompt(processor, 1, "What?"), return_tensors="pt")
    with torch.no_grad():
        outputs = [m.generate(**inputs, do_sample=False, max_new_tokens=4) for m in (model, auto)]
    assert torch.equal(outputs[0], outputs[1])


def test_bitsandbytes_config_gets_the_skip_list_but_a_callers_list_wins(monkeypatch, tiny_dirs) -> None:
    from transformers import BitsAndBytesConfig, PreTrainedModel

    seen = []
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(lambda cls, *a, **k: seen.append(k)))
    config = BitsAndBytesConfig(load_in_4bit=True)
    hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs["c-abs"], quantization_config=config)
    assert seen[0]["quantization_config"].llm_int8_skip_modules == ["lm_head", "model.vision_tower", "model.abstractor"]
    assert config.llm_int8_skip_modules is None  # the caller's object is not changed
    own = BitsAndBytesConfig(load_in_4bit=True, llm_int8_skip_modules=["lm_head"])
    hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs["c-abs"], quantization_config=own)
    assert seen[1]["quantization_config"] is own


# ------------------------------------------------------------------------------------ errors


def test_mismatched_images_and_placeholders_get_clear_errors(tiny_dirs, images) -> None:
    model = hb.HoneybeeForConditionalGeneration.from_pretrained(tiny_dirs["c-abs"]).eval()
    processor = tiny_processor()
    with pytest.raises(hb.HoneybeeError, match=r"have 1 <image> placeholder\(s\) but 2 image\(s\) were given"):
        processor(images=images[:2], text=prompt(processor, 1, "What?"))
    inputs = processor(images=images[:2], text=prompt(processor, 2, "What?"), return_tensors="pt")
    with pytest.raises(hb.HoneybeeError, match=r"has 8 image positions but 1 image\(s\) give 4 visual tokens"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:1])
    with pytest.raises(hb.HoneybeeError, match="contain image positions .* but no pixel_values were given"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(hb.HoneybeeError, match="Honeybee reads images and text only"):
        processor(text="x", videos=[np.zeros((2, 8, 8, 3))])


# ------------------------------------------------------------------------------------ processor


def test_chat_template_system_and_multi_turn() -> None:
    processor = tiny_processor()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": "And its colour?"},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == "Be brief.\nHuman: <image>\nHuman: What is it?\nAI: A cat.\nHuman: And its colour?\nAI: "
    assert processor.apply_chat_template(messages[1:2]).startswith(hb.processing.SYSTEM_MESSAGE + "\nHuman: <image>\n")


def test_each_text_chunk_is_tokenized_on_its_own() -> None:
    """With a SentencePiece-style tokenizer every chunk after an <image> gets its own prefix space."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}, "\u2581": 259}
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    processor = hb.HoneybeeProcessor(hb.HoneybeeImageProcessor(), tokenizer, num_visual_tokens=3)
    ids = processor(images=[Image.new("RGB", (8, 8))], text="Hi\nHuman: <image>\nAI: ")["input_ids"][0]
    first, second = tokenizer("Hi\nHuman: ", add_special_tokens=False)["input_ids"], tokenizer(
        "\nAI: ", add_special_tokens=False
    )["input_ids"]
    assert ids == [1] + first + [processor.image_token_id] * 3 + second
    assert first[0] == second[0] == 259  # the prefix space, once per chunk
    assert processor(text="Hi", add_special_tokens=False)["input_ids"] == [[259, 3 + ord("H"), 3 + ord("i")]]  # no BOS


def test_processor_needs_the_image_token_in_the_tokenizer() -> None:
    with pytest.raises(hb.HoneybeeError, match="The tokenizer has no '<image>' token"):
        hb.HoneybeeProcessor(hb.HoneybeeImageProcessor(), byte_tokenizer())


# ------------------------------------------------------------------------------------ mllm_nb front door


def test_fit_plans_honeybee_from_its_folder(tiny_dirs) -> None:
    import mllm_nb

    report = mllm_nb.fit(tiny_dirs["c-abs"], quantization=None, target="cpu")
    assert report.architecture == "HoneybeeForConditionalGeneration"
    assert report.image_tokens == QUERIES and report.fits


def test_load_vlm_ask_stream_batch_and_caption_folder(tiny_dirs, images, tmp_path) -> None:
    import mllm_nb

    vlm = mllm_nb.load_vlm(tiny_dirs["c-abs"], quantization=None)
    assert type(vlm.model) is hb.HoneybeeForConditionalGeneration and vlm.dtype == torch.float32
    answer = vlm.ask(images[0], "What is this?", max_new_tokens=5)
    assert "".join(vlm.stream(images[0], "What is this?", max_new_tokens=5)) == answer
    pairs = [(images[:2], "Which is darker?"), (images[2], "What is this?")]
    assert vlm.batch_ask(pairs, max_new_tokens=5) == [vlm.ask(i, q, max_new_tokens=5) for i, q in pairs]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(images[:2]):
        image.save(folder / f"{i}.png")
    assert vlm.caption_folder(folder, tmp_path / "captions.jsonl", progress=False)["captioned"] == 2
    lines = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == ["0.png", "1.png"] and all("caption" in line for line in lines)
