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
import json
import os
import re
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
#: Extracted bytes per archive byte above which an archive is refused as a compression bomb
#: (the releases are pickled weights: about 1.1), once it expands past ``BOMB_FLOOR_BYTES``.
MAX_EXPANSION = 20
BOMB_FLOOR_BYTES = 64 * 2**20
MAX_MEMBERS = 10_000
_GB = 10**9


def _resolve_name(name: str, url: str | None) -> tuple[str, str]:
    """(canonical name, URL): a Model Zoo name (any case), or any plain name with an explicit ``url``."""
    if not isinstance(name, str):
        raise HoneybeeError(f"name={name!r} must be a str such as '7B-C-Abs-M144'; use one of {', '.join(MODEL_ZOO)}.")
    if url is not None and (not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url)):
        raise HoneybeeError(
            f"url={url!r} is not an http(s) URL; pass a mirror such as 'https://host/{name}.tar.gz', or put the "
            f"archive into dst as {name}.tar.gz yourself."
        )
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


def _open(url: str, start: int, validator: str | None = None) -> Any:
    """GET ``url`` from byte ``start`` on (a Range request when resuming, ``If-Range`` when the file is known)."""
    headers = {"User-Agent": "mllm_nb"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator  # a changed file comes back whole (200), not as a wrong tail
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)


def _malformed(url: str, header: str, value: str) -> HoneybeeError:
    return HoneybeeError(
        f"The server of {url} sent a malformed {header} header ({value[:40]!r}); try again later or pass url= a "
        "working mirror."
    )


def _content_length(response: Any, url: str) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit():
        raise _malformed(url, "Content-Length", value)
    return int(value)


def _remote_size(url: str) -> int | None:
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "mllm_nb"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return _content_length(response, url)


def _total_size(response: Any, start: int, url: str) -> int | None:
    """The archive's full size from a 200 (Content-Length) or 206 (Content-Range, which must start at ``start``)."""
    if response.status != 206:
        return _content_length(response, url)
    value = response.headers.get("Content-Range", "")
    found = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if found is None or int(found.group(1)) != start:
        raise _malformed(url, "Content-Range", value or "missing")
    if found.group(3) != "*":
        return int(found.group(3))
    length = _content_length(response, url)
    return None if length is None else start + length


