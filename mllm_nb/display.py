"""Show images and probability charts in a notebook, Korean and other CJK text included.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``: it shows exactly
once when it is the last expression of a Jupyter cell, never piles up in pyplot's figure list,
and works headless. Save one with ``fig.savefig("out.png")``.

    >>> import numpy as np
    >>> fig = show(np.zeros((8, 8, 3), dtype=np.uint8), captions=["black"])
    >>> fig = plot_probs(["cat", "dog"], [0.9, 0.1])

Text with Korean, Chinese or Japanese characters is drawn with a CJK font (see
:func:`find_cjk_font`) set on that text object only; global ``rcParams`` are never touched.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import math
import numbers
import os
import re
import sys
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from mllm_nb.errors import MllmNbError

__all__ = [
    "DisplayError",
    "enable_notebook_figures",
    "find_cjk_font",
    "has_cjk",
    "new_figure",
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
# CJK fonts
# ----------------------------------------------------------------------------------------------

# Families tried first, in order (Korean-capable first); each must really hold a Hangul glyph.
_CJK_FAMILIES: tuple[str, ...] = (
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "NanumGothic",
    "NanumBarunGothic",
    "Apple SD Gothic Neo",
    "AppleGothic",
    "Malgun Gothic",
    "Source Han Sans KR",
    "Source Han Sans K",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK HK",
    "Source Han Sans",
    "Noto Serif CJK KR",
    "Noto Serif KR",
    "Noto Serif CJK JP",
    "Noto Serif CJK SC",
    "Noto Serif CJK TC",
    "NanumMyeongjo",
    "NanumSquare",
    "UnDotum",
    "Baekmuk Gulim",
    "Baekmuk Dotum",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Microsoft YaHei",
    "SimHei",
    "MS Gothic",
    "IPAGothic",
    "TakaoGothic",
)
# Lower-case fragments of family names (or file names) that suggest a CJK font.
_CJK_NAME_HINTS: tuple[str, ...] = (
    "cjk", "nanum", "han sans", "han serif", "hansans", "hanserif", "notosanskr", "noto sans kr",
    "gothic", "dotum", "gulim", "batang", "baekmuk", "wenquanyi", "wqy", "droidsansfallback",
    "droid sans fallback", "malgun", "yahei", "msyh", "simhei", "ipag", "takao", "unfonts",
)
_PROBE_CHAR = "한"
_FALLBACK_FAMILY = "DejaVu Sans"
_GLYPH_WARNING = r"Glyph .* missing from font"

_NO_CJK_FONT_MESSAGE = (
    "No CJK font was found, so Korean/CJK text in mllm_nb figures will show as empty boxes; "
    "to fix it, on Colab run `!apt-get -qq install fonts-nanum` and restart the runtime, "
    "on Debian/Ubuntu run `sudo apt-get install fonts-noto-cjk`, "
    "or run `pip install koreanize-matplotlib`, then restart the kernel."
)
_cjk_warning_issued = False

_CJK_RE = re.compile(
    "["
    "\u1100-\u11ff"  # Hangul Jamo
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi radicals
    "\u3000-\u303f"  # CJK symbols and punctuation
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u31ff"  # Bopomofo, Hangul compatibility Jamo, Kanbun, Katakana extensions
    "\u3200-\u33ff"  # enclosed CJK letters, CJK compatibility
    "\u3400-\u4dbf"  # CJK unified ideographs extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\ua960-\ua97f"  # Hangul Jamo extended A
    "\uac00-\ud7af"  # Hangul syllables
    "\ud7b0-\ud7ff"  # Hangul Jamo extended B
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\ufe30-\ufe4f"  # CJK compatibility forms
    "\uff00-\uffef"  # halfwidth and fullwidth forms
    "\U00020000-\U0003134f"  # CJK unified ideographs extensions B..G
    "]"
)


def has_cjk(text: object) -> bool:
    """Return whether ``text`` holds Hangul, CJK ideographs, kana, CJK punctuation or fullwidth forms.

    >>> has_cjk("고양이 photo"), has_cjk("cat")
    (True, False)
    """
    return isinstance(text, str) and _CJK_RE.search(text) is not None


@functools.cache
def _has_probe_glyph(path: str) -> bool:
    """Whether the font file at ``path`` has a real glyph for a Hangul syllable."""
    from matplotlib.ft2font import FT2Font

    try:
        return FT2Font(path).get_char_index(ord(_PROBE_CHAR)) != 0
    except Exception:  # unreadable or unsupported font file
        return False


def _families() -> dict[str, list[str]]:
    """Map every family matplotlib knows to its font files."""
    from matplotlib import font_manager

    found: dict[str, list[str]] = {}
    for entry in font_manager.fontManager.ttflist:
        found.setdefault(entry.name, []).append(str(entry.fname))
    return found


def _usable(family: str, families: dict[str, list[str]]) -> bool:
    return any(_has_probe_glyph(path) for path in families.get(family, ()))


def _register_fonts(paths: Sequence[str]) -> list[str]:
    """Add font files to matplotlib's font manager (once each); return the families they hold."""
    from matplotlib import font_manager

    known = {os.path.abspath(str(e.fname)) for e in font_manager.fontManager.ttflist}
    for path in paths:
        if os.path.abspath(path) not in known and _has_probe_glyph(path):
            try:
                font_manager.fontManager.addfont(path)
            except Exception:  # a broken file must not break plotting
                continue
    wanted = {os.path.abspath(p) for p in paths}
    return [
        e.name for e in font_manager.fontManager.ttflist if os.path.abspath(str(e.fname)) in wanted
    ]


