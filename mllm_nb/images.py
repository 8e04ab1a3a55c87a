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

import glob
import math
import os
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO, TextIOBase
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
from PIL import Image

from mllm_nb.decoding import (
    data_url_bytes,
    decode,
    decode_file,
    looks_like_base64_image,
    rgb_from_array,
    rgb_from_pil,
    sentence_start,
    shown,
    too_many_bytes_error,
)
from mllm_nb.errors import ImageLoadError
from mllm_nb.image_fetch import fetch_url, short_url

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

_SNIFF_BYTES = 1024
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_ACCEPTED = (
    "a file path, an http(s)://, file:// or data: URL, bytes, a binary file object, a PIL image, "
    "a numpy array (HxW, HxWx1, HxWx3 or HxWx4) or an ipywidgets FileUpload entry"
)

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

    ``src`` may be a path (``~`` is expanded), a ``file://``, ``http(s)://`` or ``data:`` URL, bytes, a binary
    file object, a PIL image (it is copied, never changed), a numpy array or an ipywidgets
    ``FileUpload`` entry. EXIF rotation is applied, animations give their first frame, transparency
    is composited on white and 16-bit / float images are scaled to 8 bits. ``timeout`` is the most
    seconds a whole download may take, ``max_bytes`` limits downloads and in-memory data,
    ``max_pixels`` limits ``width * height`` (``None`` turns either check off). Only regular files
    are read (never pipes or devices). Any failure raises ``ImageLoadError``.

    >>> import numpy as np
    >>> load_image(np.zeros((4, 6), dtype=np.uint8)).size
    (6, 4)
    """
    _check_options(timeout, max_bytes, max_pixels)
    src = _unwrap_widget(src)
    if isinstance(src, _Upload):
        return _load_upload(src, max_bytes=max_bytes, max_pixels=max_pixels)
    if isinstance(src, Image.Image):
        return rgb_from_pil(src)
    if isinstance(src, np.ndarray):
        return rgb_from_array(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        try:
            data = bytes(src)
        except ValueError as err:  # a released memoryview
            raise ImageLoadError(
                f"The {type(src).__name__} cannot be read ({err}); pass the bytes themselves."
            ) from None
        label = f"{type(src).__name__} ({len(data):,} bytes)"
        return _from_bytes(data, label, max_bytes=max_bytes, max_pixels=max_pixels)
    if isinstance(src, str):
        return _from_string(src, timeout=timeout, max_bytes=max_bytes, max_pixels=max_pixels)
    if isinstance(src, os.PathLike):
        return _from_path(Path(src), max_pixels=max_pixels)
    if _is_upload_entry(src) or _is_upload_value(src):
        return _from_upload_value(src, max_bytes=max_bytes, max_pixels=max_pixels)
    if callable(getattr(src, "read", None)):
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
    _check_options(timeout, max_bytes, max_pixels)
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


def _check_options(timeout: Any, max_bytes: Any, max_pixels: Any) -> None:
    """Refuse limits that are not positive numbers (``timeout=None`` would let a download hang)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ImageLoadError(
            f"timeout={shown(repr(timeout), 60)} is not a positive number of seconds; pass e.g. timeout=10."
        )
    for name, value in (("max_bytes", max_bytes), ("max_pixels", max_pixels)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ImageLoadError(
                f"{name}={shown(repr(value), 60)} is not a positive whole number; "
                f"pass e.g. {name}=50_000_000, or {name}=None for no limit."
            )


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
            raise ImageLoadError(
                f"'{shown(str(path))}' is a file, not a folder; use load_image(path) to load a single image."
            )
        raise ImageLoadError(f"No such folder '{shown(str(path))}'; check the path (current folder is '{Path.cwd()}').")
    try:
        files = [
            p for p in path.iterdir()
            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        ]
    except OSError as err:
        raise ImageLoadError(
            f"Cannot list folder '{shown(str(path))}' ({err.strerror or type(err).__name__}); check its permissions."
        ) from err
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
    if isinstance(srcs, str) and not srcs.strip():
        raise _empty_string_error()
    if isinstance(srcs, str) and _scheme(srcs) == "file":
        srcs = _file_url_path(srcs.strip())
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
                f"Folder '{shown(str(path))}' has no image files; put images there ({', '.join(IMAGE_EXTENSIONS)}) "
                "or pass a list of paths."
            )
        return files
    if not exists and glob.has_magic(str(path)):
        matches = sorted(p for p in glob.glob(str(path)) if os.path.isfile(p))
        if not matches:
            raise ImageLoadError(f"No file matches the pattern '{shown(str(path))}'; check the pattern and the folder.")
        return [Path(p) for p in matches]
    return [path]


