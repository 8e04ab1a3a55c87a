"""add_scratch: the scratch lands in the named cell only, and bad cells get one clear sentence."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import mllm_nb as mn
from mllm_nb.defects import CELL_NAMES_2X2, DefectError, add_scratch, cell_name


def _changed_cells(before: Image.Image, after: Image.Image, rows: int, cols: int) -> set[tuple[int, int]]:
    diff = np.abs(np.asarray(before, dtype=int) - np.asarray(after, dtype=int)).sum(2) > 0
    h, w = diff.shape
    return {
        (r, c)
        for r in range(rows)
        for c in range(cols)
        if diff[r * h // rows : (r + 1) * h // rows, c * w // cols : (c + 1) * w // cols].any()
    }


@pytest.mark.parametrize("name", CELL_NAMES_2X2)
def test_the_scratch_is_drawn_inside_the_named_quarter_only(name: str) -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(60, 200, (120, 180, 3), dtype=np.uint8))
    scratched = add_scratch(photo, name, seed=5)
    row, col = divmod(CELL_NAMES_2X2.index(name), 2)
    assert _changed_cells(photo, scratched, 2, 2) == {(row, col)}
    assert cell_name(row, col) == name
    assert np.asarray(photo).sum() == np.asarray(Image.fromarray(np.asarray(photo))).sum()  # input untouched


def test_cells_by_index_and_position_on_bigger_grids_and_contrast() -> None:
    dark = Image.new("RGB", (90, 90), (10, 10, 10))
    light = Image.new("RGB", (90, 90), (240, 240, 240))
    assert _changed_cells(dark, add_scratch(dark, (2, 1), grid=(3, 3)), 3, 3) == {(2, 1)}
    assert _changed_cells(dark, add_scratch(dark, 5, grid=(3, 3)), 3, 3) == {(1, 2)}
    assert np.asarray(add_scratch(dark, 0)).max() > 200 and np.asarray(add_scratch(light, 0)).min() < 50
    assert add_scratch(dark, 1, seed=1).tobytes() == add_scratch(dark, 1, seed=1).tobytes()
    assert add_scratch(dark, 1, seed=1).tobytes() != add_scratch(dark, 1, seed=2).tobytes()
    assert cell_name(0, 2, grid=(3, 3)) == "row 1, column 3" and mn.add_scratch is add_scratch


@pytest.mark.parametrize(
    "cell,grid,message",
    [
        ("middle", (2, 2), r"Unknown cell 'middle'; on a 2 x 2 grid name one of top-left, top-right"),
        ("top-left", (3, 3), r"Unknown cell 'top-left'"),
        ((2, 0), (2, 2), r"cell \(2, 0\) is outside a 2 x 2 grid"),
        (4, (2, 2), r"cell index 4 is outside a 2 x 2 grid \(0 to 3\)"),
        (1.5, (2, 2), r"cell must be a name, an index or \(row, column\); got 1.5"),
        (0, (0, 2), r"grid must be \(rows, columns\), both at least 1"),
    ],
)
def test_bad_cells_are_refused_with_one_sentence(cell, grid, message: str) -> None:
    with pytest.raises(DefectError, match=message):
        add_scratch(Image.new("RGB", (40, 40)), cell, grid=grid)


def test_not_an_image_is_an_image_load_error() -> None:
    with pytest.raises(mn.ImageLoadError):
        add_scratch(12345)
