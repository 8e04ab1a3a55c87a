"""Tests of mllm_nb.images: every source type, conversions, guards and their messages.

Every image is generated in tmp_path with PIL/numpy; URLs are served by a local http.server.
"""

from __future__ import annotations

import base64
import datetime
import io
import os
import socket
import struct
import threading
import time
import urllib.parse
import warnings
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import mllm_nb
from mllm_nb import images
from mllm_nb.errors import ImageLoadError, MllmNbError
from mllm_nb.images import IMAGE_EXTENSIONS, image_files, iter_upload, load_image, load_images

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _encode(im: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _solid_png(color=RED, size=(3, 2)) -> bytes:
    return _encode(Image.new("RGB", size, color))


def _noise(size=(64, 64), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (1-bit grey) with an empty data stream: tiny on disk."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _raises(src, match: str, *, contains: str | None = None, limit_s: float = 1.0, **kwargs) -> ImageLoadError:
    """load_image(src) must raise ImageLoadError matching ``match``, quickly, with a one-line message."""
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match=match) as info:
        load_image(src, **kwargs)
    elapsed = time.perf_counter() - start
    assert elapsed < limit_s, f"took {elapsed:.2f} s"
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    if contains is not None:
        assert contains.lower() in message.lower()
    return info.value


def _close(a, b, tol=1) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------------
# paths, bytes, file objects
# ------------------------------------------------------------------------------------------------


def test_public_names_and_lazy_export():
    assert mllm_nb.load_image is load_image
    assert mllm_nb.load_images is load_images
    assert set(IMAGE_EXTENSIONS) == {
        ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
    }
    assert issubclass(ImageLoadError, MllmNbError) and issubclass(ImageLoadError, ValueError)
    assert images.DEFAULT_MAX_PIXELS == (Image.MAX_IMAGE_PIXELS or 89_478_485)


@pytest.mark.parametrize("as_path", [str, Path])
def test_path_str_and_pathlib(tmp_path, as_path):
    path = _write(tmp_path / "red.png", _solid_png(RED, (3, 2)))
    im = load_image(as_path(path))
    assert im.mode == "RGB" and im.size == (3, 2)
    assert im.getpixel((2, 1)) == RED


def test_result_is_fully_loaded_so_the_file_can_be_deleted(tmp_path):
    path = _write(tmp_path / "green.png", _solid_png(GREEN))
    im = load_image(path)
    path.unlink()
    assert im.getpixel((0, 0)) == GREEN


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path / "blue.png", _solid_png(BLUE))
    assert load_image("~/blue.png").getpixel((0, 0)) == BLUE
    assert load_images("~")[0].getpixel((0, 0)) == BLUE


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_bytes_like(wrap):
    im = load_image(wrap(_solid_png(GREEN, (5, 4))))
    assert im.size == (5, 4) and im.getpixel((4, 3)) == GREEN


def test_bytesio_and_open_file(tmp_path):
    data = _solid_png(BLUE)
    assert load_image(io.BytesIO(data)).getpixel((0, 0)) == BLUE
    path = _write(tmp_path / "b.png", data)
    with path.open("rb") as fh:
        assert load_image(fh).getpixel((1, 1)) == BLUE


