"""Synthetic scenes of coloured shapes, the training and test data of the demo fixture models.

Every image is drawn from a small, fixed vocabulary (:data:`COLORS` x :data:`SHAPES`) so that a
tiny model trained on it gives answers that can be checked: the colour and shape of an object,
how many objects there are and which one is on the left. Everything is deterministic for a seed.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> scene = random_scene(rng, n_objects=2)
>>> scene.render().size
(64, 64)
>>> class_label("red", "circle", lang="ko")
'빨간 원'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

COLORS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 225),
    "yellow": (240, 205, 35),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
KOREAN_COLORS: dict[str, str] = {"red": "빨간", "green": "초록", "blue": "파란", "yellow": "노란"}
KOREAN_SHAPES: dict[str, str] = {"circle": "원", "square": "사각형", "triangle": "삼각형"}
CLASSES: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
"""Every (colour, shape) pair, in the fixed order used by :func:`class_labels`."""

LANGUAGES: tuple[str, ...] = ("en", "ko")

EXTRA_COLORS: dict[str, RGB] = {"purple": (150, 60, 200), "orange": (245, 140, 30)}
"""Colours the generator can draw that no fixture was trained on (new concepts to teach by fine-tuning)."""
EXTRA_SHAPES: tuple[str, ...] = ("star",)
"""Shapes the generator can draw that no fixture was trained on (a five-pointed star)."""

# Circumradius of each shape relative to its nominal ``size``, chosen so the areas are alike (the star's is about
# 40% larger, so that its points still show when it is small among other objects).
_EXTENT: dict[str, float] = {"circle": 1.0, "square": 0.9 * math.sqrt(2.0), "triangle": 1.4, "star": 1.8}
_STAR_INNER = 0.45  # inner radius of the star's notches, relative to its points
MAX_ROTATION_DEG = 15.0
"""Default rotation range (+-) of squares and triangles: upright-ish figures are easy to name."""
# Nominal object radius as a fraction of the image side, by number of objects in the scene.
_SIZE_RANGE: dict[int, tuple[float, float]] = {1: (0.14, 0.30), 2: (0.10, 0.19), 3: (0.085, 0.15)}
_DEFAULT_BACKGROUND: RGB = (235, 235, 235)


def _check_lang(lang: str) -> None:
    if lang not in LANGUAGES:
        raise ValueError(f"Unknown language {lang!r}; use one of {LANGUAGES}.")


def color_name(color: str, lang: str = "en") -> str:
    """The colour word in ``lang`` (``"en"`` or ``"ko"``)."""
    _check_lang(lang)
    return color if lang == "en" else KOREAN_COLORS[color]


def shape_name(shape: str, lang: str = "en") -> str:
    """The shape word in ``lang`` (``"en"`` or ``"ko"``)."""
    _check_lang(lang)
    return shape if lang == "en" else KOREAN_SHAPES[shape]


def class_label(color: str, shape: str, lang: str = "en") -> str:
    """The class name of a coloured shape, e.g. ``"red circle"`` or ``"빨간 원"``."""
    if color not in COLORS or shape not in SHAPES:
        raise ValueError(f"Unknown class {color!r} {shape!r}; colours {list(COLORS)}, shapes {list(SHAPES)}.")
    return f"{color_name(color, lang)} {shape_name(shape, lang)}"


def class_labels(lang: str = "en") -> list[str]:
    """All class names in ``lang``, in the fixed order of :data:`CLASSES`."""
    return [class_label(c, s, lang) for c, s in CLASSES]


@dataclass(frozen=True)
class SceneObject:
    """One flat shape: nominal radius ``size`` and ``center`` are in pixels, ``rotation`` in degrees."""

    color: str
    shape: str
    center: tuple[float, float]
    size: float
    rotation: float = 0.0
    rgb: RGB | None = None  # the fill actually drawn (jittered); None means COLORS[color]

    @property
    def fill(self) -> RGB:
        """The RGB fill colour drawn for this object."""
        return self.rgb if self.rgb is not None else {**COLORS, **EXTRA_COLORS}[self.color]

    @property
    def extent(self) -> float:
        """Radius of the circle that encloses the drawn shape, in pixels."""
        return self.size * _EXTENT[self.shape]

    def label(self, lang: str = "en") -> str:
        """Class name of this object, e.g. ``"blue square"``."""
        return class_label(self.color, self.shape, lang)


@dataclass(frozen=True)
class Background:
    """A plain or linear-gradient background with optional seeded Gaussian noise (std in 0-255 units)."""

    color: RGB = _DEFAULT_BACKGROUND
    color2: RGB | None = None  # gradient end colour; None gives a plain background
    angle: float = 0.0  # gradient direction in degrees
    noise: float = 0.0
    seed: int = 0


@dataclass
class Scene:
    """Objects on a background; the ground truth behind a rendered image."""

    objects: list[SceneObject]
    background: Background = field(default_factory=Background)
    size: int = 64

    def render(self) -> Image.Image:
        """Draw the scene as an RGB image of ``size`` x ``size`` pixels."""
        return render_scene(self.objects, self.size, self.background)

    def left_to_right(self) -> list[SceneObject]:
        """The objects ordered by the x coordinate of their centres."""
        return sorted(self.objects, key=lambda o: o.center[0])

    def is_left_of(self, a: SceneObject, b: SceneObject) -> bool:
        """Whether object ``a`` is to the left of object ``b``."""
        return a.center[0] < b.center[0]

    def count(self, color: str | None = None, shape: str | None = None) -> int:
        """How many objects match ``color`` and/or ``shape`` (``None`` matches anything)."""
        return sum(1 for o in self.objects if color in (None, o.color) and shape in (None, o.shape))

    def labels(self, lang: str = "en") -> list[str]:
        """Class names of the objects from left to right."""
        return [o.label(lang) for o in self.left_to_right()]


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(math.dist(a, b))


def random_background_color(rng: np.random.Generator, min_distance: float = 100.0) -> RGB:
    """A random light or dark colour at least ``min_distance`` (RGB Euclidean) from every object colour."""
    light = bool(rng.random() < 0.5)
    low, high = (170, 256) if light else (0, 90)
    while True:
        color = tuple(int(v) for v in rng.integers(low, high, size=3))
        if all(_distance(color, ref) >= min_distance for ref in COLORS.values()):
            return color  # type: ignore[return-value]


def random_background(rng: np.random.Generator, gradient_p: float = 0.4, max_noise: float = 8.0) -> Background:
    """A random plain or gradient background of the same tone, with mild noise."""
    color = random_background_color(rng)
    color2 = None
    if rng.random() < gradient_p:
        light = sum(color) > 3 * 128
        while color2 is None or (sum(color2) > 3 * 128) != light:
            color2 = random_background_color(rng)
    return Background(
        color=color,
        color2=color2,
        angle=float(rng.uniform(0.0, 360.0)),
        noise=float(rng.uniform(0.0, max_noise)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _jitter(rng: np.random.Generator, rgb: RGB, amount: int) -> RGB:
    if amount <= 0:
        return rgb
    offsets = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(v + d, 0, 255)) for v, d in zip(rgb, offsets))  # type: ignore[return-value]


def random_object(
    rng: np.random.Generator,
    color: str | None = None,
    shape: str | None = None,
    image_size: int = 64,
    size_range: tuple[float, float] = _SIZE_RANGE[1],
    center: tuple[float, float] | None = None,
    jitter: int = 12,
    max_rotation: float = MAX_ROTATION_DEG,
) -> SceneObject:
    """A random object; ``size_range`` is the nominal radius as a fraction of ``image_size``.

    Squares and triangles are turned by up to ``max_rotation`` degrees either way; RGB channels
    of the fill are jittered by up to ``jitter``.
    """
    color = color if color is not None else str(rng.choice(list(COLORS)))
    shape = shape if shape is not None else str(rng.choice(SHAPES))
    size = float(rng.uniform(*size_range)) * image_size
    rotation = float(rng.uniform(-max_rotation, max_rotation)) if shape != "circle" else 0.0
    if center is None:
        margin = min(size * _EXTENT[shape] + 1.0, image_size / 2)
        center = (float(rng.uniform(margin, image_size - margin)), float(rng.uniform(margin, image_size - margin)))
    return SceneObject(color, shape, center, size, rotation, _jitter(rng, {**COLORS, **EXTRA_COLORS}[color], jitter))


def _fits(obj: SceneObject, placed: Iterable[SceneObject], gap: float, min_dx: float) -> bool:
    for other in placed:
        if _distance(obj.center, other.center) < obj.extent + other.extent + gap:
            return False
        if abs(obj.center[0] - other.center[0]) < min_dx:
            return False
    return True


def random_scene(
    rng: np.random.Generator,
    n_objects: int | None = None,
    image_size: int = 64,
    colors: Sequence[str] | None = None,
    shapes: Sequence[str] | None = None,
    background: Background | None = None,
    gap: float = 2.0,
    min_dx: float | None = None,
) -> Scene:
    """A scene of 1-3 non-overlapping objects (``n_objects=None`` draws the number at random).

    ``colors``/``shapes`` fix the attributes of the objects in order; centres differ by at least
    ``min_dx`` pixels horizontally (default 12% of the image) so left/right is never ambiguous.
    """
    n = int(rng.integers(1, 4)) if n_objects is None else n_objects
    if n not in _SIZE_RANGE:
        raise ValueError(f"n_objects must be 1, 2 or 3, got {n}.")
    min_dx = 0.12 * image_size if min_dx is None else min_dx
    low, high = _SIZE_RANGE[n]
    bg = background if background is not None else random_background(rng)
    for attempt in range(50):
        scale = 0.92**attempt  # shrink the objects if they keep failing to fit
        objects = _place_objects(rng, n, image_size, (low * scale, high * scale), colors, shapes, gap, min_dx)
        if objects is not None:
            return Scene(objects, bg, image_size)
    raise RuntimeError(f"Could not place {n} objects in a {image_size}px image.")


def _place_objects(
    rng: np.random.Generator,
    n: int,
    image_size: int,
    size_range: tuple[float, float],
    colors: Sequence[str] | None,
    shapes: Sequence[str] | None,
    gap: float,
    min_dx: float,
    tries: int = 100,
) -> list[SceneObject] | None:
    placed: list[SceneObject] = []
    for i in range(n):
        color = colors[i] if colors is not None else None
        shape = shapes[i] if shapes is not None else None
        for _ in range(tries):
            obj = random_object(rng, color, shape, image_size, size_range)
            if _fits(obj, placed, gap, min_dx):
                placed.append(obj)
                break
        else:
            return None
    return placed


def _background_array(background: Background, size: int) -> np.ndarray:
    start = np.asarray(background.color, dtype=np.float32)
    if background.color2 is None:
        return np.broadcast_to(start, (size, size, 3)).copy()
    end = np.asarray(background.color2, dtype=np.float32)
    theta = math.radians(background.angle)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    t = xs * math.cos(theta) + ys * math.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return start + (end - start) * t[..., None]


def _vertices(obj: SceneObject, scale: float) -> list[tuple[float, float]]:
    if obj.shape == "star":
        return _star_vertices(obj, scale)
    corners = 4 if obj.shape == "square" else 3
    first = 45.0 if obj.shape == "square" else -90.0  # axis-aligned square, upright triangle
    radius = obj.extent * scale
    cx, cy = obj.center[0] * scale, obj.center[1] * scale
    points = []
    for k in range(corners):
        a = math.radians(first + obj.rotation + 360.0 * k / corners)
        points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return points


def _star_vertices(obj: SceneObject, scale: float) -> list[tuple[float, float]]:
    """A five-pointed star, one point up (turned by ``rotation``): points and notches alternate."""
    cx, cy = obj.center[0] * scale, obj.center[1] * scale
    points = []
    for k in range(10):
        radius = obj.extent * scale * (1.0 if k % 2 == 0 else _STAR_INNER)
        a = math.radians(-90.0 + obj.rotation + 36.0 * k)
        points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return points


def _object_alpha(obj: SceneObject, size: int, supersample: int) -> np.ndarray:
    """Anti-aliased coverage mask of an object: drawn ``supersample`` times larger, then box-filtered."""
    big = size * supersample
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if obj.shape == "circle":
        cx, cy, r = obj.center[0] * supersample, obj.center[1] * supersample, obj.size * supersample
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(_vertices(obj, supersample), fill=255)
    small = mask.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)[..., None] / 255.0


def render_scene(
    objects: Sequence[SceneObject],
    size: int = 64,
    background: Background | RGB | None = None,
    rng: np.random.Generator | None = None,
    supersample: int = 4,
) -> Image.Image:
    """Draw ``objects`` (pixel coordinates) on a background and return an RGB image.

    ``background`` may be a :class:`Background`, an RGB tuple, or ``None``: then a random one is
    drawn from ``rng`` if given, else a plain light grey. Later objects are drawn on top.
    """
    if background is None:
        background = random_background(rng) if rng is not None else Background()
    elif not isinstance(background, Background):
        background = Background(color=tuple(int(v) for v in background))  # type: ignore[arg-type]
    canvas = _background_array(background, size)
    for obj in objects:
        alpha = _object_alpha(obj, size, supersample)
        canvas = canvas * (1.0 - alpha) + np.asarray(obj.fill, dtype=np.float32) * alpha
    if background.noise > 0:
        noise_rng = np.random.default_rng(background.seed)
        canvas = canvas + noise_rng.normal(0.0, background.noise, size=canvas.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), mode="RGB")


def make_classification_set(n_per_class: int, seed: int, size: int = 64) -> list[tuple[Image.Image, str, str]]:
    """``n_per_class`` single-object images of every class as ``(image, color, shape)``, classes interleaved."""
    rng = np.random.default_rng(seed)
    samples: list[tuple[Image.Image, str, str]] = []
    for _ in range(n_per_class):
        for color, shape in CLASSES:
            obj = random_object(rng, color, shape, image_size=size)
            samples.append((render_scene([obj], size, random_background(rng)), color, shape))
    return samples
