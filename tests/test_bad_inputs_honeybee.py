"""Hostile inputs for the Honeybee converter and downloader (issue 19): each ends in ONE HoneybeeError sentence.

Every case of :data:`CASES` sets up a damaged release, argument, archive or server, runs convert / download /
extract and expects a ``HoneybeeError`` (an ``MllmNbError``) whose one-line message holds a phrase of what
happened and what to do - within a time limit. Servers listen on 127.0.0.1, port 0, in daemon threads.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tiny_honeybee import VECTORS

import mllm_nb.honeybee as hb
from mllm_nb.errors import MllmNbError

convert_module = sys.modules["mllm_nb.honeybee.convert"]
download_module = sys.modules["mllm_nb.honeybee.download"]
RELEASE = VECTORS / "c-abs" / "checkpoint" / "last"
NAME = "7B-C-Abs-M144"
Case = Callable[[Path, pytest.MonkeyPatch], Callable[[], object]]


# ------------------------------------------------------------------------------------ helpers


def release(tmp: Path) -> Path:
    folder = tmp / "rel" / "last"
    if not folder.exists():
        shutil.copytree(RELEASE, folder)
    return folder


def run_convert(tmp: Path, dst: object = None, **kwargs: object) -> Callable[[], object]:
    src = kwargs.pop("src", release(tmp).parent)
    kwargs.setdefault("tokenizer", None)
    return lambda: hb.convert(src, tmp / "out" if dst is None else dst, progress=False, **kwargs)


def edit_config(change: Callable[[dict], object], file: str = "config.json") -> Case:
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
        path = release(tmp) / file
        config = json.loads(path.read_text())
        config = change(config) or config
        path.write_text(json.dumps(config))
        return run_convert(tmp)

    return case


def setter(section: str | None, key: str, value: object) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        (config[section] if section else config)[key] = value

    return change


def write_file(name: str, data: bytes) -> Case:
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
        (release(tmp) / name).write_bytes(data)
        return run_convert(tmp)

    return case


def state() -> dict[str, torch.Tensor]:
    return torch.load(RELEASE / "pytorch_model.bin", weights_only=True)


def save_shard(make: Callable[[dict], object]) -> Case:
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
        torch.save(make(state()), release(tmp) / "pytorch_model.bin")
        return run_convert(tmp)

    return case


def with_index(weight_map: object, raw: str | None = None, prepare: Callable[[Path], None] | None = None) -> Case:
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
        folder = release(tmp)
        if prepare:
            prepare(folder)
        text = raw if raw is not None else json.dumps({"weight_map": weight_map})
        (folder / "pytorch_model.bin.index.json").write_text(text)
        return run_convert(tmp)

    return case


def outside_checkpoint(folder: Path) -> None:
    shutil.copy(RELEASE / "pytorch_model.bin", folder.parent.parent / "x.bin")


def symlinked_shard(folder: Path) -> None:
    outside_checkpoint(folder)
    (folder / "linked.bin").symlink_to(folder.parent.parent / "x.bin")


def split_with_duplicate(folder: Path) -> None:
    tensors = state()
    keys = sorted(tensors)
    torch.save({k: tensors[k] for k in keys[: len(keys) // 2 + 1]}, folder / "pytorch_model-00001-of-00002.bin")
    torch.save({k: tensors[k] for k in keys[len(keys) // 2 :]}, folder / "pytorch_model-00002-of-00002.bin")
    (folder / "pytorch_model.bin").unlink()


def convert_with(dst: Callable[[Path], object] | None = None, **kwargs: object) -> Case:
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
        return run_convert(tmp, dst(tmp) if dst else None, **kwargs)

    return case


def a_file(tmp: Path) -> Path:
    (tmp / "taken").write_text("x")
    return tmp / "taken"


def model_folder(tmp: Path) -> Path:
    (tmp / "old").mkdir()
    (tmp / "old" / "model.safetensors").write_bytes(b"x")
    return tmp / "old"


def no_disk(module: object) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def patch(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**6, 10**6 - 10, 10))

    return patch


def convert_without_disk(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
    no_disk(convert_module)(tmp, mp)
    return run_convert(tmp)


def broken_tokenizer(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
    (release(tmp) / "tokenizer.json").write_text("{broken")
    (release(tmp) / "tokenizer_config.json").write_text("[1, 2]")
    return run_convert(tmp, tokenizer="no/such-tokenizer")


# ------------------------------------------------------------------------------------ archives and servers


def tar_gz(members: dict[str, bytes], special: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (special or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buffer.getvalue()


def good_archive() -> bytes:
    return tar_gz({f"{NAME}/last/{f}": (RELEASE / f).read_bytes() for f in ("config.json", "generation_config.json")})


class Zeros(io.RawIOBase):
    """``size`` zero bytes, read lazily (a 300 MB member without 300 MB of memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def bomb(size: int = 300 * 10**6) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo(f"{NAME}/last/pytorch_model.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(Zeros(size)))
    return buffer.getvalue()


def extract_archive(data: bytes | Callable[[], bytes], patch: Callable | None = None) -> Case:
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
        (tmp / f"{NAME}.tar.gz").write_bytes(data() if callable(data) else data)
        if patch:
            patch(tmp, mp)
        return lambda: hb.download(NAME, tmp, progress=False)

    return case


class Server:
    """One-file HTTP server on 127.0.0.1 whose GET answer ``respond(handler, range)`` scripts."""

    def __init__(self, respond: Callable[[http.server.BaseHTTPRequestHandler, str | None], None]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                respond(self, self.headers.get("Range"))

            def do_HEAD(self) -> None:
                respond(self, "HEAD")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{NAME}.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


SERVERS: list[Server] = []


def reply(status: int, headers: dict[str, str], body: bytes = b"", sleep: float = 0.0, cut: int | None = None):
    def respond(handler: http.server.BaseHTTPRequestHandler, requested: str | None) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if requested == "HEAD":
            return
        handler.wfile.write(body[:cut] if cut is not None else body)
        handler.wfile.flush()
        if sleep:
            time.sleep(sleep)
        handler.close_connection = True

    return respond


def download_from(respond: Callable | None = None, part: bytes | None = None, url: str | None = None,
                  patch: Callable | None = None, **kwargs: object) -> Case:  # fmt: skip
    def case(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
        mp.setattr(download_module, "TIMEOUT_S", 1)
        if part is not None:
            (tmp / f"{NAME}.tar.gz.part").write_bytes(part)
        target = url
        if respond is not None:
            SERVERS.append(Server(respond))
            target = SERVERS[-1].url
        if patch:
            patch(tmp, mp)
        return lambda: hb.download(kwargs.get("name", NAME), kwargs.get("dst", tmp), url=target, progress=False)

    return case


def silent(handler: http.server.BaseHTTPRequestHandler, requested: str | None) -> None:
    time.sleep(3)  # accept the connection, never answer (the client gives up after TIMEOUT_S = 1)


def hang_up(handler: http.server.BaseHTTPRequestHandler, requested: str | None) -> None:
    handler.close_connection = True  # close without a status line


def redirect_loop(handler: http.server.BaseHTTPRequestHandler, requested: str | None) -> None:
    handler.send_response(302)
    handler.send_header("Location", handler.path)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def closed_port() -> str:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/{NAME}.tar.gz"


ARCHIVE = good_archive()
HTML = b"<html><body>Please log in to the hotel Wi-Fi</body></html>"


# ------------------------------------------------------------------------------------ the corpus

CASES: dict[str, tuple[Case, str]] = {
    # --- config.json
    "config-not-json": (write_file("config.json", b"{not json"), r"config.json' is not valid JSON .*re-extract"),
    "config-empty": (write_file("config.json", b""), r"is not valid JSON \(JSONDecodeError at line 1"),
    "config-not-utf8": (write_file("config.json", b"\xff\xfe\x00{"), r"is not valid JSON \(UnicodeDecodeError"),
    "config-list": (write_file("config.json", b"[1, 2]"), r"holds a JSON list, not the object"),
    "config-string": (write_file("config.json", b'"mllm"'), r"holds a JSON str, not the object"),
    "config-other-model": (edit_config(setter(None, "model_type", "llava")), r"not an official Honeybee release"),
    "feature-layer-last": (edit_config(setter("visual_projector_config", "feature_layer_index", "last")),
                           r"feature_layer_index='last', but it must be a whole number between -3 and 2"),
    "feature-layer-99": (edit_config(setter("visual_projector_config", "feature_layer_index", 99)),
                         r"feature_layer_index=99, but .*releases use -1"),
    "feature-layer-list": (edit_config(setter("visual_projector_config", "feature_layer_index", [-1, -2])),
                           r"Multi-level vision features"),
    "hidden-size-x": (edit_config(setter("text_config", "hidden_size", "x")),
                      r"text_config.hidden_size='x', but it must be a whole number >= 1; re-extract"),
    "vocab-negative": (edit_config(setter("text_config", "vocab_size", -5)), r"text_config.vocab_size=-5"),
    "vocab-zero": (edit_config(setter("text_config", "vocab_size", 0)), r"text_config.vocab_size=0"),
    "layers-negative": (edit_config(setter("text_config", "num_hidden_layers", -1)), r"num_hidden_layers=-1"),
    "vision-hidden-bool": (edit_config(setter("vision_config", "hidden_size", True)), r"vision.*hidden_size=True"),
    "patch-size-zero": (edit_config(setter("vision_config", "patch_size", 0)), r"vision_config.patch_size=0"),
    "image-size-str": (edit_config(setter("vision_config", "image_size", "224")), r"vision_config.image_size='224'"),
    "image-too-small": (edit_config(setter("vision_config", "image_size", 28)), r"gives 2x2 patches, fewer than"),
    "eps-str": (edit_config(setter("text_config", "rms_norm_eps", "tiny")), r"rms_norm_eps='tiny', but it must be"),
    "torch-dtype-float7": (edit_config(setter(None, "torch_dtype", "float7")), r"torch_dtype='float7', which is not"),
    "text-dtype-number": (edit_config(lambda c: c.update(torch_dtype=None) or c["text_config"].update(torch_dtype=7)),
                          r"text_config.torch_dtype=7"),
    "query-tokens-str": (edit_config(setter(None, "num_query_tokens", "16")), r"num_query_tokens='16', but it must"),
    "heads-not-dividing": (edit_config(setter("text_config", "num_attention_heads", 3)),
                           r"values a Honeybee model cannot be built from .*restore the official config.json"),
    "rope-scaling-unknown": (edit_config(setter("text_config", "rope_scaling", {"rope_type": "weird", "factor": 2.0})),
                             r"(cannot be built from|No Honeybee model can be built).*official config.json"),
    "projector-list": (edit_config(setter(None, "visual_projector_config", [1, 2])),
                       r"visual_projector_config as a JSON list, not an object"),
    "vision-config-str": (edit_config(setter(None, "vision_config", "clip")), r"vision_config as a JSON str"),
    "projector-type-missing": (edit_config(setter("visual_projector_config", "projector_type", None)),
                               r"Projector type None is not supported"),
    "projector-depth-str": (edit_config(setter("visual_projector_config", "depth", "x")),
                            r"abstractor depth must be a whole number >= 1; got 'x'"),
    "projector-hidden-zero": (edit_config(setter("visual_projector_config", "hidden_size", 0)),
                              r"abstractor hidden_size must be a whole number >= 1; got 0"),
    "queries-not-square": (edit_config(lambda c: c.update(num_query_tokens=15)
                                       or c["visual_projector_config"].update(num_queries=15)),
                           r"num_queries must be a square number"),
    # --- generation_config.json
    "generation-not-json": (write_file("generation_config.json", b"{oops"), r"generation_config.json' is not valid"),
    "generation-list": (write_file("generation_config.json", b"[]"), r"holds a JSON list, not the object"),
    "generation-temperature-str": (edit_config(setter(None, "temperature", "hot"), "generation_config.json"),
                                   r"temperature='hot', which is not a valid number; delete the file"),
    "generation-eos-str": (edit_config(setter(None, "eos_token_id", "x"), "generation_config.json"),
                           r"eos_token_id='x'"),
    "generation-max-new-negative": (edit_config(setter(None, "max_new_tokens", -1), "generation_config.json"),
                                    r"max_new_tokens=-1, which is not a valid number"),
    # --- the shard index
    "index-not-json": (with_index(None, raw="{nope"), r"index.json' is not valid JSON"),
    "index-no-weight-map": (with_index(None, raw='{"metadata": {}}'), r"has no weight_map object .*found NoneType"),
    "index-list": (with_index(None, raw="[]"), r"holds a JSON list, not the object the shard index needs"),
    "weight-map-list": (with_index(["pytorch_model.bin"]), r"has no weight_map object .*found list"),
    "weight-map-empty": (with_index({}), r"has no weight_map object"),
    "weight-map-int": (with_index({"a": 5}), r"names the file 5, which is not a file name"),
    "weight-map-dotdot": (with_index({"a": "../../x.bin"}, prepare=outside_checkpoint),
                          r"Refusing 'pytorch_model.bin.index.json': it names '../../x.bin', a path outside"),
    "weight-map-absolute": (with_index({"a": str(RELEASE / "pytorch_model.bin")}), r"a path outside the release"),
    "weight-map-symlink-out": (with_index({"a": "linked.bin"}, prepare=symlinked_shard),
                               r"'linked.bin' links to a file outside the release folder"),
    "weight-map-missing-shard": (with_index({"a": "pytorch_model-9.bin"}), r"lacks pytorch_model-9.bin named by"),
    # --- shards
    "shard-text-file": (write_file("pytorch_model.bin", b"hello, I am a text file\n" * 40),
                        r"is not a readable PyTorch checkpoint .*re-extract it"),
    "shard-empty": (write_file("pytorch_model.bin", b""), r"is not a readable PyTorch checkpoint"),
    "shard-truncated": (write_file("pytorch_model.bin", (RELEASE / "pytorch_model.bin").read_bytes()[:100_000]),
                        r"is not a readable PyTorch checkpoint"),
    "shard-foreign-zip": (write_file("pytorch_model.bin", tar_gz({"a": b"x"})), r"not a readable PyTorch checkpoint"),
    "shard-list": (save_shard(lambda s: list(s.values())), r"is not a state dict of tensors"),
    "shard-int-keys": (save_shard(lambda s: {i: v for i, v in enumerate(s.values())}), r"not a state dict of tensors"),
    "shard-nested": (save_shard(lambda s: {"state_dict": s}), r"not a state dict of tensors"),
    "shard-empty-dict": (save_shard(lambda s: {}), r"do not match its config.json \(missing"),
    "shard-exec-pickle": (write_file("pytorch_model.bin", b""), r"x"),  # replaced below (needs a class)
    "shard-wrong-shape": (save_shard(lambda s: {**s, "language_model.lm_head.weight": torch.zeros(3, 3)}),
                          r"lm_head.weight has shape \[3, 3\], the config asks for \[512, 128\]"),
    "shard-int-weights": (save_shard(lambda s: {**s, "language_model.lm_head.weight": torch.zeros(512, 128).long()}),
                          r"lm_head.weight holds torch.int64 values, the model needs torch.float32"),
    "shard-unknown-tensor": (save_shard(lambda s: {**s, "decoder.weight": torch.zeros(1)}),
                             r"Unexpected tensor 'decoder.weight'"),
    "shard-directory": (lambda tmp, mp: (os.remove(release(tmp) / "pytorch_model.bin"),
                                         (release(tmp) / "pytorch_model.bin").mkdir(), run_convert(tmp))[-1],
                        r"not a readable PyTorch checkpoint \(IsADirectoryError"),
    "no-shards": (lambda tmp, mp: ((release(tmp) / "pytorch_model.bin").unlink(), run_convert(tmp))[-1],
                  r"No pytorch_model\*.bin weights"),
    "duplicate-tensor": (with_index({"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"},
                                    prepare=split_with_duplicate),
                         r"is in both pytorch_model-00001-of-00002.bin and pytorch_model-00002"),
    # --- arguments and destination
    "src-missing": (convert_with(src="/nonexistent/honeybee"), r"No Honeybee release found in '/nonexistent"),
    "src-none": (convert_with(src=None), r"src=None is not a folder path"),
    "src-is-config-file": (convert_with(src=RELEASE / "config.json"), r"No Honeybee release found"),
    "dst-none": (lambda tmp, mp: (lambda: hb.convert(release(tmp), None, tokenizer=None)), r"dst=None is not a folder"),
    "dst-is-file": (convert_with(a_file), r"taken' is a file, so .* cannot be a folder"),
    "dst-under-file": (convert_with(lambda tmp: a_file(tmp) / "sub"), r"taken' is a file, so .* cannot be a folder"),
    "dst-unwritable": (convert_with(lambda tmp: Path("/proc/mllm-nb-test/out")),
                       r"Writing the converted model to '/proc/mllm-nb-test/out' failed .*writable dst"),
    "dst-is-release": (convert_with(lambda tmp: release(tmp)), r"is the release folder itself"),
    "dst-has-model": (convert_with(model_folder), r"already holds a model .*overwrite=True"),
    "dst-disk-full": (convert_without_disk, r"Not enough disk space for the converted model"),
    "max-shard-str": (convert_with(max_shard_size="2GB"), r"max_shard_size=.2GB. must be a positive whole number"),
    "max-shard-zero": (convert_with(max_shard_size=0), r"max_shard_size=0 must be a positive whole number of bytes"),
    "dtype-float7": (convert_with(dtype="float7"), r"dtype='float7' is not supported"),
    "dtype-float-number": (convert_with(dtype=3.5), r"dtype=3.5 is not supported"),
    "tokenizer-broken-files": (broken_tokenizer, r"Could not load the tokenizer .*tokenizer=None to skip it"),
    # --- download: arguments
    "name-none": (download_from(url="http://127.0.0.1:9/x", name=None), r"name=None must be a str"),
    "name-path": (download_from(url="http://127.0.0.1:9/x", name="../evil"), r"must be a plain folder name"),
    "url-ftp": (download_from(url="ftp://example.org/a.tar.gz"), r"is not an http\(s\) URL; pass a mirror"),
    "url-words": (download_from(url="not a url"), r"is not an http\(s\) URL"),
    "url-int": (download_from(url=123), r"url=123 is not an http\(s\) URL"),
    "url-bad-ipv6": (download_from(url="http://[::1/x.tar.gz"), r"is not a valid URL .*working http\(s\) mirror"),
    "dst-file-download": (lambda tmp, mp: (lambda: hb.download(NAME, a_file(tmp), url="http://127.0.0.1:9/x")),
                          r"Cannot use .*taken' as the download folder"),
    "dst-unwritable-download": (download_from(url="http://127.0.0.1:9/x", dst="/proc/mllm-nb-test"),
                                r"Cannot use '/proc/mllm-nb-test' as the download folder"),
    "dst-none-download": (download_from(url="http://127.0.0.1:9/x", dst=None), r"dst=None is not a folder path"),
    # --- download: servers
    "content-length-abc": (download_from(reply(200, {"Content-Length": "abc"}, ARCHIVE)),
                           r"sent a malformed Content-Length header \('abc'\); try again later or pass url="),
    "content-length-negative": (download_from(reply(200, {"Content-Length": "-5"}, ARCHIVE)),
                                r"malformed Content-Length header \('-5'\)"),
    "content-range-garbage": (download_from(reply(206, {"Content-Range": "bytes lots", "Content-Length": "5"}, b"x"),
                                            part=ARCHIVE[:100]), r"malformed Content-Range header \('bytes lots'\)"),
    "content-range-wrong-start": (download_from(reply(206, {"Content-Range": f"bytes 0-99/{len(ARCHIVE)}",
                                                            "Content-Length": "100"}, ARCHIVE[:100]),
                                                part=ARCHIVE[:100]), r"malformed Content-Range header"),
    "server-silent": (download_from(silent), r"stopped after 0.00 GB .*run download\(\) again to resume"),
    "server-hangs-up": (download_from(hang_up), r"stopped after .*run download\(\) again"),
    "server-stalls-mid-body": (download_from(reply(200, {"Content-Length": str(len(ARCHIVE))}, ARCHIVE, sleep=3,
                                                   cut=100)), r"stopped after .*again to resume"),
    "server-truncates": (download_from(reply(200, {"Content-Length": str(len(ARCHIVE))}, ARCHIVE, cut=500)),
                         r"stopped after .*again to resume"),
    "connection-refused": (download_from(url=closed_port()), r"stopped after 0.00 GB \(.*Connection refused"),
    "http-403": (download_from(reply(403, {"Content-Length": "0"})), r"answered 403 .*check the name, or pass url="),
    "http-404": (download_from(reply(404, {"Content-Length": "0"})), r"answered 404"),
    "http-503": (download_from(reply(503, {"Content-Length": "0"})), r"failed \(503 .*try again later"),
    "redirect-loop": (download_from(redirect_loop),
                      r"answered 302 \(The HTTP server returned a redirect error .*pass url= a working mirror"),
    "html-instead-of-archive": (download_from(reply(200, {"Content-Length": str(len(HTML))}, HTML)),
                                r"could not be extracted \(ReadError.*delete it and download again"),
    "more-bytes-than-announced": (download_from(reply(206, {"Content-Range": "bytes 10-19/20",
                                                            "Content-Length": "10"}, b"y" * 10),
                                                part=b"x" * 30), r"malformed Content-Range|sent more bytes"),
    "download-disk-full": (download_from(reply(200, {"Content-Length": str(len(ARCHIVE))}, ARCHIVE),
                                         patch=no_disk(download_module)),
                           r"Not enough disk space .*free some space or pass another dst"),
    # --- archives
    "bomb-300MB": (extract_archive(bomb), r"Refusing to extract .*a compression bomb, not a genuine release"),
    "too-many-members": (extract_archive(tar_gz({f"{NAME}/last/f{i}": b"" for i in range(20)}),
                                         lambda tmp, mp: mp.setattr(download_module, "MAX_MEMBERS", 5)),
                         r"or 5 files from .*compression bomb"),
    "expands-past-free-disk": (extract_archive(lambda: bomb(2 * 10**6),
                                               lambda tmp, mp: mp.setattr(download_module.shutil, "disk_usage",
                                                   lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))),
                               r"Not enough disk space in .* to extract .*free some space"),
    "member-dotdot": (extract_archive(tar_gz({f"{NAME}/last/config.json": b"{}", "../up.txt": b"x"})),
                      r"Refusing to extract .*OutsideDestinationError"),
    "member-absolute": (extract_archive(tar_gz({"/tmp/mllm-nb-bad-abs.txt": b"x"})), r"AbsolutePathError"),
    "symlink-out": (extract_archive(tar_gz({}, {f"{NAME}/l": (tarfile.SYMTYPE, "../../etc/passwd")})),
                    r"LinkOutsideDestinationError"),
    "symlink-absolute": (extract_archive(tar_gz({}, {f"{NAME}/l": (tarfile.SYMTYPE, "/etc/passwd")})),
                         r"Refusing to extract .*(AbsoluteLinkError|LinkOutsideDestinationError)"),
    "hardlink-out": (extract_archive(tar_gz({}, {f"{NAME}/h": (tarfile.LNKTYPE, "/etc/passwd")})),
                     r"Refusing to extract|could not be extracted"),
    "fifo-member": (extract_archive(tar_gz({}, {f"{NAME}/fifo": (tarfile.FIFOTYPE, "")})), r"SpecialFileError"),
    "device-member": (extract_archive(tar_gz({}, {f"{NAME}/dev": (tarfile.CHRTYPE, "")})), r"SpecialFileError"),
    "archive-garbage": (extract_archive(b"\x1f\x8b garbage"), r"could not be extracted .*delete it and download"),
    "archive-empty": (extract_archive(b""), r"could not be extracted"),
    "archive-truncated": (extract_archive(lambda: bomb(10**5)[:200]), r"could not be extracted"),
    "archive-other-folder": (extract_archive(tar_gz({"other/last/config.json": b"{}"})),
                             r"did not contain 7B-C-Abs-M144/last/config.json"),
    "extract-missing-archive": (lambda tmp, mp: (lambda: download_module.extract(tmp / "no.tar.gz", tmp)),
                                r"no.tar.gz' is not a file; pass the path"),
    "extract-into-file": (lambda tmp, mp: (tmp / "a.tar.gz").write_bytes(ARCHIVE)
                          and (lambda: download_module.extract(tmp / "a.tar.gz", a_file(tmp))),
                          r"Cannot extract into .*taken'.*writable folder"),
    "extract-over-existing": (lambda tmp, mp: (tmp / "a.tar.gz").write_bytes(ARCHIVE) and (tmp / NAME).mkdir()
                              or (lambda: download_module.extract(tmp / "a.tar.gz", tmp)),
                              r"already exists; remove it or extract into another folder"),
}


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (exec, ("open('/tmp/mllm-nb-pwned', 'w').write('x')",))


def _exec_pickle(tmp: Path, mp: pytest.MonkeyPatch) -> Callable[[], object]:
    torch.save({"language_model.lm_head.weight": _RunsCode()}, release(tmp) / "pytorch_model.bin")
    return run_convert(tmp)


CASES["shard-exec-pickle"] = (_exec_pickle, r"Refusing to load 'pytorch_model.bin': its pickle needs more than")


@pytest.fixture(autouse=True)
def _stop_servers() -> object:
    yield
    while SERVERS:
        SERVERS.pop().stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("setup,phrase", list(CASES.values()), ids=list(CASES))
def test_bad_input_ends_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: Case, phrase: str
) -> None:
    action = setup(tmp_path, monkeypatch)
    started = time.monotonic()
    with pytest.raises(MllmNbError, match=phrase) as caught:
        action()
    message = str(caught.value)
    assert isinstance(caught.value, hb.HoneybeeError)
    assert "\n" not in message and message.rstrip().endswith((".", ")")), message
    assert time.monotonic() - started < 20
    assert not Path("/tmp/mllm-nb-pwned").exists() and not Path("/tmp/mllm-nb-bad-abs.txt").exists()
    assert not (tmp_path / "out" / "model.safetensors").exists()  # nothing half-written


# ------------------------------------------------------------------------------------ recovered, not refused


def _serve(payload: bytes, etag: str | None = None) -> tuple[Server, list]:
    seen: list = []

    def respond(handler: http.server.BaseHTTPRequestHandler, requested: str | None) -> None:
        seen.append((requested, handler.headers.get("If-Range")))
        if requested == "HEAD":
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            return
        start = int(requested.removeprefix("bytes=").rstrip("-")) if requested else 0
        if requested and handler.headers.get("If-Range") not in (None, etag):
            start = 0  # the file changed: a full 200 answer, as RFC 9110 asks
        if start >= len(payload) and requested:
            handler.send_response(416)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(206 if start else 200)
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        if etag:
            handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(len(payload) - start))
        handler.end_headers()
        handler.wfile.write(payload[start:])

    SERVERS.append(Server(respond))
    return SERVERS[-1], seen


def _changed_archive() -> bytes:
    config = json.loads((RELEASE / "config.json").read_text())
    config["note"] = "a newer upload of the same release" * 50
    return tar_gz({f"{NAME}/last/config.json": json.dumps(config).encode()})


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["other-size", "other-etag", "shorter-than-part"])
def test_resume_against_a_changed_server_file_starts_over(tmp_path: Path, how: str) -> None:
    """An interrupted download resumed against another file restarts instead of splicing two files."""
    old, new = ARCHIVE, _changed_archive()
    part = tmp_path / f"{NAME}.tar.gz.part"
    part.write_bytes(old[: len(old) // 2] if how != "shorter-than-part" else old + b"\x00" * len(new))
    if how != "shorter-than-part":  # other-etag: the size is unknown, only the ETag (If-Range) tells
        total = len(old) if how == "other-size" else None
        part.with_name(part.name + ".json").write_text(json.dumps({"url": None, "total": total, "validator": '"v1"'}))
    server, seen = _serve(new, etag='"v2"')
    folder = hb.download(NAME, tmp_path, url=server.url, progress=False)
    assert json.loads((folder / "config.json").read_text())["note"].startswith("a newer upload")
    assert not part.exists() and not part.with_name(part.name + ".json").exists()
    if how == "other-etag":
        assert ('bytes=' + str(len(old) // 2) + '-', '"v1"') in seen  # If-Range was sent


def test_corpus_size() -> None:
    assert len(CASES) >= 100
