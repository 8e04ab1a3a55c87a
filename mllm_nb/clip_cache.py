"""The on-disk image index of :mod:`mllm_nb.clip`: one safetensors file, checked before it is trusted.

An index file holds one float32 tensor ``embeddings`` (one unit-length row per image) and JSON
metadata: the format tag, the model id, the source of each row and, for a folder, a fingerprint of
each file (path, size, modification time) so that a cache only re-embeds what changed. Nothing is
unpickled. A damaged file is refused (``read_index``) or, as a cache, rebuilt with one warning
(``cached_rows``); a file that is not an index is never overwritten.

>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.index"
>>> _ = write_index(path, np.eye(2, dtype=np.float32), ["a.png", "b.png"], "demo-model")
>>> read_index(path).sources
['a.png', 'b.png']
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from mllm_nb.errors import MllmNbError

INDEX_FORMAT = "mllm-nb-image-index/1"
_FORMAT_FAMILY = "mllm-nb-image-index/"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_NORM_TOLERANCE = 1e-3
_IN_MEMORY_SOURCE = re.compile(r"image \d+")
_REBUILD = "rebuild it with clip.index(...)"


class ImageIndexError(MllmNbError, ValueError):
    """An image index could not be built, saved or loaded."""


class _Damaged(Exception):
    """Internal: what is wrong with an index file, as a fragment such as ``"is empty"``.

    ``foreign`` marks a file that is not a (damaged) mllm_nb index and so must never be overwritten.
    """

    def __init__(self, problem: str, foreign: bool = False) -> None:
        super().__init__(problem)
        self.foreign = foreign


@dataclass
class StoredIndex:
    """The checked contents of an index file."""

    embeddings: np.ndarray
    sources: list[str]
    model_name: str
    fingerprints: list[str]


# ------------------------------------------------------------------------------------------ paths


def index_path(path: Any, what: str = "index") -> Path:
    """``path`` as a ``Path`` to a (possibly new) regular file, or an ``ImageIndexError`` saying why not.

    >>> index_path("photos.index").name
    'photos.index'
    """
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise ImageIndexError(
            f"The {what} path must be a file path such as 'photos.index' (str or pathlib.Path), "
            f"not a {type(path).__name__}."
        )
    if str(path).strip() == "":
        raise ImageIndexError(f"The {what} path is empty; pass a file name such as 'photos.index'.")
    if "\x00" in str(path):
        raise ImageIndexError(f"{str(path)!r} is not a usable {what} path (it contains a NUL character); pass another file name.")
    path = Path(path).expanduser()
    try:
        is_dir, exists, is_file = path.is_dir(), path.exists(), path.is_file()
        blocker = _file_above(path)
    except (OSError, ValueError) as err:
        raise ImageIndexError(f"{str(path)!r} is not a usable {what} path ({_reason(err)}); pass another file name.") from None
    if is_dir:
        raise ImageIndexError(f"The {what} path {str(path)!r} is a folder; pass a file inside it such as 'photos.index'.")
    if exists and not is_file:
        raise ImageIndexError(f"The {what} path {str(path)!r} is not a regular file (a device or pipe); pass a file name.")
    if blocker is not None:
        raise ImageIndexError(
            f"The {what} path {str(path)!r} lies under {str(blocker)!r}, which is a file, not a folder; "
            "pass a path inside a folder."
        )
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        raise ImageIndexError(
            f"The {what} path {str(path)!r} has an image extension and could be mistaken for (or overwrite) a picture; "
            "use a name such as 'photos.index'."
        )
    return path


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (so nothing can be created there)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _reason(err: BaseException) -> str:
    """A short one-line reason from an exception (its strerror or first line, at most 160 characters)."""
    text = getattr(err, "strerror", None) or str(err).strip() or type(err).__name__
    return " ".join(str(text).split())[:160]


def fingerprint(path: Path) -> str:
    """``resolved path|size|mtime_ns``: a file whose fingerprint is unchanged need not be embedded again."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


# ---------------------------------------------------------------------------------------- writing


