"""Bytes, arrays and PIL images -> a checked RGB ``PIL.Image`` (the leaf under :mod:`mllm_nb.images`).

Sniffing (what the bytes really are), decoding with Pillow under a pixel limit (decompression bombs),
reading regular files only (never pipes or devices), ``data:`` URLs, EXIF orientation, the first frame
of animations, and conversion of every mode and array layout to RGB; each failure is an
``ImageLoadError`` with one sentence that names the input.

>>> import numpy as np
>>> rgb_from_array(np.zeros((2, 3), dtype=np.uint8)).size
(3, 2)
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import struct
import urllib.parse
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mllm_nb.errors import ImageLoadError

_WHITE = (255, 255, 255, 255)
# What PIL's decoders raise on broken data (they are not consistent about it).
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error,
    IndexError, KeyError, TypeError, ZeroDivisionError, NotImplementedError,
)
_HEIF_BRANDS = {b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_RASTER_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
# Pillow's EPS reader runs Ghostscript on the file: never opened here.
_NEVER_OPEN = frozenset({"EPS"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SNIFF_BYTES = 1024
_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder",
}


def decode(
    fp: IO[bytes],
    head: bytes,
    label: str,
    *,
    max_pixels: int | None,
    url_content_type: str | None = None,
) -> Image.Image:
    """Open, guard, fully decode and convert one encoded image; every failure becomes ``ImageLoadError``."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    escalate = max_pixels is not None and (pil_limit is None or max_pixels <= pil_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error" if escalate else "ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(fp, formats=_safe_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _bomb_error(label, err, max_pixels) from err
        except (UnidentifiedImageError, *_DECODE_ERRORS) as err:
            raise _unreadable_error(label, head, url_content_type) from err
        with im:
            _check_pixels(im, label, max_pixels)
            try:
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise _bomb_error(label, err, max_pixels) from err
            except _DECODE_ERRORS as err:
                raise _corrupt_error(label, im.format) from err
            out = _to_rgb(_exif_transpose(im))
            if out is im:
                out = im.copy()
    out.load()
    return out


def decode_file(path: Path, label: str, *, max_pixels: int | None) -> Image.Image:
    """``decode`` a regular file; pipes and devices are refused before a read could block on them."""
    try:  # checked before and after opening; O_NONBLOCK: a pipe swapped in between does not block the open
        _require_regular(os.stat(path).st_mode, label)
        fh = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)), "rb")
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise ImageLoadError(f"Cannot read {label} ({why}); check its permissions.") from err
    with fh:
        try:
            _require_regular(os.fstat(fh.fileno()).st_mode, label)
            head = fh.read(_SNIFF_BYTES)
            fh.seek(0)
        except OSError as err:
            raise ImageLoadError(f"Cannot read {label} ({err.strerror or type(err).__name__}); copy it again.") from err
        if not head:
            raise ImageLoadError(f"{sentence_start(label)} is empty (0 bytes); re-download or re-export the image.")
        return decode(fh, head, label, max_pixels=max_pixels)


def _require_regular(mode: int, label: str) -> None:
    if not stat.S_ISREG(mode):
        what = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise ImageLoadError(f"{sentence_start(label)} is {what}, not an image file; pass a regular image file.")


def _safe_formats() -> list[str]:
    """Every format Pillow can open now (plugins included), less those that run external programs."""
    Image.init()
    return [fmt for fmt in Image.ID if fmt not in _NEVER_OPEN]


def _check_pixels(im: Image.Image, label: str, max_pixels: int | None) -> None:
    """Refuse images whose header declares more than ``max_pixels`` pixels, before decoding them."""
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            f"{sentence_start(label)} declares {width}x{height} = {width * height:,} pixels, more than "
            f"max_pixels={max_pixels:,} (a guard against decompression bombs); if you trust it, "
            f"pass max_pixels={width * height} or max_pixels=None."
        )


