"""Tests of mllm_nb.catalog: the curated data file, lookups, tables, and configs that really build."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

import mllm_nb.honeybee  # noqa: F401  registers model_type "honeybee" (catalog.build_config does not yet)
from mllm_nb import catalog

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

EXPECTED_IDS = {
    "llava-hf/llava-1.5-7b-hf",
    "llava-hf/llava-1.5-13b-hf",
    "llava-hf/llava-v1.6-mistral-7b-hf",
    "llava-hf/llava-v1.6-vicuna-7b-hf",
    "llava-hf/llava-v1.6-vicuna-13b-hf",
    "llava-hf/llava-v1.6-34b-hf",
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    "llava-hf/llava-interleave-qwen-0.5b-hf",
    "llava-hf/llava-interleave-qwen-7b-hf",
    "openai/clip-vit-base-patch32",
    "openai/clip-vit-large-patch14",
    "google/siglip-base-patch16-224",
    "kakaobrain/honeybee-7B-C-Abs-M144",
    "kakaobrain/honeybee-7B-D-Abs-M144",
    "kakaobrain/honeybee-13B-C-Abs-M256",
    "kakaobrain/honeybee-13B-D-Abs-M256",
    "kakaobrain/honeybee-7B-C-Abs-M256",
    "kakaobrain/honeybee-13B-C-Abs-M576",
    # the VLMs people pick in 2026 (issue 17)
    "Qwen/Qwen2-VL-2B-Instruct",
    "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen3-VL-2B-Instruct",
    "Qwen/Qwen3-VL-4B-Instruct",
    "Qwen/Qwen3-VL-8B-Instruct",
    "google/gemma-3-4b-it",
    "google/gemma-3-12b-it",
    "google/paligemma2-3b-mix-224",
    "meta-llama/Llama-3.2-11B-Vision-Instruct",
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
    "HuggingFaceM4/Idefics3-8B-Llama3",
    "OpenGVLab/InternVL3-2B-hf",
    "OpenGVLab/InternVL3-8B-hf",
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
    "CohereLabs/aya-vision-8b",
}
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
ALL = catalog.entries()


def _meta_model(entry: catalog.CatalogEntry) -> torch.nn.Module:
    """The entry's architecture built on the meta device, the way transformers picks the class."""
    from transformers import AutoModel, AutoModelForImageTextToText

    config = entry.build_config()
    with torch.device("meta"):
        try:
            return AutoModelForImageTextToText.from_config(config)
        except ValueError:
            return AutoModel.from_config(config)


def test_catalog_has_every_expected_model_once() -> None:
    ids = [entry.id for entry in ALL]
    assert len(ids) == len(set(ids)) == len(EXPECTED_IDS) == 36
    assert set(ids) == EXPECTED_IDS


@pytest.mark.parametrize("entry", ALL, ids=lambda e: e.id)
def test_config_builds_the_stated_architecture_with_the_stated_params(entry: catalog.CatalogEntry) -> None:
    model = _meta_model(entry)
    assert type(model).__name__ == entry.architecture
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - entry.params) <= 0.01 * entry.params


@pytest.mark.parametrize("entry", ALL, ids=lambda e: e.id)
def test_entry_facts_are_consistent(entry: catalog.CatalogEntry) -> None:
    tokens = entry.image_tokens
    assert 0 < tokens.base <= tokens.max and tokens.rule
    assert entry.context_length > 0 and entry.license and entry.when_to_use and entry.default_prompt
    assert entry.trained_multi_image.value in (True, False, "unknown") and entry.trained_multi_image.note
    assert entry.stored_dtype in DTYPE_BYTES
    assert entry.family in catalog.families()
    # the checkpoint files hold every parameter once in the stored dtype (sizes rounded to 10 MB)
    stored = entry.params * DTYPE_BYTES[entry.stored_dtype]
    assert abs(sum(entry.shard_bytes) - stored) <= 0.01 * stored
    assert all(size <= 5_000_000_000 for size in entry.shard_bytes)


def test_sizes_and_token_budgets_of_known_models() -> None:
    assert catalog.get("llava-hf/llava-1.5-7b-hf").shard_bytes == (4_990_000_000, 4_960_000_000, 4_180_000_000)
    assert len(catalog.get("llava-hf/llava-v1.6-34b-hf").shard_bytes) == 15
    next_tokens = catalog.get("llava-hf/llava-v1.6-mistral-7b-hf").image_tokens
    assert (next_tokens.base, next_tokens.max, next_tokens.per_image(2)) == (576, 2928, 2928)
    ov = catalog.get("llava-hf/llava-onevision-qwen2-7b-ov-hf").image_tokens
    assert (ov.per_image(1), ov.per_image(3)) == (8765, 730)
    assert catalog.get("llava-hf/llava-interleave-qwen-7b-hf").trained_multi_image.value is True
    assert catalog.get("llava-hf/llava-1.5-7b-hf").trained_multi_image.value is False


