"""Synthetic OCR images: short strings rendered with PIL, with their ground truth.

Each :class:`TextScene` is one line of text (by default 4-6 characters of ``A-Z2-9`` without ``I`` and ``O``) drawn on a
flat, gradient or noisy background, in one of the fonts that work offline (DejaVu from
matplotlib, Pillow's scalable default font and its old bitmap font), at a chosen size and
position. The scene knows its text and the box of every character, and everything is
deterministic for a seed, so an OCR model's output can be scored exactly
(see :func:`mllm_nb.metrics.cer`). The tiny demo Honeybee (``fixtures/train_honeybee.py``)
is trained and evaluated on these images.

>>> import numpy as np
>>> scene = random_text_scene(np.random.default_rng(0))
>>> image = scene.render()
>>> image.size, len(scene.char_boxes()) == len(scene.text)
((128, 64), True)
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mllm_nb.errors import MllmNbError

RGB = tuple[int, int, int]

ALPHABET: str = "".join(c for c in string.ascii_uppercase + string.digits if c not in "IO01")
"""The default characters of random strings: upper-case letters and digits without the look-alikes I/1, O/0."""

_DEJAVU: dict[str, str] = {
    "dejavu-sans": "DejaVuSans.ttf",
    "dejavu-sans-bold": "DejaVuSans-Bold.ttf",
    "dejavu-sans-mono": "DejaVuSansMono.ttf",
    "dejavu-sans-mono-bold": "DejaVuSansMono-Bold.ttf",
    "dejavu-serif": "DejaVuSerif.ttf",
    "dejavu-serif-bold": "DejaVuSerif-Bold.ttf",
}
PIL_DEFAULT = "pil-default"  # Pillow's scalable default font (Pillow >= 10.1)
PIL_BITMAP = "pil-bitmap"  # Pillow's old fixed-size bitmap font, scaled up by whole pixels
FONTS: tuple[str, ...] = (*_DEJAVU, PIL_DEFAULT, PIL_BITMAP)
"""Every font name :func:`load_font` knows; all ship inside matplotlib or Pillow."""
BOLD_FONTS: tuple[str, ...] = ("dejavu-sans-bold", "dejavu-sans-mono-bold", "dejavu-serif-bold")
"""Heavy fonts that stay legible when an image is shrunk to a model's input size."""
BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "noise")
POLARITIES: tuple[str, ...] = ("any", "dark", "light")
_BITMAP_HEIGHT = 11  # pixel height of Pillow's bitmap font at scale 1
_MIN_CONTRAST = 110  # least luminance difference between the text and any background pixel


class TextSceneError(MllmNbError, ValueError):
    """A text scene was asked for with settings that cannot be drawn."""


# ------------------------------------------------------------------------------------------ fonts


def font_path(name: str) -> Path:
    """The TrueType file of a DejaVu font from matplotlib's bundled fonts.

    >>> font_path("dejavu-sans-bold").name
    'DejaVuSans-Bold.ttf'
    """
    if name not in _DEJAVU:
        raise TextSceneError(f"No DejaVu font called {name!r}; choose one of {', '.join(_DEJAVU)}.")
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / _DEJAVU[name]
    if not path.is_file():
        raise TextSceneError(f"matplotlib has no {path.name} ({path}); reinstall matplotlib.")
    return path


@lru_cache(maxsize=256)
def load_font(name: str, size: int) -> Any:
    """A PIL font by name (see :data:`FONTS`) at ``size`` pixels; the bitmap font ignores ``size``.

    >>> load_font("pil-default", 20).size
    20
    """
    _check_font(name)
    if name == PIL_BITMAP:
        return ImageFont.load_default_imagefont()
    if not isinstance(size, int) or size < 4:
        raise TextSceneError(f"font_size must be an integer of at least 4 pixels; got {size!r}.")
    if name == PIL_DEFAULT:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(font_path(name)), size)


def _check_font(name: str) -> None:
    if name not in FONTS:
        raise TextSceneError(f"Unknown font {name!r}; choose one of {', '.join(FONTS)}.")


def _bitmap_scale(font_size: int) -> int:
    return max(1, round(font_size / _BITMAP_HEIGHT))