def write_index(
    path: str | os.PathLike, embeddings: np.ndarray, sources: list[str], model_name: str,
    fingerprints: list[str] | None = None,
) -> Path:
    """Write an index file atomically (a half-written file never replaces a good one); returns its path.

    >>> import numpy as np, tempfile, pathlib
    >>> write_index(pathlib.Path(tempfile.mkdtemp()) / "x.index", np.eye(1, dtype=np.float32), ["a.png"], "m").name
    'x.index'
    """
    path = index_path(path)
    reason = _write(path, embeddings, sources, model_name, fingerprints)
    if reason:
        raise ImageIndexError(f"Could not write the image index {str(path)!r} ({reason}); pass a path in a folder you can write to.")
    return path


def write_cache(
    cache: Path, embeddings: np.ndarray, sources: list[str], model_name: str, fingerprints: list[str]
) -> bool:
    """Like ``write_index``, but a failure (read-only folder, full disk) is one warning, not an error."""
    reason = _write(cache, embeddings, sources, model_name, fingerprints)
    if reason:
        warnings.warn(
            f"Could not write the cache {str(cache)!r} ({reason}), so this index works but is not cached; "
            "pass cache= a path in a folder you can write to.",
            stacklevel=4,
        )
    return not reason


def _write(
    path: Path, embeddings: np.ndarray, sources: list[str], model_name: str, fingerprints: list[str] | None
) -> str | None:
    """Write through a temporary file and a rename; the reason it failed, or None."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    metadata = {
        "format": INDEX_FORMAT,
        "model_name": model_name,
        "sources": json.dumps(list(sources)),
        "fingerprints": json.dumps(list(fingerprints or [])),
    }
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        save_file({"embeddings": np.ascontiguousarray(embeddings, dtype=np.float32)}, tmp, metadata)
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        return _reason(err)
    finally:  # also on KeyboardInterrupt: the old file stays as it was, no temporary file is left
        if tmp is not None and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)
    return None


# ---------------------------------------------------------------------------------------- reading


def read_index(path: str | os.PathLike) -> StoredIndex:
    """Read and check an index file; anything wrong with it is an ``ImageIndexError`` in one sentence.

    >>> read_index("no-such.index")
    Traceback (most recent call last):
    ...
    mllm_nb.clip_cache.ImageIndexError: There is no image index at 'no-such.index'; check the path or build one with clip.index(folder, cache=...).
    """
    path = index_path(path)
    if not path.exists():
        raise ImageIndexError(
            f"There is no image index at {str(path)!r}; check the path or build one with clip.index(folder, cache=...)."
        )
    try:
        return _read(path)
    except _Damaged as damage:
        raise ImageIndexError(f"The image index {str(path)!r} {damage}; {_REBUILD}.") from None


def cached_rows(cache: Path, model_name: str, dim: int) -> dict[str, np.ndarray]:
    """``{fingerprint: embedding}`` from a cache file that can be trusted, else ``{}`` with one warning.

    A damaged cache, or one from another model, is ignored (and later overwritten); a file that is not
    an mllm_nb index at all is refused, since it may be the user's own data.
    """
    if not cache.exists():
        return {}
    try:
        stored = _read(cache)
        problem = _cache_problem(stored, model_name, dim)
    except _Damaged as damage:
        if damage.foreign:
            raise ImageIndexError(
                f"The cache {str(cache)!r} {damage} and may be your own data, so it is left alone; "
                "pass a new cache file name such as 'photos.index', or delete that file."
            ) from None
        problem = str(damage)
    if problem:
        warnings.warn(f"The cache {str(cache)!r} {problem}, so it is ignored and rebuilt.", stacklevel=4)
        return {}
    return dict(zip(stored.fingerprints, stored.embeddings))


def _cache_problem(stored: StoredIndex, model_name: str, dim: int) -> str | None:
    if stored.model_name != model_name:
        return f"was built with {stored.model_name!r}, not {model_name!r}"
    if stored.embeddings.shape[1] != dim:
        return f"holds {stored.embeddings.shape[1]}-dimensional embeddings but the model makes {dim}-dimensional ones"
    if not stored.fingerprints:
        return "has no file fingerprints (it was saved from in-memory images)"
    return None


def _looks_like_safetensors(path: Path) -> bool:
    """An 8-byte header length followed by ``{``: a safetensors file, perhaps cut short."""
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def _read(path: Path) -> StoredIndex:
    from safetensors import SafetensorError, safe_open

    try:
        if path.stat().st_size == 0:
            raise _Damaged("is empty")
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            names = list(handle.keys())
            _check_format(metadata)
            if "embeddings" not in names:
                raise _Damaged(f"has no 'embeddings' tensor (it holds {names[:5]})")
            embeddings = handle.get_tensor("embeddings")
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as err:
        if _looks_like_safetensors(path):
            raise _Damaged(f"is damaged ({_reason(err)})") from None
        raise _Damaged("is not an mllm_nb image index (not a safetensors file)", foreign=True) from None
    if "model_name" not in metadata or not metadata["model_name"].strip():
        raise _Damaged("has no model name in its metadata")
    sources = _json_strings(metadata, "sources")
    fingerprints = _json_strings(metadata, "fingerprints", default="[]")
    problem = embeddings_problem(embeddings, len(sources), exact_dtype=True) or _sources_problem(sources)
    if fingerprints and len(fingerprints) != len(sources):
        problem = problem or f"has {len(fingerprints)} fingerprints for {len(sources)} sources"
    if problem:
        raise _Damaged(problem)
    return StoredIndex(embeddings, sources, metadata["model_name"], fingerprints)


def _check_format(metadata: dict[str, str]) -> None:
    tag = metadata.get("format")
    if tag == INDEX_FORMAT:
        return
    if isinstance(tag, str) and tag.startswith(_FORMAT_FAMILY):
        raise _Damaged(f"was written by a newer mllm_nb (format {tag!r}, this version reads {INDEX_FORMAT!r})")
    raise _Damaged("is a safetensors file but not an mllm_nb image index", foreign=True)


def _json_strings(metadata: dict[str, str], key: str, default: str | None = None) -> list[str]:
    text = metadata.get(key, default)
    if text is None:
        raise _Damaged(f"has no {key!r} list in its metadata")
    try:
        value = json.loads(text)
    except ValueError:
        raise _Damaged(f"has a {key!r} entry that is not valid JSON") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Damaged(f"has a {key!r} entry that is not a list of strings")
    return value


def _sources_problem(sources: list[str]) -> str | None:
    """Sources must be in-memory labels or local files of one folder, never URLs or ``..`` escapes."""
    folders = set()
    for source in sources:
        if _IN_MEMORY_SOURCE.fullmatch(source):
            continue
        if "\x00" in source or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:", source) and not re.match(r"^[a-zA-Z]:[\\/]", source):
            return f"lists a source that is not a local file ({source[:80]!r})"
        pure = PurePath(source)
        if ".." in pure.parts:
            return f"lists a path that leaves its folder ({source[:80]!r})"
        folders.add(str(pure.parent))
    if len(folders) > 1:
        return f"lists files from {len(folders)} different folders, not one"
    return None


def embeddings_problem(embeddings: Any, n_sources: int, exact_dtype: bool = False) -> str | None:
    """What is wrong with an embedding table for ``n_sources`` images, as a fragment, or None when it is fine.

    >>> import numpy as np
    >>> embeddings_problem(np.ones((2, 2), dtype=np.float32), 2)
    'has 2 embeddings that are not unit length'
    """
    if not isinstance(embeddings, np.ndarray):
        return f"has embeddings of type {type(embeddings).__name__}, not a numpy array"
    if exact_dtype and embeddings.dtype != np.float32 or not np.issubdtype(embeddings.dtype, np.floating):
        return f"has {embeddings.dtype} embeddings, not float32"
    if embeddings.ndim != 2:
        return f"has {embeddings.ndim}-D embeddings, not a 2-D table with one row per image"
    rows, dim = embeddings.shape
    if rows == 0 or dim == 0:
        return "holds no embeddings"
    if rows != n_sources:
        return f"has {rows} embeddings for {n_sources} sources"
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        return f"has {int((~finite).sum())} embeddings with NaN or infinite values"
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1)
    off = np.abs(norms - 1.0) > _NORM_TOLERANCE
    if off.any():
        return f"has {int(off.sum())} embeddings that are not unit length"
    return None
