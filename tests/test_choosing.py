"""mllm_nb.compare_models: every catalog chat model planned on one machine, as a table."""

from __future__ import annotations

import mllm_nb as mn
from mllm_nb import catalog


def test_every_chat_model_is_planned_smallest_first_with_its_own_verdict():
    choices = mn.compare_models("t4")
    chat = {entry.id for entry in catalog.entries() if entry.family not in ("clip", "siglip")}
    assert {row.model_id for row in choices.rows} == chat
    assert [row.params for row in choices.rows] == sorted(row.params for row in choices.rows)
    for row in choices.rows:
        report = mn.fit(row.model_id, target="t4")
        assert (row.fits, row.weights_bytes, row.download_bytes) == (report.fits, report.weights_bytes,
                                                                     report.download_bytes)
    assert "llava-hf/llava-v1.6-34b-hf" not in choices.fitting() and "google/gemma-3-4b-it" in choices.fitting()


def test_pre_quantized_copies_download_less_and_the_table_says_so():
    choices = {row.model_id: row for row in mn.compare_models("t4").rows}
    qwen = choices["Qwen/Qwen2.5-VL-7B-Instruct"]
    assert qwen.prequantized and qwen.prequantized_bytes < qwen.download_bytes / 2
    assert "pre-quantized" in " ".join(qwen.cells())
    report = mn.fit("Qwen/Qwen2.5-VL-7B-Instruct", target="t4")
    assert any(tip.startswith(f"download the pre-quantized {qwen.prequantized}") for tip in report.suggestions)


def test_text_and_html_tables(monkeypatch):
    choices = mn.compare_models("t4")
    text = str(choices)
    assert text.startswith("Catalog chat models on T4 (4bit):") and "licence" in text
    page = choices._repr_html_()
    assert page.count("<tr>") == len(choices.rows) + 1 and "<script" not in page