@lru_cache(maxsize=1024)
def _text_mask(text: str, font_name: str, font_size: int) -> tuple[Image.Image, tuple[float, ...]]:
    """The text's ink as an ``L`` mask cropped to its box, and the x edges of each character in it.

    Cached: a scene asks for it to fit, draw and box its text; callers must not modify the mask.
    """
    font = load_font(font_name, font_size)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (max(right - left, 1), max(bottom - top, 1)), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
    inner = [min(max(font.getlength(text[:i]) - left, 0.0), mask.width) for i in range(1, len(text))]
    edges = [0.0, *inner, float(mask.width)]  # the first and last boxes reach the ends of the ink
    if font_name == PIL_BITMAP:
        scale = _bitmap_scale(font_size)
        mask = mask.resize((mask.width * scale, mask.height * scale), Image.Resampling.NEAREST)
        edges = [e * scale for e in edges]
    return mask, tuple(edges)


def text_extent(text: str, font: str, font_size: int) -> tuple[int, int]:
    """Width and height in pixels of the ink of ``text`` drawn in ``font`` at ``font_size``.

    >>> text_extent("AB12", "dejavu-sans-mono-bold", 20)[1] > 10
    True
    """
    mask, _ = _text_mask(text, font, font_size)
    return mask.size


# ------------------------------------------------------------------------------------------ scenes