def test_broken_file_object_names_the_file(tmp_path):
    path = _write(tmp_path / "junk.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with path.open("rb") as fh:
        _raises(fh, "truncated or corrupt", contains=str(path))


def test_text_mode_file_object_is_refused(tmp_path):
    path = _write(tmp_path / "t.png", _solid_png())
    with path.open("r", encoding="latin-1") as fh:
        _raises(fh, "text mode", contains="'rb'")


def test_bytes_over_max_bytes():
    data = _encode(_noise((32, 32)))
    assert len(data) > 1000
    _raises(data, r"max_bytes=1,000", contains=f"bytes ({len(data):,} bytes)", max_bytes=1000)
    _raises(io.BytesIO(data), r"max_bytes=1,000", max_bytes=1000)


# ------------------------------------------------------------------------------------------------
# data: URLs
# ------------------------------------------------------------------------------------------------


def test_data_url_base64_and_percent_encoded():
    data = _solid_png(RED, (2, 2))
    b64 = "data:image/png;base64," + base64.b64encode(data).decode()
    assert load_image(b64).getpixel((1, 1)) == RED
    wrapped = b64[:40] + "\n" + b64[40:]  # line breaks inside the base64 are tolerated
    assert load_image(wrapped).getpixel((0, 0)) == RED
    pct = "data:image/png," + urllib.parse.quote_from_bytes(data)
    assert load_image(pct).getpixel((0, 0)) == RED
    assert [im.getpixel((0, 0)) for im in load_images([b64, pct])] == [RED, RED]


def test_data_url_errors():
    _raises("data:image/png;base64,@@@not-base64@@@", "invalid base64")
    _raises("data:image/png;base64", "no ','")
    html = "data:text/html;base64," + base64.b64encode(b"<!DOCTYPE html><html></html>").decode()
    _raises(html, "HTML/text", contains="data: URL")
    big = "data:image/png;base64," + base64.b64encode(_encode(_noise((32, 32)))).decode()
    _raises(big, r"max_bytes=1,000", contains="data: URL", max_bytes=1000)


# ------------------------------------------------------------------------------------------------
# PIL and numpy inputs
# ------------------------------------------------------------------------------------------------


def test_pil_rgb_returns_a_copy():
    src = Image.new("RGB", (2, 2), RED)
    out = load_image(src)
    assert out is not src
    out.putpixel((0, 0), BLUE)
    assert src.getpixel((0, 0)) == RED


def test_pil_rgba_is_not_mutated():
    src = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    out = load_image(src)
    assert src.mode == "RGBA" and src.getpixel((0, 0)) == (255, 0, 0, 0)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == WHITE


def test_pil_animated_gif_gives_first_frame_without_moving_the_caller(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (4, 4), c) for c in (RED, GREEN, BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as im:
        im.seek(2)
        out = load_image(im)
        assert im.tell() == 2
    assert out.getpixel((0, 0)) == RED


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.array([[[255, 0, 0], [0, 255, 0]]], dtype=np.uint8), [RED, GREEN]),
        (np.array([[0, 200]], dtype=np.uint8), [BLACK, (200, 200, 200)]),
        (np.array([[[0], [200]]], dtype=np.uint8), [BLACK, (200, 200, 200)]),
        (np.array([[[255, 0, 0, 0], [0, 0, 255, 255]]], dtype=np.uint8), [WHITE, BLUE]),
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [BLACK, (128, 128, 128), WHITE]),
        (np.array([[[0.0, 1.0, 0.0]]], dtype=np.float64), [GREEN]),
        (np.array([[False, True]]), [BLACK, WHITE]),
        (np.array([[0, 255]], dtype=np.int64), [BLACK, WHITE]),
        (np.array([[0, 65535]], dtype=np.uint16), [BLACK, WHITE]),
    ],
    ids=["hwc-rgb", "hw", "hw1", "rgba", "float-grey", "float-rgb", "bool", "int64", "uint16"],
)
def test_numpy_arrays(arr, expected):
    before = arr.copy()
    im = load_image(arr)
    assert im.mode == "RGB" and im.size == (arr.shape[1], arr.shape[0])
    assert [im.getpixel((x, 0)) for x in range(arr.shape[1])] == expected
    np.testing.assert_array_equal(arr, before)