def _read_meta(path: Path) -> dict[str, Any]:
    """What the interrupted download recorded about its source (url, total size, validator); {} if unknown."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _restart(part: Path, meta_path: Path) -> None:
    part.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)


def _fetch(url: str, part: Path, extract: bool, progress: bool) -> None:
    """Download ``url`` into ``part``, resuming from what ``part`` already holds if the server file is the same."""
    from tqdm.auto import tqdm

    meta_path = part.with_name(part.name + ".json")
    have = part.stat().st_size if part.exists() else 0
    meta = _read_meta(meta_path) if have else {}
    if have and meta.get("url") not in (None, url):
        _restart(part, meta_path)  # the partial file came from another URL
        have, meta = 0, {}
    try:
        response = _open(url, have, meta.get("validator"))
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            if _remote_size(url) == have:
                return  # the previous run finished writing but not renaming
            _restart(part, meta_path)  # the server file is now shorter than the partial one: another file
            return _fetch(url, part, extract, progress)
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range request (or the file changed): start over
        total = _total_size(response, have, url)
        if have and meta.get("total") not in (None, total):
            response.close()
            _restart(part, meta_path)  # same name, other size: the file on the server changed
            return _fetch(url, part, extract, progress)
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        if not have or validator:
            meta_path.write_text(json.dumps({"url": url, "total": total, "validator": validator}))
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
    if total is not None and part.stat().st_size > total:
        _restart(part, meta_path)
        raise HoneybeeError(
            f"The server of {url} sent more bytes than the {total} it announced, so the download was deleted; "
            "run download() again, or pass url= a working mirror if it happens again."
        )
    if total is not None and part.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)
    return None


def _download_archive(name: str, url: str, archive: Path, extract: bool, progress: bool) -> None:
    part = archive.with_name(archive.name + ".part")
    try:
        _fetch(url, part, extract, progress)
    except urllib.error.HTTPError as err:
        reason = _first_line(Exception(err.reason))
        if err.code >= 500:
            raise HoneybeeError(
                f"The server of {url} failed ({err.code} {reason}); try again later - the download will resume."
            ) from err
        raise HoneybeeError(
            f"The server answered {err.code} ({reason}) for {url}; check the name, or pass url= a working mirror."
        ) from err
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
        done = part.stat().st_size if part.exists() else 0
        reason = _first_line(Exception(getattr(err, "reason", None) or type(err).__name__))
        raise HoneybeeError(
            f"Downloading {name} from {url} stopped after {done / _GB:.2f} GB ({reason}); "
            "run download() again to resume where it stopped."
        ) from err
    except HoneybeeError:
        raise
    except ValueError as err:  # urllib's own refusal of a malformed URL
        raise HoneybeeError(
            f"url={url!r} is not a valid URL ({_first_line(err)}); pass a working http(s) mirror."
        ) from err
    except OSError as err:
        raise HoneybeeError(
            f"Could not write '{part}' ({type(err).__name__}: {_first_line(err)}); pass a writable dst with "
            "enough free space."
        ) from err
    part.replace(archive)
    part.with_name(part.name + ".json").unlink(missing_ok=True)


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


def _guarded_filter(archive: Path, target: Path) -> Any:
    """``_strict_data_filter`` that also stops, member by member, a compression bomb or a too big archive."""
    free = shutil.disk_usage(target).free
    bomb_limit = max(MAX_EXPANSION * archive.stat().st_size, BOMB_FLOOR_BYTES)
    seen = {"members": 0, "bytes": 0}

    def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        checked = _strict_data_filter(member, path)
        seen["members"] += 1
        seen["bytes"] += member.size if member.isfile() else 0
        if seen["members"] > MAX_MEMBERS or seen["bytes"] > bomb_limit:
            raise HoneybeeError(
                f"Refusing to extract '{archive.name}': it expands to more than "
                f"{min(seen['bytes'], bomb_limit) / 2**20:.0f} MiB or {MAX_MEMBERS} files from "
                f"{archive.stat().st_size / 2**20:.1f} MiB (a compression bomb, not a genuine release); delete it."
            )
        if seen["bytes"] > free:
            raise HoneybeeError(
                f"Not enough disk space in '{target}' to extract '{archive.name}': it holds more than "
                f"{seen['bytes'] / _GB:.1f} GB but {free / _GB:.1f} GB are free; free some space or pass another dst."
            )
        return checked

    return check


def extract(archive: str | os.PathLike, dst: str | os.PathLike) -> list[Path]:
    """Extract a ``.tar.gz`` into ``dst`` with the ``data`` filter; returns the top-level entries created.

    Absolute paths, ``..`` components, links pointing out of ``dst`` and device files are refused
    with a :class:`HoneybeeError` and nothing is left in ``dst``.

    >>> extract("checkpoints/7B-C-Abs-M144.tar.gz", "checkpoints/")  # doctest: +SKIP
    [PosixPath('checkpoints/7B-C-Abs-M144')]
    """
    if not hasattr(tarfile, "data_filter"):
        raise HoneybeeError("This Python lacks tarfile's safe 'data' filter; use Python 3.10.12+, 3.11.4+ or 3.12+.")
    archive, target = Path(archive).expanduser(), Path(dst).expanduser()
    if not archive.is_file():
        raise HoneybeeError(f"'{archive}' is not a file; pass the path of a downloaded <NAME>.tar.gz archive.")
    staging = target / f".{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as err:
        raise HoneybeeError(
            f"Cannot extract into '{target}' ({type(err).__name__}: {_first_line(err)}); pass a writable folder as dst."
        ) from err
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, filter=_guarded_filter(archive, target))
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
    if not isinstance(dst, (str, os.PathLike)) or not str(dst).strip():
        raise HoneybeeError(f"dst={dst!r} is not a folder path; pass a str or pathlib.Path such as 'checkpoints/'.")
    target = Path(dst).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HoneybeeError(
            f"Cannot use '{target}' as the download folder ({type(err).__name__}: {_first_line(err)}); "
            "pass a writable folder as dst."
        ) from err
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
        raise HoneybeeError(
            f"'{archive.name}' did not contain {name}/last/config.json, so it is not a Honeybee release; delete "
            f"what it extracted into '{target}' and download the official archive."
        )
    return folder


__all__ = ["BASE_URL", "MODEL_ZOO", "download", "extract"]