def _from_string(src: str, *, timeout: float, max_bytes: int, max_pixels: int | None) -> Image.Image:
    """A string is a URL (``http(s)://``, ``file://`` or ``data:``) or a path."""
    stripped = src.strip()
    scheme = _scheme(stripped)
    if not stripped:
        raise _empty_string_error()
    if scheme == "data":
        return _from_data_url(stripped, max_bytes=max_bytes, max_pixels=max_pixels)
    if _is_url(stripped):
        data, content_type = fetch_url(stripped, timeout=timeout, max_bytes=max_bytes)
        label = f"URL '{short_url(stripped)}'"
        return _from_bytes(data, label, max_bytes=max_bytes, max_pixels=max_pixels, url_content_type=content_type)
    if scheme == "file":
        return _from_path(_file_url_path(stripped), max_pixels=max_pixels)
    if scheme and not os.path.lexists(src):
        if scheme.lower() in ("http", "https"):
            raise ImageLoadError(
                f"URL '{short_url(stripped)}' lacks the '//' after '{scheme}:'; "
                f"write it as {scheme}://host/path/image.png."
            )
        if stripped[len(scheme) + 1 :].startswith("//"):
            raise ImageLoadError(
                f"'{short_url(stripped)}' uses the {scheme}:// scheme, which load_image cannot fetch; "
                "download the file and pass its path, or use an http(s):// URL."
            )
    if looks_like_base64_image(stripped):
        raise ImageLoadError(
            f"The string '{short_url(stripped, 40)}' ({len(stripped):,} characters) is base64 image data, not a path; "
            "pass 'data:image/png;base64,' + s or base64.b64decode(s)."
        )
    if stripped != src and not os.path.lexists(src) and os.path.lexists(stripped):
        src = stripped  # a path pasted with a stray space or newline
    return _from_path(Path(src), max_pixels=max_pixels)


def _scheme(src: str) -> str | None:
    """The URL scheme of ``src`` (``"http"``, ``"file"``, ...), or ``None``; a Windows drive letter is none."""
    match = _SCHEME.match(src.strip())
    return match.group(1).lower() if match and len(match.group(1)) > 1 else None


def _file_url_path(url: str) -> Path:
    """The local path of a ``file://`` URL; other hosts are refused."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ImageLoadError(
            f"URL '{short_url(url)}' names the remote host '{shown(parts.netloc)}'; "
            "copy the file here and pass its path, or write file:///path for a local file."
        )
    return Path(urllib.request.url2pathname(parts.path))


def _empty_string_error() -> ImageLoadError:
    return ImageLoadError("The image source is an empty string; pass a file path or an http(s):// or data: URL.")


def _is_url(src: Any) -> bool:
    return isinstance(src, str) and src.strip()[:8].lower().startswith(("http://", "https://"))


def _is_remote(src: Any) -> bool:
    """An http(s):// or data: URL, which is never a folder or glob pattern."""
    return _is_url(src) or (isinstance(src, str) and src.strip()[:5].lower() == "data:")


def _from_path(path: Path, *, max_pixels: int | None) -> Image.Image:
    """Load a file from disk after checking that it exists and is not a folder."""
    path = path.expanduser()
    name = shown(str(path))
    label = f"file '{name}'"
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise _missing_file_error(path) from None
    except (OSError, ValueError) as err:  # a name too long, a NUL character, a symlink loop, a locked folder
        reason = getattr(err, "strerror", None) or str(err)
        raise ImageLoadError(f"'{name}' is not a usable file path ({reason}); check the string you passed.") from None
    if is_dir:
        raise ImageLoadError(f"'{name}' is a folder; use load_images(folder) to load every image in it.")
    return decode_file(path, label, max_pixels=max_pixels)