def test_numpy_errors():
    _raises(np.zeros((3, 32, 48), dtype=np.uint8), r"transpose\(1, 2, 0\)", contains="(3, 32, 48)")
    _raises(np.full((4, 4, 3), 200.0), r"arr / 255", contains="200")
    _raises(np.full((4, 4), -0.5), r"\[0, 1\]")
    _raises(np.zeros(10, dtype=np.uint8), "1 dimensions")
    _raises(np.zeros((2, 4, 4, 3, 1), dtype=np.uint8), "5 dimensions")
    _raises(np.zeros((1, 4, 4, 3), dtype=np.uint8), r"arr\[0\]")
    _raises(np.zeros((4, 4, 2), dtype=np.uint8), "2 channels")
    _raises(np.zeros((0, 4), dtype=np.uint8), "empty")
    _raises(np.array([[np.nan, 0.5]]), "NaN")
    _raises(np.array([[-5, 300]], dtype=np.int32), "astype")


def test_load_images_of_a_4d_batch():
    batch = np.zeros((2, 3, 3, 3), dtype=np.uint8)
    batch[1] = 255
    assert [im.getpixel((0, 0)) for im in load_images(batch)] == [BLACK, WHITE]


# ------------------------------------------------------------------------------------------------
# ipywidgets FileUpload values
# ------------------------------------------------------------------------------------------------


def _upload_v7(*named: tuple[str, bytes]) -> dict:
    return {
        name: {
            "metadata": {"name": name, "type": "image/png", "size": len(data), "lastModified": 1700000000000},
            "content": data,
        }
        for name, data in named
    }


def _upload_v8(*named: tuple[str, bytes]) -> tuple:
    stamp = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    return tuple(
        {"name": name, "type": "image/png", "size": len(data), "content": memoryview(data), "last_modified": stamp}
        for name, data in named
    )


UPLOADED = (("z.png", _solid_png(RED)), ("a.png", _solid_png(GREEN)), ("m.png", _solid_png(BLUE)))


@pytest.mark.parametrize("make", [_upload_v7, _upload_v8], ids=["ipywidgets7", "ipywidgets8"])
def test_upload_values_keep_upload_order(make):
    value = make(*UPLOADED)
    pairs = iter_upload(value)
    assert [name for name, _ in pairs] == ["z.png", "a.png", "m.png"]
    assert all(type(data) is bytes for _, data in pairs)
    assert pairs[0][1] == UPLOADED[0][1]
    assert [im.getpixel((0, 0)) for im in load_images(value)] == [RED, GREEN, BLUE]


@pytest.mark.parametrize("make", [_upload_v7, _upload_v8], ids=["ipywidgets7", "ipywidgets8"])
def test_single_upload_entries(make):
    value = make(("one.png", _solid_png(BLUE)))
    entry = next(iter(value.values())) if isinstance(value, dict) else value[0]
    assert load_image(entry).getpixel((0, 0)) == BLUE
    assert load_image(value).getpixel((0, 0)) == BLUE  # a whole upload holding one file
    assert iter_upload(entry) == [("one.png", _solid_png(BLUE))]


def test_upload_errors_name_the_file():
    bad = _upload_v8(("broken.png", b"not an image at all, just some words"))
    _raises(bad[0], "HTML/text", contains="upload 'broken.png'")
    with pytest.raises(ImageLoadError, match="(?i)upload 'broken.png'"):
        load_images(bad)
    _raises(_upload_v7(*UPLOADED), r"3 files; use load_images")
    with pytest.raises(ImageLoadError, match="not an ipywidgets FileUpload value"):
        iter_upload(42)


def test_filelike_upload_widget_object():
    class FileUpload:  # stands in for ipywidgets.FileUpload
        def __init__(self, value):
            self.value = value

    assert [im.getpixel((0, 0)) for im in load_images(FileUpload(_upload_v8(*UPLOADED)))] == [RED, GREEN, BLUE]
    assert load_image(FileUpload(_upload_v8(UPLOADED[1]))).getpixel((0, 0)) == GREEN
    with pytest.raises(ImageLoadError, match="FileUpload widget is empty"):
        load_images(FileUpload(()))