def _koreanize_font_files() -> list[str]:
    """The .ttf files bundled with ``koreanize_matplotlib``, found without importing it."""
    try:
        spec = importlib.util.find_spec("koreanize_matplotlib")
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [os.path.dirname(spec.origin)]
    files: list[str] = []
    for root in roots:
        files += glob.glob(os.path.join(root, "**", "*.ttf"), recursive=True)
    return sorted(files)


def _system_cjk_files() -> list[str]:
    """CJK-looking font files installed on the system (in case matplotlib's cache predates them)."""
    from matplotlib import font_manager

    try:
        paths = font_manager.findSystemFonts(fontext="ttf")
    except Exception:
        return []
    squeeze = [h.replace(" ", "") for h in _CJK_NAME_HINTS]
    return sorted(p for p in paths if any(h in os.path.basename(p).lower() for h in squeeze))


def _pick(families: dict[str, list[str]], candidates: Sequence[str]) -> str | None:
    """The first candidate family (matched case-insensitively) whose files have Hangul."""
    by_lower = {name.lower(): name for name in families}
    for candidate in candidates:
        name = by_lower.get(candidate.lower())
        if name is not None and _usable(name, families):
            return name
    return None


@functools.cache
def find_cjk_font() -> str | None:
    """Return the family name of an installed font that can draw Korean (and CJK) text, or None.

    Looks through matplotlib's known fonts for well-known CJK families, then registers the
    NanumGothic files bundled with ``koreanize-matplotlib`` (without importing it), then scans the
    system for CJK font files matplotlib has not cached yet. The chosen font is checked to really
    contain a Hangul glyph. The result is cached for the process.

    >>> family = find_cjk_font()  # e.g. "NanumGothic", or None when no CJK font is installed
    """
    families = _families()
    choice = _pick(families, _CJK_FAMILIES)
    if choice is not None:
        return choice
    bundled = _register_fonts(_koreanize_font_files())
    if bundled:
        families = _families()
        choice = _pick(families, ["NanumGothic", *bundled])
        if choice is not None:
            return choice
    hinted = [name for name in sorted(families) if any(h in name.lower() for h in _CJK_NAME_HINTS)]
    choice = _pick(families, hinted)
    if choice is not None:
        return choice
    added = _register_fonts(_system_cjk_files())
    return _pick(_families(), [*_CJK_FAMILIES, *added]) if added else None


def _reset_cjk_warning() -> None:
    """Forget that the missing-CJK-font warning was shown (for tests)."""
    global _cjk_warning_issued
    _cjk_warning_issued = False


def _warn_no_cjk_font() -> None:
    global _cjk_warning_issued
    if not _cjk_warning_issued:
        _cjk_warning_issued = True
        warnings.warn(_NO_CJK_FONT_MESSAGE, UserWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _font_kw(text: object) -> dict[str, Any]:
    """Text keyword arguments that make ``text`` render: a CJK font family list when it needs one."""
    if not has_cjk(text):
        return {}
    family = find_cjk_font()
    if family is None:
        _warn_no_cjk_font()
        return {}
    return {"fontfamily": [family, _FALLBACK_FAMILY]}


@contextmanager
def _quiet_glyph_warnings() -> Iterator[None]:
    """Silence matplotlib's per-character "Glyph ... missing from font" warnings, locally."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_GLYPH_WARNING, category=UserWarning)
        yield


class _QuietGlyphFigure(Figure):
    """A Figure holding CJK text that no installed font can draw.

    The missing-font warning has already been given once, so matplotlib's own per-glyph
    "Glyph ... missing from font" warnings are silenced while this figure is drawn or measured.
    """

    def draw(self, renderer: Any) -> None:
        with _quiet_glyph_warnings():
            super().draw(renderer)

    def get_tightbbox(self, *args: Any, **kwargs: Any) -> Any:
        with _quiet_glyph_warnings():
            return super().get_tightbbox(*args, **kwargs)


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
    quiet = any(has_cjk(t) for t in texts) and find_cjk_font() is None
    cls = _QuietGlyphFigure if quiet else Figure
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
            **_font_kw(title),
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
        fig.suptitle(str(title), fontsize=_TITLE_FONTSIZE, **_font_kw(title))


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
        tick_label.set(**_font_kw(name))
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
        ax.set_title(str(title), **_font_kw(title))
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


enable_notebook_figures()
