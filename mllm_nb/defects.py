"""Synthetic defects on a photo, with the answer known: "which image has the scratch, and where?".

The lessons compare two photos of the same object, one of them damaged, and ask a model to find the defect.
:func:`add_scratch` draws a thin scratch inside one cell of a ``rows x cols`` grid (``"top-left"``, ...),
so the ground truth is the cell name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mllm_nb.errors import MllmNbError

CELL_NAMES_2X2: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")


class DefectError(MllmNbError, ValueError):
    """A scratch was asked for in a cell that does not exist, or on something that is not an image."""


def _cell_index(cell: int | str | tuple[int, int], rows: int, cols: int) -> tuple[int, int]:
    if isinstance(cell, str):
        if (rows, cols) != (2, 2) or cell not in CELL_NAMES_2X2:
            raise DefectError(
                f"Unknown cell {cell!r}; on a 2 x 2 grid name one of {', '.join(CELL_NAMES_2X2)}, "
                "or pass (row, column) counted from 0."
            )
        return divmod(CELL_NAMES_2X2.index(cell), 2)
    if isinstance(cell, int) and not isinstance(cell, bool):
        if not 0 <= cell < rows * cols:
            raise DefectError(f"cell index {cell} is outside a {rows} x {cols} grid (0 to {rows * cols - 1}).")
        return divmod(cell, cols)
    if not (isinstance(cell, tuple) and len(cell) == 2 and all(isinstance(v, int) for v in cell)):
        raise DefectError(f"cell must be a name, an index or (row, column); got {cell!r}.")
    row, col = cell
    if not (0 <= row < rows and 0 <= col < cols):
        raise DefectError(f"cell {cell!r} is outside a {rows} x {cols} grid (rows and columns count from 0).")
    return row, col


def cell_name(row: int, col: int, grid: tuple[int, int] = (2, 2)) -> str:
    """The name the lessons use for a grid cell: ``"top-left"`` ... on 2 x 2, ``"row 1, column 3"`` otherwise.

    >>> cell_name(1, 0), cell_name(0, 2, grid=(3, 3))
    ('bottom-left', 'row 1, column 3')
    """
    if tuple(grid) == (2, 2):
        return CELL_NAMES_2X2[row * 2 + col]
    return f"row {row + 1}, column {col + 1}"


def add_scratch(
    image: Any,
    cell: int | str | tuple[int, int] = "top-right",
    grid: tuple[int, int] = (2, 2),
    seed: int = 0,
    width: int | None = None,
) -> Image.Image:
    """A copy of ``image`` with a thin, jagged scratch drawn inside one cell of a ``grid`` (rows, columns).

    The scratch is lighter or darker than the pixels under it (whichever contrasts more) and stays inside the
    middle of the cell, so "which quarter has the scratch?" has one right answer.

    >>> from PIL import Image
    >>> plain = Image.new("RGB", (200, 100), (90, 90, 90))
    >>> scratched = add_scratch(plain, "bottom-left", seed=1)
    >>> scratched.size, plain.getpixel((50, 75)) == (90, 90, 90)
    ((200, 100), True)
    """
    from mllm_nb.images import load_image

    picture = load_image(image).copy()
    rows, cols = (int(v) for v in grid)
    if rows < 1 or cols < 1:
        raise DefectError(f"grid must be (rows, columns), both at least 1; got {grid!r}.")
    row, col = _cell_index(cell, rows, cols)
    w, h = picture.size
    left, top = col * w / cols, row * h / rows
    cw, ch = w / cols, h / rows
    rng = np.random.default_rng(seed)
    # a jagged line across the middle 60% of the cell, at a random slant
    n = 8
    xs = np.linspace(0.2, 0.8, n) * cw + left
    slope = rng.uniform(-0.5, 0.5)
    ys = top + ch * (0.5 + slope * np.linspace(-0.3, 0.3, n) + rng.normal(0, 0.03, n))
    points = [(float(x), float(np.clip(y, top + 0.1 * ch, top + 0.9 * ch))) for x, y in zip(xs, ys)]
    box = [int(left + 0.2 * cw), int(top + 0.2 * ch), int(left + 0.8 * cw), int(top + 0.8 * ch)]
    mean = float(np.asarray(picture.crop(box).convert("L")).mean())
    colour = (20, 20, 20) if mean > 128 else (235, 235, 235)
    line_width = width or max(2, round(min(w, h) / 120))
    ImageDraw.Draw(picture).line(points, fill=colour, width=line_width, joint="curve")
    return picture


__all__ = ["CELL_NAMES_2X2", "DefectError", "add_scratch", "cell_name"]