def _bomb_error(label: str, err: BaseException, max_pixels: int | None) -> ImageLoadError:
    """Our message for Pillow's own ``DecompressionBombError`` / ``DecompressionBombWarning``."""
    numbers = re.findall(r"\d+", str(err))
    pixels = int(numbers[0]) if numbers else None
    declared = f"{pixels:,} pixels" if pixels else "too many pixels"
    if not isinstance(err, Image.DecompressionBombError):
        todo = f"if you trust it, pass max_pixels={pixels or 'None'} or max_pixels=None"
    elif max_pixels is None or (pixels is not None and max_pixels >= pixels):
        todo = "if you trust it, also raise Pillow's own limit with PIL.Image.MAX_IMAGE_PIXELS = None"
    else:
        todo = f"if you trust it, pass max_pixels={pixels or 'None'} and set PIL.Image.MAX_IMAGE_PIXELS = None"
    limit = "Pillow's limit" if max_pixels is None else f"max_pixels={max_pixels:,}"
    return ImageLoadError(
        f"{sentence_start(label)} declares {declared}, more than {limit} (a guard against decompression bombs); {todo}."
    )


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored rather than fatal."""
    try:
        return ImageOps.exif_transpose(im)
    except _DECODE_ERRORS:
        return im.copy()


def _sniff(head: bytes) -> str | None:
    """Name what a non-image file really is, from its first bytes: svg, html, text, pdf, heif, avif, zip, ..."""
    if head[4:8] == b"ftyp":
        brands = {head[i : i + 4] for i in range(8, min(len(head), 64), 4)}
        if brands & _AVIF_BRANDS:
            return "avif"
        return "heif" if brands & _HEIF_BRANDS else "video"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska / WebM
        return "video"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "eps"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!doctype svg", b"<!--")) and b"<svg" in text):
        return "svg"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:256]:
        return "html"
    if _is_mostly_text(head):
        return "text"
    return None


def _is_mostly_text(head: bytes) -> bool:
    """Whether ``head`` is UTF-8 text made (almost) only of printable characters."""
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # invalid in the middle, not just a character cut at the end
            return False
        text = head[: err.start].decode("utf-8")
    if not text:
        return False
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\t\n\r")
    return printable / len(text) >= 0.95


def _unreadable_error(label: str, head: bytes, url_content_type: str | None = None) -> ImageLoadError:
    """Explain why Pillow could not identify the data, using the first bytes."""
    kind = _sniff(head)
    it = sentence_start(label)
    if kind == "svg":
        return ImageLoadError(
            f"{it} is an SVG, a vector format; rasterize it first, e.g. with cairosvg, or export a PNG."
        )
    if kind in ("html", "text"):
        what = "HTML" if kind == "html" else "text"
        if url_content_type is not None:
            ctype = f" ({url_content_type})" if url_content_type else ""
            return ImageLoadError(
                f"{it} returned {what}{ctype}, not an image — a web page? "
                "use the address of the image itself (right-click the image, Copy image address)."
            )
        return ImageLoadError(
            f"{it} contains HTML/text, not an image — a saved web page? download the image file itself."
        )
    if kind == "pdf":
        return ImageLoadError(f"{it} is a PDF document; convert the page to an image first (e.g. with pdf2image).")
    if kind == "heif":
        return ImageLoadError(
            f"{it} is a HEIC/HEIF image, which Pillow cannot read without a plugin; "
            "pip install pillow-heif and call pillow_heif.register_heif_opener()."
        )
    if kind == "avif":
        return ImageLoadError(
            f"{it} is an AVIF image that this Pillow cannot read; "
            "upgrade Pillow (11.2+ reads AVIF) or pip install pillow-avif-plugin and import pillow_avif."
        )
    if kind == "zip":
        return ImageLoadError(f"{it} is a ZIP archive, not an image; unzip it and load the files inside.")
    if kind == "gzip":
        return ImageLoadError(f"{it} is gzip-compressed, not an image; decompress it first (gunzip, gzip.decompress).")
    if kind == "eps":
        return ImageLoadError(
            f"{it} is PostScript/EPS, which is not opened because reading it runs Ghostscript; export it as PNG first."
        )
    if kind == "video":
        return ImageLoadError(f"{it} is a video (MP4/MOV/WebM), not an image; save one frame as PNG or JPEG first.")
    fmt = next((name for magic, name in _RASTER_MAGIC.items() if head.startswith(magic)), None)
    if fmt is not None:
        return _corrupt_error(label, fmt)
    return ImageLoadError(
        f"{it} is not in an image format Pillow can read (it starts with {head[:8]!r}); "
        "check that it really is an image (png, jpg, gif, bmp, webp, tiff)."
    )


def _corrupt_error(label: str, fmt: str | None = None) -> ImageLoadError:
    kind = f"{fmt} image" if fmt else "image"
    return ImageLoadError(
        f"{sentence_start(label)} is a truncated or corrupt {kind}; re-download it or re-export it from the original."
    )


def too_many_bytes_error(label: str, max_bytes: int, verb: str = "is larger than") -> ImageLoadError:
    """The message for data over ``max_bytes``; ``verb`` may say e.g. "decompresses to more than"."""
    return ImageLoadError(
        f"{sentence_start(label)} {verb} max_bytes={max_bytes:,} bytes; "
        "pass a larger max_bytes= if you trust it, or use a smaller image."
    )


# --------------------------------------------------------------------------------------------------
# text encodings: data: URLs and bare base64
# --------------------------------------------------------------------------------------------------


def data_url_bytes(url: str, label: str, max_bytes: int | None) -> bytes:
    """The bytes held by a ``data:[<mediatype>][;base64],<data>`` URL."""
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise ImageLoadError(
            f"{sentence_start(label)} has no ',' separating header and data; expected data:image/png;base64,...."
        )
    if max_bytes is not None and len(payload) > 3 * max_bytes + 16:
        raise too_many_bytes_error(label, max_bytes)
    if header.lower().endswith(";base64"):
        try:
            return base64.b64decode(re.sub(r"\s+", "", urllib.parse.unquote(payload)), validate=True)
        except (binascii.Error, ValueError) as err:
            raise ImageLoadError(
                f"{sentence_start(label)} holds invalid base64 data; copy the whole URL again."
            ) from err
    return urllib.parse.unquote_to_bytes(payload)


def looks_like_base64_image(text: str) -> bool:
    """Whether a long string is base64 whose decoded start is a PNG/JPEG/GIF/WebP/BMP signature."""
    if len(text) < 64 or not re.fullmatch(r"[A-Za-z0-9+/=\s]+", text[:4096]):
        return False
    try:
        head = base64.b64decode(re.sub(r"\s+", "", text[:4096])[:64])
    except (binascii.Error, ValueError):
        return False
    return head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM"))


# --------------------------------------------------------------------------------------------------
# mode conversion
# --------------------------------------------------------------------------------------------------


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: alpha on white, high bit depths scaled to 8 bits."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
        return _composite_on_white(im)
    if mode.startswith("I;16") or mode == "I":
        return _gray_to_rgb(_scale_integer(np.asarray(im)))
    if mode == "F":
        return _gray_to_rgb(_scale_float(np.asarray(im, dtype=np.float64)))
    try:
        return im.convert("RGB")
    except ValueError as err:
        raise ImageLoadError(
            f"Image mode {mode!r} cannot be converted to RGB; convert it yourself and pass a PIL RGB image."
        ) from err


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).convert("RGB")


def _scale_integer(arr: np.ndarray) -> np.ndarray:
    """16-bit data scales by 65535 -> 255; other 32-bit integer data by its own min-max range."""
    arr = arr.astype(np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo >= 0 and hi <= 65535:
        return np.round(arr * (255.0 / 65535.0)).astype(np.uint8)
    return _min_max(arr, lo, hi)


def _scale_float(arr: np.ndarray) -> np.ndarray:
    """Float data in [0, 1] scales by 255; anything else is min-max normalised."""
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1:
        return np.round(arr * 255.0).astype(np.uint8)
    return _min_max(arr, lo, hi)


def _min_max(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.full(arr.shape, np.clip(round(lo), 0, 255), dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# in-memory images: PIL and numpy
# --------------------------------------------------------------------------------------------------


def rgb_from_pil(im: Image.Image) -> Image.Image:
    """A new RGB image from a PIL image; the input is never changed."""
    label = f"PIL image (mode {im.mode}, {im.width}x{im.height})"
    if im.width * im.height == 0:
        raise ImageLoadError(f"The {label} has no pixels; pass an image at least 1x1 in size.")
    try:
        if getattr(im, "is_animated", False):
            im = _first_frame(im)
        out = _to_rgb(_exif_transpose(im))
    except ImageLoadError:
        raise
    except _DECODE_ERRORS as err:
        raise ImageLoadError(
            f"{sentence_start(label)} could not be read (it may be truncated or already closed); reopen or reload it."
        ) from err
    if out is im:
        out = im.copy()
    out.load()
    return out


def _first_frame(im: Image.Image) -> Image.Image:
    """A copy of frame 0 of an animated image, leaving the caller's frame position as it was."""
    position = im.tell()
    try:
        im.seek(0)
        return im.copy()
    finally:
        im.seek(position)


