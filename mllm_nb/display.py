"""Show images and probability charts in a notebook, Korean and other CJK text included.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``: it shows exactly
once when it is the last expression of a Jupyter cell, never piles up in pyplot's figure list,
and works headless. Save one with ``fig.savefig("out.png")``.

    >>> import numpy as np
    >>> fig = show(np.zeros((8, 8, 3), dtype=np.uint8), captions=["black"])
    >>> fig = plot_probs(["cat", "dog"], [0.9, 0.1])
    >>> fig = plot_accuracy(["cat", "dog"], {"bare label": ["cat", "cat"], "template": ["cat", "dog"]})

Text with Korean, Chinese or Japanese characters is drawn with a CJK font (see
:func:`find_cjk_font`) set on that text object only; global ``rcParams`` are never touched.
"""

from __future__ import annotations

import math
import numbers
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from mllm_nb.errors import MllmNbError
from mllm_nb.fonts import figure_class, find_cjk_font, font_kwargs, has_cjk

__all__ = [
    "DisplayError",
    "enable_notebook_figures",
    "find_cjk_font",
    "has_cjk",
    "new_figure",
    "plot_accuracy",
    "plot_predictions",
    "plot_probs",
    "show",
]


def enable_notebook_figures() -> bool:
    """Make IPython draw returned matplotlib Figures as PNG, even when pyplot was never imported.

    IPython registers its figure formatter only when pyplot activates the inline backend; the
    figures here are built without pyplot, so this registers it once with IPython's own
    ``select_figure_formats``. Returns whether a formatter is in place (False outside IPython).

    >>> enable_notebook_figures()  # outside IPython there is nothing to do
    False
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    png = shell.display_formatter.formatters["image/png"]
    try:
        png.lookup_by_type(Figure)
    except KeyError:
        select_figure_formats(shell, {"png"})
    return True


class DisplayError(MllmNbError, ValueError):
    """A display function got arguments it cannot draw (wrong lengths, shapes or values)."""



# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

_MAX_COLS = 4
_MAX_FIG_WIDTH = 20.0  # inches
_MAX_FIG_HEIGHT = 40.0
_CAPTION_FONTSIZE = 10.0
_TITLE_FONTSIZE = 13.0
_MAX_CAPTION_LINES = 6
_MAX_LABEL_CHARS = 32
_BAR_COLOR = "#4C72B0"


def new_figure(width: float, height: float, texts: Sequence[object]) -> Figure:
    """A pyplot-free Figure, capped at a sane size; quiet about missing glyphs if ``texts`` need it.

    >>> new_figure(4.0, 3.0, ["a title"]).get_size_inches().tolist()
    [4.0, 3.0]
    """
    scale = min(1.0, _MAX_FIG_WIDTH / width, _MAX_FIG_HEIGHT / height)
    figsize = (max(width * scale, 1.0), max(height * scale, 1.0))
    cls = figure_class(texts)
    return cls(figsize=figsize, layout="constrained")


def _grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) for ``n`` cells: ``cols`` per row (auto: up to 4), never more columns than cells."""
    if cols is None:
        cols = _MAX_COLS
    if isinstance(cols, bool) or not isinstance(cols, (int, np.integer)) or cols < 1:
        raise DisplayError(f"cols must be a whole number of at least 1, got {cols!r}.")
    cols = min(int(cols), n)
    return math.ceil(n / cols), cols


def _check_size(size: float) -> float:
    if isinstance(size, bool) or not isinstance(size, numbers.Real) or not size > 0:
        raise DisplayError(f"size must be a positive number of inches, got {size!r}.")
    return float(size)


def _wrap(text: str, width_inches: float, fontsize: float = _CAPTION_FONTSIZE) -> str:
    """Wrap ``text`` to lines that fit ``width_inches`` (CJK characters count as wide)."""
    char_width = fontsize * (1.0 if has_cjk(text) else 0.55)  # points per character, roughly
    width = max(8, int(width_inches * 72 / char_width))
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width) or [""]
    if len(lines) > _MAX_CAPTION_LINES:
        lines = lines[:_MAX_CAPTION_LINES]
        lines[-1] = lines[-1][: width - 2].rstrip() + " …"
    return "\n".join(lines)