# ------------------------------------------------------------------------------------------------
# EXIF and mode conversions
# ------------------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (64, 32), BLUE)
    im.paste(RED, (0, 0, 16, 16))  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    im.save(path, "JPEG", quality=95, exif=exif)
    out = load_image(path)
    assert out.size == (32, 64)
    assert _close(out.getpixel((24, 8)), RED, 30)  # the marker is now top-right
    assert _close(out.getpixel((8, 8)), BLUE, 30)
    assert _close(out.getpixel((24, 56)), BLUE, 30)


def test_rgba_png_composited_on_white(tmp_path):
    im = Image.new("RGBA", (3, 1))
    im.putdata([(255, 0, 0, 0), (0, 0, 0, 128), (0, 255, 0, 255)])
    out = load_image(_write(tmp_path / "alpha.png", _encode(im)))
    assert out.getpixel((0, 0)) == WHITE
    assert _close(out.getpixel((1, 0)), (127, 127, 127))
    assert out.getpixel((2, 0)) == GREEN


def test_la_and_pa():
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (0, 255)])
    out = load_image(la)
    assert [out.getpixel((x, 0)) for x in range(2)] == [WHITE, BLACK]
    pa = Image.new("PA", (2, 1))
    pa.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pa.putdata([(0, 0), (1, 255)])
    out = load_image(pa)
    assert [out.getpixel((x, 0)) for x in range(2)] == [WHITE, BLUE]


def test_palette_with_transparency_index(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putdata([0, 1])
    path = tmp_path / "pal.png"
    im.save(path, transparency=0)
    out = load_image(path)
    assert [out.getpixel((x, 0)) for x in range(2)] == [WHITE, GREEN]


def test_rgb_with_transparent_colour_key(tmp_path):
    im = Image.new("RGB", (2, 1), RED)
    im.putpixel((1, 0), GREEN)
    path = tmp_path / "key.png"
    im.save(path, transparency=RED)
    out = load_image(path)
    assert [out.getpixel((x, 0)) for x in range(2)] == [WHITE, GREEN]


def test_bilevel_mode_1(tmp_path):
    im = Image.new("1", (2, 1))
    im.putpixel((1, 0), 1)
    out = load_image(_write(tmp_path / "bw.png", _encode(im)))
    assert [out.getpixel((x, 0)) for x in range(2)] == [BLACK, WHITE]


def test_cmyk_tiff(tmp_path):
    path = tmp_path / "cmyk.tif"
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(path)
    assert load_image(path).getpixel((0, 0)) == RED


def test_other_colour_spaces():
    assert load_image(Image.new("YCbCr", (1, 1), (255, 128, 128))).getpixel((0, 0)) == WHITE
    assert load_image(Image.new("HSV", (1, 1), (0, 255, 255))).getpixel((0, 0)) == RED
    assert _close(load_image(Image.new("LAB", (1, 1), (255, 128, 128))).getpixel((0, 0)), WHITE, 3)


def test_sixteen_bit_png(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    src = Image.fromarray(arr)
    assert src.mode == "I;16"
    out = load_image(_write(tmp_path / "deep.png", _encode(src)))
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    assert out.getpixel((1, 0)) == (128, 128, 128)


def test_sixteen_bit_big_endian_and_mode_i():
    big = Image.new("I;16B", (2, 1))
    big.putpixel((0, 0), 65535)
    out = load_image(big)
    assert [out.getpixel((x, 0)) for x in range(2)] == [WHITE, BLACK]
    sixteen = load_image(Image.fromarray(np.array([[0, 65535]], dtype=np.int32)))
    assert [sixteen.getpixel((x, 0)) for x in range(2)] == [BLACK, WHITE]
    wide = load_image(Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32)))
    values = [wide.getpixel((x, 0))[0] for x in range(3)]
    assert values[0] == 0 and values[2] == 255 and abs(values[1] - 128) <= 1


def test_float_mode_f(tmp_path):
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    out = load_image(unit)
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    wide = Image.fromarray(np.array([[-1.0, 1.0, 3.0]], dtype=np.float32))
    path = tmp_path / "float.tif"
    wide.save(path)
    values = [load_image(path).getpixel((x, 0))[0] for x in range(3)]
    assert values[0] == 0 and values[2] == 255 and abs(values[1] - 128) <= 1


