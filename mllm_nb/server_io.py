"""The plumbing under :class:`~mllm_nb.backends.OpenAIBackend`: reading a chat-completions stream safely.

The backend reads the HTTP response in a reader thread (:class:`Feed`), so the caller's own clock (a
timeout, a deadline) and its stop event end a request at once, even while the server sends nothing
or only keep-alive comments. :func:`event_data` turns the response bytes
into the events' ``data`` strings and refuses, after at most ``MAX_LINE_BYTES``, anything that is not
a server-sent-events stream (a Wi-Fi login page, a file download) instead of reading it all.

>>> list(event_data([b': ping\\n\\ndata: {"a": 1}\\n', b'\\ndata: [DONE]\\n\\n']))
['{"a": 1}', '[DONE]']

It also words what a server said: :func:`parse_chunk` reads one streamed chunk, :func:`status_message`
an HTTP error, :func:`root_reason` a broken connection.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from mllm_nb.errors import MllmNbError

#: The longest line a stream may send (a chat chunk is a few hundred bytes); longer means "not a stream".
MAX_LINE_BYTES = 1 << 20
#: The field names of the server-sent-events format.
_FIELDS = (b"data", b"event", b"id", b"retry")


class NotAnEventStream(MllmNbError):
    """The response is not a server-sent-events stream; ``kind`` is ``"html"`` or ``"other"``, ``sample`` its start."""

    def __init__(self, kind: str, sample: str) -> None:
        super().__init__(f"The response is {'an HTML page' if kind == 'html' else 'not an event stream'}: {sample!r}.")
        self.kind, self.sample = kind, sample


def event_data(chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Each event's data (its ``data:`` lines joined by newlines); comments such as ``: ping`` yield nothing.

    Raises :class:`NotAnEventStream` when the first line is not an SSE line (HTML, JSON, binary) or a line
    is longer than ``max_line`` bytes. A last line the stream cut off before its newline is dropped, as
    the SSE standard says; a last event without its closing blank line is kept.

    >>> list(event_data([b"data: a\\ndata: b\\n\\n", b'data: {"cut']))
    ['a\\nb']
    """
    buffer = bytearray()
    data: list[str] = []
    checked = False
    for chunk in chunks:
        searched = len(buffer)
        buffer += chunk
        while (end := buffer.find(b"\n", searched)) >= 0:
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
            searched = 0
            if not checked and line.strip():
                _check_first_line(line)
                checked = True
            if not line and data:
                yield "\n".join(data)
                data = []
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" ").decode("utf-8", "replace"))
        if len(buffer) > max_line:
            raise NotAnEventStream(_kind(bytes(buffer[:64])), _sample(bytes(buffer[:64])))
    if not checked and buffer.strip():  # the whole body is one unfinished line, e.g. an HTML page
        _check_first_line(bytes(buffer))
    if data:
        yield "\n".join(data)


def _check_first_line(line: bytes) -> None:
    field = line.split(b":", 1)[0].strip()
    if not line.startswith(b":") and field not in _FIELDS:
        raise NotAnEventStream(_kind(line), _sample(line))


def _kind(start: bytes) -> str:
    return "html" if start.lstrip().startswith(b"<") else "other"


