"""Korean text on a fresh Colab: no system CJK font, only the NanumGothic that koreanize-matplotlib bundles.

Every character drawn must come from a font file that really has its glyph; DejaVu (matplotlib's
default) has no Hangul, so a fallback to it fails these tests even where the glyph warnings are silenced.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import findfont
from matplotlib.ft2font import FT2Font
from matplotlib.text import Text

import mllm_nb as mn
from mllm_nb import fonts
from mllm_nb.clip import Classification

KOREAN = ["고양이", "강아지 사진", "빨간 원"]
RED = np.full((32, 48, 3), (220, 30, 30), dtype=np.uint8)


def _has_glyph(path: str, char: str) -> bool:
    return FT2Font(path).get_char_index(ord(char)) != 0


def _clear_font_caches() -> None:
    fonts.find_cjk_font.cache_clear()
    cached = getattr(font_manager.fontManager, "_findfont_cached", None)  # findfont's memo (matplotlib >= 3.6)
    if cached is not None:
        cached.cache_clear()


@pytest.fixture
def fresh_colab(monkeypatch) -> Iterator[list[str]]:
    """matplotlib sees no font with Hangul (as on Colab): only the .ttf files of koreanize-matplotlib can help."""
    manager = font_manager.fontManager
    no_hangul = [entry for entry in manager.ttflist if not _has_glyph(str(entry.fname), "한")]
    system = [path for path in font_manager.findSystemFonts() if not _has_glyph(path, "한")]
    monkeypatch.setattr(manager, "ttflist", no_hangul)
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *args, **kwargs: list(system))
    fonts._reset_cjk_warning()
    _clear_font_caches()
    yield fonts._koreanize_font_files()
    monkeypatch.undo()
    fonts._reset_cjk_warning()
    _clear_font_caches()


def font_chain(text: Text) -> list[str]:
    """The font files matplotlib tries for ``text``, in order: each family it names that is installed."""
    chain = []
    for family in text.get_fontfamily():
        prop = text.get_fontproperties().copy()
        prop.set_family(family)
        try:
            chain.append(findfont(prop, fallback_to_default=False))
        except ValueError:  # a family that is not installed is skipped, as matplotlib does
            continue
    return chain or [findfont(text.get_fontproperties())]


def drawn_texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def missing_characters(fig: Figure) -> dict[str, list[str]]:
    """For each drawn text, the characters no font of its chain has (the empty boxes)."""
    missing = {}
    for text in drawn_texts(fig):
        chain = font_chain(text)
        lost = [c for c in text.get_text() if not c.isspace() and not any(_has_glyph(p, c) for p in chain)]
        if lost:
            missing[text.get_text()] = lost
    return missing


def render(fig: Figure) -> list[str]:
    """Draw ``fig`` with Agg and save it as IPython does (tight box); return the glyph warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FigureCanvasAgg(fig).draw()
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def korean_figures() -> dict[str, Figure]:
    probs = np.array([[0.6, 0.3, 0.1]])
    return {
        "plot_probs": mn.plot_probs(KOREAN, [0.6, 0.3, 0.1], title="확률 (probability)"),
        "show": mn.show([RED, RED], captions=KOREAN[:2], title="두 이미지"),
        "Classification.plot": Classification(KOREAN, probs, images=[RED]).plot(k=3, captions=["사진 1"]),
    }


def test_a_fresh_colab_gets_the_bundled_nanum_font(fresh_colab) -> None:
    assert fresh_colab, "koreanize-matplotlib (an mllm_nb dependency) ships no .ttf"
    family = fonts.find_cjk_font()
    assert family == "NanumGothic"
    path = findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    assert os.path.dirname(path) in {os.path.dirname(p) for p in fresh_colab}  # the bundled file, no system one
    assert all(_has_glyph(path, c) for c in "".join(KOREAN))


@pytest.mark.parametrize("name", ["plot_probs", "show", "Classification.plot"])
def test_korean_renders_without_a_missing_glyph_on_a_fresh_colab(fresh_colab, name) -> None:
    with warnings.catch_warnings(record=True) as made:
        warnings.simplefilter("always")
        fig = korean_figures()[name]
    assert not [w for w in made if "empty boxes" in str(w.message)]  # the no-font warning stays away
    assert type(fig) is Figure  # not the glyph-silencing figure of the no-font case
    assert render(fig) == []
    assert missing_characters(fig) == {}
    hangul = [t for t in drawn_texts(fig) if fonts.has_cjk(t.get_text())]
    assert hangul, "the figure shows no Korean text"
    for text in hangul:
        used = next(p for p in font_chain(text) if _has_glyph(p, "고"))
        assert os.path.basename(used).startswith("NanumGothic")


def test_the_glyph_check_catches_a_fallback_to_dejavu(fresh_colab, monkeypatch) -> None:
    """Without a Hangul font, fonts.py silences matplotlib's warnings, but the drawn glyphs are still missing."""
    monkeypatch.setattr(fonts, "find_cjk_font", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one no-font warning
        fig = mn.plot_probs(KOREAN, [0.6, 0.3, 0.1])
    assert render(fig) == []  # silenced ...
    assert set(missing_characters(fig)) == set(KOREAN)  # ... yet every Korean label is empty boxes


def test_silenced_glyphs_go_to_the_log_the_demo_runner_reads(tmp_path, monkeypatch) -> None:
    log = tmp_path / "glyphs.log"
    monkeypatch.setenv(fonts.MISSING_GLYPH_LOG_ENV, str(log))
    monkeypatch.setattr(fonts, "find_cjk_font", lambda: None)
    fonts._reset_cjk_warning()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = mn.plot_probs(["고양이", "dog"], [0.6, 0.4])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FigureCanvasAgg(fig).draw()
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    fonts._reset_cjk_warning()
    assert [str(w.message) for w in caught] == ["an unrelated warning"]
    assert {char for _, char in fonts.read_missing_glyph_log(log)} == set("고양이")
    assert all(count is None for count, _ in fonts.read_missing_glyph_log(log))  # not inside an IPython cell


def test_no_font_at_all_warns_once_with_a_fix(fresh_colab, monkeypatch) -> None:
    monkeypatch.setattr(fonts, "_koreanize_font_files", list)  # koreanize-matplotlib missing as well
    _clear_font_caches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mn.show(RED, captions=["고양이"])
        mn.plot_probs(["강아지"], [1.0])
    assert fonts.find_cjk_font() is None
    assert len(caught) == 1
    assert "pip install --force-reinstall --no-deps koreanize-matplotlib" in str(caught[0].message)
