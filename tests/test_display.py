"""Tests for mllm_nb.display: image grids, probability bars and CJK text rendering."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.font_manager import FontProperties, findfont  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402
from PIL import Image  # noqa: E402

from mllm_nb import display, fonts  # noqa: E402
from mllm_nb.display import (  # noqa: E402
    DisplayError,
    find_cjk_font,
    has_cjk,
    plot_accuracy,
    plot_predictions,
    plot_probs,
    show,
)
from mllm_nb.errors import MllmNbError  # noqa: E402

KOREAN = "고양이"


def solid(color: tuple[int, int, int], height: int = 40, width: int = 60) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[...] = color
    return image


RED = solid((255, 0, 0))


def render(fig: Figure) -> tuple[FigureCanvasAgg, list[warnings.WarningMessage]]:
    """Draw ``fig`` with Agg and return the canvas and every warning raised meanwhile."""
    canvas = FigureCanvasAgg(fig)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        canvas.draw()
    return canvas, caught


def glyph_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in image_axes(fig)]


def pixel_at_axes_centre(canvas: FigureCanvasAgg, ax) -> tuple[int, ...]:
    pixels = np.asarray(canvas.buffer_rgba())
    box = ax.get_window_extent()
    x = int((box.x0 + box.x1) / 2)
    y = pixels.shape[0] - int((box.y0 + box.y1) / 2)
    return tuple(int(v) for v in pixels[y, x])


def top_to_bottom(ax) -> list[str]:
    """The y tick labels of ``ax`` as drawn, from the top of the figure down."""
    labels = [t for t in ax.get_yticklabels() if t.get_text()]
    return [t.get_text() for t in sorted(labels, key=lambda t: -t.get_window_extent().y0)]


def bar_widths_top_to_bottom(ax) -> list[float]:
    bars = sorted(ax.patches, key=lambda p: -p.get_window_extent().y0)
    return [round(p.get_width(), 6) for p in bars]


# ----------------------------------------------------------------------------------------------
# show
# ----------------------------------------------------------------------------------------------


def test_show_returns_a_figure_outside_pyplot() -> None:
    before = plt.get_fignums()
    fig = show(RED)
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == before
    assert fig.canvas.manager is None  # pyplot would have given it a manager


def test_show_one_image_axes_per_image_without_ticks() -> None:
    fig = show([RED, RED, RED])
    assert len(fig.axes) == 3
    assert len(image_axes(fig)) == 3
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []


@pytest.mark.parametrize(
    ("n", "cols", "shape"),
    [(1, None, (1, 1)), (3, None, (1, 3)), (5, None, (2, 4)), (9, None, (3, 4)),
     (5, 2, (3, 2)), (4, 1, (4, 1)), (2, 5, (1, 2))],
)
def test_show_grid_shape(n: int, cols: int | None, shape: tuple[int, int]) -> None:
    fig = show([RED] * n, cols=cols)
    axes = image_axes(fig)
    assert len(axes) == n
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in axes} == {shape}
    positions = [(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in axes]
    assert positions == [divmod(i, shape[1]) for i in range(n)]


@pytest.mark.parametrize("cols", [0, -1, 1.5, "2"])
def test_show_rejects_bad_cols(cols: object) -> None:
    with pytest.raises(DisplayError, match="cols"):
        show([RED, RED], cols=cols)


def test_show_keeps_the_image_aspect() -> None:
    fig = show(solid((0, 0, 255), height=30, width=90), size=3.0)
    canvas, _ = render(fig)
    box = image_axes(fig)[0].get_window_extent()
    assert box.width / box.height == pytest.approx(3.0, rel=0.05)


def test_show_captions_become_wrapped_titles() -> None:
    long = "a photograph of a small orange cat sleeping on a sunny windowsill next to a green plant"
    fig = show([RED, RED], captions=[long, "dog"])
    first, second = titles(fig)
    assert "\n" in first
    assert first.split() == long.split()
    assert second == "dog"


def test_show_very_long_caption_is_cut_with_an_ellipsis() -> None:
    fig = show(RED, captions=["word " * 400])
    (caption,) = titles(fig)
    assert caption.endswith("…")
    assert caption.count("\n") < 10


def test_show_single_string_caption_for_one_image() -> None:
    assert titles(show(RED, captions="red")) == ["red"]


def test_show_auto_labels_several_images() -> None:
    assert titles(show([RED, RED, RED])) == ["Image 1", "Image 2", "Image 3"]


def test_show_no_auto_label_for_one_image() -> None:
    assert titles(show(RED)) == [""]
    assert titles(show([RED])) == [""]


def test_show_labels_false_and_true() -> None:
    assert titles(show([RED, RED], labels=False)) == ["", ""]
    assert titles(show(RED, labels=True)) == ["Image 1"]


def test_show_captions_win_over_auto_labels() -> None:
    assert titles(show([RED, RED], captions=["x", None])) == ["x", ""]


def test_show_caption_count_mismatch() -> None:
    with pytest.raises(DisplayError) as info:
        show([RED, RED, RED], captions=["one", "two"])
    message = str(info.value)
    assert "2 caption" in message and "3 image" in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, MllmNbError)


def test_show_empty_list() -> None:
    with pytest.raises(DisplayError, match="No images"):
        show([])


def test_show_bad_labels_and_size() -> None:
    with pytest.raises(DisplayError, match="labels"):
        show(RED, labels="yes")
    with pytest.raises(DisplayError, match="size"):
        show(RED, size=0)


def test_show_title_is_a_suptitle() -> None:
    fig = show([RED, RED], title="Two reds")
    assert fig.get_suptitle() == "Two reds"
    assert fig.get_suptitle() not in titles(fig)


def test_show_accepts_pil_numpy_and_path(tmp_path) -> None:
    path = tmp_path / "green.png"
    Image.fromarray(solid((0, 255, 0), 20, 30)).save(path)
    sources = [Image.fromarray(solid((0, 0, 255), 10, 10)), solid((255, 0, 0), 12, 8), str(path), path]
    fig = show(sources)
    arrays = [np.asarray(ax.images[0].get_array()) for ax in image_axes(fig)]
    assert [a.shape for a in arrays] == [(10, 10, 3), (12, 8, 3), (20, 30, 3), (20, 30, 3)]
    assert [tuple(a[0, 0]) for a in arrays] == [(0, 0, 255), (255, 0, 0), (0, 255, 0), (0, 255, 0)]


def test_show_accepts_a_folder(tmp_path) -> None:
    for name, color in [("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))]:
        Image.fromarray(solid(color, 8, 8)).save(tmp_path / name)
    fig = show(tmp_path)
    assert [tuple(np.asarray(ax.images[0].get_array())[0, 0]) for ax in image_axes(fig)] == [
        (255, 0, 0), (0, 0, 255)]


def test_show_renders_the_image_pixels() -> None:
    fig = show(RED)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")
    canvas, _ = render(fig)
    assert pixel_at_axes_centre(canvas, image_axes(fig)[0]) == (255, 0, 0, 255)
    assert tuple(np.asarray(canvas.buffer_rgba())[1, 1]) == (255, 255, 255, 255)


def test_show_pixels_follow_grid_order() -> None:
    fig = show([solid((255, 0, 0)), solid((0, 0, 255))])
    canvas, _ = render(fig)
    left, right = sorted(image_axes(fig), key=lambda ax: ax.get_window_extent().x0)
    assert pixel_at_axes_centre(canvas, left) == (255, 0, 0, 255)
    assert pixel_at_axes_centre(canvas, right) == (0, 0, 255, 255)


def test_show_caps_the_figure_size() -> None:
    # 60 landscape 3:2 images, 6 per row, 6 inch cells: 36 x 40 inches before the cap
    fig = show([RED] * 60, size=6.0, cols=6, labels=False)
    width, height = fig.get_size_inches()
    assert width <= 20.0 + 1e-6 and height <= 40.0 + 1e-6
    assert width / height == pytest.approx(36 / 40, rel=1e-3)  # shrunk, not distorted


def test_show_small_grid_is_not_shrunk() -> None:
    width, _ = show([RED, RED], size=2.5).get_size_inches()
    assert width == pytest.approx(5.0)


# ----------------------------------------------------------------------------------------------
# plot_probs
# ----------------------------------------------------------------------------------------------

LABELS = ["apple", "banana", "cherry", "date"]
PROBS = [0.1, 0.6, 0.05, 0.25]


def test_plot_probs_orders_highest_at_top() -> None:
    fig = plot_probs(LABELS, PROBS)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    render(fig)
    assert top_to_bottom(ax) == ["banana", "date", "apple", "cherry"]
    assert bar_widths_top_to_bottom(ax) == [0.6, 0.25, 0.1, 0.05]


def test_plot_probs_truncates_to_k() -> None:
    fig = plot_probs(LABELS, PROBS, k=2)
    ax = fig.axes[0]
    render(fig)
    assert len(ax.patches) == 2
    assert top_to_bottom(ax) == ["banana", "date"]


def test_plot_probs_k_larger_than_labels() -> None:
    ax = plot_probs(LABELS, PROBS, k=50).axes[0]
    assert len(ax.patches) == 4


def test_plot_probs_prints_percentages() -> None:
    ax = plot_probs(["cat", "dog"], np.array([0.873, 0.127])).axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["12.7%", "87.3%"]
    assert ax.get_xlim() == (0.0, 1.0)


def test_plot_probs_scores_need_not_sum_to_one() -> None:
    ax = plot_probs(["a", "b"], [0.9, 0.8]).axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["80.0%", "90.0%"]


def test_plot_probs_values_above_one_use_a_wider_axis() -> None:
    ax = plot_probs(["a", "b"], [3.0, 1.5]).axes[0]
    assert ax.get_xlim() == (0.0, 3.0)
    assert sorted(t.get_text() for t in ax.texts) == ["1.5", "3"]


def test_plot_probs_title() -> None:
    assert plot_probs(["a"], [1.0], title="Zero-shot").axes[0].get_title() == "Zero-shot"


def test_plot_probs_length_mismatch() -> None:
    with pytest.raises(DisplayError) as info:
        plot_probs(["a", "b", "c"], [0.5, 0.5])
    assert "3 label" in str(info.value) and "2 probabilities" in str(info.value)


@pytest.mark.parametrize(("probs", "word"), [([0.5, -0.1], "negative"), ([0.5, float("nan")], "NaN")])
def test_plot_probs_rejects_bad_values(probs: list[float], word: str) -> None:
    with pytest.raises(DisplayError, match=word):
        plot_probs(["a", "b"], probs)


@pytest.mark.parametrize("k", [0, -2, 1.5])
def test_plot_probs_rejects_bad_k(k: object) -> None:
    with pytest.raises(DisplayError, match="k must"):
        plot_probs(["a", "b"], [0.5, 0.5], k=k)


def test_plot_probs_draws_into_given_axes() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    result = plot_probs(LABELS, PROBS, k=3, ax=ax)
    assert result is fig
    assert fig.axes == [ax]
    assert len(ax.patches) == 3


def test_plot_probs_is_not_registered_with_pyplot() -> None:
    before = plt.get_fignums()
    plot_probs(LABELS, PROBS)
    assert plt.get_fignums() == before


# ----------------------------------------------------------------------------------------------
# plot_predictions
# ----------------------------------------------------------------------------------------------


def test_plot_predictions_axes_and_bars() -> None:
    images = [solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255))]
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1], [0.05, 0.05, 0.1, 0.8]])
    fig = plot_predictions(images, LABELS, probs, k=2)
    render(fig)
    assert len(fig.axes) == 6
    assert len(image_axes(fig)) == 3
    bars = [ax for ax in fig.axes if not ax.images]
    assert [len(ax.patches) for ax in bars] == [2, 2, 2]
    assert [top_to_bottom(ax)[0] for ax in bars] == ["apple", "cherry", "date"]
    assert titles(fig) == ["Image 1", "Image 2", "Image 3"]
    # each bar chart sits directly below its image
    for image_ax, bar_ax in zip(image_axes(fig), bars):
        assert image_ax.get_subplotspec().colspan.start == bar_ax.get_subplotspec().colspan.start
        assert bar_ax.get_subplotspec().rowspan.start == image_ax.get_subplotspec().rowspan.start + 1


def test_plot_predictions_accepts_lists_and_captions() -> None:
    fig = plot_predictions([RED, RED], ["a", "b"], [[0.2, 0.8], [0.9, 0.1]], captions=["x", "y"])
    assert titles(fig) == ["x", "y"]
    assert fig.canvas.manager is None


def test_plot_predictions_shape_mismatch() -> None:
    with pytest.raises(DisplayError) as info:
        plot_predictions([RED, RED, RED], LABELS, np.ones((2, 4)) / 4)
    assert "(2, 4)" in str(info.value) and "(3, 4)" in str(info.value)
    with pytest.raises(DisplayError, match=r"\(1, 3\)"):
        plot_predictions([RED], LABELS[:3], [[0.5, 0.5]])


def test_plot_predictions_ragged_rows() -> None:
    with pytest.raises(DisplayError, match="equal-length rows"):
        plot_predictions([RED, RED], ["a", "b"], [[0.5, 0.5], [1.0]])


# ----------------------------------------------------------------------------------------------
# CJK text
# ----------------------------------------------------------------------------------------------


def test_has_cjk() -> None:
    for text in ["고양이", "ㄱ", "猫", "ねこ", "ネコ", "。", "Ａ", "a cat 고양이"]:
        assert has_cjk(text), text
    for text in ["cat", "café", "", "Ωμέγα", None, 3]:
        assert not has_cjk(text), text


def test_find_cjk_font_finds_a_hangul_font_without_touching_rcparams() -> None:
    before = {key: matplotlib.rcParams[key] for key in ("font.family", "font.sans-serif")}
    family = find_cjk_font()
    assert isinstance(family, str) and family
    path = findfont(FontProperties(family=family), fallback_to_default=False)
    assert FT2Font(path).get_char_index(ord("한")) != 0
    assert {key: matplotlib.rcParams[key] for key in before} == before
    assert find_cjk_font() == family  # cached


def test_find_cjk_font_in_a_fresh_process_leaves_global_state_alone() -> None:
    code = (
        "import sys, matplotlib\n"
        "before = dict(matplotlib.rcParams)\n"
        "from mllm_nb.display import find_cjk_font\n"
        "family = find_cjk_font()\n"
        "assert family, 'no CJK font found'\n"
        "assert 'koreanize_matplotlib' not in sys.modules, 'koreanize_matplotlib was imported'\n"
        "changed = [k for k, v in matplotlib.rcParams.items() if before.get(k) != v]\n"
        "assert not changed, changed\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_font_without_hangul_is_never_chosen() -> None:
    dejavu = findfont(FontProperties(family="DejaVu Sans"), fallback_to_default=False)
    nanum = next(f for f in fonts._koreanize_font_files() if f.endswith("NanumGothic.ttf"))
    assert fonts._has_probe_glyph(dejavu) is False
    assert fonts._pick({"NanumGothic": [dejavu]}, ["NanumGothic"]) is None
    assert fonts._pick({"NanumGothic": [nanum]}, ["nanumgothic"]) == "NanumGothic"


def test_koreanize_fonts_are_found_without_importing_it() -> None:
    files = fonts._koreanize_font_files()
    assert any(f.endswith("NanumGothic.ttf") for f in files)
    assert "NanumGothic" in fonts._register_fonts(files)


def test_korean_caption_renders_with_a_cjk_font() -> None:
    family = find_cjk_font()
    fig = show(RED, captions=[KOREAN])
    assert type(fig) is Figure
    canvas, caught = render(fig)
    title = image_axes(fig)[0].title
    assert title.get_text() == KOREAN
    assert title.get_fontfamily()[0] == family
    path = findfont(FontProperties(family=title.get_fontfamily()[0]), fallback_to_default=False)
    font = FT2Font(path)
    assert all(font.get_char_index(ord(ch)) != 0 for ch in KOREAN)
    assert glyph_warnings(caught) == []


def test_missing_glyphs_are_detectable_with_dejavu_only() -> None:
    fig = Figure()
    fig.add_subplot().set_title(KOREAN, fontfamily=["DejaVu Sans"])
    _, caught = render(fig)
    assert len(glyph_warnings(caught)) >= len(KOREAN)


def test_ascii_text_keeps_the_default_font() -> None:
    fig = show(RED, captions=["cat"])
    assert image_axes(fig)[0].title.get_fontfamily() == matplotlib.rcParams["font.family"]


def test_cjk_title_bar_labels_and_mixed_text_render_cleanly() -> None:
    family = find_cjk_font()
    fig = plot_probs([KOREAN, "dog", "猫と犬"], [0.5, 0.3, 0.2], title="확률 (probability)")
    canvas, caught = render(fig)
    assert glyph_warnings(caught) == []
    ax = fig.axes[0]
    fonts = {t.get_text(): t.get_fontfamily() for t in ax.get_yticklabels()}
    assert fonts[KOREAN][0] == family and fonts["dog"][0] != family
    assert ax.title.get_fontfamily()[0] == family
    grid = show([RED, RED], title="두 이미지")
    _, caught = render(grid)
    assert grid._suptitle.get_fontfamily()[0] == family
    assert glyph_warnings(caught) == []


@pytest.fixture
def no_cjk_font(monkeypatch):
    monkeypatch.setattr(fonts, "find_cjk_font", lambda: None)
    fonts._reset_cjk_warning()
    yield
    fonts._reset_cjk_warning()


def test_without_cjk_font_one_warning_and_no_glyph_noise(no_cjk_font) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = show(RED, captions=[KOREAN])
        second = show([RED, RED], captions=["강아지", "cat"], title="제목")
        plot_probs([KOREAN, "dog"], [0.6, 0.4])
    ours = [w for w in caught if "fonts-nanum" in str(w.message)]
    assert len(ours) == 1 and len(caught) == 1
    assert issubclass(ours[0].category, UserWarning)
    message = str(ours[0].message)
    assert "fonts-noto-cjk" in message and "koreanize-matplotlib" in message and "restart" in message
    assert ours[0].filename == __file__  # points at the user's call, not inside mllm_nb
    for fig in (first, second):
        _, caught = render(fig)
        assert glyph_warnings(caught) == []
        assert image_axes(fig)[0].title.get_fontfamily() == matplotlib.rcParams["font.family"]


def test_without_cjk_font_ascii_text_does_not_warn(no_cjk_font) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = show([RED, RED], captions=["cat", "dog"], title="pets")
        plot_probs(["cat", "dog"], [0.6, 0.4])
    assert caught == []
    assert type(fig) is Figure


def test_reset_cjk_warning_allows_a_new_warning(no_cjk_font) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        show(RED, captions=[KOREAN])
        fonts._reset_cjk_warning()
        show(RED, captions=[KOREAN])
    assert len([w for w in caught if "fonts-nanum" in str(w.message)]) == 2


def test_wrap_breaks_long_cjk_text() -> None:
    wrapped = display._wrap("가" * 100, 3.0)
    assert "\n" in wrapped
    assert wrapped.replace("\n", "") == "가" * 100


def test_figures_render_as_png_in_ipython_without_pyplot():
    from IPython.core.interactiveshell import InteractiveShell

    from mllm_nb.display import enable_notebook_figures

    shell = InteractiveShell.instance()
    try:
        fig = show(Image.new("RGB", (8, 8), "red"))
        assert "image/png" not in shell.display_formatter.format(fig)[0]  # IPython alone: text only
        assert enable_notebook_figures() is True
        data, _ = shell.display_formatter.format(fig)
        assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
        assert enable_notebook_figures() is True  # idempotent
    finally:
        InteractiveShell.clear_instance()
    assert enable_notebook_figures() is False


# ---------------------------------------------------------------------------------- plot_accuracy

ACC_TRUTH = ["cat", "cat", "dog", "dog", "dog"]
ACC_PREDICTIONS = {
    "bare label": ["cat", "dog", "cat", "cat", "dog"],  # 2/5
    "one template": ["cat", "cat", "dog", "dog", "cat"],  # 4/5
    "ensemble": ["cat", "cat", "dog", "dog", "dog"],  # 5/5
}


def bar_heights(ax) -> list[float]:
    return [round(patch.get_height(), 6) for patch in ax.patches]


def test_plot_accuracy_one_bar_per_setting_with_its_accuracy() -> None:
    fig = plot_accuracy(ACC_TRUTH, ACC_PREDICTIONS, title="Templates")
    (ax,) = fig.axes
    assert bar_heights(ax) == [0.4, 0.8, 1.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(ACC_PREDICTIONS)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["40.0%\n2/5", "80.0%\n4/5", "100.0%\n5/5"]
    assert ax.get_title() == "Templates"
    _, caught = render(fig)
    assert not glyph_warnings(caught)


def test_plot_accuracy_by_class_groups_bars_per_true_label() -> None:
    fig = plot_accuracy(ACC_TRUTH, ACC_PREDICTIONS, by_class=True)
    (ax,) = fig.axes
    # settings in order, each with its bars for cat then dog
    assert bar_heights(ax) == [0.5, round(1 / 3, 6), 1.0, round(2 / 3, 6), 1.0, 1.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(ACC_PREDICTIONS)


def test_plot_accuracy_draws_into_a_given_axes_and_korean_labels() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_accuracy([KOREAN, "개"], {"기본": [KOREAN, KOREAN]}, by_class=True, ax=ax) is fig
    assert bar_heights(ax) == [1.0, 0.0]
    _, caught = render(fig)
    assert not glyph_warnings(caught) or find_cjk_font() is None


@pytest.mark.parametrize(
    ("truth", "predictions", "message"),
    [
        (ACC_TRUTH, {}, "non-empty dict"),
        (ACC_TRUTH, [["cat"] * 5], "non-empty dict"),
        ([], {"a": []}, "non-empty list"),
        ("cat", {"a": ["cat"]}, "non-empty list"),
        (ACC_TRUTH, {"short": ["cat"]}, "'short' has 1 prediction(s) for 5 image(s)"),
        (ACC_TRUTH, {"text": "catcatdog"}, "'text' has a string for 5 image(s)"),
    ],
)
def test_plot_accuracy_bad_input_is_one_clear_sentence(truth, predictions, message) -> None:
    with pytest.raises(DisplayError, match=re.escape(message)):
        plot_accuracy(truth, predictions)


def test_plot_accuracy_rejects_a_non_bool_by_class() -> None:
    with pytest.raises(DisplayError, match="by_class must be True or False"):
        plot_accuracy(ACC_TRUTH, ACC_PREDICTIONS, by_class="yes")
