"""Download and safely extract an official Honeybee release archive (the Model Zoo of kakaobrain/honeybee).

``download("7B-C-Abs-M144", "checkpoints/")`` checks the free disk space first (archive plus the
extracted copy), downloads ``<NAME>.tar.gz`` with a progress bar into ``<NAME>.tar.gz.part`` and
resumes an interrupted download with an HTTP Range request, then extracts it with tarfile's
``data`` filter (no absolute paths, no ``..``, no links out of the folder, no device files) and
returns the ``<NAME>/last`` folder that :func:`mllm_nb.honeybee.convert` reads.

The released weights are licensed CC-BY-NC-4.0 (non-commercial use).

>>> folder = download("7B-C-Abs-M144", "checkpoints/")  # doctest: +SKIP
>>> folder  # doctest: +SKIP
PosixPath('checkpoints/7B-C-Abs-M144/last')
"""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mllm_nb.honeybee.configuration import HoneybeeError

BASE_URL = "https://twg.kakaocdn.net/brainrepo/models/honeybee/{name}.tar.gz"
_NAMES = ("7B-C-Abs-M144", "7B-D-Abs-M144", "13B-C-Abs-M256", "13B-D-Abs-M256", "7B-C-Abs-M256", "13B-C-Abs-M576")
MODEL_ZOO: dict[str, str] = {name: BASE_URL.format(name=name) for name in _NAMES}
#: Extracted size / archive size assumed when checking the disk (weights compress only a little).
EXTRACT_FACTOR = 1.15
CHUNK = 2**20
TIMEOUT_S = 60
_GB = 10**9


def _resolve_name(name: str, url: str | None) -> tuple[str, str]:
    """(canonical name, URL): a Model Zoo name (any case), or any plain name with an explicit ``url``."""
    for known, known_url in MODEL_ZOO.items():
        if name.lower() == known.lower():
            return known, url or known_url
    if url is None:
        raise HoneybeeError(f"Unknown Honeybee model {name!r}; use one of {', '.join(MODEL_ZOO)}.")
    if not name or os.sep in name or "/" in name or name in (".", ".."):
        raise HoneybeeError(f"name={name!r} must be a plain folder name such as '7B-C-Abs-M144'.")
    return name, url


