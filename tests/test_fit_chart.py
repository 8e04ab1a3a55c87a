"""Tests for mllm_nb.fit_chart: the stacked bars add up to what FitReport compares, and cross the line iff it fails."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import mllm_nb as mn
from mllm_nb.errors import MllmNbError
from mllm_nb.fit_chart import (
    CPU_RAM,
    GB,
    GPU,
    RAM,
    FitChartError,
    image_kv_bytes,
    limits,
    memory_parts,
    plot_fit,
    plot_image_cost,
)
from mllm_nb.memory.targets import Target
from mllm_nb.plan import fit

MODELS = ["llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-13b-hf", "llava-hf/llava-v1.6-34b-hf"]
# A T4 with little RAM: a report that fits the GPU but not the RAM while loading (the Colab crash).
SMALL_RAM_T4 = Target("T4, 6 GB RAM", gpu_bytes=15_837_691_904, ram_bytes=6_000_000_000, bf16=False)


@pytest.fixture(scope="module")
def t4_reports() -> list:
    return [fit(m, quantization=q, target="t4") for m in MODELS for q in (None, "4bit")]


def stacked_totals(ax) -> list[float]:
    """Per bar, the sum of the heights of its stacked segments (one BarContainer per part)."""
    totals = None
    for container in ax.containers:
        heights = [patch.get_height() for patch in container.patches]
        totals = heights if totals is None else [a + b for a, b in zip(totals, heights)]
    return totals


def line_height(ax) -> float:
    (line,) = ax.lines
    ys = set(line.get_ydata())
    assert len(ys) == 1  # a horizontal line
    return ys.pop()


def check_chart(fig: Figure, reports: list) -> None:
    """Every bar stacks to what its report compares with the target, and crosses the line iff that part fails."""
    FigureCanvasAgg(fig).draw()
    panels = {ax.get_title(): ax for ax in fig.axes}
    target = reports[0].target
    assert set(panels) == ({CPU_RAM} if target.is_cpu else {GPU, RAM})
    above_any = [False] * len(reports)
    for title, ax in panels.items():
        totals = stacked_totals(ax)
        assert len(totals) == len(reports)
        limit = target.ram_bytes if title != GPU else target.gpu_bytes
        assert line_height(ax) == pytest.approx(limit / GB)
        for i, (total, report) in enumerate(zip(totals, reports)):
            need = report.gpu_need_bytes if title == GPU else report.ram_need_bytes
            assert total * GB == pytest.approx(need, rel=1e-9, abs=2)
            above = total > line_height(ax)
            assert above == (not (report.gpu_fits if title == GPU else report.ram_fits)), (title, report.headline())
            above_any[i] |= above
    assert above_any == [not r.fits for r in reports]


def test_parts_sum_to_the_needs_the_verdict_compares(t4_reports) -> None:
    for report in t4_reports:
        parts = memory_parts(report)
        assert sum(n for _, n in parts[GPU]) == report.gpu_need_bytes
        assert sum(n for _, n in parts[RAM]) == report.ram_need_bytes
        assert dict(parts[GPU]) == {"weights": report.weights_bytes, "KV cache": report.kv_bytes,
                                    "overhead": report.overhead_bytes}
        assert all(n >= 0 for part in parts.values() for _, n in part)
        assert limits(report) == {GPU: report.target.gpu_bytes, RAM: report.target.ram_bytes}


def test_t4_chart_bars_stack_to_the_need_and_cross_the_line_iff_it_does_not_fit(t4_reports) -> None:
    fig = plot_fit(t4_reports)
    check_chart(fig, t4_reports)
    # the defect this chart fixes: 7B fp16 weights alone are under the line, the whole need is over it
    seven_fp16 = t4_reports[0]
    assert seven_fp16.weights_bytes < seven_fp16.target.gpu_bytes < seven_fp16.gpu_need_bytes
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert labels[:2] == ["llava-1.5-7b-hf\nfp16", "llava-1.5-7b-hf\n4bit"]


def test_a_report_that_fails_on_ram_only_crosses_the_ram_line_only() -> None:
    reports = [fit("llava-hf/llava-1.5-7b-hf", q, SMALL_RAM_T4) for q in ("4bit", None)]
    assert reports[0].gpu_fits and not reports[0].ram_fits  # the case a weights-or-GPU-only chart gets wrong
    check_chart(plot_fit(reports), reports)


def test_cpu_target_stacks_everything_in_ram() -> None:
    cpu = Target("cpu", gpu_bytes=None, ram_bytes=20_000_000_000, bf16=False)
    reports = [fit(m, q, cpu) for m in MODELS[:2] for q in (None, "4bit")]
    assert {r.fits for r in reports} == {True, False}
    for report in reports:
        assert sum(n for _, n in memory_parts(report)[CPU_RAM]) == report.ram_need_bytes
    check_chart(plot_fit(reports), reports)


def test_mapping_labels_and_the_total_written_on_each_bar(t4_reports) -> None:
    fig = mn.plot_fit({"seven": t4_reports[0], "seven 4-bit": t4_reports[1]})
    gpu = next(ax for ax in fig.axes if ax.get_title() == GPU)
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == ["seven", "seven 4-bit"]  # shared x axis
    written = [t.get_text() for t in gpu.texts]
    assert written == [f"{t4_reports[0].gpu_need_bytes / GB:.1f}", f"{t4_reports[1].gpu_need_bytes / GB:.1f}"]


def test_a_huge_bar_is_cut_with_an_arrow_but_keeps_its_true_height(t4_reports) -> None:
    fig = plot_fit(t4_reports)
    gpu = next(ax for ax in fig.axes if ax.get_title() == GPU)
    top = gpu.get_ylim()[1]
    huge = t4_reports[4]  # 34B in fp16: 75 GB
    assert huge.gpu_need_bytes / GB > top
    assert f"{huge.gpu_need_bytes / GB:.1f} ↑" in [t.get_text() for t in gpu.texts]
    assert top > t4_reports[2].gpu_need_bytes / GB  # 13B fp16 (30 GB) still shows whole


@pytest.mark.parametrize("bad", [[], "llava-hf/llava-1.5-7b-hf", [object()], 3])
def test_bad_reports_raise_one_sentence(bad) -> None:
    with pytest.raises(FitChartError) as info:
        plot_fit(bad)
    assert isinstance(info.value, MllmNbError) and "\n" not in str(info.value) and "mn.fit" in str(info.value)


def test_reports_for_different_targets_are_refused(t4_reports) -> None:
    with pytest.raises(FitChartError, match="different targets \\(L4 and T4\\)"):
        plot_fit([t4_reports[0], fit("llava-hf/llava-1.5-7b-hf", None, "l4")])


def test_image_cost_bars_are_the_reports_tokens_and_kv_cache() -> None:
    reports = {"LLaVA-1.5 7B": fit("llava-hf/llava-1.5-7b-hf", "4bit", "t4"),
               "Honeybee 7B M144": fit("kakaobrain/honeybee-7B-C-Abs-M144", "4bit", "t4")}
    fig = mn.plot_image_cost(reports)
    FigureCanvasAgg(fig).draw()
    tokens_ax, kv_ax = fig.axes
    assert [p.get_width() for p in tokens_ax.patches] == [576, 144]
    kv = [p.get_width() for p in kv_ax.patches]
    assert kv == pytest.approx([image_kv_bytes(r) / 2**20 for r in reports.values()])
    assert kv[0] == pytest.approx(288, abs=1)  # 576 tokens x 0.5 MiB per token (Vicuna-7B, fp16)
    assert [t.get_text() for t in tokens_ax.get_yticklabels()] == list(reports)
    with pytest.raises(FitChartError):
        plot_image_cost([])