@pytest.mark.parametrize(("fmt", "suffix"), [("GIF", "gif"), ("PNG", "png"), ("WEBP", "webp")])
def test_animated_image_gives_first_frame(tmp_path, fmt, suffix):
    path = tmp_path / f"anim.{suffix}"
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, GREEN, BLUE)]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=50, loop=0, **extra)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 3
    assert load_image(path).getpixel((4, 4)) == RED


# ------------------------------------------------------------------------------------------------
# bad inputs: each must fail fast with a one-line message naming the input
# ------------------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    path = tmp_path / "nope.png"
    _raises(path, "No such file", contains=str(path))
    _raises(str(path), r"current folder is", contains=os.getcwd())


def test_directory(tmp_path):
    _raises(tmp_path, r"is a folder; use load_images\(folder\)", contains=str(tmp_path))


def test_zero_byte_file(tmp_path):
    path = _write(tmp_path / "empty.png", b"")
    _raises(path, r"empty \(0 bytes\)", contains=str(path))
    _raises(b"", r"empty \(0 bytes\)", contains="bytes (0 bytes)")


def test_truncated_png_and_jpeg(tmp_path):
    for name, fmt in (("half.png", "PNG"), ("half.jpg", "JPEG")):
        data = _encode(_noise((96, 96)), fmt)
        path = _write(tmp_path / name, data[: len(data) // 2])
        err = _raises(path, "truncated or corrupt", contains=str(path))
        assert err.__cause__ is not None  # re-raised from Pillow's own error
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_png_cut_inside_the_header(tmp_path):
    path = _write(tmp_path / "stub.png", _solid_png()[:12])
    _raises(path, "truncated or corrupt PNG", contains=str(path))


def test_svg_saved_as_png(tmp_path):
    svg = b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'
    path = _write(tmp_path / "logo.png", svg)
    err = _raises(path, "vector format", contains="cairosvg")
    assert str(path) in str(err)
    _raises(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "SVG")


def test_html_saved_as_png(tmp_path):
    path = _write(tmp_path / "cat.png", b"<!DOCTYPE html>\n<html><head><title>Cat</title></head><body></body></html>")
    err = _raises(path, "HTML/text, not an image", contains="saved web page")
    assert str(path) in str(err)
    _raises(_write(tmp_path / "notes.jpg", "plain text, ünïcödé 고양이\n".encode() * 20), "HTML/text")


def test_heic_magic(tmp_path):
    data = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    path = _write(tmp_path / "IMG_0001.HEIC", data)
    err = _raises(path, r"pip install pillow-heif", contains="pillow_heif.register_heif_opener()")
    assert str(path) in str(err) and err.__cause__ is not None
    for brand in (b"heix", b"mif1", b"hevc"):
        _raises(struct.pack(">I", 16) + b"ftyp" + brand + b"\x00" * 40, "HEIC/HEIF")


def test_pdf_magic(tmp_path):
    path = _write(tmp_path / "scan.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")
    _raises(path, "PDF", contains=str(path))


def test_random_garbage(tmp_path):
    data = b"\x01\x02" + np.random.default_rng(0).bytes(4000)
    path = _write(tmp_path / "noise.png", data)
    _raises(path, "not in an image format Pillow can read", contains=str(path))
    _raises(data, "not in an image format", contains="bytes (4,002 bytes)")


def test_unsupported_types():
    _raises(42, "object of type int", contains="numpy array")
    _raises(3.5, "object of type float")
    _raises([b"x"], "use load_images")
    _raises({"a": 1}, "object of type dict")
    with pytest.raises(ImageLoadError, match="object of type dict"):
        load_images({"a": 1})


# ------------------------------------------------------------------------------------------------
# decompression bombs
# ------------------------------------------------------------------------------------------------


def test_bomb_beyond_pillow_hard_limit(tmp_path):
    path = _write(tmp_path / "bomb.png", _png_header_only(20000, 20000))
    assert path.stat().st_size < 100
    err = _raises(path, "max_pixels", contains="400,000,000 pixels")
    assert str(path) in str(err) and "decompression bomb" in str(err)


def test_bomb_in_pillow_warning_zone(tmp_path):
    filters_before = list(warnings.filters)
    path = _write(tmp_path / "big.png", _png_header_only(10000, 10000))
    _raises(path, r"max_pixels=100000000", contains="100,000,000 pixels")
    assert warnings.filters == filters_before


def test_header_check_with_small_max_pixels(tmp_path):
    path = _write(tmp_path / "hundred.png", _solid_png(RED, (100, 100)))
    _raises(path, r"100x100 = 10,000 pixels, more than max_pixels=5,000", contains="max_pixels=None", max_pixels=5000)
    assert load_image(path, max_pixels=10_000).size == (100, 100)
    assert load_image(path, max_pixels=None).size == (100, 100)


def test_max_pixels_above_pillow_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warn_zone = _write(tmp_path / "w.png", _solid_png(GREEN, (40, 40)))  # 1,600 pixels
    hard = _write(tmp_path / "h.png", _solid_png(GREEN, (50, 50)))  # 2,500 > 2 x 1,000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our call must not leak Pillow's warning
        assert load_image(warn_zone, max_pixels=10_000).getpixel((0, 0)) == GREEN
    _raises(warn_zone, "max_pixels=500", max_pixels=500)
    _raises(hard, r"PIL\.Image\.MAX_IMAGE_PIXELS = None", max_pixels=None)


# ------------------------------------------------------------------------------------------------
# folders, lists and progress
# ------------------------------------------------------------------------------------------------


def _make_folder(folder: Path) -> Path:
    folder.mkdir()
    Image.new("RGB", (4, 4), GREEN).save(folder / "b.png")
    Image.new("RGB", (4, 4), RED).save(folder / "a.jpg", quality=100)
    Image.new("RGB", (4, 4), BLUE).save(folder / "c.bmp")
    Image.new("RGB", (4, 4), BLACK).save(folder / "d.PNG", "PNG")
    Image.new("RGB", (4, 4), WHITE).save(folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "data.xyz").write_bytes(b"\x00\x01")
    (folder / "sub.png").mkdir()
    return folder


def test_image_files_and_load_images_of_a_folder(tmp_path):
    folder = _make_folder(tmp_path / "photos")
    assert [p.name for p in image_files(folder)] == ["a.jpg", "b.png", "c.bmp", "d.PNG"]
    colours = [im.getpixel((1, 1)) for im in load_images(folder)]
    assert len(colours) == 4
    assert _close(colours[0], RED, 4) and colours[1:] == [GREEN, BLUE, BLACK]
    assert [im.getpixel((0, 0)) for im in load_images(str(folder / "*.png"))] == [GREEN]


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("hi")
    (folder / ".secret.png").write_bytes(_solid_png())
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="has no image files") as info:
        load_images(folder)
    assert time.perf_counter() - start < 1.0
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
    assert image_files(folder) == []


def test_image_files_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="No such folder"):
        image_files(tmp_path / "missing")
    with pytest.raises(ImageLoadError, match="is a file, not a folder"):
        image_files(_write(tmp_path / "x.png", _solid_png()))
    with pytest.raises(ImageLoadError, match="No file matches"):
        load_images(str(tmp_path / "*.gif"))