@dataclass(frozen=True)
class TextScene:
    """One line of ``text`` whose ink box has its top-left corner at ``position`` on a background.

    ``background`` is ``"flat"`` (``colors[0]``), ``"gradient"`` (``colors[0]`` -> ``colors[1]``
    along ``angle`` degrees) or ``"noise"`` (flat plus Gaussian noise of ``noise`` grey levels,
    drawn from ``noise_seed``).

    >>> scene = TextScene("HELLO", size=(96, 48), position=(10, 12))
    >>> scene.render().getpixel((0, 0))
    (255, 255, 255)
    """

    text: str
    font: str = "dejavu-sans-bold"
    font_size: int = 20
    size: tuple[int, int] = (128, 64)
    position: tuple[int, int] = (4, 4)
    background: str = "flat"
    colors: tuple[RGB, RGB] = ((255, 255, 255), (255, 255, 255))
    text_color: RGB = (0, 0, 0)
    angle: float = 0.0
    noise: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text or "\n" in self.text:
            raise TextSceneError(f"text must be a non-empty single line; got {self.text!r}.")
        _check_font(self.font)
        if self.background not in BACKGROUNDS:
            raise TextSceneError(f"Unknown background {self.background!r}; choose one of {', '.join(BACKGROUNDS)}.")
        width, height = self.size
        if width < 8 or height < 8:
            raise TextSceneError(f"size must be at least 8 x 8 pixels; got {self.size!r}.")

    def render(self) -> Image.Image:
        """The scene as an RGB PIL image of ``size``.

        >>> TextScene("AB").render().mode
        'RGB'
        """
        canvas = _background(self)
        mask, _ = _text_mask(self.text, self.font, self.font_size)
        ink = Image.new("RGB", mask.size, self.text_color)
        canvas.paste(ink, self.position, mask)
        return canvas

    def char_boxes(self) -> list[tuple[float, float, float, float]]:
        """``(x0, y0, x1, y1)`` of every character of ``text`` in image pixels (the line's height).

        >>> boxes = TextScene("AB", position=(10, 5)).char_boxes()
        >>> boxes[0][0], boxes[0][2] == boxes[1][0]
        (10.0, True)
        """
        mask, edges = _text_mask(self.text, self.font, self.font_size)
        x, y = self.position
        return [(x + edges[i], float(y), x + edges[i + 1], float(y + mask.height)) for i in range(len(self.text))]

    def ink_box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the whole text's ink.

        >>> TextScene("AB", position=(10, 5)).ink_box()[:2]
        (10, 5)
        """
        width, height = _text_mask(self.text, self.font, self.font_size)[0].size
        return (self.position[0], self.position[1], self.position[0] + width, self.position[1] + height)


def _background(scene: TextScene) -> Image.Image:
    width, height = scene.size
    start = np.array(scene.colors[0], dtype=np.float32)
    if scene.background == "gradient":
        end = np.array(scene.colors[1], dtype=np.float32)
        theta = np.deg2rad(scene.angle)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xs * np.cos(theta) + ys * np.sin(theta)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        pixels = start + t[..., None] * (end - start)
    else:
        pixels = np.broadcast_to(start, (height, width, 3)).copy()
    if scene.background == "noise" and scene.noise > 0:
        rng = np.random.default_rng(scene.noise_seed)
        pixels = pixels + rng.normal(0.0, scene.noise, size=(height, width, 1))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


# ------------------------------------------------------------------------------------------ random


def random_text(rng: np.random.Generator, min_length: int = 4, max_length: int = 6, alphabet: str = ALPHABET) -> str:
    """A random string of ``min_length``..``max_length`` characters of ``alphabet``.

    >>> len(random_text(np.random.default_rng(0), 5, 5))
    5
    """
    if not alphabet:
        raise TextSceneError("alphabet must not be empty.")
    if not 1 <= min_length <= max_length:
        raise TextSceneError(f"Need 1 <= min_length <= max_length; got {min_length} and {max_length}.")
    length = int(rng.integers(min_length, max_length + 1))
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=length))


def _random_rgb(rng: np.random.Generator, low: float, high: float) -> RGB:
    """A random colour whose luminance lies in ``[low, high]`` (grey if 64 draws miss the range)."""
    candidates = rng.integers(0, 256, size=(64, 3))
    luminance = candidates @ np.array([0.299, 0.587, 0.114])
    hits = np.nonzero((luminance >= low) & (luminance <= high))[0]
    if len(hits):
        return tuple(int(v) for v in candidates[hits[0]])  # type: ignore[return-value]
    grey = int((low + high) / 2)
    return (grey, grey, grey)


def _random_colors(
    rng: np.random.Generator, background: str, noise: float, polarity: str
) -> tuple[tuple[RGB, RGB], RGB]:
    """Background colours and a text colour that contrasts with every background pixel."""
    spread = 3 * noise  # noisy pixels stray this far from the base colour
    dark_text = rng.random() < 0.5 if polarity == "any" else polarity == "dark"
    if dark_text:
        bg_low, bg_high = 150 + spread, 255
        text = _random_rgb(rng, 0, max(bg_low - _MIN_CONTRAST - spread, 0))
    else:
        bg_low, bg_high = 0, 105 - spread
        text = _random_rgb(rng, min(bg_high + _MIN_CONTRAST + spread, 255), 255)
    first = _random_rgb(rng, bg_low, bg_high)
    second = _random_rgb(rng, bg_low, bg_high) if background == "gradient" else first
    return (first, second), text


def random_text_scene(
    rng: np.random.Generator,
    text: str | None = None,
    size: tuple[int, int] = (128, 64),
    fonts: Sequence[str] = BOLD_FONTS,
    font_sizes: tuple[int, int] = (22, 32),
    backgrounds: Sequence[str] = BACKGROUNDS,
    min_length: int = 4,
    max_length: int = 6,
    alphabet: str = ALPHABET,
    margin: int = 3,
    polarity: str = "any",
) -> TextScene:
    """A random scene: font, font size (shrunk until the text fits), position, background and colours.

    ``text`` defaults to :func:`random_text` with ``min_length``, ``max_length`` and ``alphabet``.
    ``polarity``: ``"dark"`` text on light backgrounds (print), ``"light"`` on dark, or ``"any"``.

    >>> scene = random_text_scene(np.random.default_rng(1), text="OCR42", fonts=["pil-default"])
    >>> scene.text, scene.font
    ('OCR42', 'pil-default')
    """
    for name in fonts:
        _check_font(name)
    if not fonts or not backgrounds:
        raise TextSceneError("fonts and backgrounds must each name at least one choice.")
    if polarity not in POLARITIES:
        raise TextSceneError(f"Unknown polarity {polarity!r}; choose one of {', '.join(POLARITIES)}.")
    text = text if text is not None else random_text(rng, min_length, max_length, alphabet)
    font = str(fonts[int(rng.integers(len(fonts)))])
    font_size = int(rng.integers(font_sizes[0], font_sizes[1] + 1))
    font_size, (text_w, text_h) = _fit(text, font, font_size, size, margin)
    x = int(rng.integers(margin, size[0] - margin - text_w + 1))
    y = int(rng.integers(margin, size[1] - margin - text_h + 1))
    background = str(backgrounds[int(rng.integers(len(backgrounds)))])
    noise = float(rng.uniform(8.0, 20.0)) if background == "noise" else 0.0
    colors, text_color = _random_colors(rng, background, noise, polarity)
    angle = float(rng.uniform(0.0, 360.0)) if background == "gradient" else 0.0
    noise_seed = int(rng.integers(2**31))
    return TextScene(text, font, font_size, size, (x, y), background, colors, text_color, angle, noise, noise_seed)


def _fit(text: str, font: str, font_size: int, size: tuple[int, int], margin: int) -> tuple[int, tuple[int, int]]:
    """The largest font size <= ``font_size`` at which ``text`` fits inside ``size`` less the margins."""
    for candidate in range(font_size, 3, -1):
        extent = text_extent(text, font, candidate)
        if extent[0] <= size[0] - 2 * margin and extent[1] <= size[1] - 2 * margin:
            return candidate, extent
        if font == PIL_BITMAP and _bitmap_scale(candidate) == 1:
            break
    raise TextSceneError(f"{text!r} does not fit in a {size[0]}x{size[1]} image in {font}; use a larger size.")


def make_text_scenes(n: int, seed: int = 0, **options: Any) -> list[TextScene]:
    """``n`` random scenes, the same ones for the same ``seed`` and options (see :func:`random_text_scene`).

    >>> [s.text for s in make_text_scenes(2, seed=0)] == [s.text for s in make_text_scenes(2, seed=0)]
    True
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise TextSceneError(f"n must be a non-negative integer; got {n!r}.")
    rng = np.random.default_rng(seed)
    return [random_text_scene(rng, **options) for _ in range(n)]


