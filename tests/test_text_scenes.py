"""mllm_nb.demo.text_scenes: deterministic synthetic OCR images with exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mllm_nb.demo.text_scenes import (
    ALPHABET,
    BACKGROUNDS,
    FONTS,
    TextScene,
    TextSceneError,
    font_path,
    load_font,
    make_ocr_set,
    make_text_scenes,
    meme,
    random_text,
    random_text_scene,
    show_text_scenes,
    text_extent,
)


def _ink(image: Image.Image, scene: TextScene) -> np.ndarray:
    """Pixels that have the text colour exactly (flat backgrounds only)."""
    return (np.asarray(image) == np.array(scene.text_color)).all(-1)


def test_same_seed_same_scenes_and_pixels_other_seed_differs() -> None:
    first, again, other = make_text_scenes(12, seed=5), make_text_scenes(12, seed=5), make_text_scenes(12, seed=6)
    assert first == again
    assert [s.render().tobytes() for s in first] == [s.render().tobytes() for s in again]
    assert [s.text for s in first] != [s.text for s in other]
    images, texts = make_ocr_set(12, seed=5)
    assert texts == [s.text for s in first] and [i.tobytes() for i in images] == [s.render().tobytes() for s in first]


def test_ground_truth_strings_follow_the_options() -> None:
    scenes = make_text_scenes(60, seed=0)
    assert all(4 <= len(s.text) <= 6 and set(s.text) <= set(ALPHABET) for s in scenes)
    assert not set("IO01") & set(ALPHABET) and len(ALPHABET) == 32  # no look-alike characters
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    short = make_text_scenes(20, seed=1, min_length=2, max_length=2, alphabet="XY")
    assert all(len(s.text) == 2 and set(s.text) <= {"X", "Y"} for s in short)
    assert len(random_text(np.random.default_rng(0), 7, 7)) == 7


def test_text_is_drawn_inside_its_boxes_and_the_image() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene = random_text_scene(rng, backgrounds=["flat"])
        image = scene.render()
        assert image.size == scene.size == (128, 64) and image.mode == "RGB"
        ys, xs = np.nonzero(_ink(image, scene))
        x0, y0, x1, y1 = scene.ink_box()
        assert len(xs) > 20  # the text is there...
        assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1  # ...inside its ink box
        assert 0 <= x0 and x1 <= 128 and 0 <= y0 and y1 <= 64
        boxes = scene.char_boxes()
        assert len(boxes) == len(scene.text)
        lefts = [b[0] for b in boxes]
        assert lefts == sorted(lefts) and boxes[0][0] == x0 and boxes[-1][2] <= x1 + 1e-6
        for bx0, by0, bx1, by1 in boxes:  # every character box holds some ink
            assert _ink(image, scene)[int(by0) : int(by1), int(bx0) : int(np.ceil(bx1))].any()


def test_text_contrasts_with_every_background_pixel() -> None:
    def luminance(rgb: np.ndarray) -> np.ndarray:
        return rgb @ np.array([0.299, 0.587, 0.114])

    for scene in make_text_scenes(30, seed=2):
        pixels = np.asarray(scene.render(), dtype=np.float64)
        x0, y0, x1, y1 = scene.ink_box()
        outside = np.ones(pixels.shape[:2], dtype=bool)
        outside[y0:y1, x0:x1] = False
        diffs = np.abs(luminance(pixels[outside]) - luminance(np.array(scene.text_color, dtype=np.float64)))
        assert np.percentile(diffs, 1) > 60, scene


def test_backgrounds_look_as_named() -> None:
    def corners(scene: TextScene) -> np.ndarray:
        pixels = np.asarray(scene.render(), dtype=np.int64)
        return np.stack([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])

    flat = TextScene("AB", colors=((10, 20, 30), (10, 20, 30)), text_color=(250, 250, 250))
    assert (corners(flat) == [10, 20, 30]).all()
    gradient = TextScene("AB", background="gradient", colors=((0, 0, 0), (200, 200, 200)), text_color=(255, 0, 0))
    assert corners(gradient)[0].tolist() == [0, 0, 0] and corners(gradient)[3].tolist() == [200, 200, 200]
    noise = TextScene("AB", background="noise", colors=((100, 100, 100),) * 2, noise=15.0, noise_seed=4)
    top = np.asarray(noise.render(), dtype=np.float64)[:3]
    assert 5 < top.std() < 25 and abs(top.mean() - 100) < 5
    assert noise.render().tobytes() == TextScene(**noise.__dict__).render().tobytes()


@pytest.mark.parametrize("font", FONTS)
def test_every_font_renders_offline(font: str) -> None:
    scene = TextScene("AB12", font=font, font_size=22, position=(2, 2))
    assert _ink(scene.render(), scene).sum() > 10
    width, height = text_extent("AB12", font, 22)
    assert 15 < width < 100 and 5 < height < 40


def test_fonts_change_the_pixels_and_sizes_scale() -> None:
    renders = {TextScene("AB12", font=f, font_size=22).render().tobytes() for f in FONTS}
    assert len(renders) == len(FONTS)
    assert text_extent("ABCD", "dejavu-sans-bold", 30)[0] > text_extent("ABCD", "dejavu-sans-bold", 15)[0]
    assert text_extent("ABCD", "pil-bitmap", 22)[0] == 2 * text_extent("ABCD", "pil-bitmap", 11)[0]
    assert font_path("dejavu-serif-bold").is_file() and load_font("pil-default", 20).size == 20


def test_random_scenes_shrink_the_font_to_fit() -> None:
    scene = random_text_scene(np.random.default_rng(0), text="WWWWWW", size=(60, 30), font_sizes=(40, 40))
    assert scene.font_size < 40
    _, _, x1, y1 = scene.ink_box()
    assert x1 <= 60 and y1 <= 30


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: TextScene(""), r"text must be a non-empty single line; got ''"),
        (lambda: TextScene("A\nB"), r"text must be a non-empty single line"),
        (lambda: TextScene("AB", font="comic-sans"), r"Unknown font 'comic-sans'; choose one of dejavu-sans"),
        (
            lambda: TextScene("AB", background="plaid"),
            r"Unknown background 'plaid'; choose one of flat, gradient, noise",
        ),
        (lambda: TextScene("AB", size=(4, 40)), r"size must be at least 8 x 8 pixels"),
        (lambda: load_font("dejavu-sans", 2), r"font_size must be an integer of at least 4 pixels; got 2"),
        (lambda: font_path("pil-default"), r"No DejaVu font called 'pil-default'"),
        (lambda: random_text(np.random.default_rng(0), 5, 3), r"Need 1 <= min_length <= max_length; got 5 and 3"),
        (lambda: make_text_scenes(-1), r"n must be a non-negative integer; got -1"),
        (
            lambda: random_text_scene(np.random.default_rng(0), text="ABCDEFGHIJKLMNOP", size=(16, 16)),
            r"'ABCDEFGHIJKLMNOP' does not fit in a 16x16 image in .*; use a larger size",
        ),
    ],
)
def test_bad_settings_get_clear_errors(make, message: str) -> None:
    with pytest.raises(TextSceneError, match=message):
        make()


def test_show_text_scenes_titles_truth_reading_and_cer() -> None:
    scenes = [TextScene("ABCD"), TextScene("WXYZ")]
    fig = show_text_scenes(scenes, ["ABCD", "WXY"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["truth: ABCD\nread: ABCD\nCER 0.00", "truth: WXYZ\nread: WXY\nCER 0.25"]
    with pytest.raises(TextSceneError, match=r"Got 1 predictions for 2 scenes; pass one per scene"):
        show_text_scenes(scenes, ["ABCD"])


def test_meme_writes_outlined_captions_at_top_and_bottom_only() -> None:
    photo = Image.new("RGB", (240, 160), (128, 128, 128))
    captioned = np.asarray(meme(photo, "top line", "bottom line"), dtype=int)
    changed = (np.abs(captioned - 128).sum(-1) > 0).any(1)  # rows with any ink
    rows = np.nonzero(changed)[0]
    assert rows.min() < 40 and rows.max() > 120 and not changed[60:100].any()  # nothing across the middle
    assert (captioned == 255).all(-1).any() and (captioned == 0).all(-1).any()  # white text, black outline
    assert (np.asarray(meme(photo, "only the top"))[100:] == 128).all()
    wide = meme(photo, "a very long caption that would never fit at the starting size of the font")
    assert wide.size == photo.size and np.asarray(photo).max() == 128  # the input is not modified