def _sample(start: bytes) -> str:
    text = start[:32].decode("utf-8", "backslashreplace")
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms`` header asks for, in seconds.

    >>> retry_after_seconds({"retry-after": "20"}), retry_after_seconds({}), retry_after_seconds(None)
    (20.0, None, None)
    """
    if not headers:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return max(float(headers.get("retry-after-ms") or "x") / 1000, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return max(float(value), 0.0)
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    return None


class Feed:
    """What a reader thread hands the caller: ``(kind, value)`` items in order, and a cancel flag.

    The reader ``put``s items and ``attach``es the HTTP response once it has one; the caller ``get``s
    items with its own timeout (so it never waits on the network) and ``cancel``s when it leaves. The
    reader then stops at the next bytes that arrive (or its read timeout) and closes the response,
    which tells the server to stop generating. (Its socket is not shut from the caller's thread: once
    the body is read, the connection may already serve another request.)

    >>> feed = Feed()
    >>> feed.put("data", "x"); feed.get(0.1), feed.get(0.01)
    (('data', 'x'), None)
    """

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.opened = False  # the server has answered with a response (its body may follow)
        self._items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._response: Any = None

    def put(self, kind: str, value: Any = None) -> None:
        """Hand one item to the caller (from the reader thread)."""
        self._items.put((kind, value))

    def get(self, timeout: float) -> tuple[str, Any] | None:
        """The next item, or None when none came within ``timeout`` seconds."""
        try:
            return self._items.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def attach(self, response: Any) -> bool:
        """Keep the opened ``httpx`` response (to close it); False if the caller has already left."""
        self._response, self.opened = response, True
        return not self.cancelled.is_set()

    def chunks(self) -> Iterator[bytes]:
        """The attached response's body as it arrives, ending early once the caller cancelled."""
        for chunk in self._response.iter_bytes():
            if self.cancelled.is_set():
                return
            yield chunk

    def cancel(self) -> None:
        """The caller is gone (stopped, timed out, done): the reader stops at the next bytes it gets."""
        self.cancelled.set()

    def close(self) -> None:
        """Close the response, if any (from the reader thread, when it is done)."""
        if self._response is not None:
            with contextlib.suppress(Exception):  # closing a broken stream must not hide the real error
                self._response.close()


class Chunk(NamedTuple):
    """One streamed chunk: its ``text``, the ``finish`` reason (None until the last), or what was wrong with it."""

    text: str = ""
    finish: str | None = None
    thinking: bool = False  # other text than the answer's, e.g. ``reasoning_content``: progress all the same
    error: str | None = None  # the server's own words when it reported an error mid-answer
    malformed: bool = False  # not a chat-completions chunk (not JSON, or not an object)


def parse_chunk(data: str) -> Chunk:
    """Read one event's data as a ``chat.completion.chunk``: the first choice's text and finish reason.

    >>> parse_chunk('{"choices": [{"delta": {"content": "Hi"}, "finish_reason": null}]}')
    Chunk(text='Hi', finish=None, thinking=False, error=None, malformed=False)
    >>> parse_chunk('{"choi').malformed, parse_chunk('{"error": {"message": "out of memory"}}').error
    (True, 'out of memory')
    """
    try:
        chunk = json.loads(data)
    except ValueError:
        return Chunk(malformed=True)
    if not isinstance(chunk, dict):
        return Chunk(malformed=True)
    if chunk.get("error"):
        return Chunk(error=body_detail(chunk) or "unknown error")
    choices = chunk.get("choices") or [{}]
    choice = choices[0] if isinstance(choices, list) and isinstance(choices[0], dict) else {}
    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
    text = delta.get("content")
    thinking = any(isinstance(value, str) and value for key, value in delta.items() if key not in ("role", "content"))
    return Chunk(text if isinstance(text, str) else "", choice.get("finish_reason") or None, thinking)


def failure_sentence(err: BaseException, where: str, timeout: float, model: str, key_env: str,
                     mid_answer: bool = False) -> str:
    """One sentence for a failed request (``where``: "the server at URL"; ``mid_answer``: it had started answering).

    ``err`` is an ``openai`` or transport error, told apart by class names (no ``openai`` import here).

    >>> failure_sentence(NotAnEventStream("html", "<html>"), "the server at U", 3, "m", "KEY")[:48]
    'the server at U answered with an HTML page, not '
    """
    names = {cls.__name__ for cls in type(err).__mro__}
    if isinstance(err, NotAnEventStream) and err.kind == "html":
        return (
            f"{where} answered with an HTML page, not a chat-completions stream; check base_url "
            "(a Wi-Fi login page or a proxy may be in the way)."
        )
    if isinstance(err, NotAnEventStream):
        return (
            f"{where} answered with something that is not a chat-completions stream (it starts with "
            f"'{err.sample}'); check that base_url is an OpenAI-compatible API root such as http://host:8000/v1."
        )
    if any("timeout" in name.lower() for name in names):
        return (
            f"{where} did not answer within {timeout:g} s; it may still be loading the model or be "
            "overloaded: wait and retry, or raise OpenAIBackend(timeout=...)."
        )
    connection = isinstance(err, OSError) or is_transport_error(err) or "APIConnectionError" in names
    if mid_answer and connection:
        return (
            f"The connection to {where} broke mid-answer ({root_reason(err)}); the server may have "
            "stopped or restarted: check it, then send again."
        )
    if connection:
        return (
            f"Could not connect to {where} ({root_reason(err)}); start the server (e.g. `transformers serve`) "
            "or check base_url."
        )
    if "APIStatusError" in names:
        return status_message(err, where, model, key_env)
    return f"{where} failed: {type(err).__name__}: {first_line(str(err))}"


