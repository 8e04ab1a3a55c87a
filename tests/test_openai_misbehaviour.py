"""OpenAIBackend against servers that misbehave (issue 18): each ends in one sentence, in time, key-free.

A stdlib ``http.server`` on 127.0.0.1 (port 0, daemon threads) plays one misbehaviour per test: a
stream without ``[DONE]`` or ``finish_reason``, a stream cut mid-JSON, an HTML login page, 50 MB of
bytes that are no event stream, keep-alive comments only, a server that ignores ``max_tokens``, HTTP
429 with ``Retry-After: 20``. Every handler loop is bounded, so the server stops by itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mllm_nb.backends import BackendError, ChatSession, OpenAIBackend

KEY = "sk-test-SECRET123"
TIMEOUT = 3.0  # every misbehaviour must end within TIMEOUT + 2 s
PAGE = b"<!DOCTYPE html><html><head><title>Hotel Wi-Fi</title></head><body>Log in to continue</body></html>"


@pytest.fixture(autouse=True)
def _no_proxy_no_key(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def sse(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class Misbehaving:
    """An OpenAI-style server on 127.0.0.1 that answers every chat request the way ``mode`` says.

    ``requests`` counts the requests, ``sent`` the pieces or bytes written, and ``gone`` is set once a
    streaming handler noticed that the client hung up (or ran out of things to send).
    """

    def __init__(self, mode: str) -> None:
        self.mode, self.requests, self.sent = mode, 0, 0
        self.gone = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                try:
                    getattr(self, "_" + outer.mode)()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    outer.gone.set()

            def _start(self, kind="text/event-stream", status=200, headers=()):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()

            def _send(self, data: bytes, delay: float = 0.0):
                self.wfile.write(data)
                self.wfile.flush()
                outer.sent += 1
                time.sleep(delay)

            def _good(self):
                self._start()
                for piece in ("The", " red", " circle"):
                    self._send(sse(piece))
                self._send(sse(None, "stop") + b"data: [DONE]\n\n")

            def _no_done(self):  # the connection closes after two pieces: no finish_reason, no [DONE]
                self._start()
                self._send(sse(None))
                for piece in ("The", " red"):
                    self._send(sse(piece))

            def _cut_json(self):
                self._start()
                self._send(sse("The") + sse(" red") + b'data: {"id": "c1", "choices": [{"delta": {"content": " ci')

            def _done_only(self):  # [DONE] and nothing else
                self._start()
                self._send(sse(None) + b"data: [DONE]\n\n")

            def _reasoning(self):  # 1.2 s of reasoning text, no answer text yet, then the answer
                self._start()
                for _ in range(4):
                    delta = {"reasoning_content": " hmm"}
                    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    self._send(b"data: " + json.dumps(chunk).encode() + b"\n\n", 0.3)
                self._send(sse("Red.") + sse(None, "stop") + b"data: [DONE]\n\n")

            def _error_chunk(self):
                self._start()
                self._send(sse("The") + b'data: {"error": {"message": "CUDA out of memory"}}\n\n')

            def _html(self):
                self._start("text/html; charset=utf-8")
                self._send(PAGE)

            def _html_as_text(self):
                self._start("text/plain")
                self._send(PAGE)

            def _binary(self):  # 50 MB without a newline, made as it is sent
                self._start("application/octet-stream")
                block = b"\x89PNG" + b"x" * (64 * 1024 - 4)
                for _ in range(50 * 1024 * 1024 // len(block)):
                    self._send(block)

            def _keepalive(self):  # comments only, for at most 20 s
                self._start()
                for _ in range(400):
                    self._send(b": ping\n\n", 0.05)

            def _stall(self):  # two pieces, then keep-alives only
                self._start()
                self._send(sse("The") + sse(" red"))
                for _ in range(400):
                    self._send(b": ping\n\n", 0.05)

            def _silent(self):  # accepts the request and says nothing for 20 s
                time.sleep(20)

            def _drip(self):  # a piece every 0.2 s, for up to 40 s
                self._start()
                for i in range(200):
                    self._send(sse(f" w{i}"), 0.2)

            def _flood(self):  # ignores max_tokens: 500 pieces
                self._start()
                for i in range(500):
                    self._send(sse(f" t{i}"), 0.005)
                self._send(sse(None, "length") + b"data: [DONE]\n\n")

            def _busy(self):
                body = json.dumps({"error": {"message": "Rate limit reached, slow down", "type": "rate_limit"}})
                self._start("application/json", 429, [("Retry-After", "20"), ("Content-Length", str(len(body)))])
                self._send(body.encode())

            def _busy_once(self):  # 429 with Retry-After: 0 on the first request, then a good answer
                if outer.requests == 1:
                    body = b'{"error": {"message": "busy"}}'
                    self._start("application/json", 429, [("Retry-After", "0"), ("Content-Length", str(len(body)))])
                    self._send(body)
                else:
                    self._good()

            def _echo_key(self):  # an error that quotes the key back
                body = json.dumps({"error": {"message": f"bad request from {self.headers['Authorization']}"}})
                self._start("application/json", 400, [("Content-Length", str(len(body)))])
                self._send(body.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def backend(server: Misbehaving, **kwargs) -> OpenAIBackend:
    return OpenAIBackend(server.url, model="m", api_key=KEY, **{"timeout": TIMEOUT, **kwargs})


def reachable(obj: object, depth: int = 0, seen: set[int] | None = None) -> Iterator[object]:
    """Every object reachable from ``obj`` through exception links, ``args``, attributes and containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 12:
        return
    seen.add(id(obj))
    yield obj
    children: list[object] = []
    if isinstance(obj, BaseException):
        children += [obj.__cause__, obj.__context__, *obj.args]
    if isinstance(obj, dict):
        children += [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children += list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and not callable(obj):
        children += list(vars(obj).values())
    for child in children:
        if child is not None and not isinstance(child, (int, float, bool)):
            yield from reachable(child, depth + 1, seen)


def holds_key(err: BaseException) -> bool:
    """Whether the key (as text or bytes) is anywhere in what ``err`` can reach."""
    for obj in reachable(err):
        if isinstance(obj, str) and KEY in obj or isinstance(obj, bytes) and KEY.encode() in obj:
            return True
    return False


def fails(server: Misbehaving, **kwargs) -> tuple[BackendError, float, list[str]]:
    """Stream one answer that must fail: (the error, seconds until it came, the pieces yielded first)."""
    model = backend(server, **kwargs)
    started, pieces = time.monotonic(), []
    with pytest.raises(BackendError) as info:
        pieces.extend(model.stream("What is red?", max_new_tokens=64))  # keeps the pieces before the error
    elapsed = time.monotonic() - started
    err = info.value
    assert "\n" not in str(err) and server.url in str(err), str(err)
    assert not holds_key(err), "the API key is reachable from the error"
    assert err.__cause__ is None and err.__suppress_context__
    return err, elapsed, pieces


# ----------------------------------------------------------------------------------- the tests


def test_the_key_walker_finds_a_key_in_a_raw_openai_error():
    import openai

    with Misbehaving("echo_key") as server:
        client = OpenAIBackend(server.url, model="m", api_key=KEY, max_retries=0).client()
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert holds_key(info.value)  # so a clean walk below means something


def test_a_well_behaved_stream_is_a_complete_answer():
    with Misbehaving("good") as server:
        model = backend(server)
        started = time.monotonic()
        assert model.ask("What is red?") == "The red circle"
    assert time.monotonic() - started < 2.0
    assert model.tokens_generated == 3 and model.finish_reason == "stop"


@pytest.mark.parametrize("mode, partial", [("no_done", "The red"), ("cut_json", "The red")])
def test_a_stream_that_just_ends_is_cut_short_and_keeps_the_partial_text(mode, partial):
    with Misbehaving(mode) as server:
        err, elapsed, pieces = fails(server)
    assert "cut the answer short: the stream ended after 2 pieces" in str(err)
    assert "".join(pieces) == err.partial == partial and elapsed < 2.0


def test_done_before_any_text_is_no_answer():
    with Misbehaving("done_only") as server:
        err, elapsed, pieces = fails(server)
    assert "cut the answer short: [DONE] came after 0 pieces without a finish_reason" in str(err)
    assert pieces == [] and err.partial == "" and elapsed < 2.0


def test_reasoning_text_counts_as_progress_for_the_timeout():
    with Misbehaving("reasoning") as server:
        model = backend(server, timeout=1.0)
        assert model.ask("What is red?") == "Red." and model.finish_reason == "stop"


def test_the_chat_session_rolls_back_and_the_partial_text_stays_on_the_error():
    with Misbehaving("no_done") as server:
        session = ChatSession(backend(server))
        with pytest.raises(BackendError, match="cut the answer short") as info:
            session.ask("What is red?")
    assert info.value.partial == "The red" and len(session.conversation) == 0


def test_an_error_chunk_mid_answer_is_one_sentence():
    with Misbehaving("error_chunk") as server:
        err, elapsed, _ = fails(server)
    assert "reported an error mid-answer: CUDA out of memory" in str(err) and err.partial == "The" and elapsed < 2.0


@pytest.mark.parametrize("mode", ["html", "html_as_text"])
def test_an_html_page_is_named_as_one(mode):
    with Misbehaving(mode) as server:
        err, elapsed, pieces = fails(server)
    assert "answered with an HTML page, not a chat-completions stream; check base_url" in str(err)
    assert "Wi-Fi login page" in str(err) and pieces == [] and elapsed < 2.0


def test_50_mb_of_other_bytes_are_refused_after_a_little():
    with Misbehaving("binary") as server:
        err, elapsed, _ = fails(server)
        assert server.gone.wait(5)  # the client hung up, so the handler ended
    assert "is not a chat-completions stream (it starts with '\\x89PNG" in str(err)
    assert elapsed < 3.0 and server.sent * 64 * 1024 < 25 * 1024 * 1024  # far less than the 50 MB


def test_keep_alives_alone_time_out():
    with Misbehaving("keepalive") as server:
        err, elapsed, pieces = fails(server)
    assert f"did not answer within {TIMEOUT:g} s" in str(err) and pieces == []
    assert TIMEOUT - 0.2 < elapsed < TIMEOUT + 2


def test_keep_alives_after_some_text_cut_the_answer_short_and_keep_it():
    with Misbehaving("stall") as server:
        err, elapsed, _ = fails(server, timeout=1.0)
    assert "cut the answer short: no new text came for 1 s after 2 pieces" in str(err)
    assert err.partial == "The red" and elapsed < 3.0


def test_the_deadline_bounds_the_whole_answer():
    with Misbehaving("drip") as server:
        err, elapsed, pieces = fails(server, deadline=1.0)
    assert "did not finish the answer within the 1 s deadline" in str(err)
    assert 2 <= len(pieces) <= 7 and err.partial == "".join(pieces) and elapsed < 2.0


@pytest.mark.parametrize("mode", ["keepalive", "silent"])
def test_stop_ends_a_request_that_gets_no_text_within_a_second(mode):
    stop = threading.Event()
    with Misbehaving(mode) as server:
        model = backend(server, timeout=30.0)
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        assert list(model.stream("What is red?", stop_event=stop)) == []
        elapsed = time.monotonic() - started
        if mode == "keepalive":  # the connection was closed at once, not at the next read timeout
            assert server.gone.wait(2)
    assert elapsed < 1.3  # stop came at 0.3 s


def test_max_new_tokens_holds_when_the_server_ignores_it():
    with Misbehaving("flood") as server:
        model = backend(server)
        started = time.monotonic()
        answer = model.ask("What is red?", max_new_tokens=5)
        elapsed = time.monotonic() - started
        assert server.gone.wait(3)
    assert answer == "t0 t1 t2 t3 t4" and model.tokens_generated == 5 and model.finish_reason == "length"
    assert elapsed < 2.0 and server.sent < 100  # the client closed the response instead of reading 500


def test_http_429_says_busy_and_when_without_waiting_past_the_timeout():
    with Misbehaving("busy") as server:
        err, elapsed, _ = fails(server, max_retries=3)
    assert "is busy (HTTP 429: Rate limit reached, slow down); retry in 20 s." in str(err)
    assert elapsed < 2.0 and server.requests == 1  # a 20 s wait does not fit in a 3 s timeout


def test_a_retry_that_fits_in_the_time_is_still_made():
    with Misbehaving("busy_once") as server:
        assert backend(server, max_retries=1).ask("What is red?") == "The red circle"
    assert server.requests == 2


def test_a_key_the_server_echoes_is_scrubbed_from_everything():
    with Misbehaving("echo_key") as server:
        err, _, _ = fails(server)
        assert "answered HTTP 400: bad request from Bearer ***" in str(err)
        with pytest.raises(BackendError) as info:
            OpenAIBackend(server.url + "/nowhere", model="m", api_key=KEY).models()
    assert not holds_key(info.value) and info.value.__context__ is None


def test_bad_deadline_and_retries_are_refused_at_once():
    with pytest.raises(BackendError, match="deadline must be a positive number of seconds; got 0"):
        OpenAIBackend("http://127.0.0.1:9/v1", model="m", deadline=0)
    with pytest.raises(BackendError, match="max_retries must be a whole number >= 0; got -1"):
        OpenAIBackend("http://127.0.0.1:9/v1", model="m", max_retries=-1)
