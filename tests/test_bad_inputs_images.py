"""Hostile inputs for load_image / load_images (issue 19): each ends in ONE actionable sentence, quickly.

Every case is a row of ``CASES``: a source built from a small context (a temporary folder and a local
HTTP server on 127.0.0.1), the keyword arguments, and phrases that the message must contain (what
happened, what to do). Every message must be an ``MllmNbError``, one line, end with a period and must
not wrap another error's message. Servers are daemon threads on port 0 and stop with the fixture.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mllm_nb.errors import ImageLoadError, MllmNbError
from mllm_nb.images import load_image, load_images

# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def _encode(im: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _noise(size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


PNG = _encode(Image.new("RGB", (4, 3), (255, 0, 0)))
NOISY_PNG = _encode(_noise())
NOISY_JPEG = _encode(_noise(), "JPEG")
TEXT_BOMB_PNG = PNG[:33] + _chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\x00" * 30_000_000)) + PNG[33:]
HTML = b"<!DOCTYPE html><html><head><title>cat</title></head><body><img src='cat.png'></body></html>"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\nnewpath 0 0 moveto 4 4 lineto stroke\nshowpage\n"
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
ZIP = b"PK\x03\x04" + b"\x00" * 60
GZIP_BOMB = gzip.compress(b"\x00" * 20_000_000)  # ~20 kB that inflates to 20 MB


# ------------------------------------------------------------------------------------------------
# a hostile local HTTP server
# ------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        headers.setdefault("Content-Type", "image/png")
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            if value:
                self.send_header(key.replace("_", "-"), value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _trickle(self, data: bytes) -> None:
        for i in range(len(data)):
            if self.server.stop.wait(0.3):
                return
            self._raw(data[i : i + 1])

    def do_GET(self) -> None:  # one route per hostile behaviour
        path, redirect = self.path.split("?")[0], None
        try:
            if path == "/ok.png":
                self._reply(200, PNG)
            elif path.startswith("/status/"):
                self.send_error(int(path.rsplit("/", 1)[1]))
            elif path == "/page.html":
                self._reply(200, HTML, Content_Type="text/html; charset=utf-8")
            elif path == "/api.json":
                self._reply(200, b'{"error": "not found"}', Content_Type="application/json")
            elif path == "/empty.png":
                self._reply(200, b"")
            elif path == "/no-content.png":
                self.send_response(204)
                self.send_header("Connection", "close")
                self.end_headers()
            elif path == "/trickle-body.png":
                self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(NOISY_PNG))
                self._trickle(NOISY_PNG)
            elif path == "/trickle-headers.png":
                self._trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000 + b"\r\n\r\n")
            elif path == "/silent.png":
                self.server.stop.wait(30)
            elif path == "/huge-length.png":
                self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 2147483648\r\n\r\n" + PNG)
            elif path == "/endless-stream.png":
                self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n")
                for _ in range(200):
                    self._raw(b"\x00" * 65536)
            elif path == "/short-body.png":
                head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
                self._raw(head + b"\x89PNG" * 25)
            elif path == "/truncated.png":
                self._reply(200, NOISY_PNG[: len(NOISY_PNG) // 2])
            elif path == "/drawing.svg":
                self._reply(200, SVG, Content_Type="image/svg+xml")
            elif path == "/loop.png":
                redirect = "/loop.png"
            elif path.startswith("/hop/"):
                redirect = f"/hop/{int(path.rsplit('/', 1)[1]) + 1}"
            elif path == "/to-file.png":
                redirect = "file:///etc/passwd"
            elif path == "/to-data.png":
                redirect = "data:image/png;base64," + base64.b64encode(PNG).decode()
            elif path == "/to-ftp.png":
                redirect = "ftp://127.0.0.1/x.png"
            elif path == "/to-ok.png":
                redirect = "/ok.png"
            elif path == "/gzip.png":
                self._reply(200, gzip.compress(PNG), Content_Encoding="gzip")
            elif path == "/gzip-bomb.png":
                self._reply(200, GZIP_BOMB, Content_Encoding="gzip")
            elif path == "/bad-gzip.png":
                self._reply(200, b"\x1f\x8b\x08\x00garbage" * 10, Content_Encoding="gzip")
            elif path == "/brotli.png":
                self._reply(200, b"\x0b\x02\x80hello", Content_Encoding="br")
            elif path == "/gzip-file.png":
                self._reply(200, gzip.compress(PNG), Content_Type="application/gzip")
            elif path == "/not-http.png":
                self._raw(b"SSH-2.0-OpenSSH_9.6\r\n")
            elif path == "/hang-up.png":
                pass  # close without a response
            elif path == "/many-headers.png":
                self._raw(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n")
            elif path == "/bad-chunks.png":
                self._raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
            else:
                self.send_error(404)
            if redirect is not None:
                self.send_response(302)
                self.send_header("Location", redirect)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


@pytest.fixture(scope="module")
def server() -> Any:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.stop = threading.Event()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@dataclass
class Ctx:
    """What a case may build its source from."""

    tmp: Path
    base: str

    def file(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path


def _closed_png() -> Image.Image:
    im = Image.open(io.BytesIO(PNG))
    im.close()
    return im


def _released() -> memoryview:
    view = memoryview(bytearray(PNG))
    view.release()
    return view


class _ReadsNone:
    def read(self, size: int = -1) -> None:
        return None


class _ReadAttr:
    read = "not a method"


_FakeResponse = type("Response", (), {"__module__": "requests.models", "content": PNG})


def _fifo(ctx: Ctx) -> Path:
    path = ctx.tmp / "pipe.png"
    os.mkfifo(path)
    return path


def _unix_socket(ctx: Ctx) -> Path:
    path = ctx.tmp / "s.png"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return path


def _symlink(ctx: Ctx, name: str, target: str | Path) -> Path:
    path = ctx.tmp / name
    path.symlink_to(target)
    return path


def _sparse(ctx: Ctx) -> Path:
    path = ctx.tmp / "sparse.png"
    with path.open("wb") as fh:
        fh.truncate(2**30)
    return path


def _folder(ctx: Ctx, files: dict[str, bytes]) -> Path:
    folder = ctx.tmp / "photos"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _text_file(ctx: Ctx, mode: str) -> Any:
    path = ctx.file("f.png", PNG)
    fh = path.open(mode)
    if mode == "rb":
        fh.read()
    return fh


def _closed_file(ctx: Ctx) -> Any:
    fh = ctx.file("c.png", PNG).open("rb")
    fh.close()
    return fh


def _upload(name: str, content: Any) -> tuple[dict[str, Any], ...]:
    return ({"name": name, "content": content},)


# ------------------------------------------------------------------------------------------------
# the table: (id, source builder, kwargs, phrases, function)
# ------------------------------------------------------------------------------------------------

Build = Callable[[Ctx], Any]


@dataclass
class Case:
    id: str
    build: Build
    phrases: tuple[str, ...]
    kwargs: dict[str, Any] | None = None
    many: bool = False  # load_images instead of load_image
    limit_s: float = 5.0


def C(id: str, build: Build, *phrases: str, kw: dict[str, Any] | None = None, many: bool = False,
      limit_s: float = 5.0) -> Case:
    return Case(id, build, phrases, kw, many, limit_s)


CASES = [
    # ---- strings and paths
    C("empty-string", lambda c: "", "empty string", "pass a file path"),
    C("blank-string", lambda c: "  \n\t", "empty string", "pass a file path"),
    C("missing-file", lambda c: str(c.tmp / "nope.png"), "No such file", "check the path"),
    C("folder", lambda c: c.tmp, "is a folder", "load_images(folder)"),
    C("fifo", _fifo, "named pipe", "regular image file"),
    C("symlink-to-fifo", lambda c: _symlink(c, "l.png", _fifo(c)), "named pipe", "regular image file"),
    C("char-device", lambda c: "/dev/zero", "character device", "regular image file"),
    C("unix-socket", _unix_socket, "a socket", "regular image file"),
    C("zero-byte-file", lambda c: c.file("z.png", b""), "empty (0 bytes)", "re-download"),
    C("nul-in-path", lambda c: "cat\x00.png", "not a usable file path", "check the string"),
    C("very-long-path", lambda c: "a/" * 3000 + "x.png", "not a usable file path", "check the string"),
    C("very-long-name", lambda c: str(c.tmp / ("x" * 400 + ".png")), "not a usable file path", "too long"),
    C("broken-symlink", lambda c: _symlink(c, "b.png", c.tmp / "gone.png"), "symbolic link", "fix the link"),
    C("symlink-loop", lambda c: _symlink(c, "loop.png", c.tmp / "loop.png"), "not a usable file path", "symbolic"),
    C("path-through-a-file", lambda c: c.file("f.png", PNG) / "x.png", "No such file", "check the path"),
    C("glob-pattern", lambda c: (c.file("a.png", PNG), str(c.tmp / "*.png"))[1], "is a pattern", "load_images("),
    C("url-without-scheme", lambda c: "www.example.com/cat.jpg", "No such file", "https://"),
    C("bare-base64", lambda c: base64.b64encode(NOISY_PNG).decode(), "base64 image data", "data:image/png;base64,"),
    C("newline-in-missing-name", lambda c: "cat\nnew.png", "cat\\nnew.png", "No such file"),
    C("text-as-png", lambda c: c.file("t.png", b"hello, this is not an image\n" * 5), "HTML/text", "image file"),
    C("html-as-jpg", lambda c: c.file("h.jpg", HTML), "HTML/text", "download the image file"),
    C("svg-file", lambda c: c.file("s.png", SVG), "SVG", "rasterize"),
    C("pdf-file", lambda c: c.file("p.png", b"%PDF-1.7\n" + b"\x00" * 100), "PDF", "pdf2image"),
    C("eps-file", lambda c: c.file("e.eps", EPS), "PostScript/EPS", "export it as PNG"),
    C("gzip-file", lambda c: c.file("g.png", gzip.compress(PNG)), "gzip-compressed", "decompress it"),
    C("zip-file", lambda c: c.file("z.jpg", ZIP), "ZIP archive", "unzip"),
    C("video-file", lambda c: c.file("v.png", MP4), "video", "save one frame"),
    C("heic-file", lambda c: c.file("h.png", HEIC), "HEIC", "pillow-heif"),
    C("truncated-png", lambda c: c.file("t.png", NOISY_PNG[: len(NOISY_PNG) // 2]), "truncated or corrupt", "re-"),
    C("truncated-jpeg", lambda c: c.file("t.jpg", NOISY_JPEG[:300]), "truncated or corrupt", "re-download"),
    C("png-cut-in-header", lambda c: c.file("h.png", PNG[:12]), "truncated or corrupt PNG", "re-download"),
    C("garbage-bytes", lambda c: c.file("r.png", bytes(range(7, 250)) * 4), "not in an image format", "check"),
    C("sparse-1gb-file", _sparse, "not in an image format", "check that it really is an image", limit_s=5),
    C("pixel-bomb", lambda c: c.file("b.png", _png_header_only(100_000, 100_000)), "decompression bombs", "trust"),
    C("small-max-pixels", lambda c: PNG, "max_pixels=5", "pass max_pixels=12", kw={"max_pixels": 5}),
    C("png-text-bomb", lambda c: TEXT_BOMB_PNG, "truncated or corrupt PNG", "re-download"),
    # ---- URL-like strings that are not http(s)
    C("file-url-missing", lambda c: "file:///no/such/cat.png", "No such file '/no/such/cat.png'", "check the path"),
    C("file-url-remote-host", lambda c: "file://server/share/cat.png", "remote host", "file:///path"),
    C("s3-url", lambda c: "s3://bucket/cat.png", "the s3:// scheme", "download the file"),
    C("ftp-url", lambda c: "ftp://example.com/cat.png", "the ftp:// scheme", "http(s):// URL"),
    C("http-one-slash", lambda c: "http:/example.com/cat.png", "lacks the '//'", "http://host/"),
    # ---- malformed http(s) URLs (nothing is sent)
    C("ipv6-unclosed", lambda c: "http://[::1/x.png", "not a valid web address", "check it for typos"),
    C("crlf-in-url", lambda c: c.base + "/ok.png\r\nX-Evil: 1", "control character", "copy the address again"),
    C("port-out-of-range", lambda c: "http://127.0.0.1:99999/x.png", "not a valid web address", "typos"),
    C("port-not-a-number", lambda c: "http://127.0.0.1:abc/x.png", "not a valid web address", "typos"),
    C("no-host", lambda c: "http:///x.png", "no valid host name", "https://example.com/"),
    C("space-in-host", lambda c: "http://exa mple.com/x.png", "no valid host name", "https://example.com/"),
    C("bad-idna-host", lambda c: "http://" + "é" * 70 + ".com/x.png", "not a valid web address", "typos"),
    C("password-in-url", lambda c: "https://me:hunter2@127.0.0.1/x.png", "user name or password", "auth="),
    # ---- a hostile server
    C("http-404", lambda c: c.base + "/status/404", "HTTP 404", "open it in a browser"),
    C("http-403", lambda c: c.base + "/status/403", "HTTP 403", "download the file in a browser"),
    C("http-429", lambda c: c.base + "/status/429", "HTTP 429", "wait a minute"),
    C("http-500", lambda c: c.base + "/status/500", "HTTP 500", "try again later"),
    C("http-418", lambda c: c.base + "/status/418", "HTTP 418", "open it in a browser"),
    C("html-page", lambda c: c.base + "/page.html", "returned HTML", "Copy image address"),
    C("json-api", lambda c: c.base + "/api.json", "returned text", "address of the image itself"),
    C("empty-body", lambda c: c.base + "/empty.png", "empty (0 bytes)", "check"),
    C("http-204", lambda c: c.base + "/no-content.png", "empty (0 bytes)", "check"),
    C("trickled-body", lambda c: c.base + "/trickle-body.png", "timed out after 1 s", "timeout=",
      kw={"timeout": 1}, limit_s=3),
    C("trickled-headers", lambda c: c.base + "/trickle-headers.png", "timed out after 1 s", "timeout=",
      kw={"timeout": 1}, limit_s=3),
    C("silent-server", lambda c: c.base + "/silent.png", "timed out after 0.5 s", "timeout=",
      kw={"timeout": 0.5}, limit_s=3),
    C("2gb-content-length", lambda c: c.base + "/huge-length.png", "larger than max_bytes=52,428,800", "max_bytes="),
    C("endless-stream", lambda c: c.base + "/endless-stream.png", "larger than max_bytes=1,000,000", "max_bytes=",
      kw={"max_bytes": 1_000_000}),
    C("body-shorter-than-length", lambda c: c.base + "/short-body.png", "stopped after 100 of 1,000 bytes",
      "try again"),
    C("truncated-download", lambda c: c.base + "/truncated.png", "truncated or corrupt PNG", "re-download"),
    C("svg-download", lambda c: c.base + "/drawing.svg", "SVG", "rasterize"),
    C("redirect-loop", lambda c: c.base + "/loop.png", "HTTP 302 (redirect)", "final image address"),
    C("endless-redirects", lambda c: c.base + "/hop/0", "HTTP 302 (redirect)", "final image address"),
    C("redirect-to-file", lambda c: c.base + "/to-file.png", "non-web address", "final image address"),
    C("redirect-to-data", lambda c: c.base + "/to-data.png", "non-web address", "final image address"),
    C("redirect-to-ftp", lambda c: c.base + "/to-ftp.png", "unknown url type", "check the URL"),
    C("gzip-bomb", lambda c: c.base + "/gzip-bomb.png", "decompresses to more than max_bytes=1,000,000", "max_bytes=",
      kw={"max_bytes": 1_000_000}),
    C("corrupt-gzip", lambda c: c.base + "/bad-gzip.png", "corrupt gzip body", "try again"),
    C("brotli-body", lambda c: c.base + "/brotli.png", "Content-Encoding 'br'", "download it in a browser"),
    C("gzip-file-download", lambda c: c.base + "/gzip-file.png", "gzip-compressed", "decompress it"),
    C("not-http", lambda c: c.base + "/not-http.png", "broken HTTP answer", "try again later"),
    C("hang-up", lambda c: c.base + "/hang-up.png", "broken HTTP answer or none", "try again later"),
    C("too-many-headers", lambda c: c.base + "/many-headers.png", "broken HTTP answer", "try again later"),
    C("bad-chunked-body", lambda c: c.base + "/bad-chunks.png", "broken HTTP answer", "try again later"),
    C("https-to-http-port", lambda c: c.base.replace("http:", "https:") + "/ok.png", "HTTPS connection failed",
      "http://"),
    C("connection-refused", lambda c: f"http://127.0.0.1:{_free_port()}/x.png", "connection refused", "port"),
    # ---- bytes-likes, file objects and other Python objects
    C("empty-bytes", lambda c: b"", "empty (0 bytes)", "check where the data came from"),
    C("garbage-bytearray", lambda c: bytearray(b"\x07" * 100), "not in an image format", "check"),
    C("released-memoryview", lambda c: _released(), "cannot be read", "pass the bytes themselves"),
    C("bytes-over-max", lambda c: NOISY_PNG, "larger than max_bytes=100", "max_bytes=", kw={"max_bytes": 100}),
    C("text-mode-file", lambda c: _text_file(c, "r"), "text mode", "open(path, 'rb')"),
    C("file-at-eof", lambda c: _text_file(c, "rb"), "already read to the end", ".seek(0)"),
    C("closed-file", _closed_file, "it is closed", "open(path, 'rb')"),
    C("write-only-file", lambda c: c.file("w.png", b"").open("wb"), "Cannot read from", "open(path, 'rb')"),
    C("read-returns-none", lambda c: _ReadsNone(), "gave NoneType, not bytes", "binary file object"),
    C("read-not-callable", lambda c: _ReadAttr(), "Cannot load an image from an object", "pass a file path"),
    C("none", lambda c: None, "type NoneType", "pass a file path"),
    C("int", lambda c: 42, "type int", "pass a file path"),
    C("list-to-load-image", lambda c: [PNG], "type list", "use load_images"),
    C("torch-tensor", lambda c: __import__("torch").zeros(3, 8, 8), "torch.Tensor", "permute(1, 2, 0)"),
    C("datasets-dict", lambda c: {"bytes": PNG, "path": None}, "type dict", "'bytes' or 'path'"),
    C("requests-response", lambda c: _FakeResponse(), "requests.models.Response", "response.content"),
    # ---- numpy arrays
    C("object-array", lambda c: np.array([[None, 1]], dtype=object), "unsupported dtype", "uint8"),
    C("complex-array", lambda c: np.zeros((2, 2), complex), "unsupported dtype", "uint8"),
    C("string-array", lambda c: np.array([["a", "b"]]), "unsupported dtype", "uint8"),
    C("datetime-array", lambda c: np.zeros((2, 2), "datetime64[s]"), "unsupported dtype", "uint8"),
    C("nan-array", lambda c: np.full((2, 2), np.nan), "NaN or infinite", "np.nan_to_num"),
    C("inf-array", lambda c: np.full((2, 2), np.inf), "NaN or infinite", "np.nan_to_num"),
    C("float-0-255", lambda c: np.full((2, 2), 200.0), "must lie in [0, 1]", "arr / 255"),
    C("negative-int64", lambda c: np.full((2, 2), -5), "values from -5 to -5", "scale it to 0-255"),
    C("empty-array", lambda c: np.zeros((0, 0), np.uint8), "is empty", "at least one pixel"),
    C("1d-array", lambda c: np.zeros(10, np.uint8), "1 dimensions", "HxW"),
    C("0d-array", lambda c: np.array(5, np.uint8), "0 dimensions", "HxW"),
    C("5d-array", lambda c: np.zeros((2, 2, 2, 2, 2), np.uint8), "5 dimensions", "HxW"),
    C("two-channels", lambda c: np.zeros((8, 8, 2), np.uint8), "2 channels", "last axis"),
    C("channels-first", lambda c: np.zeros((3, 32, 32), np.uint8), "channels-first", "transpose(1, 2, 0)"),
    C("batch-of-one", lambda c: np.zeros((1, 8, 8, 3), np.uint8), "batch of one", "arr[0]"),
    # ---- PIL images
    C("zero-size-pil", lambda c: Image.new("RGB", (0, 0)), "has no pixels", "at least 1x1"),
    C("closed-pil", lambda c: _closed_png(), "could not be read", "reopen"),
    # ---- options
    C("timeout-none", lambda c: PNG, "timeout=None", "timeout=10", kw={"timeout": None}),
    C("timeout-zero", lambda c: PNG, "timeout=0", "positive number", kw={"timeout": 0}),
    C("timeout-negative", lambda c: PNG, "timeout=-1", "positive number", kw={"timeout": -1}),
    C("timeout-nan", lambda c: PNG, "timeout=nan", "positive number", kw={"timeout": float("nan")}),
    C("timeout-string", lambda c: PNG, "timeout='10'", "positive number", kw={"timeout": "10"}),
    C("max-bytes-string", lambda c: PNG, "max_bytes='10MB'", "whole number", kw={"max_bytes": "10MB"}),
    C("max-bytes-zero", lambda c: PNG, "max_bytes=0", "max_bytes=None", kw={"max_bytes": 0}),
    C("max-pixels-negative", lambda c: PNG, "max_pixels=-5", "max_pixels=None", kw={"max_pixels": -5}),
    # ---- ipywidgets uploads
    C("upload-str-content", lambda c: _upload("a.png", "abc"), "type str", "upload.value unchanged"),
    C("upload-released-content", lambda c: _upload("a.png", _released()), "not readable bytes", "upload.value"),
    C("upload-newline-name", lambda c: _upload("a\nb.png", b"junk" * 10), "upload 'a\\nb.png'", "image"),
    C("upload-two-files", lambda c: _upload("a.png", PNG) * 2, "holds 2 files", "load_images(upload.value)"),
    # ---- load_images
    C("many-empty-string", lambda c: "", "empty string", "pass a file path", many=True),
    C("many-none", lambda c: None, "type NoneType", "pass a file path", many=True),
    C("folder-with-empty-file", lambda c: _folder(c, {"a.png": PNG, "b.png": b""}), "b.png", "empty (0 bytes)",
      many=True),
    C("folder-with-garbage", lambda c: _folder(c, {"a.png": PNG, "c.jpg": b"\x07" * 50}), "c.jpg", "not in an image",
      many=True),
    C("folder-with-fifo-only", lambda c: (_folder(c, {}), os.mkfifo(c.tmp / "photos" / "p.png"))[0], "no image files",
      "put images there", many=True),
    C("folder-without-images", lambda c: _folder(c, {"notes.txt": b"hi"}), "no image files", "put images there",
      many=True),
    C("pattern-without-match", lambda c: str(c.tmp / "*.webp"), "No file matches", "check the pattern", many=True),
    C("list-with-404", lambda c: [PNG, c.base + "/status/404"], "HTTP 404", "open it in a browser", many=True),
    C("many-file-url-missing", lambda c: "file:///no/such/folder/", "No such file", "check the path", many=True),
    C("many-timeout-none", lambda c: [PNG], "timeout=None", "timeout=10", kw={"timeout": None}, many=True),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check_sentence(err: BaseException, phrases: tuple[str, ...]) -> str:
    message = str(err)
    assert isinstance(err, MllmNbError), f"{type(err).__name__}: {message}"
    assert "\n" not in message and "\r" not in message, repr(message)
    assert message.endswith("."), message
    for phrase in phrases:
        assert phrase.lower() in message.lower(), f"{phrase!r} not in {message!r}"
    for nested in ("Error:", "Error(", "Traceback", "<urlopen error", "[Errno"):
        assert nested not in message, f"a message inside the message: {message!r}"
    return message


@pytest.mark.timeout(15)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_ends_in_one_sentence(case: Case, tmp_path: Path, server: Any) -> None:
    src = case.build(Ctx(tmp_path, server[1]))
    start = time.monotonic()
    with pytest.raises(ImageLoadError) as info:
        (load_images if case.many else load_image)(src, **(case.kwargs or {}))
    elapsed = time.monotonic() - start
    message = _check_sentence(info.value, case.phrases)
    assert elapsed < case.limit_s, f"took {elapsed:.1f} s: {message}"


def test_case_ids_are_unique() -> None:
    assert len({case.id for case in CASES}) == len(CASES) >= 100


# ------------------------------------------------------------------------------------------------
# what must keep working, and the guarantees behind the table
# ------------------------------------------------------------------------------------------------


def test_password_never_appears_in_a_message() -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image("https://me:hunter2@127.0.0.1/x.png")
    assert "hunter2" not in str(info.value) and "me:***@" in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.timeout(10)
def test_timeout_is_a_deadline_for_the_whole_download(server: Any) -> None:
    start = time.monotonic()
    with pytest.raises(ImageLoadError, match="timed out after 1.5 s"):
        load_image(server[1] + "/trickle-body.png", timeout=1.5)
    assert time.monotonic() - start < 2.5


def test_good_downloads_through_the_custom_opener(server: Any) -> None:
    base = server[1]
    assert load_image(base + "/ok.png").size == (4, 3)
    assert load_image(base + "/to-ok.png").getpixel((0, 0)) == (255, 0, 0)  # a redirect is followed
    assert load_image(base + "/gzip.png").size == (4, 3)  # Content-Encoding: gzip is undone
    assert load_image("  " + base + "/ok.png?x=a b&y=é \n").size == (4, 3)  # spaces / non-ASCII are encoded


def test_file_urls_and_pasted_paths_load(tmp_path: Path) -> None:
    path = tmp_path / "a b é.png"
    path.write_bytes(PNG)
    assert load_image(path.as_uri()).size == (4, 3)
    assert load_image(str(path) + "\n").size == (4, 3)  # a stray newline from copy-paste
    assert len(load_images(tmp_path.as_uri())) == 1


def test_a_fifo_in_a_folder_is_skipped_and_never_opened(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    os.mkfifo(tmp_path / "b.png")
    assert [im.size for im in load_images(tmp_path)] == [(4, 3)]


def test_unlistable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(ImageLoadError) as info:
        load_images(tmp_path)
    _check_sentence(info.value, ("Cannot list folder", "Permission denied", "check its permissions"))


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.png"
    path.write_bytes(PNG)

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    _check_sentence(info.value, ("Cannot read file", "Permission denied", "check its permissions"))


def test_eps_never_reaches_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_programs(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a subprocess was started")

    monkeypatch.setattr(subprocess, "Popen", no_programs)
    monkeypatch.setattr(subprocess, "check_call", no_programs)
    with pytest.raises(ImageLoadError, match="PostScript/EPS"):
        load_image(EPS)


@pytest.mark.parametrize(
    ("make", "pixel"),
    [
        (lambda: Image.new("CMYK", (3, 3), (0, 255, 255, 0)), (255, 0, 0)),
        (lambda: Image.fromarray(np.full((3, 3), 65535, np.uint16)), (255, 255, 255)),
        (lambda: Image.new("P", (3, 3), 0), (0, 0, 0)),
        (lambda: Image.new("RGBA", (3, 3), (0, 0, 0, 0)), (255, 255, 255)),
        (lambda: Image.new("LA", (3, 3), (0, 0)), (255, 255, 255)),
        (lambda: Image.new("LAB", (3, 3)), None),
        (lambda: Image.new("YCbCr", (3, 3)), None),
    ],
)
def test_unusual_modes_become_rgb(make: Callable[[], Image.Image], pixel: tuple[int, int, int] | None) -> None:
    for src in (make(), _encode(make(), "TIFF")):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (3, 3)
        if pixel is not None:
            assert out.getpixel((1, 1)) == pixel


def test_animated_gif_and_exif_rotation() -> None:
    frames = [Image.new("RGB", (4, 2), color) for color in ((255, 0, 0), (0, 0, 255))]
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert load_image(gif).getpixel((0, 0)) == (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    assert load_image(_encode(Image.new("RGB", (4, 2)), "JPEG", exif=exif)).size == (2, 4)


@pytest.mark.timeout(20)
def test_self_signed_https_certificate(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=15,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class TLSServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True

        def get_request(self) -> Any:
            sock, addr = super().get_request()
            try:
                return context.wrap_socket(sock, server_side=True), addr
            except (ssl.SSLError, OSError):
                return sock, addr

    srv = TLSServer(("127.0.0.1", 0), _Handler)
    srv.stop = threading.Event()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ImageLoadError) as info:
            load_image(f"https://127.0.0.1:{srv.server_address[1]}/ok.png", timeout=5)
        _check_sentence(info.value, ("certificate could not be verified", "download the image in a browser"))
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
