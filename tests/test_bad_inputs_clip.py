"""Hostile inputs for the CLIP image index and its on-disk cache (issue 19).

Every bad input must end in ONE actionable sentence: an ``MllmNbError`` subclass (or, where the
index still works, one warning), never a raw traceback, a hang or a silently wrong answer. A
corrupted cache is never trusted: it is rebuilt with one warning, or, when the file may be the
user's own data, refused and left untouched.
"""

from __future__ import annotations

import errno
import os
import pickle
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import mllm_nb as mn
from mllm_nb.clip import ClassifyError, Clip, ImageIndex, ImageIndexError
from mllm_nb.errors import MllmNbError

pytestmark = pytest.mark.timeout(60)

MODEL = "openai/clip-vit-base-patch32"
COLOURS = ("red", "green", "blue")


@pytest.fixture(scope="module")
def clip() -> Clip:
    return mn.load_clip(MODEL, demo=True)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for colour in COLOURS:
        Image.new("RGB", (48, 48), colour).save(photos / f"{colour}.png")
    return photos


@pytest.fixture
def ctx(clip, folder, tmp_path):
    """What the table entries need: the model, a folder of 3 images, a scratch folder, an index."""
    index = clip.index(folder)
    return SimpleNamespace(clip=clip, folder=folder, tmp=tmp_path, index=index)


def assert_one_sentence(text: str) -> None:
    assert "\n" not in text, text
    assert text.rstrip().endswith("."), text
    assert "Traceback" not in text and len(text) < 600, text


# ----------------------------------------------------------------------------- forging bad files