def test_estimated_facts_carry_a_source_note() -> None:
    estimated = catalog.get("llava-hf/llava-v1.6-vicuna-13b-hf").estimated
    assert "shard_bytes" in estimated and "llava-1.5-13b" in estimated["shard_bytes"]
    assert catalog.get("llava-hf/llava-1.5-7b-hf").estimated == {}


def test_get_is_case_insensitive_and_exact() -> None:
    entry = catalog.get("LLaVA-HF/LLaVA-1.5-7B-HF")
    assert entry is not None and entry.id == "llava-hf/llava-1.5-7b-hf"
    assert catalog.get("  google/siglip-base-patch16-224 ").id == "google/siglip-base-patch16-224"
    assert catalog.get("llava-1.5-7b-hf") is None  # no org: not an exact id
    assert catalog.get("llava-hf/llava-1.5-7b") is None


def test_entries_filter_by_family() -> None:
    assert [e.id for e in catalog.entries("clip")] == ["openai/clip-vit-base-patch32", "openai/clip-vit-large-patch14"]
    assert {e.family for e in catalog.entries("llava_next")} == {"llava_next"}
    assert len(catalog.entries("llava_next")) == 4
    assert catalog.entries("no-such-family") == []


def test_table_lists_every_model_with_its_numbers() -> None:
    text = catalog.table()
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["id", "family"]
    assert len(lines) == len(ALL) + 1
    for entry in ALL:
        assert entry.id in text
    row_34b = next(line for line in lines if "llava-v1.6-34b-hf" in line)
    assert "34.75 B" in row_34b and "576-2928" in row_34b and "4096" in row_34b
    assert str(catalog.show()) == text


def test_html_table_is_escaped() -> None:
    entry = dataclasses.replace(catalog.get("openai/clip-vit-base-patch32"), when_to_use="<script>x</script> & co")
    out = entry._repr_html_()
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in out and "<script>" not in out
    assert catalog.html_table().count("<tr>") == len(ALL) + 1


def test_config_is_read_only_and_copies_are_independent() -> None:
    entry = catalog.get("llava-hf/llava-1.5-7b-hf")
    with pytest.raises(TypeError):
        entry.config["model_type"] = "x"  # type: ignore[index]
    copy = entry.config_dict()
    copy["text_config"]["hidden_size"] = 1
    assert entry.config["text_config"]["hidden_size"] == 4096
    assert entry.build_config().text_config.hidden_size == 4096
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.params = 1  # type: ignore[misc]


def test_catalog_json_ships_as_package_data() -> None:
    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    assert "catalog.json" in data["tool"]["setuptools"]["package-data"]["mllm_nb"]
    assert (root / "mllm_nb" / catalog.CATALOG_FILE).is_file()


# --------------------------------------------------------------------------- Honeybee (release archives)

HONEYBEE = catalog.entries("honeybee")
VICUNA_PARAMS = {"7B": 6_738_415_616, "13B": 13_015_864_320}  # Vicuna v1.5 / Llama-2, vocab 32000
CLIP_L14_VISION_PARAMS = {224: 303_179_776, 336: 303_507_456}  # CLIPVisionModel incl. post_layernorm


def _zoo_name(entry: catalog.CatalogEntry) -> str:
    return entry.id.removeprefix("kakaobrain/honeybee-")


def test_honeybee_entries_are_the_six_model_zoo_releases() -> None:
    from mllm_nb.honeybee import MODEL_ZOO

    assert [_zoo_name(e) for e in HONEYBEE] == list(MODEL_ZOO)
    for entry in HONEYBEE:
        name = _zoo_name(entry)
        assert catalog.get(f"kakaobrain/honeybee-{name.lower()}") is entry  # case-insensitive like the rest
        assert entry.architecture == "HoneybeeForConditionalGeneration" and entry.config["model_type"] == "honeybee"
        assert entry.license == "CC-BY-NC-4.0" and entry.context_length == 4096
        # not a Hub repo: the entry says how to get the weights, and that the id is only a name
        assert f'download("{name}")' in entry.when_to_use and "convert" in entry.when_to_use
        assert "not a Hub repo" in entry.estimated["id"]
        assert {"config", "stored_dtype", "shard_bytes"} <= set(entry.estimated)
        assert entry.trained_multi_image.value is False and "several <image>" in entry.trained_multi_image.note