def make_ocr_set(n: int, seed: int = 0, **options: Any) -> tuple[list[Image.Image], list[str]]:
    """Rendered images and their ground-truth strings, ready for ``ocr`` and ``cer``.

    >>> images, texts = make_ocr_set(3, seed=1)
    >>> len(images), all(4 <= len(t) <= 6 for t in texts)
    (3, True)
    """
    scenes = make_text_scenes(n, seed, **options)
    return [scene.render() for scene in scenes], [scene.text for scene in scenes]


# ------------------------------------------------------------------------------------------ real text


def real_text_images() -> dict[str, Image.Image]:
    """The two real text images that ship with scikit-image: a scanned ``page`` and ``text`` on a photo.

    >>> sorted(real_text_images())  # doctest: +SKIP
    ['page', 'text']
    """
    from mllm_nb.samples import sample_images

    return sample_images(["page", "text"])


def show_text_scenes(scenes: Sequence[TextScene], predictions: Sequence[str] | None = None, **options: Any) -> Any:
    """A grid of rendered scenes titled with their ground truth (and a model's reading, if given).

    Returns the matplotlib figure of :func:`mllm_nb.display.show`.

    >>> fig = show_text_scenes(make_text_scenes(4))  # doctest: +SKIP
    """
    from mllm_nb.display import show

    if predictions is not None and len(predictions) != len(scenes):
        raise TextSceneError(f"Got {len(predictions)} predictions for {len(scenes)} scenes; pass one per scene.")
    titles = [f"truth: {s.text}" for s in scenes]
    if predictions is not None:
        from mllm_nb.metrics import cer

        titles = [f"{t}\nread: {p}\nCER {cer(s.text, p):.2f}" for t, s, p in zip(titles, scenes, predictions)]
    return show([s.render() for s in scenes], captions=titles, **options)


def meme(image: Any, top: str, bottom: str = "", font: str = "dejavu-sans-bold") -> Image.Image:
    """A copy of ``image`` with meme-style captions: white capitals with a black outline, top and bottom.

    The text is shrunk until it fits the width, so any photo works; the lesson asks a model to explain it.

    >>> from PIL import Image
    >>> meme(Image.new("RGB", (300, 200), "gray"), "when the demo", "runs offline").size
    (300, 200)
    """
    from mllm_nb.images import load_image

    picture = load_image(image).copy()
    draw = ImageDraw.Draw(picture)
    width, height = picture.size
    for text, at_top in ((top, True), (bottom, False)):
        line = " ".join(str(text).upper().split())
        if not line:
            continue
        size = max(8, height // 8)
        while size > 8 and text_extent(line, font, size)[0] > 0.94 * width:
            size -= 1
        font_obj = load_font(font, size)
        left, up, right, down = draw.textbbox((0, 0), line, font=font_obj)
        x = (width - (right - left)) / 2 - left
        margin = height * 0.03
        y = margin - up if at_top else height - margin - down
        stroke = max(1, size // 12)
        draw.text((x, y), line, font=font_obj, fill="white", stroke_width=stroke, stroke_fill="black")
    return picture


__all__ = [
    "ALPHABET",
    "BACKGROUNDS",
    "BOLD_FONTS",
    "FONTS",
    "POLARITIES",
    "TextScene",
    "TextSceneError",
    "font_path",
    "load_font",
    "make_ocr_set",
    "make_text_scenes",
    "meme",
    "random_text",
    "random_text_scene",
    "real_text_images",
    "show_text_scenes",
    "text_extent",
]