def _missing_file_error(path: Path) -> ImageLoadError:
    """Why ``path`` does not exist, with the likeliest fix."""
    name, text = shown(str(path)), str(path)
    if os.path.islink(path):
        return ImageLoadError(f"'{name}' is a symbolic link to a missing file; fix the link or pass the file itself.")
    if glob.has_magic(text) and glob.glob(text):
        return ImageLoadError(f"'{name}' is a pattern and load_image loads one file; use load_images('{name}').")
    if re.match(r"(www\.|[\w-]+\.(com|org|net|io)/)", text):
        return ImageLoadError(f"No such file '{name}'; if it is a web address, put https:// in front of it.")
    return ImageLoadError(f"No such file '{name}'; check the path (current folder is '{Path.cwd()}').")


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
        raise ImageLoadError(f"{sentence_start(label)} is empty (0 bytes); check where the data came from.")
    if max_bytes is not None and len(data) > max_bytes:
        raise too_many_bytes_error(label, max_bytes)
    return decode(BytesIO(data), data[:_SNIFF_BYTES], label, max_pixels=max_pixels, url_content_type=url_content_type)


def _from_file_object(fh: Any, *, max_bytes: int | None, max_pixels: int | None) -> Image.Image:
    """Read at most ``max_bytes + 1`` bytes from a binary file-like object."""
    name = getattr(fh, "name", None)
    named = isinstance(name, (str, os.PathLike))
    label = f"file object '{shown(str(name))}'" if named else f"{type(fh).__name__} object"
    try:
        data = "" if isinstance(fh, TextIOBase) else fh.read(max_bytes + 1) if max_bytes is not None else fh.read()
        at_end = not data and callable(getattr(fh, "tell", None)) and fh.tell() > 0
    except (OSError, ValueError, TypeError) as err:
        why = "it is closed" if getattr(fh, "closed", False) is True else type(err).__name__
        raise ImageLoadError(
            f"Cannot read from {label} ({why}); open it with open(path, 'rb') and pass it unread."
        ) from err
    if isinstance(data, str):
        raise ImageLoadError(f"{sentence_start(label)} was opened in text mode; open it with open(path, 'rb') instead.")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageLoadError(
            f"{sentence_start(label)} gave {type(data).__name__}, not bytes; pass a binary file object."
        )
    if at_end:
        raise ImageLoadError(f"{sentence_start(label)} was already read to the end; call .seek(0) on it first.")
    return _from_bytes(bytes(data), label, max_bytes=max_bytes, max_pixels=max_pixels)


def _from_data_url(url: str, *, max_bytes: int | None, max_pixels: int | None) -> Image.Image:
    """Decode a ``data:[<mediatype>][;base64],<data>`` URL."""
    label = f"data: URL ({len(url):,} characters)"
    return _from_bytes(data_url_bytes(url, label, max_bytes), label, max_bytes=max_bytes, max_pixels=max_pixels)


def _unsupported_type_error(src: Any) -> ImageLoadError:
    kind = f"{type(src).__module__}.{type(src).__qualname__}".removeprefix("builtins.")
    hint = ""
    if isinstance(src, (list, tuple)):
        hint = " (for several images use load_images)"
    elif type(src).__module__.split(".")[0] == "torch":
        hint = " (for a CHW tensor use tensor.permute(1, 2, 0).cpu().numpy())"
    elif type(src).__module__.split(".")[0] == "requests":
        hint = " (for a download pass response.content)"
    elif isinstance(src, Mapping) and ("bytes" in src or "path" in src):
        hint = " (for a datasets image dict pass its 'bytes' or 'path')"
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
    name, content = shown(str(name)), entry["content"]
    try:
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(type(content).__name__)
        return name, bytes(content)
    except (TypeError, ValueError):  # not bytes, or a released memoryview
        raise ImageLoadError(
            f"Upload '{name}' has content of type {type(content).__name__} that is not readable bytes; "
            "pass upload.value unchanged."
        ) from None


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