def test_load_images_of_a_mixed_list_keeps_order(tmp_path):
    path = _write(tmp_path / "r.png", _solid_png(RED))
    srcs = [path, _solid_png(GREEN), np.zeros((2, 2, 3), np.uint8) + np.uint8(255), Image.new("L", (2, 2), 0)]
    assert [im.getpixel((0, 0)) for im in load_images(srcs)] == [RED, GREEN, WHITE, BLACK]
    assert [im.getpixel((0, 0)) for im in load_images(tuple(srcs[:2]))] == [RED, GREEN]
    assert load_images([]) == []
    assert load_images(path)[0].getpixel((0, 0)) == RED


def test_load_images_error_names_the_bad_item(tmp_path):
    good = _write(tmp_path / "good.png", _solid_png())
    bad = _write(tmp_path / "bad.png", b"")
    with pytest.raises(ImageLoadError, match="empty") as info:
        load_images([good, bad])
    assert str(bad) in str(info.value)


def test_progress_bar(capsys, tmp_path):
    one = _write(tmp_path / "one.png", _solid_png())
    many = [one] * (images.PROGRESS_THRESHOLD + 1)
    assert len(load_images(many)) == len(many)
    assert "Loading images" in capsys.readouterr().err
    load_images(many[:3])
    assert "Loading images" not in capsys.readouterr().err
    load_images(many[:3], progress=True)
    assert "Loading images" in capsys.readouterr().err
    load_images(many, progress=False)
    assert "Loading images" not in capsys.readouterr().err