def rgb_from_array(arr: np.ndarray) -> Image.Image:
    """HxW, HxWx1, HxWx3 or HxWx4 array (uint8, bool, small ints or floats in 0-1) to RGB."""
    label = f"array of shape {tuple(arr.shape)} and dtype {arr.dtype}"
    arr = _array_to_hwc(arr, label)
    arr = _array_to_uint8(arr, label)
    if arr.ndim == 2:
        return Image.fromarray(arr).convert("RGB")
    if arr.shape[2] == 4:
        return _composite_on_white(Image.fromarray(arr))
    return Image.fromarray(arr).convert("RGB")


def _array_to_hwc(arr: np.ndarray, label: str) -> np.ndarray:
    """Check the shape; return an HxW or HxWxC (C = 3, 4) array."""
    if arr.size == 0:
        raise ImageLoadError(f"The {label} is empty; pass an array with at least one pixel.")
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (3, 4) and min(arr.shape[1:]) > 4:
        raise ImageLoadError(
            f"The {label} looks channels-first (CxHxW); pass arr.transpose(1, 2, 0) to make it HxWxC."
        )
    if arr.ndim == 3 and arr.shape[2] not in (3, 4):
        raise ImageLoadError(
            f"The {label} has {arr.shape[2]} channels; pass 1 (grey), 3 (RGB) or 4 (RGBA) channels in the last axis."
        )
    if arr.ndim == 4 and arr.shape[0] == 1:
        raise ImageLoadError(f"The {label} is a batch of one image; pass arr[0] instead.")
    if arr.ndim not in (2, 3):
        raise ImageLoadError(
            f"The {label} has {arr.ndim} dimensions; pass an HxW (grey) or HxWxC (RGB/RGBA) array."
        )
    return arr