@pytest.mark.parametrize("entry", HONEYBEE, ids=lambda e: e.id)
def test_honeybee_config_matches_the_release_name(entry: catalog.CatalogEntry) -> None:
    size, kind, tokens = _zoo_name(entry).split("-")[0], _zoo_name(entry).split("-")[1], int(entry.id.split("-M")[-1])
    config = entry.build_config()
    assert entry.image_tokens.base == entry.image_tokens.max == tokens == config.num_visual_tokens
    assert config.projector_type == f"{kind.lower()}-abs"
    assert config.text_config.hidden_size == {"7B": 4096, "13B": 5120}[size]
    assert config.vision_config.image_size == (336 if tokens == 576 else 224)
    assert config.num_patches >= tokens  # the abstractor pools the patch grid down (or keeps it)
    assert config.image_token_id == config.text_config.vocab_size == 32000  # <image> lives in the tokenizer only


@pytest.mark.parametrize("entry", HONEYBEE, ids=lambda e: e.id)
def test_honeybee_params_are_vicuna_plus_clip_plus_the_abstractor(entry: catalog.CatalogEntry) -> None:
    model = _meta_model(entry)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - entry.params) <= 0.01 * entry.params
    abstractor = sum(p.numel() for p in model.model.abstractor.parameters())
    llm = VICUNA_PARAMS[_zoo_name(entry).split("-")[0]]
    vision = CLIP_L14_VISION_PARAMS[entry.config["vision_config"]["image_size"]]
    assert params - abstractor == llm + vision  # published sizes of the two towers, independent of the config
    assert 30e6 < abstractor < 60e6  # two RegStages + readout (C-Abs) or six deformable layers (D-Abs)


def test_honeybee_m144_entry_is_the_model_default_shape() -> None:
    from mllm_nb.honeybee import HoneybeeConfig, HoneybeeForConditionalGeneration

    with torch.device("meta"):
        default = HoneybeeForConditionalGeneration(HoneybeeConfig())
    shapes = {name: tuple(t.shape) for name, t in _meta_model(HONEYBEE[0]).state_dict().items()}
    assert _zoo_name(HONEYBEE[0]) == "7B-C-Abs-M144"
    assert shapes == {name: tuple(t.shape) for name, t in default.state_dict().items()}


@pytest.mark.parametrize("entry", HONEYBEE, ids=lambda e: e.id)
def test_honeybee_ids_resolve_to_the_tiny_honeybee_fixture_in_demo_mode(entry: catalog.CatalogEntry) -> None:
    from mllm_nb.demo.mode import FIXTURES_DIR, resolve_model
    from mllm_nb.errors import DemoModeError

    assert resolve_model(entry.id, "vlm", demo=False) == (entry.id, False)
    if (FIXTURES_DIR / "tiny-honeybee" / "config.json").is_file():
        path, is_fixture = resolve_model(entry.id, "vlm", demo=True)
        assert is_fixture and Path(path) == FIXTURES_DIR / "tiny-honeybee"
    else:  # not trained yet: a clear error naming the fixture, not a fall-back to another model
        with pytest.raises(DemoModeError, match=r"demo fixture 'tiny-honeybee' is missing .* regenerate it"):
            resolve_model(entry.id, "vlm", demo=True)


def test_stored_figures_are_those_of_the_built_architecture() -> None:
    """fit plans catalog models from catalog_figures.json: it must match the configs (tools/catalog_figures.py)."""
    import dataclasses

    from mllm_nb.memory.architecture import census
    from mllm_nb.memory.sizes import decoder_shape

    for entry in ALL:
        config = entry.build_config()
        assert dict(entry.figures["census"]) == dataclasses.asdict(census(config)), entry.id
        assert dict(entry.figures["decoder"]) == dataclasses.asdict(decoder_shape(config)), entry.id


@pytest.mark.parametrize("entry", [e for e in ALL if e.processor], ids=lambda e: e.id)
def test_stated_image_tokens_are_what_the_processor_twin_counts(entry: catalog.CatalogEntry) -> None:
    """base: a small image; max: no image size costs more (the figures fit plans with)."""
    from mllm_nb.memory.twins import image_token_counts, processor_twin

    twin = processor_twin(entry)
    assert image_token_counts(twin, [(64, 64)]) == (entry.image_tokens.base,)
    sizes = [(640, 480), (300, 900), (1920, 1080), (4096, 4096), (8000, 1000), (1000, 8000)]
    assert max(image_token_counts(twin, [size])[0] for size in sizes) <= entry.image_tokens.max