def chunk_sentence(where: str, chunk: Chunk, data: str) -> str:
    """One sentence for a streamed chunk that reports an error, or is not a chat-completions chunk at all."""
    if chunk.error:
        return f"{where} reported an error mid-answer: {chunk.error}; its log has the reason: check it, then send again."
    return f"{where} sent a chunk that is not chat-completions JSON ({data[:60]!r}); check base_url."


def retry_delay(err: BaseException, attempt: int) -> float | None:
    """Seconds to wait before retry ``attempt + 1`` (``Retry-After``, else 0.5, 1, 2 ... 8), or None: do not retry.

    Worth a retry: a refused or broken connection, HTTP 408, 409, 429 and 5xx; not a timeout.
    """
    names = {cls.__name__ for cls in type(err).__mro__}
    backoff = min(0.5 * 2**attempt, 8.0)
    if any("timeout" in name.lower() for name in names):
        return None
    if "APIStatusError" in names:
        status = getattr(err, "status_code", 0)
        if status not in (408, 409, 429) and status < 500:
            return None
        wait = retry_after_seconds(getattr(getattr(err, "response", None), "headers", None))
        return backoff if wait is None else wait
    return backoff if "APIConnectionError" in names else None


def status_message(err: Any, where: str, model: str, key_env: str) -> str:
    """What an HTTP error status means for the user, with the server's own words (``where``: "the server at URL")."""
    status = getattr(err, "status_code", None)
    detail = status_detail(err)
    if status in (401, 403):
        return f"{where} refused the API key (HTTP {status}); set {key_env} or pass api_key=..."
    if status == 404:
        return (
            f"{where} does not know model {model!r} or the chat endpoint (HTTP 404: {detail}); "
            "check model= (OpenAIBackend.models() lists them) and base_url."
        )
    if status == 429:
        wait = retry_after_seconds(getattr(getattr(err, "response", None), "headers", None))
        when = f"retry in {wait:.0f} s" if wait is not None else "wait a few seconds, then send again"
        return f"{where} is busy (HTTP 429: {detail}); {when}."
    if status == 500:
        return (
            f"{where} answered HTTP 500: {detail}; the server failed on this request (its log has the reason): "
            "check the images and settings."
        )
    return f"{where} answered HTTP {status}: {detail}"


def status_detail(err: Any) -> str:
    """The server's own words for an HTTP error: its body's message (:func:`body_detail`), else the error's text."""
    return body_detail(getattr(err, "body", None)) or first_line(getattr(err, "message", "") or str(err))


def body_detail(body: Any) -> str:
    """The message in an error body: ``{"error": {"message": ...}}`` (OpenAI style), ``{"detail": ...}`` or text.

    >>> body_detail({"error": {"message": "out of memory"}}), body_detail({"detail": "bad image"}), body_detail(None)
    ('out of memory', 'bad image', '')
    """
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        for key in ("message", "detail", "error"):
            if isinstance(inner.get(key), str) and inner[key].strip():
                return first_line(inner[key])
    if isinstance(body, str) and body.strip():
        return first_line(body)
    return ""


def is_transport_error(err: BaseException) -> bool:
    """An httpx / httpx2 / httpcore / h11 network or protocol error (the connection broke), by class name."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & {"TransportError", "NetworkError", "ProtocolError"})


def root_reason(err: BaseException) -> str:
    """The innermost cause, e.g. 'connection refused' rather than 'Connection error.'."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = first_line(str(err)) or type(err).__name__
    return "connection refused" if "refused" in text.lower() else text


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped, at most 200 characters."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0][:200] if lines else ""