def _check_disk(folder: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < need:
        raise HoneybeeError(
            f"Not enough disk space in '{folder}': {what} need about {need / _GB:.1f} GB but {free / _GB:.1f} GB "
            "are free; free some space or pass another dst."
        )


def _open(url: str, start: int) -> Any:
    """GET ``url`` from byte ``start`` on (a Range request when resuming)."""
    headers = {"User-Agent": "mllm_nb"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)


def _remote_size(url: str) -> int | None:
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "mllm_nb"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
    return int(length) if length else None


def _total_size(response: Any, start: int) -> int | None:
    """The archive's full size from a 200 (Content-Length) or 206 (Content-Range) response."""
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and "/" in content_range and not content_range.endswith("*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return int(length) + (start if response.status == 206 else 0) if length else None


def _fetch(url: str, part: Path, extract: bool, progress: bool) -> None:
    """Download ``url`` into ``part``, resuming from what ``part`` already holds."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, have)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have and _remote_size(url) == have:
            return  # the previous run finished writing but not renaming
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range request: start over
        total = _total_size(response, have)
        if total is not None:
            _check_disk(part.parent, total - have + (int(total * EXTRACT_FACTOR) if extract else 0),
                        "the archive and its extracted copy" if extract else "the archive")
        with open(part, "ab" if have else "wb") as sink, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=part.name.removesuffix(".part"),
            disable=not progress,
        ) as bar:
            while chunk := response.read(CHUNK):
                sink.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def _download_archive(name: str, url: str, archive: Path, extract: bool, progress: bool) -> None:
    part = archive.with_name(archive.name + ".part")
    try:
        _fetch(url, part, extract, progress)
    except urllib.error.HTTPError as err:
        if err.code >= 500:
            raise HoneybeeError(
                f"The server of {url} failed ({err.code} {err.reason}); try again later - the download will resume."
            ) from err
        raise HoneybeeError(
            f"The server answered {err.code} {err.reason} for {url}; check the name, or pass url= a working mirror."
        ) from err
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
        done = part.stat().st_size if part.exists() else 0
        reason = getattr(err, "reason", None) or type(err).__name__
        raise HoneybeeError(
            f"Downloading {name} from {url} stopped after {done / _GB:.2f} GB ({reason}); "
            "run download() again to resume where it stopped."
        ) from err
    part.replace(archive)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:120] if text else "no details"


def _member_problem(err: Exception) -> str:
    member = getattr(err, "tarinfo", None)
    where = f" ({member.name!r})" if member is not None else ""
    return f"{type(err).__name__}{where}"


def _strict_data_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter, and refuse absolute names outright (``data`` would strip the slash)."""
    name = member.name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, path)


def extract(archive: str | os.PathLike, dst: str | os.PathLike) -> list[Path]:
    """Extract a ``.tar.gz`` into ``dst`` with the ``data`` filter; returns the top-level entries created.

    Absolute paths, ``..`` components, links pointing out of ``dst`` and device files are refused
    with a :class:`HoneybeeError` and nothing is left in ``dst``.

    >>> extract("checkpoints/7B-C-Abs-M144.tar.gz", "checkpoints/")  # doctest: +SKIP
    [PosixPath('checkpoints/7B-C-Abs-M144')]
    """
    if not hasattr(tarfile, "data_filter"):
        raise HoneybeeError("This Python lacks tarfile's safe 'data' filter; use Python 3.10.12+, 3.11.4+ or 3.12+.")
    archive, target = Path(archive), Path(dst)
    staging = target / f".{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, filter=_strict_data_filter)
        created = []
        for entry in sorted(staging.iterdir()):
            final = target / entry.name
            if final.exists():
                raise HoneybeeError(f"'{final}' already exists; remove it or extract into another folder.")
            entry.replace(final)
            created.append(final)
        return created
    except tarfile.FilterError as err:
        raise HoneybeeError(
            f"Refusing to extract '{archive.name}': a member would land outside '{target}' or is unsafe "
            f"({_member_problem(err)}); the archive is not a genuine release, delete it."
        ) from err
    except (tarfile.TarError, EOFError, OSError) as err:
        raise HoneybeeError(
            f"'{archive.name}' could not be extracted ({type(err).__name__}: {_first_line(err)}); "
            "delete it and download again."
        ) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _release_in(folder: Path) -> Path:
    return folder / "last" if (folder / "last").is_dir() else folder


def download(
    name: str,
    dst: str | os.PathLike = ".",
    *,
    url: str | None = None,
    extract_archive: bool = True,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download the Model Zoo release ``name`` into ``dst`` and extract it; returns ``dst/<NAME>/last``.

    ``name`` is one of :data:`MODEL_ZOO` (``7B-C-Abs-M144``, ``7B-D-Abs-M144``, ``13B-C-Abs-M256``,
    ``13B-D-Abs-M256``, ``7B-C-Abs-M256``, ``13B-C-Abs-M576``); ``url`` overrides the official URL
    (a mirror). An interrupted download resumes on the next call; an extracted release is not
    downloaded again. The archive is deleted after extraction unless ``keep_archive=True``;
    with ``extract_archive=False`` the path of the archive is returned.

    >>> download("7B-C-Abs-M144", "checkpoints/")  # doctest: +SKIP
    PosixPath('checkpoints/7B-C-Abs-M144/last')
    """
    name, source = _resolve_name(name, url)
    target = Path(dst).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    if extract_archive and (_release_in(target / name) / "config.json").is_file():
        return _release_in(target / name)
    archive = target / f"{name}.tar.gz"
    if not archive.is_file():
        _download_archive(name, source, archive, extract_archive, progress)
    if not extract_archive:
        return archive
    _check_disk(target, int(archive.stat().st_size * EXTRACT_FACTOR), "the extracted weights")
    extract(archive, target)
    if not keep_archive:
        archive.unlink()
    folder = _release_in(target / name)
    if not (folder / "config.json").is_file():
        raise HoneybeeError(f"'{archive.name}' did not contain {name}/last/config.json; is it a Honeybee release?")
    return folder


__all__ = ["BASE_URL", "MODEL_ZOO", "download", "extract"]
