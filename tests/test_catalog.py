"""Tests of mllm_nb.catalog: the curated data file, lookups, tables, and configs that really build."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

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


def test_catalog_has_the_thirteen_models_once_each() -> None:
    ids = [entry.id for entry in ALL]
    assert len(ids) == len(set(ids)) == 13
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
    assert len(lines) == 14
    for entry in ALL:
        assert entry.id in text
    row_34b = next(line for line in lines if "llava-v1.6-34b-hf" in line)
    assert "34.75 B" in row_34b and "576-2928" in row_34b and "4096" in row_34b
    assert str(catalog.show()) == text


def test_html_table_is_escaped() -> None:
    entry = dataclasses.replace(catalog.get("openai/clip-vit-base-patch32"), when_to_use="<script>x</script> & co")
    out = entry._repr_html_()
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in out and "<script>" not in out
    assert catalog.html_table().count("<tr>") == 14


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
