"""Charts of ``fit`` reports: the memory a model needs, part by part, against what the target has.

``plot_fit(reports)`` stacks exactly the parts a ``FitReport`` adds up when it decides ``fits``:
on a GPU target, *weights + KV cache + overhead* against the GPU's usable memory, and the system RAM
needed while loading (a baseline for Python, torch and transformers, plus the largest checkpoint shard)
against the target's RAM; on a CPU target, everything in RAM. A bar rises above its line exactly
when that part of the verdict fails. ``plot_image_cost(reports)`` shows what one picture costs each
model: visual tokens and the KV cache they fill.

>>> from mllm_nb.plan import fit
>>> fig = plot_fit([fit("llava-hf/llava-1.5-7b-hf", None, "t4"), fit("llava-hf/llava-1.5-7b-hf", "4bit", "t4")])
>>> [ax.get_title() for ax in fig.axes]
['GPU memory while answering', 'System RAM while loading']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mllm_nb.display import new_figure
from mllm_nb.errors import MllmNbError
from mllm_nb.hardware import format_bytes
from mllm_nb.plan import LOAD_BASELINE_RAM_BYTES, FitReport

GB = 1e9
MIB = 2**20
GPU, RAM = "GPU memory while answering", "System RAM while loading"
CPU_RAM = "System RAM while loading and answering"
_COLORS = {
    "weights": "#4C72B0", "KV cache": "#DD8452", "overhead": "#8c8c8c",
    "Python + torch + transformers": "#c7c7c7", "largest shard while loading": "#8172B3",
    "extra peak while loading": "#8172B3",
}
_FITS_COLOR, _DOES_NOT_FIT_COLOR = "#1a7f37", "#cf222e"
_CLIP = 2.5  # the y axis shows up to about this many times the target's memory


class FitChartError(MllmNbError, ValueError):
    """``plot_fit`` or ``plot_image_cost`` got something other than ``fit`` reports of one target.

    >>> str(FitChartError("No reports to plot: pass mn.fit(...) results."))[:19]
    'No reports to plot:'
    """


def memory_parts(report: FitReport) -> dict[str, list[tuple[str, int]]]:
    """The parts ``report`` adds up for its verdict: ``{panel title: [(part, bytes), ...]}``.

    On a GPU target the GPU parts sum to ``report.gpu_need_bytes`` (compared with ``target.gpu_bytes``) and
    the RAM parts to ``report.ram_need_bytes`` (compared with ``target.ram_bytes``); a CPU target has one RAM
    panel (``CPU_RAM``): what answering holds, plus what the loading peak adds on top of it, if anything.

    >>> from mllm_nb.plan import fit
    >>> r = fit("llava-hf/llava-1.5-7b-hf", target="t4")
    >>> sum(n for _, n in memory_parts(r)[GPU]) == r.gpu_need_bytes
    True
    """
    _check_report(report)
    ram_need = report.ram_need_bytes
    baseline = min(LOAD_BASELINE_RAM_BYTES, ram_need)
    running = [("weights", report.weights_bytes), ("KV cache", report.kv_bytes), ("overhead", report.overhead_bytes)]
    if report.target.is_cpu:
        extra = ram_need - baseline - sum(n for _, n in running)  # the loading peak, when it tops the running need
        ram = [("Python + torch + transformers", baseline), *running, ("extra peak while loading", max(extra, 0))]
        return {CPU_RAM: ram}
    ram = [("Python + torch + transformers", baseline), ("largest shard while loading", ram_need - baseline)]
    return {GPU: running, RAM: ram}


def limits(report: FitReport) -> dict[str, int]:
    """What each panel's need is compared with: ``{panel title: bytes}`` (the target's usable memory).

    >>> from mllm_nb.plan import fit
    >>> limits(fit("llava-hf/llava-1.5-7b-hf", target="t4"))[RAM]
    12700000000
    """
    target = report.target
    if target.is_cpu:
        return {CPU_RAM: target.ram_bytes}
    return {GPU: target.gpu_bytes or 0, RAM: target.ram_bytes}


def _check_report(report: Any) -> None:
    if not isinstance(report, FitReport):
        raise FitChartError(f"Expected a report from mn.fit(...), got {type(report).__name__}: plan the model first.")


def _labelled(reports: Any) -> list[tuple[str, FitReport]]:
    """(label, report) pairs from one report, a sequence, or a mapping of labels to reports."""
    if isinstance(reports, FitReport):
        pairs = [(None, reports)]
    elif isinstance(reports, Mapping):
        pairs = [(str(label), report) for label, report in reports.items()]
    elif isinstance(reports, Iterable) and not isinstance(reports, (str, bytes)):
        pairs = [(None, report) for report in reports]
    else:
        raise FitChartError(f"Expected mn.fit(...) reports, got {type(reports).__name__}: pass a list of reports.")
    if not pairs:
        raise FitChartError("No reports to plot: pass a list of mn.fit(...) results.")
    for _, report in pairs:
        _check_report(report)
    return [(label or _default_label(report), report) for label, report in pairs]


def _default_label(report: FitReport) -> str:
    how = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(report.compute_dtype, report.compute_dtype)
    return f"{report.model_id.rpartition('/')[2]}\n{report.quantization or how}"


def _one_target(pairs: list[tuple[str, FitReport]]) -> None:
    targets = {report.target for _, report in pairs}
    if len(targets) > 1:
        names = " and ".join(sorted({t.name for t in targets}))
        raise FitChartError(f"The reports are planned for different targets ({names}): plot one target at a time.")


def _draw_panel(
    ax: Axes, title: str, labels: list[str], parts: list[list[tuple[str, int]]], limit: int, name: str
) -> None:
    """Stacked bars of ``parts`` (one list per bar) and a dashed line at ``limit``.

    The axis stops a little above ``_CLIP`` times the line, so that a huge model does not flatten the bars that
    decide near the line; a bar cut off there carries its total with an arrow.
    """
    x = np.arange(len(labels))
    bottoms = np.zeros(len(labels))
    names = list(dict.fromkeys(part for bar in parts for part, _ in bar))
    for part in names:
        heights = np.array([dict(bar).get(part, 0) / GB for bar in parts])
        ax.bar(x, heights, 0.6, bottom=bottoms, label=part, color=_COLORS.get(part))
        bottoms += heights
    ax.axhline(limit / GB, color=_DOES_NOT_FIT_COLOR, linestyle="--", label=f"{name} usable: {format_bytes(limit)}")
    top = min(bottoms.max(), _CLIP * limit / GB) if limit else bottoms.max()
    top = max(top, limit / GB) * 1.15
    needs = [sum(n for _, n in bar) for bar in parts]
    for xi, total, need in zip(x, bottoms, needs):
        color = _FITS_COLOR if need <= limit else _DOES_NOT_FIT_COLOR
        cut = total > top
        ax.text(xi, min(total, top * 0.9) + top * 0.01, f"{total:.1f}{' ↑' if cut else ''}", ha="center",
                va="bottom", fontsize=8, color=color, weight="bold",
                bbox={"fc": "white", "ec": "none", "pad": 1} if cut else None)
    ax.set_ylim(0, top)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("GB")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_fit(reports: FitReport | Iterable[FitReport] | Mapping[str, FitReport]) -> Figure:
    """Stacked bars of what each report needs, part by part, with the target's usable memory as a dashed line.

    ``reports`` are ``mn.fit`` results for one target: one report, a list (labelled by model and
    quantization), or a mapping of labels to reports. A GPU target gets two panels, GPU memory
    (weights + KV cache + overhead) and system RAM while loading; a CPU target gets RAM. A bar's total is
    written on it, green when that part fits and red when it does not; the report ``fits`` only when no bar
    crosses its line. The axis stops at about 2.5 times the line: a taller bar is cut, its total marked with an
    arrow. Returns a Figure not registered with pyplot (put it last in a cell to show it).

    >>> from mllm_nb.plan import fit
    >>> fig = plot_fit({"7B fp16": fit("llava-hf/llava-1.5-7b-hf", None, "t4")})
    >>> fig.axes[-1].get_xticklabels()[0].get_text()  # the panels share the x axis
    '7B fp16'
    """
    pairs = _labelled(reports)
    _one_target(pairs)
    target = pairs[0][1].target
    labels = [label for label, _ in pairs]
    bars = [memory_parts(report) for _, report in pairs]
    lines = limits(pairs[0][1])
    fig = new_figure(min(4.5 + 1.2 * len(pairs), 13.0), 1.0 + 2.6 * len(lines), labels)
    axes = fig.subplots(len(lines), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (title, limit) in zip(axes, lines.items()):
        name = f"{target.name} {'GPU' if title == GPU else 'RAM'}"  # e.g. "T4 GPU usable: 15.8 GB"
        _draw_panel(ax, title, labels, [bar[title] for bar in bars], limit, name)
    return fig


def image_kv_bytes(report: FitReport) -> int:
    """KV-cache bytes that one picture's visual tokens fill (``image_tokens`` of them, in the compute dtype).

    >>> from mllm_nb.plan import fit
    >>> image_kv_bytes(fit("llava-hf/llava-1.5-7b-hf", target="t4")) // 2**20
    288
    """
    _check_report(report)
    return report.image_tokens * report.kv_bytes_per_1k_tokens // 1000


def plot_image_cost(reports: FitReport | Iterable[FitReport] | Mapping[str, FitReport]) -> Figure:
    """Two bar panels: visual tokens per picture, and the KV cache (MiB) those tokens fill, for each report.

    ``reports`` as for ``plot_fit`` (labels may be a mapping's keys). Returns a Figure not registered
    with pyplot.

    >>> from mllm_nb.plan import fit
    >>> fig = plot_image_cost({"LLaVA-1.5 7B": fit("llava-hf/llava-1.5-7b-hf", target="t4")})
    >>> [int(p.get_width()) for p in fig.axes[0].patches]
    [576]
    """
    pairs = _labelled(reports)
    labels = [label.replace("\n", " ") for label, _ in pairs]
    fig = new_figure(8.0, 0.5 * len(pairs) + 1.2, labels)
    tokens_ax, kv_ax = fig.subplots(1, 2, sharey=True)
    tokens_ax.barh(labels, [report.image_tokens for _, report in pairs], color="#fd8d3c")
    tokens_ax.set_xlabel("visual tokens per image")
    kv_ax.barh(labels, [image_kv_bytes(report) / MIB for _, report in pairs], color="#6baed6")
    kv_ax.set_xlabel("KV cache per image, MiB")
    tokens_ax.invert_yaxis()
    return fig


__all__ = [
    "CPU_RAM", "GPU", "RAM", "FitChartError", "image_kv_bytes", "limits", "memory_parts", "plot_fit", "plot_image_cost",
]
