"""OpenAIBackend and ChatPanel against a real ``transformers serve`` (not a fake), offline, on CPU.

The server serves a LLaVA folder: the trained demo fixture ``mllm_nb/demo/fixtures/tiny-llava`` when
it is built, else the tiny random LLaVA of ``test_loading.save_tiny_llava``. It runs in its own process
group and is always shut down (fixture finalizer, atexit hook, parent-death signal), even when a test
fails. Long answers are forced with ``generation_config='{"min_new_tokens": N}'`` in the request body
(``transformers serve`` accepts that field; it answers 422 to unknown ones such as ``min_new_tokens``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from serve_util import ServeProcess, serving_available

pytestmark = [
    pytest.mark.skipif(not serving_available(), reason="needs transformers[serving] (fastapi, uvicorn, openai)"),
    pytest.mark.timeout(120),
    pytest.mark.slow,  # starts `transformers serve`
]

torch = pytest.importorskip("torch")

from mllm_nb.backends import BackendError, LocalBackend, OpenAIBackend
from mllm_nb.errors import ImageLoadError, MllmNbError
from mllm_nb.widgets import ChatPanel

QUESTION = "What colour is the circle?"


def circle(colour: str = "red", size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((12, 12, size - 12, size - 12), fill=colour)
    return image


def at_least(tokens: int) -> dict:
    """Request-body settings that make the server generate exactly ``tokens`` tokens."""
    return {"max_new_tokens": tokens, "generation_config": json.dumps({"min_new_tokens": tokens})}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from mllm_nb.demo.mode import FIXTURES_DIR

    trained = FIXTURES_DIR / "tiny-llava"
    if (trained / "config.json").is_file():
        return trained
    from tiny_llava import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("served-tiny-llava"), seed=5)


@pytest.fixture(scope="module")
def server(model_dir, request, tmp_path_factory):
    process = ServeProcess(model_dir, log_path=tmp_path_factory.mktemp("serve") / "serve.log")
    request.addfinalizer(process.stop)  # registered before start: a half-started server is stopped too
    process.start(timeout=60)
    return process


@pytest.fixture(scope="module")
def local(model_dir) -> LocalBackend:
    torch.set_num_threads(1)
    from mllm_nb.loading import load_vlm

    return LocalBackend(load_vlm(model_dir))


def backend_for(server: ServeProcess, timeout: float = 30.0) -> OpenAIBackend:
    return OpenAIBackend(server.url, model=server.model, max_retries=0, timeout=timeout)


class LongAnswers(OpenAIBackend):
    """Asks for exactly ``max_new_tokens`` tokens, so a panel's reply is long enough to stop or to break
    (the trained demo fixture would otherwise end its answer after a word or two)."""

    def stream(self, chat, images=None, **settings):
        tokens = settings.get("max_new_tokens") or 256
        settings.setdefault("generation_config", json.dumps({"min_new_tokens": tokens}))
        return super().stream(chat, images, **settings)


def long_backend_for(server: ServeProcess, timeout: float = 30.0) -> LongAnswers:
    return LongAnswers(server.url, model=server.model, max_retries=0, timeout=timeout)


# ------------------------------------------------------------------------------------ answers


def test_a_one_image_question_gets_the_local_models_greedy_answer(server, local):
    backend = backend_for(server)
    answer = backend.ask(QUESTION, images=circle(), max_new_tokens=12)
    assert answer and answer == local.ask(QUESTION, circle(), max_new_tokens=12)
    assert 1 <= backend.tokens_generated <= 12

    panel = ChatPanel(backend, max_new_tokens=12)
    assert "on server http://127.0.0.1:" in panel.header.value
    assert panel.send(QUESTION, images=circle()) == answer and panel.error is None
    follow_up = panel.send("And the square?", images=circle("blue"))
    assert follow_up is not None and panel.error is None
    assert panel.transcript().splitlines()[2] == "USER: [image 2] And the square?"
    chat = panel.conversation.copy()
    chat.pop()  # the same two-turn, two-image conversation, answered by the model in this kernel
    assert follow_up == local.ask(chat, max_new_tokens=12)


def test_the_answer_streams_piece_by_piece(server):
    backend = backend_for(server)
    backend.ask("w1", images=circle(), max_new_tokens=2)  # warm
    started, arrivals, pieces = time.monotonic(), [], []
    for piece in backend.stream(QUESTION, images=circle(), **at_least(300)):
        arrivals.append(time.monotonic() - started)
        pieces.append(piece)
    assert backend.tokens_generated == len(pieces) >= 150  # one piece per token (a few may merge)
    assert arrivals[0] < 0.5 * arrivals[-1], f"first piece at {arrivals[0]:.2f} s of {arrivals[-1]:.2f} s"


def test_stop_ends_the_stream_and_the_server_stops_generating(server):
    backend = backend_for(server)
    stop = threading.Event()
    pieces = []
    started = time.monotonic()
    for piece in backend.stream(QUESTION, images=circle(), stop_event=stop, **at_least(1500)):
        pieces.append(piece)
        if len(pieces) == 3:
            stop.set()
    assert len(pieces) == 3 and time.monotonic() - started < 5
    # the server runs one generation at a time: had it kept going (1500 tokens, several seconds),
    # this short question would wait behind it
    started = time.monotonic()
    assert backend.ask("w1", images=circle(), **at_least(2))  # two tokens whatever the model makes of "w1"
    assert time.monotonic() - started < 1.5

    panel = ChatPanel(long_backend_for(server))
    panel.max_tokens_slider.value = 1500
    assert panel.send(QUESTION, images=circle(), wait=False) is None
    deadline = time.monotonic() + 20
    while len((panel._partial or "").split()) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    panel.stop_button.click()
    assert panel.wait(timeout=10)
    last = panel.conversation[-1]
    assert last.role == "assistant" and last.stopped and len(last.text.split()) >= 3
    assert panel.error is None and "<b>stopped</b>" in panel.status.value


# ------------------------------------------------------------------------------------- errors


def test_a_bad_image_is_one_clear_error_and_the_server_keeps_serving(server, monkeypatch, tmp_path):
    backend = backend_for(server)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageLoadError) as info:  # caught before any request
        backend.ask(QUESTION, images=str(broken))
    assert "broken.png" in str(info.value) and "\n" not in str(info.value)

    panel = ChatPanel(backend, max_new_tokens=4)
    panel.source_box.value = str(broken)
    panel.prompt_box.value = QUESTION
    panel.send_button.click()
    assert panel.wait(timeout=10) and "broken.png" in panel.error and len(panel.conversation) == 0
    assert panel.prompt_box.value == QUESTION  # nothing lost: fix the path and press Send again

    # bytes that are not an image reach the server (a damaged upload): it answers 500, we say so in one line
    import mllm_nb.backends

    monkeypatch.setattr(mllm_nb.backends, "image_to_data_url", lambda image: "data:image/png;base64,bm90IGFuIGltYWdl")
    with pytest.raises(BackendError) as info:
        backend.ask(QUESTION, images=circle(), max_new_tokens=4)
    message = str(info.value)
    assert "HTTP 500" in message and server.url in message and "\n" not in message
    assert isinstance(info.value, MllmNbError)
    # the server logs its reason just after it answers: PIL's words, or torchvision's where it decodes images
    reasons = ("cannot identify image file", "are currently supported")
    deadline = time.monotonic() + 5
    while not any(reason in server.log_tail(80) for reason in reasons) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(reason in server.log_tail(80) for reason in reasons)
    monkeypatch.undo()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert backend.ask(QUESTION, images=circle(), max_new_tokens=4)  # still serving


def test_a_wrong_model_name_and_unknown_settings_are_refused_clearly(server):
    wrong = OpenAIBackend(server.url, model="llava-hf/llava-1.5-7b-hf", max_retries=0, timeout=30)
    with pytest.raises(BackendError) as info:
        wrong.ask(QUESTION, images=circle(), max_new_tokens=4)
    assert "HTTP 400" in str(info.value) and "is pinned to" in str(info.value)
    with pytest.raises(BackendError) as info:
        backend_for(server).ask(QUESTION, images=circle(), max_new_tokens=4, top_k=5)
    assert "HTTP 422" in str(info.value) and "top_k" in str(info.value)


def test_the_server_stopping_mid_conversation_is_a_clear_error_and_the_panel_recovers(model_dir, request, tmp_path):
    process = ServeProcess(model_dir, log_path=tmp_path / "serve.log")
    request.addfinalizer(process.stop)
    process.start(timeout=60)
    backend = long_backend_for(process, timeout=20)
    panel = ChatPanel(backend, max_new_tokens=6)
    first = panel.send(QUESTION, images=circle())
    assert first and panel.error is None

    # the server dies while the second answer streams
    panel.max_tokens_slider.value = 1500
    panel.prompt_box.value = "And now?"
    panel.send_button.click()
    deadline = time.monotonic() + 20
    while len((panel._partial or "").split()) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    process.kill()
    assert panel.wait(timeout=15), "the panel hung after the server died"
    assert panel.error is not None and process.url in panel.error and "\n" not in panel.error
    assert "incomplete chunked read" in panel.error or "connection" in panel.error.lower()
    assert "Error:</b>" in panel.view.value and not panel.send_button.disabled
    assert len(panel.conversation) == 2 and panel.prompt_box.value == "And now?"  # ready to resend

    # while it is down: refused at once, one sentence
    started = time.monotonic()
    assert panel.send("Hello?") is None and time.monotonic() - started < 10
    assert panel.error.startswith(f"Could not connect to the server at {process.url} (connection refused)")

    # back up on the same port: the same panel carries on with the conversation it had
    process.start(timeout=60)
    panel.max_tokens_slider.value = 6
    again = panel.send("And now?")
    assert again and panel.error is None
    assert panel.transcript().splitlines()[:2] == [f"USER: [image 1] {QUESTION}", f"ASSISTANT: {first}"]
    assert panel.transcript().splitlines()[2:] == ["USER: And now?", f"ASSISTANT: {again}"]
    process.stop()
    assert not process.running
