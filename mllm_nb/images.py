"""Turn anything that looks like an image into a plain RGB ``PIL.Image``.

``load_image`` accepts paths, URLs, ``data:`` URLs, bytes, file objects, PIL images, numpy arrays and
the entries of an ipywidgets ``FileUpload``; ``load_images`` does the same for a list, a folder or a
whole upload. Every failure is an ``ImageLoadError`` whose one-sentence message names the input and
says what to do::

    import mllm_nb as mn
    img = mn.load_image("https://example.com/cat.jpg")
    imgs = mn.load_images("photos/")
"""

from __future__ import annotations

import base64
import binascii
import glob
import os
import re
import socket
import struct
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mllm_nb.errors import ImageLoadError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "load_image",
    "load_images",
    "iter_upload",
    "image_files",
]

#: File extensions (lower case, with the dot) that ``image_files`` and ``load_images(folder)`` pick up.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
)
#: Largest download / byte string ``load_image`` accepts by default (50 MiB).
DEFAULT_MAX_BYTES: int = 50 * 2**20
#: Largest ``width * height`` accepted by default: Pillow's own limit at import time.
DEFAULT_MAX_PIXELS: int = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

#: Inputs whose bar is shown when ``progress=None``: more than this many.
PROGRESS_THRESHOLD = 16

_USER_AGENT = "mllm_nb/0.1 (https://pypi.org/project/mllm-nb; Python urllib) image loader"
_SNIFF_BYTES = 1024
_WHITE = (255, 255, 255, 255)
_ACCEPTED = (
    "a file path, an http(s):// or data: URL, bytes, a binary file object, a PIL image, "
    "a numpy array (HxW, HxWx1, HxWx3 or HxWx4) or an ipywidgets FileUpload entry"
)
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

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray, Mapping]