def _array_to_uint8(arr: np.ndarray, label: str) -> np.ndarray:
    """uint8 stays; bool becomes 0/255; floats in [0, 1] are scaled by 255; integers must fit 0-255 or be uint16."""
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageLoadError(f"The {label} contains NaN or infinite values; replace them, e.g. np.nan_to_num(arr).")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            raise ImageLoadError(
                f"The {label} has values from {lo:g} to {hi:g}, but float images must lie in [0, 1]; "
                "pass arr / 255 (or arr.astype('uint8') if it already holds 0-255 values)."
            )
        return np.round(arr * 255.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 255:
            return arr.astype(np.uint8)
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # uint16 of either byte order
            return np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        raise ImageLoadError(
            f"The {label} has values from {lo} to {hi}; scale it to 0-255 and pass arr.astype('uint8')."
        )
    raise ImageLoadError(f"The {label} has an unsupported dtype; pass uint8 (0-255), bool or float (0-1) data.")



def sentence_start(text: str) -> str:
    """Capitalise the first letter of a label so it can start a sentence.

    >>> sentence_start("uRL 'x'")
    "URL 'x'"
    """
    return text[:1].upper() + text[1:]


def shown(text: str, limit: int = 200) -> str:
    """``text`` for a one-line message: control characters escaped, cut to ``limit`` characters.

    >>> shown("a\\nb.png")
    'a\\\\nb.png'
    """
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
