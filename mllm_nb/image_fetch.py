"""Download an image URL with urllib: one deadline for the whole download, a size limit, one-sentence errors.

``timeout`` is a total deadline (a server that trickles bytes is cut off), the body never grows past
``max_bytes`` (gzip bodies included), only http(s) is fetched and redirects to other schemes are refused;
every failure is an ``ImageLoadError`` that names the URL and says what to do. Used by :mod:`mllm_nb.images`::

    data, content_type = fetch_url("https://example.com/cat.jpg", timeout=10, max_bytes=50 * 2**20)
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

from mllm_nb.decoding import shown, too_many_bytes_error
from mllm_nb.errors import ImageLoadError

__all__ = ["fetch_url", "short_url"]

_USER_AGENT = "mllm_nb/0.1 (https://pypi.org/project/mllm-nb; Python urllib) image loader"


def fetch_url(url: str, *, timeout: float, max_bytes: int | None) -> tuple[bytes, str]:
    """Download ``url`` within ``timeout`` seconds in all; return ``(body, content_type)``, at most ``max_bytes``.

    Every failure is an ``ImageLoadError`` naming the URL; the body is never longer than ``max_bytes``.

    >>> try:
    ...     fetch_url("http://[::1/x.png", timeout=1, max_bytes=10)
    ... except ImageLoadError as err:
    ...     print(str(err).partition(" (")[0])
    URL 'http://[::1/x.png' is not a valid web address
    """
    label = f"URL '{short_url(url)}'"
    request = urllib.request.Request(
        _checked_url(url, label), headers={"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.8"}
    )
    deadline = _Deadline(timeout)
    try:
        with _opener(deadline).open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length", "").strip()
            declared = int(length) if length.isdigit() else None
            if max_bytes is not None and declared is not None and declared > max_bytes:
                raise too_many_bytes_error(label, max_bytes)
            data = response.read(max_bytes + 1) if max_bytes is not None else response.read()
            content_type = response.headers.get_content_type() or ""
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
    except ImageLoadError:
        raise
    except urllib.error.HTTPError as err:
        err.close()
        raise (_timeout_error(label, timeout) if deadline.expired else _http_status_error(label, err)) from err
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        raise (_timeout_error(label, timeout) if deadline.expired else _network_error(label, err, timeout)) from err
    finally:
        deadline.timer.cancel()
    if deadline.expired:
        raise _timeout_error(label, timeout)
    if declared is not None and len(data) < declared and (max_bytes is None or len(data) <= max_bytes):
        raise ImageLoadError(
            f"Downloading {label} stopped after {len(data):,} of {declared:,} bytes (the server closed the "
            "connection early); try again."
        )
    if max_bytes is not None and len(data) > max_bytes:
        raise too_many_bytes_error(label, max_bytes)
    return _decompressed(data, encoding, label, max_bytes), content_type


def _checked_url(url: str, label: str) -> str:
    """``url`` made safe to send (IDNA host, percent-encoded path), or an error naming what is wrong with it."""
    if re.search(r"[\x00-\x1f\x7f]", url):
        raise ImageLoadError(f"{label} contains a line break or control character; copy the address again.")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = parts.hostname or ""
        host = host if host.isascii() else host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as err:
        why = "its host name cannot be encoded" if isinstance(err, UnicodeError) else shown(str(err), 80)
        raise ImageLoadError(
            f"{label} is not a valid web address ({why}); check it for typos, e.g. a port or ']'."
        ) from None
    if not host or not re.fullmatch(r"[A-Za-z0-9._:%-]+", host):
        raise ImageLoadError(f"{label} has no valid host name; write it as https://example.com/path/image.png.")
    if parts.username is not None or parts.password is not None:
        raise ImageLoadError(
            f"{label} contains a user name or password, which load_image does not send; "
            "download the image yourself (e.g. requests.get(url, auth=...).content) and pass the bytes."
        )
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    path, query = (urllib.parse.quote(part, safe="/:?#[]@!$&'()*+,;=%~") for part in (parts.path, parts.query))
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, path or "/", query, ""))


def _decompressed(data: bytes, encoding: str, label: str, max_bytes: int | None) -> bytes:
    """Undo a gzip/deflate ``Content-Encoding``, never producing more than ``max_bytes`` (gzip bombs)."""
    if encoding in ("", "identity"):
        return data
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ImageLoadError(
            f"{label} was sent with Content-Encoding '{shown(encoding, 40)}', which load_image cannot undo; "
            "download it in a browser and load the file."
        )
    limit = max_bytes + 1 if max_bytes is not None else 0
    try:
        out = zlib.decompressobj(47 if data[:2] == b"\x1f\x8b" or data[:1] == b"x" else -15).decompress(data, limit)
    except zlib.error as err:
        raise ImageLoadError(f"{label} sent a corrupt {encoding} body; try again or download it in a browser.") from err
    if max_bytes is not None and len(out) > max_bytes:
        raise too_many_bytes_error(label, max_bytes, "decompresses to more than")
    return out


class _Deadline:
    """Cuts the connections of one download once ``seconds`` have passed: a limit on the total, not per read."""

    def __init__(self, seconds: float) -> None:
        self.end, self.sockets = time.monotonic() + seconds, []
        self.timer = threading.Timer(seconds, self.cut)
        self.timer.daemon = True
        self.timer.start()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def cut(self) -> None:
        """Shut every socket down, which wakes a read blocked on it in another thread (TLS included)."""
        for sock in list(self.sockets):
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


def _watched(base: type[http.client.HTTPConnection], deadline: _Deadline) -> type[http.client.HTTPConnection]:
    """A connection class that connects within the time left and hands its socket to ``deadline``."""

    class Watched(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            self.timeout = max(deadline.end - time.monotonic(), 0.001)
            super().connect()
            deadline.sockets.append(self.sock)
            if deadline.expired:  # the timer may have fired during connect()
                deadline.cut()

    return Watched


class _Handler(urllib.request.HTTPSHandler):
    """urllib's http and https handler, with every connection watched by one ``_Deadline``."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPSConnection, self.deadline), req)

    http_request = urllib.request.AbstractHTTPHandler.do_request_


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's usual http(s) handlers (proxies from the environment included), but no file:, ftp: or data:.

    urllib's redirect handler already refuses redirects to file:, data: and other non-web schemes.
    """
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), _Handler(deadline),
        urllib.request.HTTPRedirectHandler(), urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_STATUS_TODO = {
    404: "the address is wrong or the image was removed; open it in a browser to check",
    401: "the site refuses this download; download the file in a browser and load it from disk",
    403: "the site refuses this download; download the file in a browser and load it from disk",
    429: "the site is rate-limiting you; wait a minute and try again",
}


def _http_status_error(label: str, err: urllib.error.HTTPError) -> ImageLoadError:
    code, reason = err.code, shown(str(err.reason or ""), 80)
    todo = _STATUS_TODO.get(code, "open it in a browser to check the address")
    if 300 <= code < 400:  # urllib's reason for a redirect loop or a refused target is several sentences long
        reason, todo = "(redirect)", "it redirects in a loop or to a non-web address; use the final image address"
    elif code >= 500:
        todo = "the server has a problem; try again later or use another copy of the image"
    return ImageLoadError(f"Downloading {label} failed with HTTP {code} {reason}".rstrip() + f"; {todo}.")


def _timeout_error(label: str, timeout: float) -> ImageLoadError:
    return ImageLoadError(
        f"Downloading {label} timed out after {timeout:g} s; check your connection or pass a larger timeout=."
    )


_NETWORK_TODO: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (ConnectionRefusedError, "connection refused; check the host and port, or whether the server is running"),
    (socket.gaierror, "the host name could not be resolved; check the URL and your internet connection"),
    (ssl.SSLCertVerificationError, "the site's HTTPS certificate could not be verified; check the address, or "
     + "download the image in a browser and load the file"),
    (ssl.SSLError, "the HTTPS connection failed; check whether the address needs http:// instead"),
    ((http.client.HTTPException, ConnectionResetError, ValueError),
     "the server sent a broken HTTP answer or none; try again later or download the image in a browser"),
)


def _network_error(label: str, err: BaseException, timeout: float) -> ImageLoadError:
    reason = getattr(err, "reason", err)
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return _timeout_error(label, timeout)
    for kinds, todo in _NETWORK_TODO:
        if isinstance(reason, kinds):
            return ImageLoadError(f"Downloading {label} failed: {todo}.")
    what = f"{type(reason).__name__}: " if isinstance(reason, BaseException) else ""
    return ImageLoadError(
        f"Downloading {label} failed ({what}{shown(str(reason), 160)}); check the URL and your internet connection."
    )


def short_url(url: str, limit: int = 120) -> str:
    """A URL for messages: password hidden, one line, at most ``limit`` characters.

    >>> short_url("https://me:secret@example.com/a.png")
    'https://me:***@example.com/a.png'
    """
    return shown(re.sub(r"(//[^/@]*?):[^/@]*@", r"\1:***@", url), limit)