@dataclass(frozen=True)
class _Upload:
    """One uploaded file, already normalised to a name and its bytes."""

    name: str
    data: bytes


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def load_image(
    src: ImageSource,
    *,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Load one image from (almost) anything and return a new, fully loaded RGB ``PIL.Image``.

    ``src`` may be a path (``~`` is expanded), an ``http(s)://`` or ``data:`` URL, bytes, a binary
    file object, a PIL image (it is copied, never changed), a numpy array or an ipywidgets
    ``FileUpload`` entry. EXIF rotation is applied, animations give their first frame, transparency
    is composited on white and 16-bit / float images are scaled to 8 bits. ``timeout`` (seconds)
    and ``max_bytes`` limit downloads and in-memory data, ``max_pixels`` limits ``width * height``
    (``None`` turns our check off). Any failure raises ``ImageLoadError``.

    >>> import numpy as np
    >>> load_image(np.zeros((4, 6), dtype=np.uint8)).size
    (6, 4)
    """
    src = _unwrap_widget(src)
    if isinstance(src, _Upload):
        return _load_upload(src, max_bytes=max_bytes, max_pixels=max_pixels)
    if isinstance(src, Image.Image):
        return _from_pil(src)
    if isinstance(src, np.ndarray):
        return _from_array(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        label = f"{type(src).__name__} ({len(data):,} bytes)"
        return _from_bytes(data, label, max_bytes=max_bytes, max_pixels=max_pixels)
    if isinstance(src, str):
        return _from_string(src, timeout=timeout, max_bytes=max_bytes, max_pixels=max_pixels)
    if isinstance(src, os.PathLike):
        return _from_path(Path(src), max_pixels=max_pixels)
    if _is_upload_entry(src) or _is_upload_value(src):
        return _from_upload_value(src, max_bytes=max_bytes, max_pixels=max_pixels)
    if hasattr(src, "read"):
        return _from_file_object(src, max_bytes=max_bytes, max_pixels=max_pixels)
    raise _unsupported_type_error(src)


def load_images(
    srcs: Any,
    *,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool | None = None,
) -> list[Image.Image]:
    """Load many images with ``load_image`` and return them as a list of RGB ``PIL.Image``.

    ``srcs`` may be a list/tuple of sources, a folder (every image file in it, sorted by name,
    hidden files skipped), a glob pattern such as ``"photos/*.jpg"``, or the ``.value`` of an
    ipywidgets ``FileUpload`` (images in upload order). A ``tqdm`` bar is shown when
    ``progress=True``, or with ``progress=None`` when more than 16 of them must be read or decoded
    (files, URLs, bytes, uploads; PIL images and arrays need no bar).

    >>> import numpy as np
    >>> [im.size for im in load_images([np.zeros((2, 3)), np.ones((5, 5))])]
    [(3, 2), (5, 5)]
    """
    items = _expand_sources(srcs)
    show = _needs_progress(items) if progress is None else bool(progress)
    if show:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="Loading images", unit="img")
    return [load_image(item, timeout=timeout, max_bytes=max_bytes, max_pixels=max_pixels) for item in items]


def _needs_progress(items: list[Any]) -> bool:
    """Auto rule: a bar for many items that take I/O or decoding; in-memory pictures load instantly."""
    to_read = [item for item in items if not isinstance(item, (Image.Image, np.ndarray))]
    return len(to_read) > PROGRESS_THRESHOLD


def iter_upload(value: Any) -> list[tuple[str, bytes]]:
    """Normalise an ipywidgets ``FileUpload`` value to ``[(filename, bytes), ...]`` in upload order.

    Understands ipywidgets 7.x (a dict ``{filename: {"metadata": {...}, "content": bytes}}``),
    ipywidgets 8.x (a tuple of dicts with ``"name"`` and ``"content"`` as a memoryview), a single
    entry of either kind, and the ``FileUpload`` widget itself.

    >>> iter_upload(({"name": "a.png", "content": memoryview(b"abc")},))
    [('a.png', b'abc')]
    """
    value = _unwrap_widget(value)
    if _is_upload_entry(value):
        return [_entry_pair(value)]
    if isinstance(value, Mapping):
        return [_entry_pair(entry, fallback_name=str(key)) for key, entry in value.items()]
    if isinstance(value, (list, tuple)):
        return [_entry_pair(entry) for entry in value]
    raise ImageLoadError(
        f"A {type(value).__name__} is not an ipywidgets FileUpload value; "
        "pass upload.value (a dict in ipywidgets 7, a tuple of dicts in ipywidgets 8)."
    )


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Return the image files of ``folder`` (by extension, see ``IMAGE_EXTENSIONS``), sorted by name.

    Hidden files (names starting with ``.``) and sub-folders are skipped.

    >>> import tempfile
    >>> image_files(tempfile.mkdtemp())
    []
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        if path.exists():
            raise ImageLoadError(f"'{path}' is a file, not a folder; use load_image(path) to load a single image.")
        raise ImageLoadError(f"No such folder '{path}'; check the path (current folder is '{Path.cwd()}').")
    files = [
        p for p in path.iterdir()
        if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    ]
    return sorted(files, key=lambda p: p.name)


# --------------------------------------------------------------------------------------------------
# source dispatch
# --------------------------------------------------------------------------------------------------


def _unwrap_widget(src: Any) -> Any:
    """Accept the ``FileUpload`` widget itself as well as its ``.value``."""
    if type(src).__name__ == "FileUpload" and hasattr(src, "value"):
        return src.value
    return src


def _expand_sources(srcs: Any) -> list[Any]:
    """Turn what ``load_images`` was given into a flat list of single sources."""
    if type(srcs).__name__ == "FileUpload" and not getattr(srcs, "value", None):
        raise ImageLoadError("The FileUpload widget is empty; pick one or more files with its button first.")
    srcs = _unwrap_widget(srcs)
    if isinstance(srcs, (str, os.PathLike)) and not _is_remote(srcs):
        return _expand_path_like(srcs)
    if _is_upload_value(srcs) or _is_upload_entry(srcs):
        return [_Upload(name, data) for name, data in iter_upload(srcs)]
    if isinstance(srcs, np.ndarray) and srcs.ndim == 4:
        return list(srcs)
    if isinstance(srcs, (str, bytes, bytearray, memoryview, Image.Image, np.ndarray, Mapping)) or not isinstance(
        srcs, Iterable
    ):
        return [srcs]
    return list(srcs)


def _expand_path_like(src: str | os.PathLike) -> list[Any]:
    """A folder gives its image files, a glob pattern its matches, anything else itself."""
    path = Path(src).expanduser()
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except (OSError, ValueError):  # not a usable path; load_image explains why
        return [path]
    if is_dir:
        files = image_files(path)
        if not files:
            raise ImageLoadError(
                f"Folder '{path}' has no image files; put images there ({', '.join(IMAGE_EXTENSIONS)}) "
                "or pass a list of paths."
            )
        return files
    if not exists and glob.has_magic(str(path)):
        matches = sorted(p for p in glob.glob(str(path)) if os.path.isfile(p))
        if not matches:
            raise ImageLoadError(f"No file matches the pattern '{path}'; check the pattern and the folder.")
        return [Path(p) for p in matches]
    return [path]


def _from_string(src: str, *, timeout: float, max_bytes: int, max_pixels: int | None) -> Image.Image:
    """A string is a URL, a ``data:`` URL or a path."""
    stripped = src.strip()
    if stripped[:5].lower() == "data:":
        return _from_data_url(stripped, max_bytes=max_bytes, max_pixels=max_pixels)
    if _is_url(stripped):
        data, content_type = _fetch_url(stripped, timeout=timeout, max_bytes=max_bytes)
        label = f"URL '{_short(stripped)}'"
        return _from_bytes(data, label, max_bytes=max_bytes, max_pixels=max_pixels, url_content_type=content_type)
    return _from_path(Path(src), max_pixels=max_pixels)


def _is_url(src: Any) -> bool:
    return isinstance(src, str) and src.strip()[:8].lower().startswith(("http://", "https://"))


def _is_remote(src: Any) -> bool:
    """An http(s):// or data: URL, which is never a folder or glob pattern."""
    return _is_url(src) or (isinstance(src, str) and src.strip()[:5].lower() == "data:")


def _from_path(path: Path, *, max_pixels: int | None) -> Image.Image:
    """Load a file from disk after checking that it exists, is a file and is not empty."""
    path = path.expanduser()
    label = f"file '{path}'"
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as err:  # e.g. a name too long, or a NUL character
        raise ImageLoadError(f"'{_short(str(path))}' is not a valid file path; check the string you passed.") from err
    if not exists:
        raise ImageLoadError(f"No such file '{path}'; check the path (current folder is '{Path.cwd()}').")
    if is_dir:
        raise ImageLoadError(f"'{path}' is a folder; use load_images(folder) to load every image in it.")
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as err:
        raise ImageLoadError(f"Cannot read {label} ({type(err).__name__}); check its permissions.") from err
    if not head:
        raise ImageLoadError(f"File '{path}' is empty (0 bytes); re-download or re-export the image.")
    return _decode(path, head, label, max_pixels=max_pixels)


def _from_bytes(
    data: bytes,
    label: str,
    *,
    max_bytes: int,
    max_pixels: int | None,
    url_content_type: str | None = None,
) -> Image.Image:
    """Decode an encoded image held in memory."""
    if not data:
        raise ImageLoadError(f"{_cap(label)} is empty (0 bytes); check where the data came from.")
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_many_bytes_error(label, max_bytes)
    return _decode(BytesIO(data), data[:_SNIFF_BYTES], label, max_pixels=max_pixels, url_content_type=url_content_type)


def _from_file_object(fh: Any, *, max_bytes: int, max_pixels: int | None) -> Image.Image:
    """Read at most ``max_bytes + 1`` bytes from a binary file-like object."""
    name = getattr(fh, "name", None)
    label = f"file object '{name}'" if isinstance(name, (str, os.PathLike)) else f"{type(fh).__name__} object"
    try:
        data = fh.read(max_bytes + 1) if max_bytes is not None else fh.read()
    except (OSError, ValueError) as err:
        raise ImageLoadError(f"Cannot read from {label} ({type(err).__name__}); is it open and readable?") from err
    if isinstance(data, str):
        raise ImageLoadError(f"{_cap(label)} was opened in text mode; open it with open(path, 'rb') instead.")
    return _from_bytes(bytes(data), label, max_bytes=max_bytes, max_pixels=max_pixels)


def _from_data_url(url: str, *, max_bytes: int, max_pixels: int | None) -> Image.Image:
    """Decode a ``data:[<mediatype>][;base64],<data>`` URL."""
    label = f"data: URL ({len(url):,} characters)"
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise ImageLoadError(
            f"{_cap(label)} has no ',' separating header and data; expected data:image/png;base64,...."
        )
    if max_bytes is not None and len(payload) > 3 * max_bytes + 16:
        raise _too_many_bytes_error(label, max_bytes)
    if header.lower().endswith(";base64"):
        try:
            data = base64.b64decode(re.sub(r"\s+", "", urllib.parse.unquote(payload)), validate=True)
        except (binascii.Error, ValueError) as err:
            raise ImageLoadError(f"{_cap(label)} holds invalid base64 data; copy the whole URL again.") from err
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    return _from_bytes(data, label, max_bytes=max_bytes, max_pixels=max_pixels)


def _unsupported_type_error(src: Any) -> ImageLoadError:
    kind = f"{type(src).__module__}.{type(src).__qualname__}".removeprefix("builtins.")
    hint = ""
    if isinstance(src, (list, tuple)):
        hint = " (for several images use load_images)"
    elif type(src).__module__.split(".")[0] == "torch":
        hint = " (for a CHW tensor use tensor.permute(1, 2, 0).cpu().numpy())"
    return ImageLoadError(f"Cannot load an image from an object of type {kind}{hint}; pass {_ACCEPTED}.")


# --------------------------------------------------------------------------------------------------
# ipywidgets FileUpload
# --------------------------------------------------------------------------------------------------


def _is_upload_entry(obj: Any) -> bool:
    """One uploaded file: a 7.x inner dict (``metadata`` + ``content``) or an 8.x dict (``name`` + ``content``)."""
    return isinstance(obj, Mapping) and "content" in obj and ("name" in obj or "metadata" in obj)


def _is_upload_value(obj: Any) -> bool:
    """A whole ``FileUpload.value``: a 7.x dict of entries or an 8.x tuple/list of entries."""
    if isinstance(obj, Mapping) and not _is_upload_entry(obj):
        return bool(obj) and all(_is_upload_entry(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return bool(obj) and all(_is_upload_entry(v) for v in obj)
    return False


def _entry_pair(entry: Any, fallback_name: str = "upload") -> tuple[str, bytes]:
    """``(filename, bytes)`` of one upload entry of either ipywidgets version."""
    if not _is_upload_entry(entry):
        raise ImageLoadError(
            f"Upload entry {fallback_name!r} is a {type(entry).__name__}, not an ipywidgets upload dict; "
            "pass upload.value unchanged."
        )
    metadata = entry.get("metadata")
    name = entry.get("name") or (metadata.get("name") if isinstance(metadata, Mapping) else None) or fallback_name
    content = entry["content"]
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise ImageLoadError(
            f"Upload '{name}' has content of type {type(content).__name__}, not bytes; pass upload.value unchanged."
        )
    return str(name), bytes(content)


def _load_upload(upload: _Upload, *, max_bytes: int, max_pixels: int | None) -> Image.Image:
    return _from_bytes(upload.data, f"upload '{upload.name}'", max_bytes=max_bytes, max_pixels=max_pixels)


def _from_upload_value(value: Any, *, max_bytes: int, max_pixels: int | None) -> Image.Image:
    """``load_image`` of a single entry or a whole upload holding exactly one file."""
    pairs = iter_upload(value)
    if len(pairs) != 1:
        raise ImageLoadError(
            f"The upload holds {len(pairs)} files; use load_images(upload.value) to load all of them."
        )
    return _load_upload(_Upload(*pairs[0]), max_bytes=max_bytes, max_pixels=max_pixels)


# --------------------------------------------------------------------------------------------------
# URL fetching
# --------------------------------------------------------------------------------------------------


def _fetch_url(url: str, *, timeout: float, max_bytes: int) -> tuple[bytes, str]:
    """Download ``url`` and return ``(body, content_type)``, reading at most ``max_bytes + 1`` bytes."""
    label = f"URL '{_short(url)}'"
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            _check_content_length(response, label, max_bytes)
            data = response.read(max_bytes + 1) if max_bytes is not None else response.read()
            content_type = response.headers.get_content_type() or ""
    except urllib.error.HTTPError as err:
        err.close()
        raise _http_status_error(label, err) from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise _network_error(label, err, timeout) from err
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_many_bytes_error(label, max_bytes)
    return data, content_type


def _check_content_length(response: Any, label: str, max_bytes: int | None) -> None:
    length = response.headers.get("Content-Length")
    if max_bytes is not None and length and length.isdigit() and int(length) > max_bytes:
        raise _too_many_bytes_error(label, max_bytes)


def _http_status_error(label: str, err: urllib.error.HTTPError) -> ImageLoadError:
    code = err.code
    if code == 404:
        todo = "the address is wrong or the image was removed; open it in a browser to check"
    elif code in (401, 403):
        todo = "the site refuses this download; download the file in a browser and load it from disk"
    elif code == 429:
        todo = "the site is rate-limiting you; wait a minute and try again"
    elif code >= 500:
        todo = "the server has a problem; try again later or use another copy of the image"
    else:
        todo = "open it in a browser to check the address"
    reason = str(err.reason or "").replace("\n", " ")
    return ImageLoadError(f"Downloading {label} failed with HTTP {code} {reason}".rstrip() + f"; {todo}.")


def _network_error(label: str, err: BaseException, timeout: float) -> ImageLoadError:
    reason = getattr(err, "reason", err)
    if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
        return ImageLoadError(
            f"Downloading {label} timed out after {timeout:g} s; check your connection or pass a larger timeout=."
        )
    if isinstance(reason, ConnectionRefusedError):
        return ImageLoadError(
            f"Downloading {label} failed: connection refused; "
            "check the host and port, or whether the server is running."
        )
    if isinstance(reason, socket.gaierror):
        return ImageLoadError(
            f"Downloading {label} failed: the host name could not be resolved; "
            "check the URL and your internet connection."
        )
    detail = str(reason).replace("\n", " ")[:200]
    return ImageLoadError(
        f"Downloading {label} failed ({type(reason).__name__}: {detail}); check the URL and your internet connection."
    )


# --------------------------------------------------------------------------------------------------
# decoding and sniffing
# --------------------------------------------------------------------------------------------------


def _decode(
    fp: Path | BytesIO,
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
            im = Image.open(fp)
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
                raise _corrupt_error(label) from err
            out = _to_rgb(_exif_transpose(im))
            if out is im:
                out = im.copy()
    out.load()
    return out


def _check_pixels(im: Image.Image, label: str, max_pixels: int | None) -> None:
    """Refuse images whose header declares more than ``max_pixels`` pixels, before decoding them."""
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            f"{_cap(label)} declares {width}x{height} = {width * height:,} pixels, more than "
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
        f"{_cap(label)} declares {declared}, more than {limit} (a guard against decompression bombs); {todo}."
    )


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored rather than fatal."""
    try:
        return ImageOps.exif_transpose(im)
    except _DECODE_ERRORS:
        return im.copy()


def _sniff(head: bytes) -> str | None:
    """Name what a non-image file really is, from its first bytes: svg, html, text, pdf, heif, avif, zip."""
    if head[4:8] == b"ftyp":
        brands = {head[i : i + 4] for i in range(8, min(len(head), 64), 4)}
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heif"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
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
    it = _cap(label)
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
        f"{_cap(label)} is a truncated or corrupt {kind}; re-download it or re-export it from the original."
    )


def _too_many_bytes_error(label: str, max_bytes: int) -> ImageLoadError:
    return ImageLoadError(
        f"{_cap(label)} is larger than max_bytes={max_bytes:,} bytes; "
        "pass a larger max_bytes= if you trust it, or use a smaller image."
    )


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


def _from_pil(im: Image.Image) -> Image.Image:
    """A new RGB image from a PIL image; the input is never changed."""
    label = f"PIL image (mode {im.mode}, {im.width}x{im.height})"
    try:
        if getattr(im, "is_animated", False):
            im = _first_frame(im)
        out = _to_rgb(_exif_transpose(im))
    except ImageLoadError:
        raise
    except _DECODE_ERRORS as err:
        raise ImageLoadError(
            f"{_cap(label)} could not be read (it may be truncated or already closed); reopen or reload it."
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


def _from_array(arr: np.ndarray) -> Image.Image:
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
        if arr.dtype == np.uint16:
            return np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        raise ImageLoadError(
            f"The {label} has values from {lo} to {hi}; scale it to 0-255 and pass arr.astype('uint8')."
        )
    raise ImageLoadError(f"The {label} has an unsupported dtype; pass uint8 (0-255), bool or float (0-1) data.")


# --------------------------------------------------------------------------------------------------
# message helpers
# --------------------------------------------------------------------------------------------------


def _cap(text: str) -> str:
    """Capitalise the first letter of a label so it can start a sentence."""
    return text[:1].upper() + text[1:]


def _short(url: str, limit: int = 120) -> str:
    """A URL shortened for messages, never more than ``limit`` characters, on one line."""
    url = url.replace("\n", "").replace("\r", "")
    return url if len(url) <= limit else url[: limit - 1] + "…"