def test_no_progress_bar_for_pictures_already_in_memory(capsys):
    in_memory = [np.zeros((2, 2), np.uint8), Image.new("RGB", (2, 2))] * images.PROGRESS_THRESHOLD
    assert len(load_images(in_memory)) == len(in_memory)
    assert "Loading images" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# URLs against a local http.server
# ------------------------------------------------------------------------------------------------

PAGE = b"<!DOCTYPE html><html><head><title>A cat</title></head><body><img src='cat.png'></body></html>"
BIG = _encode(_noise((64, 64), seed=1))


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output quiet
        pass

    def _send(self, body: bytes, content_type: str, *, length: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.server.seen_agents.append(self.headers.get("User-Agent", ""))
        try:
            if self.path == "/red.png":
                self._send(_solid_png(RED, (4, 3)), "image/png")
            elif self.path == "/page.html":
                self._send(PAGE, "text/html; charset=utf-8")
            elif self.path == "/slow.png":
                self.server.release.wait(5)
                self._send(_solid_png(), "image/png")
            elif self.path == "/big.png":
                self._send(BIG, "image/png")
            elif self.path == "/big-stream.png":
                self._send(BIG, "image/png", length=False)
            elif self.path == "/forbidden.png":
                self.send_error(403)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def img_server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.release = threading.Event()
    server.seen_agents = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_url_png(img_server):
    server, base = img_server
    im = load_image(f"{base}/red.png")
    assert im.size == (4, 3) and im.getpixel((3, 2)) == RED
    assert "mllm_nb" in server.seen_agents[-1]
    assert [i.getpixel((0, 0)) for i in load_images([f"{base}/red.png", f"{base}/red.png"])] == [RED, RED]


def test_url_http_errors(img_server):
    _, base = img_server
    url = f"{base}/missing.png"
    _raises(url, r"HTTP 404", contains=url)
    _raises(f"{base}/forbidden.png", r"HTTP 403.*download the file in a browser")


def test_url_html_page(img_server):
    _, base = img_server
    url = f"{base}/page.html"
    _raises(url, r"returned HTML \(text/html\), not an image", contains=url)


def test_url_timeout(img_server):
    _, base = img_server
    _raises(f"{base}/slow.png", r"timed out after 0\.5 s", contains="timeout=", limit_s=2.0, timeout=0.5)


def test_url_larger_than_max_bytes(img_server):
    _, base = img_server
    assert len(BIG) > 2000
    _raises(f"{base}/big.png", r"max_bytes=2,000", contains="big.png", max_bytes=2000)
    _raises(f"{base}/big-stream.png", r"max_bytes=2,000", contains="big-stream.png", max_bytes=2000)
    assert load_image(f"{base}/big.png", max_bytes=len(BIG)).size == (64, 64)


def test_url_connection_refused(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.png"
    _raises(url, "connection refused", contains=url)
