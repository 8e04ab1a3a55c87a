"""Fonts for Korean, Chinese and Japanese text in matplotlib figures, found once and set per text object.

:func:`find_cjk_font` picks a family that really holds Hangul: a CJK font installed on the system, else
the NanumGothic files bundled with koreanize-matplotlib (an mllm_nb dependency, so Korean renders on a
fresh Colab, which has no CJK font); :func:`font_kwargs` gives the keyword arguments that draw one text
with it. Global ``rcParams`` are never touched. Only if no font at all can draw Hangul is the user warned
once, with the fix; matplotlib's per-glyph warnings are then silenced, but each missing glyph is still
written to the file named by :data:`MISSING_GLYPH_LOG_ENV` when it is set (the demo runner checks it).

>>> has_cjk("고양이"), has_cjk("cat")
(True, False)
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from matplotlib.figure import Figure

__all__ = [
    "MISSING_GLYPH_LOG_ENV",
    "QuietGlyphFigure",
    "figure_class",
    "find_cjk_font",
    "font_kwargs",
    "has_cjk",
    "missing_glyphs",
    "read_missing_glyph_log",
]

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
    "No font that can draw Korean/CJK text was found, so such text in mllm_nb figures shows as empty boxes: "
    "mllm_nb draws it with the NanumGothic font bundled in its dependency koreanize-matplotlib, which is "
    "missing or broken here; to fix it, run `pip install --force-reinstall --no-deps koreanize-matplotlib` "
    "(in a notebook cell: `%pip ...`; or install a system CJK font: `apt-get install fonts-nanum` or "
    "`fonts-noto-cjk`), then restart the kernel."
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
    """The ``stacklevel`` that points a warning at the first frame outside mllm_nb (the user's cell)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("mllm_nb."):
        frame, level = frame.f_back, level + 1
    return level


def font_kwargs(text: object) -> dict[str, Any]:
    """Text keyword arguments that make ``text`` render: a CJK font family list when it needs one.

    >>> font_kwargs("cat")
    {}
    """
    if not has_cjk(text):
        return {}
    family = find_cjk_font()
    if family is None:
        _warn_no_cjk_font()
        return {}
    return {"fontfamily": [family, _FALLBACK_FAMILY]}


#: Environment variable naming a file: every missing glyph this module silences is appended to it, one
#: line each (``<IPython execution count or ->\t<matplotlib's warning>``). The demo runner sets it, so
#: figures drawn with empty boxes fail its check even though the user saw only the one font warning.
MISSING_GLYPH_LOG_ENV = "MLLM_NB_MISSING_GLYPH_LOG"
_GLYPH_CODEPOINT = re.compile(r"Glyph (\d+) .*?missing from font")


def missing_glyphs(text: str) -> list[str]:
    """The characters that matplotlib's "Glyph N (...) missing from font(s) ..." warnings in ``text`` name.

    >>> missing_glyphs("Glyph 44256 (\\N{HANGUL SYLLABLE GO}) missing from font(s) DejaVu Sans.")
    ['고']
    """
    found: list[str] = []
    for match in _GLYPH_CODEPOINT.finditer(text):
        char = chr(int(match.group(1)))
        if char not in found:
            found.append(char)
    return found


def read_missing_glyph_log(path: str | os.PathLike[str]) -> list[tuple[int | None, str]]:
    """``(IPython execution count or None, character)`` for each glyph logged to ``path`` (none if no file).

    >>> read_missing_glyph_log("no-such-file.log")
    []
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    entries: list[tuple[int | None, str]] = []
    for line in lines:
        count, _, message = line.partition("\t")
        number = int(count) if count.isdigit() else None
        entries += [(number, char) for char in missing_glyphs(message)]
    return entries


def _execution_count() -> int | None:
    """The execution count of the IPython cell being run, or None outside one (or between cells)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    count = getattr(result, "execution_count", None)
    return count if isinstance(count, int) else None


def _log_missing_glyph(message: str) -> None:
    path = os.environ.get(MISSING_GLYPH_LOG_ENV)
    if not path:
        return
    count = _execution_count()
    line = f"{'-' if count is None else count}\t{' '.join(message.split())}\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError:  # the log is a check for the demo runner; it must never break plotting
        pass


@contextmanager
def _quiet_glyph_warnings() -> Iterator[None]:
    """Silence matplotlib's per-character "Glyph ... missing from font" warnings, locally.

    Each silenced glyph still goes to the :data:`MISSING_GLYPH_LOG_ENV` file when that is set;
    every other warning is shown as usual.
    """
    with warnings.catch_warnings():
        show = warnings.showwarning
        warnings.filterwarnings("always", message=_GLYPH_WARNING, category=UserWarning)

        def divert(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, UserWarning) and re.match(_GLYPH_WARNING, str(message)):
                _log_missing_glyph(str(message))
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = divert
        yield


class QuietGlyphFigure(Figure):
    """A Figure holding CJK text that no installed font can draw.

    The missing-font warning has already been given once, so matplotlib's own per-glyph
    "Glyph ... missing from font" warnings are silenced while this figure is drawn or measured
    (each one still goes to the :data:`MISSING_GLYPH_LOG_ENV` file when that is set).
    """

    def draw(self, renderer: Any) -> None:
        with _quiet_glyph_warnings():
            super().draw(renderer)

    def get_tightbbox(self, *args: Any, **kwargs: Any) -> Any:
        with _quiet_glyph_warnings():
            return super().get_tightbbox(*args, **kwargs)


def figure_class(texts: Sequence[object]) -> type[Figure]:
    """``QuietGlyphFigure`` when some of ``texts`` is CJK and no installed font can draw it, else ``Figure``.

    >>> figure_class(["cat"]).__name__
    'Figure'
    """
    if any(has_cjk(text) for text in texts) and find_cjk_font() is None:
        return QuietGlyphFigure
    return Figure