def _shorten(label: str, limit: int = _MAX_LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _load_all(images: Any) -> list[Any]:
    """One source, a list of sources, a folder, a glob, an upload or a Conversation -> RGB PIL images."""
    from mllm_nb.images import load_images

    if hasattr(images, "turns") and isinstance(getattr(images, "images", None), list):  # a Conversation
        return list(images.images)
    return list(load_images(images))


def _cell_titles(
    n: int, captions: str | Sequence[str | None] | None, labels: bool | str, numbered: bool = False
) -> list[str]:
    """One title per image: the captions, else "Image i" labels when asked for, else blanks.

    ``numbered`` puts "Image i" in front of every title, captions included ("Image 1: a cat").
    """
    if labels not in ("auto", True, False):
        raise DisplayError(f'labels must be "auto", True or False, got {labels!r}.')
    if not isinstance(numbered, bool):
        raise DisplayError(f"numbered must be True or False, got {numbered!r}.")
    if numbered:
        plain = _cell_titles(n, captions, False)
        return [f"Image {i}: {t}" if t else f"Image {i}" for i, t in enumerate(plain, start=1)]
    if captions is not None:
        if isinstance(captions, str):
            captions = [captions]
        captions = list(captions)
        if len(captions) != n:
            raise DisplayError(
                f"Got {len(captions)} caption(s) for {n} image(s); pass exactly one caption "
                "per image (use None or '' to leave one blank)."
            )
        return ["" if c is None else str(c) for c in captions]
    if labels is True or (labels == "auto" and n > 1):
        return [f"Image {i}" for i in range(1, n + 1)]
    return [""] * n


def _draw_image(ax: Axes, image: Any, title: str, width_inches: float) -> None:
    ax.imshow(np.asarray(image))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(
            _wrap(title, width_inches), fontsize=_CAPTION_FONTSIZE, linespacing=1.3,
            **font_kwargs(title),
        )


def _caption_inches(titles: Sequence[str], width_inches: float) -> float:
    """Height of the tallest wrapped caption among ``titles``."""
    lines = max((_wrap(t, width_inches).count("\n") + 1 for t in titles if t), default=0)
    return lines * _CAPTION_FONTSIZE * 1.5 / 72 + (0.1 if lines else 0.0)


def _image_height(image: Any, size: float) -> float:
    """Height of ``image`` scaled to fit a ``size`` x ``size`` inch box, aspect kept."""
    width, height = getattr(image, "size", (1, 1))
    return size * min(1.0, height / max(width, 1))


def _row_heights(images: Sequence[Any], titles: Sequence[str], cols: int, size: float) -> list[float]:
    """Per grid row: the tallest image in it plus the tallest caption, in inches."""
    heights = []
    for start in range(0, len(images), cols):
        row = slice(start, start + cols)
        tallest = max(_image_height(image, size) for image in images[row])
        heights.append(max(tallest, 0.2 * size) + _caption_inches(titles[row], size))
    return heights


def _add_suptitle(fig: Figure, title: str | None) -> None:
    if title:
        fig.suptitle(str(title), fontsize=_TITLE_FONTSIZE, **font_kwargs(title))


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def show(
    images: Any,
    captions: str | Sequence[str | None] | None = None,
    cols: int | None = None,
    size: float = 3.0,
    title: str | None = None,
    labels: bool | str = "auto",
    numbered: bool = False,
) -> Figure:
    """Show one image or a grid of images, with optional captions and a title.

    ``images`` is anything :func:`mllm_nb.load_image` accepts (path, URL, bytes, PIL image, numpy
    array, upload) or a list of such sources, or a folder, or a ``Conversation`` (its images in
    prompt order). ``cols`` images per row (auto: up to 4), each in a ``size`` x ``size`` inch cell.
    With several images and no captions, cells are titled "Image 1", "Image 2", ... (as prompts
    refer to them); ``labels=False`` turns that off. ``numbered=True`` numbers every cell, one
    image or captions included ("Image 1: left photo"), in the order a multi-image prompt gets them.

    >>> import numpy as np
    >>> red = np.zeros((32, 48, 3), dtype=np.uint8); red[..., 0] = 255
    >>> fig = show([red, red], captions=["a red image", "빨간 이미지"], title="Two images")
    >>> fig = show([red, red], captions=["left", "right"], numbered=True)  # "Image 1: left", "Image 2: right"
    """
    size = _check_size(size)
    loaded = _load_all(images)
    if not loaded:
        raise DisplayError("No images to show: pass at least one image or a non-empty list.")
    rows, ncols = _grid_shape(len(loaded), cols)
    titles = _cell_titles(len(loaded), captions, labels, numbered)
    heights = _row_heights(loaded, titles, ncols, size)
    fig = new_figure(ncols * size, sum(heights) + (0.5 if title else 0.0), [*titles, title])
    grid = fig.add_gridspec(rows, ncols, height_ratios=heights)
    for i, (image, cell_title) in enumerate(zip(loaded, titles)):
        _draw_image(fig.add_subplot(grid[divmod(i, ncols)]), image, cell_title, size)
    _add_suptitle(fig, title)
    return fig


def _to_float_array(values: Any, what: str) -> np.ndarray:
    """``values`` (list, numpy array or tensor) as a float numpy array, with a clear error if not."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().float().cpu().numpy()
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise DisplayError(
            f"{what} must be numbers (a list, numpy array or tensor) of equal-length rows."
        ) from None
    if array.size and not np.all(np.isfinite(array)):
        raise DisplayError(f"{what} contain NaN or infinite values; pass finite probabilities.")
    if array.size and np.any(array < 0):
        raise DisplayError(
            f"{what} contain negative values (smallest {array.min():.4g}); pass probabilities "
            "or scores >= 0, e.g. softmax or sigmoid outputs rather than logits."
        )
    return array


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DisplayError(f"k must be a whole number of at least 1, got {k!r}.")
    return int(k)


def _draw_bars(ax: Axes, labels: Sequence[str], values: np.ndarray, k: int, color: Any) -> None:
    """Top-k horizontal bars, highest at the top, each with its value printed."""
    order = np.argsort(-values, kind="stable")[:k]
    top = values[order]
    names = [str(labels[i]) for i in order]
    hi = max(1.0, float(top.max()) if top.size else 1.0)
    as_percent = hi <= 1.0
    y = np.arange(len(order))
    ax.barh(y, top, color=color, height=0.7)
    ax.set_yticks(y, [_shorten(name) for name in names])
    for tick_label, name in zip(ax.get_yticklabels(), names):
        tick_label.set(**font_kwargs(name))
    ax.invert_yaxis()
    ax.set_xlim(0, hi)
    if as_percent:
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    for yi, value in zip(y, top):
        text = f"{value:.1%}" if as_percent else f"{value:.3g}"
        inside = value > 0.6 * hi
        ax.text(
            value - 0.01 * hi if inside else value + 0.01 * hi,
            yi,
            text,
            va="center",
            ha="right" if inside else "left",
            color="white" if inside else "black",
            fontsize=9,
            fontweight="bold" if inside else "normal",
        )
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_probs(
    labels: Sequence[str],
    probs: Any,
    k: int = 5,
    title: str | None = None,
    ax: Axes | None = None,
    color: Any = _BAR_COLOR,
) -> Figure:
    """Horizontal bars of the ``k`` most probable labels, highest at the top, values as percentages.

    ``probs`` need not sum to 1 (sigmoid scores are fine) but must be finite and >= 0; values above
    1 are drawn on a 0..max axis as plain numbers. Pass ``ax`` to draw into an existing axes (its
    figure is returned).

    >>> fig = plot_probs(["cat", "dog", "고양이"], [0.7, 0.2, 0.1], k=2, title="CLIP zero-shot")
    """
    k = _check_k(k)
    labels = [str(label) for label in labels]
    values = _to_float_array(probs, "probs").reshape(-1)
    if len(labels) != values.size:
        raise DisplayError(
            f"Got {len(labels)} label(s) but {values.size} probabilities; pass one probability "
            "per label."
        )
    if not labels:
        raise DisplayError("No labels to plot: pass at least one label and its probability.")
    if ax is None:
        shown = min(k, len(labels))
        height = 0.4 * shown + 0.8 + (0.35 if title else 0.0)
        fig = new_figure(6.0, height, [*labels, title])
        ax = fig.add_subplot()
    _draw_bars(ax, labels, values, k, color)
    if title:
        ax.set_title(str(title), **font_kwargs(title))
    return _root_figure(ax)


def _root_figure(ax: Axes) -> Figure:
    """The top-level Figure an axes lives in (not a SubFigure)."""
    try:
        return ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10
        fig = ax.figure
        while not isinstance(fig, Figure):
            fig = fig.figure
        return fig


def plot_predictions(
    images: Any,
    labels: Sequence[str],
    probs: Any,
    k: int = 3,
    cols: int | None = None,
    size: float = 3.0,
    captions: str | Sequence[str | None] | None = None,
) -> Figure:
    """Show each image with a bar chart of its top-``k`` labels beneath it.

    ``probs`` is an (images x labels) matrix (numpy array, tensor or list of lists), e.g. the
    softmax output of a CLIP model for a batch of images.

    >>> import numpy as np
    >>> imgs = [np.full((16, 16, 3), c, dtype=np.uint8) for c in (0, 255)]
    >>> fig = plot_predictions(imgs, ["night", "day"], [[0.9, 0.1], [0.2, 0.8]], k=2)
    """
    size = _check_size(size)
    k = _check_k(k)
    loaded = _load_all(images)
    if not loaded:
        raise DisplayError("No images to show: pass at least one image or a non-empty list.")
    labels = [str(label) for label in labels]
    matrix = _to_float_array(probs, "probs")
    if matrix.ndim == 1 and len(loaded) == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.shape != (len(loaded), len(labels)):
        raise DisplayError(
            f"probs has shape {matrix.shape} but {len(loaded)} image(s) and {len(labels)} "
            f"label(s) need shape ({len(loaded)}, {len(labels)}): one row per image, one column "
            "per label."
        )
    rows, ncols = _grid_shape(len(loaded), cols)
    titles = _cell_titles(len(loaded), captions, "auto")
    bars_height = 0.3 * min(k, len(labels)) + 0.5
    heights: list[float] = []
    for image_height in _row_heights(loaded, titles, ncols, size):
        heights += [image_height, bars_height]
    fig = new_figure(ncols * size * 1.15, sum(heights), [*titles, *labels])
    grid = fig.add_gridspec(2 * rows, ncols, height_ratios=heights)
    for i, (image, cell_title) in enumerate(zip(loaded, titles)):
        row, col = divmod(i, ncols)
        _draw_image(fig.add_subplot(grid[2 * row, col]), image, cell_title, size)
        plot_probs(labels, matrix[i], k=k, ax=fig.add_subplot(grid[2 * row + 1, col]))
    return fig



_SETTING_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")


def _check_predictions(truth: Sequence[str], predictions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """``predictions`` as {setting: list of labels}, each as long as ``truth``, with a clear error if not."""
    if not isinstance(predictions, Mapping) or not predictions:
        raise DisplayError(
            "predictions must be a non-empty dict {setting name: one predicted label per image}, "
            'e.g. {"bare label": [...], "ensemble": [...]}.'
        )
    if isinstance(truth, str) or not len(truth):
        raise DisplayError("truth must be a non-empty list with the right label of every image.")
    checked = {}
    for name, predicted in predictions.items():
        if isinstance(predicted, str) or len(predicted) != len(truth):
            got = "a string" if isinstance(predicted, str) else f"{len(predicted)} prediction(s)"
            raise DisplayError(
                f"Setting {name!r} has {got} for {len(truth)} image(s); pass one predicted label per image."
            )
        checked[str(name)] = [str(p) for p in predicted]
    return checked


def _accuracy(truth: Sequence[str], predicted: Sequence[str]) -> tuple[int, int]:
    return sum(p == t for p, t in zip(predicted, truth)), len(truth)


def plot_accuracy(
    truth: Sequence[str],
    predictions: Mapping[str, Sequence[str]],
    by_class: bool = False,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Accuracy of several settings (prompt templates, models, ...) on the same pictures, as bars.

    ``truth`` holds the right label of every image; ``predictions`` maps a setting's name to its
    predicted labels, in the same order. Each bar is labelled with its percentage and ``correct/total``.
    ``by_class=True`` draws one group of bars per true class instead, to show *where* the settings differ.
    Pass ``ax`` to draw into an existing axes (its figure is returned).

    >>> truth = ["cat", "dog", "dog", "cat"]
    >>> fig = plot_accuracy(truth, {"bare label": ["cat", "cat", "dog", "dog"],
    ...                             "ensemble": ["cat", "dog", "dog", "cat"]}, title="Templates")
    """
    if not isinstance(by_class, bool):
        raise DisplayError(f"by_class must be True or False, got {by_class!r}.")
    truth = [str(t) for t in truth] if not isinstance(truth, str) else truth
    checked = _check_predictions(truth, predictions)
    names = list(checked)
    groups = list(dict.fromkeys(truth)) if by_class else [""]
    if ax is None:
        width = max(4.0, 1.0 + (0.22 * len(names) + 0.25) * len(groups)) if by_class else 1.0 + 1.3 * len(names)
        fig = new_figure(width, 3.2 + (0.35 if title else 0.0) + (0.6 if by_class else 0.0), [*names, *groups, title])
        ax = fig.add_subplot()
    bar = 0.8 / len(names) if by_class else 0.7
    for i, name in enumerate(names):
        color = _SETTING_COLORS[i % len(_SETTING_COLORS)]
        for g, group in enumerate(groups):
            rows = [j for j, t in enumerate(truth) if not by_class or t == group]
            correct, total = _accuracy([truth[j] for j in rows], [checked[name][j] for j in rows])
            x = g + (i - (len(names) - 1) / 2) * bar if by_class else i
            ax.bar(x, correct / total, width=bar * 0.92, color=color, label=name if g == 0 else None)
            text = f"{correct / total:.0%}" if by_class else f"{correct / total:.1%}\n{correct}/{total}"
            ax.text(x, correct / total + 0.015, text, ha="center", va="bottom", fontsize=7 if by_class else 9)
    ticks, tick_names = (range(len(groups)), groups) if by_class else (range(len(names)), names)
    ax.set_xticks(list(ticks), [_shorten(n, 16 if by_class else _MAX_LABEL_CHARS) for n in tick_names])
    for tick_label, text in zip(ax.get_xticklabels(), tick_names):
        tick_label.set(**font_kwargs(text))
        if by_class:
            tick_label.set(rotation=30, ha="right", rotation_mode="anchor")
    if by_class:
        legend = ax.legend(loc="lower left", fontsize=8, ncols=len(names), bbox_to_anchor=(0.0, 1.0), frameon=False)
        for text in legend.get_texts():
            text.set(**font_kwargs(text.get_text()))
    ax.set_ylim(0, 1.12 if not by_class else 1.15)
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(str(title), pad=22 if by_class else 6, **font_kwargs(title))
    return _root_figure(ax)


enable_notebook_figures()