def _good_parts(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return handle.get_tensor("embeddings"), dict(handle.metadata())


def _forge(path: Path, embeddings=None, drop=(), tensor_name="embeddings", **meta) -> None:
    """Rewrite the good index at ``path`` with other embeddings and/or metadata."""
    from safetensors.numpy import save_file

    good, metadata = _good_parts(path)
    metadata.update(meta)
    for key in drop:
        metadata.pop(key)
    save_file({tensor_name: good if embeddings is None else embeddings}, str(path), metadata)


def _unit(rows: int, dim: int, dtype=np.float32) -> np.ndarray:
    table = np.random.default_rng(0).normal(size=(rows, dim))
    return (table / np.linalg.norm(table, axis=1, keepdims=True)).astype(dtype)


class _Payload:
    """Unpickling this creates a marker file: proof that a pickle ran code."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickle_npy(path: Path) -> None:
    payload = _Payload()
    payload.marker = path.parent / "PICKLE_RAN"
    np.save(path.with_suffix(".npy"), np.array([payload], dtype=object), allow_pickle=True)
    path.with_suffix(".npy").replace(path)


def _raw_pickle(path: Path) -> None:
    payload = _Payload()
    payload.marker = path.parent / "PICKLE_RAN"
    path.write_bytes(pickle.dumps(payload))


def _npy(path: Path) -> None:
    np.save(path.with_suffix(".npy"), _unit(3, 64))
    path.with_suffix(".npy").replace(path)


def _model_weights(path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"weight": np.ones((4, 4), np.float32)}, str(path), {"format": "pt"})


def _truncate(keep):
    def cut(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: keep(len(data))])

    return cut


def _write(data: bytes):
    return lambda path: path.write_bytes(data)


# (id, how to spoil a good index file, phrase when ImageIndex.load reads it or None if it loads,
#  what clip.index(folder, cache=it) must do: "rebuild" with a warning or "refuse" and leave the file, its phrase)
CORRUPTIONS = [
    ("empty-file", _write(b""), "is empty", "rebuild", "is empty"),
    ("junk-text", _write(b"this is my shopping list, not an index"), "not a safetensors file", "refuse", "own data"),
    ("png-bytes", lambda p: Image.new("RGB", (8, 8)).save(p, format="PNG"), "not a safetensors file", "refuse", "own data"),
    ("pickle-npy", _pickle_npy, "not a safetensors file", "refuse", "own data"),
    ("raw-pickle", _raw_pickle, "not a safetensors file", "refuse", "own data"),
    ("plain-npy", _npy, "not a safetensors file", "refuse", "own data"),
    ("model-weights", _model_weights, "not an mllm_nb image index", "refuse", "own data"),
    ("truncated-half", _truncate(lambda n: n // 2), "is damaged", "rebuild", "is damaged"),
    ("truncated-header", _truncate(lambda n: 20), "is damaged", "rebuild", "is damaged"),
    ("truncated-last-byte", _truncate(lambda n: n - 1), "is damaged", "rebuild", "is damaged"),
    ("header-length-huge", _write(b"\xff" * 8 + b"{}"), "is damaged", "rebuild", "is damaged"),
    ("header-not-json", _write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"), "is damaged", "rebuild", "is damaged"),
    ("header-lies-about-shape", lambda p: p.write_bytes(p.read_bytes().replace(b"[3,64]", b"[9,64]")),
     "is damaged", "rebuild", "is damaged"),
    ("format-missing", lambda p: _forge(p, drop=("format",)), "not an mllm_nb image index", "refuse", "own data"),
    ("format-other-tool", lambda p: _forge(p, format="other-tool/1"), "not an mllm_nb image index", "refuse", "own data"),
    ("format-newer-version", lambda p: _forge(p, format="mllm-nb-image-index/2"), "newer mllm_nb", "rebuild", "newer mllm_nb"),
    ("sources-not-json", lambda p: _forge(p, sources="[red.png, oops"), "'sources' entry that is not valid JSON",
     "rebuild", "not valid JSON"),
    ("sources-missing", lambda p: _forge(p, drop=("sources",)), "no 'sources' list", "rebuild", "no 'sources' list"),
    ("sources-a-dict", lambda p: _forge(p, sources='{"a": 1}'), "not a list of strings", "rebuild", "not a list of strings"),
    ("sources-numbers", lambda p: _forge(p, sources="[1, 2, 3]"), "not a list of strings", "rebuild", "not a list of strings"),
    ("sources-too-many", lambda p: _forge(p, sources='["a.png", "b.png", "c.png", "d.png"]'),
     "3 embeddings for 4 sources", "rebuild", "3 embeddings for 4 sources"),
    ("sources-url", lambda p: _forge(p, sources='["https://evil.example/x.png", "a.png", "b.png"]'),
     "not a local file", "rebuild", "not a local file"),
    ("sources-data-url", lambda p: _forge(p, sources='["data:image/png;base64,AAAA", "a.png", "b.png"]'),
     "not a local file", "rebuild", "not a local file"),
    ("sources-dotdot", lambda p: _forge(p, sources='["../../etc/passwd", "../../etc/a.png", "../../etc/b.png"]'),
     "leaves its folder", "rebuild", "leaves its folder"),
    ("sources-two-folders", lambda p: _forge(p, sources='["/a/x.png", "/b/y.png", "/a/z.png"]'),
     "2 different folders", "rebuild", "2 different folders"),
    ("sources-nul-byte", lambda p: _forge(p, sources='["a\\u0000.png", "b.png", "c.png"]'),
     "not a local file", "rebuild", "not a local file"),
    ("model-name-missing", lambda p: _forge(p, drop=("model_name",)), "no model name", "rebuild", "no model name"),
    ("model-name-blank", lambda p: _forge(p, model_name="  "), "no model name", "rebuild", "no model name"),
    ("fingerprints-not-json", lambda p: _forge(p, fingerprints="{{"), "'fingerprints' entry that is not valid JSON",
     "rebuild", "not valid JSON"),
    ("fingerprints-wrong-count", lambda p: _forge(p, fingerprints='["x|1|2"]'), "1 fingerprints for 3 sources",
     "rebuild", "1 fingerprints for 3 sources"),
    ("fingerprints-empty", lambda p: _forge(p, fingerprints="[]"), None, "rebuild", "no file fingerprints"),
    ("other-model", lambda p: _forge(p, model_name="someone/other-clip"), "built with 'someone/other-clip'",
     "rebuild", "built with 'someone/other-clip'"),
    ("no-embeddings-tensor", lambda p: _forge(p, tensor_name="emb"), "no 'embeddings' tensor", "rebuild", "no 'embeddings'"),
    ("embeddings-1d", lambda p: _forge(p, embeddings=_unit(1, 64)[0]), "1-D embeddings", "rebuild", "1-D embeddings"),
    ("embeddings-3d", lambda p: _forge(p, embeddings=_unit(3, 64).reshape(3, 1, 64)), "3-D embeddings",
     "rebuild", "3-D embeddings"),
    ("embeddings-nan", lambda p: _forge(p, embeddings=np.where(np.eye(3, 64) > 0, np.nan, _unit(3, 64)).astype(np.float32)),
     "NaN or infinite", "rebuild", "NaN or infinite"),
    ("embeddings-one-nan", lambda p: _forge(p, embeddings=np.vstack([_unit(2, 64), np.full((1, 64), np.nan, np.float32)])),
     "1 embeddings with NaN", "rebuild", "1 embeddings with NaN"),
    ("embeddings-inf", lambda p: _forge(p, embeddings=np.full((3, 64), np.inf, np.float32)), "NaN or infinite",
     "rebuild", "NaN or infinite"),
    ("embeddings-int32", lambda p: _forge(p, embeddings=np.ones((3, 64), np.int32)), "int32 embeddings", "rebuild", "int32"),
    ("embeddings-float64", lambda p: _forge(p, embeddings=_unit(3, 64, np.float64)), "float64 embeddings",
     "rebuild", "float64"),
    ("embeddings-float16", lambda p: _forge(p, embeddings=_unit(3, 64, np.float16)), "float16 embeddings",
     "rebuild", "float16"),
    ("embeddings-not-unit", lambda p: _forge(p, embeddings=_unit(3, 64) * 3), "not unit length", "rebuild", "not unit length"),
    ("embeddings-zero-rows", lambda p: _forge(p, embeddings=np.zeros((3, 64), np.float32)), "not unit length",
     "rebuild", "not unit length"),
    ("embeddings-empty", lambda p: _forge(p, embeddings=np.zeros((0, 64), np.float32), sources="[]", fingerprints="[]"),
     "holds no embeddings", "rebuild", "holds no embeddings"),
    ("embeddings-too-few-rows", lambda p: _forge(p, embeddings=_unit(2, 64)), "2 embeddings for 3 sources",
     "rebuild", "2 embeddings for 3 sources"),
    ("embeddings-wrong-size", lambda p: _forge(p, embeddings=_unit(3, 70)), "70-dimensional", "rebuild", "70-dimensional"),
]


@pytest.mark.parametrize(("spoil", "load_phrase"), [pytest.param(c[1], c[2], id=c[0]) for c in CORRUPTIONS])
def test_a_corrupted_index_file_is_refused_in_one_sentence(clip, folder, tmp_path, spoil, load_phrase):
    path = tmp_path / "photos.index"
    clip.index(folder, cache=path)
    spoil(path)
    if load_phrase is None:
        assert len(ImageIndex.load(path, clip)) == 3
        return
    with pytest.raises(ImageIndexError) as info:
        ImageIndex.load(path, clip)
    message = str(info.value)
    assert load_phrase in message and "rebuild it" in message, message
    assert_one_sentence(message)
    assert not (tmp_path / "PICKLE_RAN").exists(), "a pickle inside the file ran code"


@pytest.mark.parametrize(
    ("spoil", "outcome", "phrase"), [pytest.param(c[1], c[3], c[4], id=c[0]) for c in CORRUPTIONS]
)
def test_a_corrupted_cache_is_rebuilt_or_refused_never_trusted(clip, folder, tmp_path, spoil, outcome, phrase):
    path = tmp_path / "photos.index"
    fresh = clip.index(folder, cache=path)
    spoil(path)
    spoiled = path.read_bytes()
    if outcome == "refuse":
        with pytest.raises(ImageIndexError) as info:
            clip.index(folder, cache=path)
        message = str(info.value)
        assert phrase in message and "pass a new cache file name" in message, message
        assert_one_sentence(message)
        assert path.read_bytes() == spoiled, "a file that may be the user's own was overwritten"
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rebuilt = clip.index(folder, cache=path)
        messages = [str(w.message) for w in caught]
        assert len(messages) == 1 and phrase in messages[0] and "ignored and rebuilt" in messages[0], messages
        assert_one_sentence(messages[0])
        np.testing.assert_allclose(rebuilt.embeddings, fresh.embeddings, atol=1e-6)
        assert rebuilt.sources == fresh.sources
        assert len(ImageIndex.load(path, clip)) == 3, "the rebuilt cache must be readable again"
    assert not (tmp_path / "PICKLE_RAN").exists(), "a pickle inside the file ran code"


# ------------------------------------------------------------------------- calls that must raise


def _fifo(ctx) -> Path:
    path = ctx.tmp / "pipe.index"
    os.mkfifo(path)
    return path


def _under_a_file(ctx) -> Path:
    (ctx.tmp / "notes.txt").write_text("hello")
    return ctx.tmp / "notes.txt" / "photos.index"


def _wrong_size_index(ctx) -> ImageIndex:
    return ImageIndex(_unit(2, 16), ["image 1", "image 2"], MODEL, clip=ctx.clip)


ERRORS = [
    # the cache argument of clip.index
    ("cache-is-a-folder", lambda c: c.clip.index(c.folder, cache=c.tmp), ImageIndexError, ("is a folder", "pass a file")),
    ("cache-is-the-image-folder", lambda c: c.clip.index(c.folder, cache=c.folder), ImageIndexError, ("is a folder",)),
    ("cache-empty-string", lambda c: c.clip.index(c.folder, cache=""), ImageIndexError, ("path is empty", "photos.index")),
    ("cache-blank-string", lambda c: c.clip.index(c.folder, cache="   "), ImageIndexError, ("path is empty",)),
    ("cache-under-a-file", lambda c: c.clip.index(c.folder, cache=_under_a_file(c)), ImageIndexError,
     ("which is a file, not a folder", "pass a path inside a folder")),
    ("cache-a-number", lambda c: c.clip.index(c.folder, cache=123), ImageIndexError, ("must be a file path", "not a int")),
    ("cache-a-list", lambda c: c.clip.index(c.folder, cache=["a.index"]), ImageIndexError, ("must be a file path",)),
    ("cache-bytes", lambda c: c.clip.index(c.folder, cache=b"a.index"), ImageIndexError, ("must be a file path",)),
    ("cache-true", lambda c: c.clip.index(c.folder, cache=True), ImageIndexError, ("must be a file path",)),
    ("cache-nul-byte", lambda c: c.clip.index(c.folder, cache="a\x00b.index"), ImageIndexError,
     ("not a usable cache path", "another file name")),
    ("cache-a-fifo", lambda c: c.clip.index(c.folder, cache=_fifo(c)), ImageIndexError, ("not a regular file",)),
    # (no /dev/null case: a regressed cache writer would rename a file over the machine's /dev/null)
    ("cache-an-image-of-the-folder", lambda c: c.clip.index(c.folder, cache=c.folder / "red.png"), ImageIndexError,
     ("image extension", "photos.index")),
    ("cache-new-jpg-name", lambda c: c.clip.index(c.folder, cache=c.tmp / "index.jpg"), ImageIndexError,
     ("image extension",)),
    ("cache-with-image-list", lambda c: c.clip.index([Image.new("RGB", (8, 8))], cache=c.tmp / "x.index"),
     ImageIndexError, ("works only when indexing a folder", "index.save")),
    # ImageIndex.load / save
    ("load-missing-file", lambda c: ImageIndex.load(c.tmp / "nope.index", c.clip), ImageIndexError,
     ("no image index at", "clip.index(folder, cache=")),
    ("load-a-folder", lambda c: ImageIndex.load(c.folder, c.clip), ImageIndexError, ("is a folder",)),
    ("load-none", lambda c: ImageIndex.load(None, c.clip), ImageIndexError, ("must be a file path", "NoneType")),
    ("load-arguments-swapped", lambda c: ImageIndex.load(c.clip, c.tmp / "x.index"), ImageIndexError,
     ("must be a file path", "not a Clip")),
    ("load-clip-a-string", lambda c: ImageIndex.load(c.index.save(c.tmp / "a.index"), MODEL), ImageIndexError,
     ("mn.load_clip", "not a str")),
    ("load-a-fifo", lambda c: ImageIndex.load(_fifo(c), c.clip), ImageIndexError, ("not a regular file",)),
    ("save-to-a-folder", lambda c: c.index.save(c.tmp), ImageIndexError, ("is a folder",)),
    ("save-under-a-file", lambda c: c.index.save(_under_a_file(c)), ImageIndexError, ("which is a file",)),
    ("save-none", lambda c: c.index.save(None), ImageIndexError, ("must be a file path",)),
    ("save-unwritable-place", lambda c: c.index.save("/proc/mllm_nb_test.index"), ImageIndexError,
     ("Could not write the image index", "folder you can write to")),
    # building an ImageIndex by hand
    ("new-index-rows-vs-sources", lambda c: ImageIndex(_unit(2, 8), ["a.png"], MODEL), ImageIndexError,
     ("2 embeddings for 1 sources",)),
    ("new-index-nan", lambda c: ImageIndex(np.full((1, 8), np.nan), ["a.png"], MODEL), ImageIndexError, ("NaN",)),
    ("new-index-1d", lambda c: ImageIndex(_unit(1, 8)[0], ["a.png"], MODEL), ImageIndexError, ("1-D",)),
    ("new-index-not-unit", lambda c: ImageIndex(np.ones((1, 8)), ["a.png"], MODEL), ImageIndexError, ("unit length",)),
    ("new-index-strings", lambda c: ImageIndex(np.array([["a"]]), ["a.png"], MODEL), ImageIndexError, ("not float32",)),
    ("new-index-source-string", lambda c: ImageIndex(_unit(1, 8), "a.png", MODEL), ImageIndexError,
     ("list of strings",)),
    # queries
    ("search-none", lambda c: c.index.search(None), ClassifyError, ("non-empty string",)),
    ("search-empty", lambda c: c.index.search(""), ClassifyError, ("non-empty string",)),
    ("search-whitespace", lambda c: c.index.search(" \t "), ClassifyError, ("non-empty string",)),
    ("search-number", lambda c: c.index.search(42), ClassifyError, ("non-empty string",)),
    ("search-list", lambda c: c.index.search(["a red square"]), ClassifyError, ("non-empty string",)),
    ("search-bytes", lambda c: c.index.search(b"a red square"), ClassifyError, ("non-empty string",)),
    ("search-k-zero", lambda c: c.index.search("red", k=0), ClassifyError, ("k must be at least 1",)),
    ("search-k-negative", lambda c: c.index.search("red", k=-3), ClassifyError, ("k must be at least 1",)),
    ("search-k-float", lambda c: c.index.search("red", k=1.5), ClassifyError, ("whole number", "1.5")),
    ("search-k-string", lambda c: c.index.search("red", k="3"), ClassifyError, ("whole number", "'3'")),
    ("search-k-none", lambda c: c.index.search("red", k=None), ClassifyError, ("whole number",)),
    ("search-k-bool", lambda c: c.index.search("red", k=True), ClassifyError, ("whole number",)),
    ("search-no-model", lambda c: ImageIndex.load(c.index.save(c.tmp / "a.index")).search("red"), ImageIndexError,
     ("no model attached", "ImageIndex.load(path, clip)")),
    ("search-wrong-embedding-size", lambda c: _wrong_size_index(c).search("red"), ImageIndexError,
     ("16-dimensional", "64-dimensional", "rebuild it")),
    # building the index / embedding texts
    ("index-batch-size-zero", lambda c: c.clip.index(c.folder, batch_size=0), ClassifyError, ("batch_size",)),
    ("index-batch-size-negative", lambda c: c.clip.index([Image.new("RGB", (8, 8))], batch_size=-2), ClassifyError,
     ("batch_size",)),
    ("index-batch-size-string", lambda c: c.clip.index(c.folder, batch_size="4"), ClassifyError, ("whole number",)),
    ("index-batch-size-float", lambda c: c.clip.index(c.folder, batch_size=2.5), ClassifyError, ("whole number",)),
    ("index-empty-list", lambda c: c.clip.index([]), MllmNbError, ("No images were given",)),
    ("index-empty-folder", lambda c: c.clip.index(c.tmp / "empty" if (c.tmp / "empty").mkdir() is None else None),
     ImageIndexError, ("has no image files",)),
    ("index-missing-folder", lambda c: c.clip.index(c.tmp / "no-such-folder"), MllmNbError, ("no-such-folder",)),
    ("index-none", lambda c: c.clip.index(None), MllmNbError, ()),
    ("index-all-images-broken", lambda c: c.clip.index(_broken_folder(c)), ImageIndexError,
     ("None of the 2 image files", "fix or remove them")),
    ("embed-texts-one-string", lambda c: c.clip.embed_texts("a cat"), ClassifyError, ("not the single string", "wrap")),
    ("embed-texts-empty", lambda c: c.clip.embed_texts([]), ClassifyError, ("texts is empty",)),
    ("embed-texts-none-inside", lambda c: c.clip.embed_texts(["a cat", None]), ClassifyError, ("must be a string",)),
    ("embed-texts-not-iterable", lambda c: c.clip.embed_texts(5), ClassifyError, ("list of strings",)),
]


def _broken_folder(ctx) -> Path:
    broken = ctx.tmp / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"")
    (broken / "b.jpg").write_text("<html>not a picture</html>")
    return broken


@pytest.mark.parametrize(("call", "kind", "phrases"), [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
def test_a_bad_call_is_one_actionable_sentence(ctx, call, kind, phrases):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(kind) as info:
            call(ctx)
    assert isinstance(info.value, MllmNbError)
    message = str(info.value)
    for phrase in phrases:
        assert phrase.lower() in message.lower(), message
    assert_one_sentence(message)


# ------------------------------------------------------------ inputs that work, with one warning


def _fail_writes(monkeypatch, code: int, text: str) -> None:
    import safetensors.numpy

    def refuse(*args, **kwargs):
        raise OSError(code, text)

    monkeypatch.setattr(safetensors.numpy, "save_file", refuse)


WRITE_FAILURES = [
    ("read-only-folder", errno.EROFS, "Read-only file system"),
    ("permission-denied", errno.EACCES, "Permission denied"),
    ("disk-full", errno.ENOSPC, "No space left on device"),
]


@pytest.mark.parametrize(("code", "text"), [pytest.param(*w[1:], id=w[0]) for w in WRITE_FAILURES])
def test_an_unwritable_cache_still_indexes_and_says_so_once(clip, folder, tmp_path, monkeypatch, code, text):
    _fail_writes(monkeypatch, code, text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = clip.index(folder, cache=tmp_path / "photos.index")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and text in messages[0] and "not cached" in messages[0], messages
    assert_one_sentence(messages[0])
    assert len(index) == 3 and index.search("red", k=1)[0].source.endswith(".png")
    assert not (tmp_path / "photos.index").exists() and not list(tmp_path.glob(".photos.index*"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc, a folder nobody can write to")
def test_a_cache_in_a_real_unwritable_folder_warns_once(clip, folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = clip.index(folder, cache="/proc/mllm_nb_test_cache.index")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "Could not write the cache" in messages[0], messages
    assert_one_sentence(messages[0])
    assert len(index) == 3


def test_an_interrupted_write_keeps_the_old_cache(clip, folder, tmp_path, monkeypatch):
    import safetensors.numpy

    path = tmp_path / "photos.index"
    clip.index(folder, cache=path)
    before = path.read_bytes()
    Image.new("RGB", (48, 48), "yellow").save(folder / "yellow.png")

    def half_then_ctrl_c(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{half")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        clip.index(folder, cache=path)
    assert path.read_bytes() == before and not list(tmp_path.glob(".photos.index*"))


def test_unreadable_images_in_the_folder_are_one_warning_line(clip, folder):
    (folder / "empty.png").write_bytes(b"")
    (folder / "bad\nname.jpg").write_text("<html>not a picture</html>")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = clip.index(folder)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and messages[0].startswith("Skipped 2 unreadable file(s)"), messages
    assert "\n" not in messages[0]
    assert len(index) == 3


def test_a_cache_of_another_folder_is_not_trusted(clip, folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (48, 48), "white").save(other / "white.png")
    path = tmp_path / "shared.index"
    clip.index(other, cache=path)
    index = clip.index(folder, cache=path)
    assert [Path(s).name for s in index.sources] == ["blue.png", "green.png", "red.png"]
    np.testing.assert_allclose(index.embeddings, clip.index(folder).embeddings, atol=1e-6)


def test_a_stale_cache_drops_deleted_files_and_embeds_changed_ones(clip, folder, tmp_path):
    path = tmp_path / "photos.index"
    clip.index(folder, cache=path)
    (folder / "green.png").unlink()
    Image.new("RGB", (48, 48), "yellow").save(folder / "red.png")  # same name, new picture
    index = clip.index(folder, cache=path)
    assert [Path(s).name for s in index.sources] == ["blue.png", "red.png"]
    np.testing.assert_allclose(index.embeddings, clip.index(folder).embeddings, atol=1e-6)


def test_big_k_and_numpy_k_work(ctx):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ctx.index.search("red", k=100)) == 3
        assert len(ctx.index.search("red", k=np.int64(2))) == 2


def test_a_long_or_odd_query_still_searches(ctx):
    assert len(ctx.index.search("red " * 5000, k=1)) == 1
    assert len(ctx.index.search("🙂 \x00 빨간 사각형", k=1)) == 1
