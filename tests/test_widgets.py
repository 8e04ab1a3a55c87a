"""ChatPanel (mllm_nb.widgets), driven the way a person uses it: upload, type, click, wait, read.

Runs on ipywidgets 8 and 7.8 alike: uploads are set in the installed version's shape (the other
version's shape goes through the same handler), and nothing here needs torch except the one
end-to-end test with the tiny random LLaVA, which is skipped without it.
"""

from __future__ import annotations

import datetime
import io
import re
import threading
import time

import ipywidgets
import numpy as np
import pytest
from PIL import Image

from mllm_nb.backends import Backend
from mllm_nb.chat import Conversation
from mllm_nb.settings import SettingsError
from mllm_nb.widgets import ChatPanel, ChatPanelError, one_sentence

IPYWIDGETS_8 = int(ipywidgets.__version__.split(".")[0]) >= 8
RED = Image.new("RGB", (40, 40), (220, 30, 30))
BLUE = Image.new("RGB", (24, 36), (20, 40, 230))
XSS = "<img src=x onerror=alert(1)>"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upload_value_8(files: list[tuple[str, bytes]]) -> tuple:
    now = datetime.datetime.now(datetime.timezone.utc)
    return tuple(
        {"name": n, "type": "image/png", "size": len(d), "content": memoryview(d), "last_modified": now}
        for n, d in files
    )


def upload_value_7(files: list[tuple[str, bytes]]) -> dict:
    return {n: {"metadata": {"name": n, "type": "image/png", "size": len(d)}, "content": d} for n, d in files}


def person_uploads(panel: ChatPanel, files: list[tuple[str, bytes]]) -> None:
    """What the browser sends when files are picked, for the installed ipywidgets version."""
    if IPYWIDGETS_8:  # 8.x: the frontend sets the value, a tuple of dicts
        panel.upload.value = upload_value_8(files)
        return
    # 7.x: the frontend sets metadata and data, then bumps _counter; the widget builds its dict value
    panel.upload.metadata = [{"name": n, "type": "image/png", "size": len(d)} for n, d in files]
    panel.upload.data = [d for _, d in files]
    panel.upload._counter += len(files)
    assert not panel.upload.value or isinstance(panel.upload.value, dict)


def other_version_uploads(panel: ChatPanel, files: list[tuple[str, bytes]]) -> None:
    """The other ipywidgets version's value shape, through the same handler the widget calls."""
    panel._uploaded(upload_value_7(files) if IPYWIDGETS_8 else upload_value_8(files))


def upload_is_empty(panel: ChatPanel) -> bool:
    return len(panel.upload.value) == 0


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


class Scripted(Backend):
    """Yields ``words`` one by one with a pause; records what it was asked; can fail or ignore Stop."""

    name = "scripted"

    def __init__(self, words=("red",), delay: float = 0.0, fail: BaseException | None = None,
                 obey_stop: bool = True) -> None:
        self.words, self.delay, self.fail, self.obey_stop = list(words), delay, fail, obey_stop
        self.calls: list[dict] = []

    def stream(self, chat, images=None, *, stop_event=None, **settings):
        self.calls.append({"transcript": chat.transcript(), "images": chat.images, "settings": settings,
                           "thread": threading.current_thread().name})
        if self.fail is not None:
            error, self.fail = self.fail, None  # fail once, then work
            raise error
        for i, word in enumerate(self.words):
            if self.obey_stop and stop_event.is_set():
                return
            time.sleep(self.delay)
            yield word if i == 0 else " " + word


class Echo(Backend):
    name = "echo"

    def stream(self, chat, images=None, *, stop_event=None, **settings):
        yield "you said " + chat[-1].text


# ----------------------------------------------------------------------------------- sending


def test_upload_type_click_send_streams_without_double_generation():
    backend = Scripted(words=["red"] * 1, delay=0.3)
    panel = ChatPanel(backend)
    person_uploads(panel, [("circle.png", png(RED))])
    assert "1 image attached" in panel.attachments.value and upload_is_empty(panel)
    panel.prompt_box.value = "What colour is the circle?"
    panel.send_button.click()
    assert panel.busy and panel.send_button.disabled and not panel.stop_button.disabled
    assert panel.regenerate_button.disabled and panel.clear_button.disabled
    panel.send_button.click()  # a second click while streaming does nothing
    assert panel.wait(timeout=10)
    assert len(backend.calls) == 1 and backend.calls[0]["thread"] == "mllm_nb-chat"
    assert panel.transcript() == "USER: [image 1] What colour is the circle?\nASSISTANT: red"
    assert np.array_equal(np.asarray(backend.calls[0]["images"][0]), np.asarray(RED))
    assert not panel.send_button.disabled and panel.stop_button.disabled
    assert panel.prompt_box.value == "" and panel.attachments.value == ""
    assert re.search(r"<b>done</b> · 1 token · [\d.]+ tokens/s · [\d.]+ s", panel.status.value)
    assert "<img src='data:image/jpeg;base64," in panel.view.value


def test_several_uploads_in_both_value_shapes_keep_their_order():
    backend = Scripted(words=["ok"])
    panel = ChatPanel(backend)
    person_uploads(panel, [("a.png", png(RED)), ("b.png", png(BLUE))])
    other_version_uploads(panel, [("c.png", png(BLUE))])
    assert "3 images attached" in panel.attachments.value
    assert panel.send("Compare them.") == "ok"
    assert [im.size for im in backend.calls[0]["images"]] == [RED.size, BLUE.size, BLUE.size]
    assert panel.transcript().startswith("USER: [image 1] [image 2] [image 3] Compare them.")


def test_path_box_and_remove_images(tmp_path):
    RED.save(tmp_path / "red.png")
    backend = Scripted(words=["ok"])
    panel = ChatPanel(backend)
    panel.source_box.value = str(tmp_path / "red.png")
    panel.add_button.click()
    assert "1 image attached" in panel.attachments.value and panel.source_box.value == ""
    panel.remove_images_button.click()
    assert panel.attachments.value == "" and panel.remove_images_button.disabled
    panel.source_box.value = str(tmp_path / "red.png")  # left in the box: Send picks it up
    panel.prompt_box.value = "w1"
    panel.send_button.click()
    panel.wait()
    assert panel.transcript() == "USER: [image 1] w1\nASSISTANT: ok"


def test_settings_reach_the_backend():
    backend = Scripted(words=["ok"])
    panel = ChatPanel(backend, max_new_tokens=20)
    panel.send("w1")
    assert backend.calls[-1]["settings"] == {"max_new_tokens": 20, "do_sample": False}
    assert panel.temperature_slider.disabled and panel.top_p_slider.disabled
    panel.sampling_box.value = True
    panel.temperature_slider.value, panel.top_p_slider.value, panel.max_tokens_slider.value = 0.5, 0.8, 33
    assert not panel.temperature_slider.disabled
    panel.send("w2")
    expected = {"max_new_tokens": 33, "do_sample": True, "temperature": 0.5, "top_p": 0.8}
    assert backend.calls[-1]["settings"] == expected
    assert backend.calls[-1]["transcript"] == "USER: w1\nASSISTANT: ok\nUSER: w2"


# -------------------------------------------------------------------------------------- stop


@pytest.mark.parametrize("obey_stop", [True, False])
def test_stop_keeps_the_partial_answer_marked_stopped(obey_stop):
    backend = Scripted(words=[f"w{i}" for i in range(300)], delay=0.01, obey_stop=obey_stop)
    panel = ChatPanel(backend)
    panel.prompt_box.value = "Tell me a long story."
    panel.send_button.click()
    wait_until(lambda: len((panel._partial or "").split()) >= 3)
    panel.stop_button.click()
    assert panel.wait(timeout=5)
    last = panel.conversation[-1]
    assert last.role == "assistant" and last.stopped
    words = last.text.split()
    assert words[:3] == ["w0", "w1", "w2"] and len(words) < 300
    assert panel.transcript().endswith("[stopped]")
    assert "(stopped)" in panel.view.value and "<b>stopped</b>" in panel.status.value
    assert not panel.send_button.disabled and panel.stop_button.disabled
    backend.words = ["again"]
    assert panel.send("w9") == "again" and not panel.conversation[-1].stopped


# ------------------------------------------------------------------------------ clear / regen


def test_clear_forgets_everything():
    panel = ChatPanel(Scripted(words=["ok"]))
    person_uploads(panel, [("a.png", png(RED))])
    panel.send("w1")
    person_uploads(panel, [("b.png", png(BLUE))])
    panel.clear_button.click()
    assert panel.transcript() == "" and len(panel.conversation) == 0
    assert panel.attachments.value == "" and "press Send" in panel.view.value and "ready" in panel.status.value


def test_regenerate_replaces_the_last_answer():
    class Counting(Backend):
        def __init__(self):
            self.asked = []

        def stream(self, chat, images=None, *, stop_event=None, **settings):
            self.asked.append(chat.transcript())
            yield f"answer {len(self.asked)}"

    backend = Counting()
    panel = ChatPanel(backend)
    panel.regenerate_button.click()
    assert panel.error == "Nothing to regenerate yet; send a question first."
    panel.send("w1", images=RED)
    panel.regenerate_button.click()
    panel.wait()
    assert panel.transcript() == "USER: [image 1] w1\nASSISTANT: answer 2"
    assert backend.asked == ["USER: [image 1] w1"] * 2 and panel.error is None
    assert panel.regenerate() == "answer 3" and len(panel.conversation) == 2


# ---------------------------------------------------------------------------------- failures


def test_a_backend_exception_is_one_sentence_and_the_panel_keeps_working():
    backend = Scripted(words=["fine"], fail=RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore"))
    panel = ChatPanel(backend)
    person_uploads(panel, [("a.png", png(RED))])
    panel.prompt_box.value = "w1"
    panel.send_button.click()
    panel.wait()
    assert panel.error == (
        "The model ran out of memory; lower max new tokens, send fewer or smaller images, or load the model in 4-bit."
    )
    assert "Error:</b> The model ran out of memory" in panel.view.value and "<b>error</b>" in panel.status.value
    assert len(panel.conversation) == 0  # the failed question is not half in the conversation
    assert panel.prompt_box.value == "w1" and "1 image attached" in panel.attachments.value  # ready to retry
    assert not panel.send_button.disabled
    panel.send_button.click()
    panel.wait()
    assert panel.transcript() == "USER: [image 1] w1\nASSISTANT: fine" and panel.error is None
    assert "Error:" not in panel.view.value


def test_bad_inputs_show_one_sentence(tmp_path):
    panel = ChatPanel(Scripted(words=["ok"]))
    panel.send_button.click()
    assert panel.error == "Type a question (and attach images if you like) before pressing Send."
    panel.source_box.value = str(tmp_path / "missing.png")
    panel.prompt_box.value = "w1"
    panel.send_button.click()
    assert "missing.png" in panel.error and "\n" not in panel.error and len(panel.conversation) == 0
    person_uploads(panel, [(f"{XSS}.png", b"not an image at all")])
    assert panel.error.startswith("Could not read the upload ") and XSS not in panel.view.value
    assert panel.send("w2", images=tmp_path / "nope.png") is None and "nope.png" in panel.error
    assert panel.send("w3") == "ok"


def test_server_down_is_shown_in_the_panel():
    pytest.importorskip("openai")
    import socket

    from mllm_nb.backends import OpenAIBackend

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    panel = ChatPanel(OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m", max_retries=0))
    assert panel.send("w1") is None
    assert panel.error.startswith(f"Could not connect to the server at http://127.0.0.1:{port}/v1")
    assert len(panel.conversation) == 0


def test_send_while_streaming_is_refused_programmatically():
    panel = ChatPanel(Scripted(words=["a", "b"], delay=0.2))
    panel.send("w1", wait=False)
    with pytest.raises(ChatPanelError, match="still streaming"):
        panel.send("w2")
    with pytest.raises(ChatPanelError, match="still streaming"):
        panel.regenerate()
    panel.wait()
    assert panel.transcript() == "USER: w1\nASSISTANT: a b"


def test_bad_settings():
    with pytest.raises(SettingsError, match="max_new_tokens must be an integer >= 1"):
        ChatPanel(Echo(), max_new_tokens=0)
    with pytest.raises(SettingsError, match="top_p must be a number > 0 and <= 1"):
        ChatPanel(Echo(), top_p=2)
    with pytest.raises(SettingsError, match="temperature must be a number > 0"):
        ChatPanel(Echo(), temperature=0)
    with pytest.raises(SettingsError, match="do_sample must be True or False"):
        ChatPanel(Echo(), do_sample="yes")
    with pytest.raises(ChatPanelError, match="conversation must be a mllm_nb.Conversation"):
        ChatPanel(Echo(), conversation=[])


# ------------------------------------------------------------------------------------ safety


def test_user_and_model_text_is_escaped():
    panel = ChatPanel(Echo(), system="<script>alert(2)</script>", title="<b>t</b>")
    assert panel.send(XSS) == "you said " + XSS
    value = panel.view.value
    assert "<img src=x" not in value and value.count("&lt;img src=x onerror=alert(1)&gt;") == 2
    assert "<script>" not in value and "&lt;script&gt;" in value
    assert "<b>t</b>" not in panel.header.value
    panel._fail(RuntimeError(XSS))
    assert "<img src=x" not in panel.status.value + panel.view.value


def test_one_sentence():
    assert one_sentence(ValueError("bad\nthing")) == (
        "The model failed (ValueError: bad thing); check the inputs and settings, then try again."
    )
    from mllm_nb.errors import ImageLoadError

    assert one_sentence(ImageLoadError("Cannot read x.png; check it.")) == "Cannot read x.png; check it."


# ------------------------------------------------------------------------------------ display


def test_display_tooltips_and_repr(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    panel = ChatPanel(Echo(), conversation=Conversation())
    panel._ipython_display_()
    assert shown == [panel.widget] and isinstance(panel.widget, ipywidgets.VBox)
    assert panel.view in panel.widget.children
    tooltip = panel.upload.tooltip if IPYWIDGETS_8 else panel.upload.description_tooltip
    assert "1 MB" in tooltip and "Stop" in panel.stop_button.tooltip
    assert repr(panel) == "ChatPanel('echo', 0 turns, idle)"


def test_panel_on_the_tiny_local_llava(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from tiny_llava import save_tiny_llava

    from mllm_nb.loading import load_vlm

    vlm = load_vlm(save_tiny_llava(tmp_path / "tiny", seed=2))
    panel = ChatPanel(vlm, max_new_tokens=8)
    assert "local model" in panel.header.value
    reply = panel.send("w1 w2", images=RED)
    assert reply == vlm.ask(RED, "w1 w2", max_new_tokens=8)
    assert panel.transcript() == f"USER: [image 1] w1 w2\nASSISTANT: {reply}"
    assert re.search(r"<b>done</b> · 8 tokens · ", panel.status.value)


# ------------------------------------------------------------------------------ a real kernel's threads


class Noisy(Backend):
    """Warns and logs from the worker thread, as transformers and the multi-image check do."""

    name = "noisy"

    def stream(self, chat, images=None, *, stop_event=None, **settings):
        import logging
        import warnings

        warnings.warn("several images for a model not trained on them", UserWarning, stacklevel=1)
        logging.getLogger("transformers.generation").warning("Setting pad_token_id to eos_token_id")
        yield "red"


def test_worker_threads_never_write_to_stdout_or_stderr(capfd):
    """ipykernel 6.29 can freeze when a thread writes to its streams: warnings and logs become panel notes."""
    import logging
    import warnings

    logging.getLogger("transformers.generation").addHandler(logging.StreamHandler())  # like transformers' own
    panel = ChatPanel(Noisy())
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert panel.send("hi") == "red"
    out, err = capfd.readouterr()
    assert (out + err).strip() == ""
    assert any("several images" in note for note in panel.notes)
    assert any("pad_token_id" in note for note in panel.notes)
    assert "note:" in panel.status.value and "pad_token_id" in panel.status.value
    with warnings.catch_warnings(record=True) as caught:  # the kernel's own thread still warns as usual
        warnings.simplefilter("always")
        warnings.warn("main thread", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["main thread"]


def test_concurrent_sends_never_interleave():
    """150 pairs of sends at the same moment: each is answered in turn or refused, never interleaved."""
    panel = ChatPanel(Scripted(words=("a", "b"), delay=0.002))
    answered = refused = 0
    for trial in range(150):
        barrier, outcomes = threading.Barrier(2), []

        def send(question: str) -> None:
            barrier.wait()
            try:
                outcomes.append(panel.send(question))
            except ChatPanelError:
                outcomes.append("refused")

        threads = [threading.Thread(target=send, args=(f"q{trial}-{i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(outcomes) == 2 and outcomes.count("a b") >= 1, (trial, outcomes)
        answered += outcomes.count("a b")
        refused += outcomes.count("refused")
    roles = [turn.role for turn in panel.conversation.turns]
    assert roles == ["user", "assistant"] * answered  # never USER / USER / ASSISTANT / ASSISTANT
    assert answered + refused == 300 and refused > 0


def test_clear_never_blocks_the_kernel_on_a_reply_that_ignores_stop(monkeypatch):
    import mllm_nb.widgets as widgets_module

    monkeypatch.setattr(widgets_module, "CLEAR_WAIT_SECONDS", 0.3)
    panel = ChatPanel(Scripted(words=["a", "b"], delay=0.8, obey_stop=False))  # "b" comes 0.8 s after Stop
    panel.send("tell me", wait=False)
    wait_until(lambda: panel._partial)
    start = time.monotonic()
    panel.clear()
    assert time.monotonic() - start < 1.5
    assert "did not stop within" in panel.error and len(panel.conversation) >= 1  # nothing cleared yet
    assert panel.wait(10)
    panel.clear()
    assert len(panel.conversation) == 0 and panel.error is None


def test_a_failed_send_restores_exactly_what_was_sent():
    panel = ChatPanel(Scripted(fail=RuntimeError("boom")))
    person_uploads(panel, [("red.png", png(RED)), ("blue.png", png(BLUE))])
    panel.prompt_box.value = "How many shapes are there?"
    panel.send_button.click()
    panel.wait(10)
    assert panel.error and panel.prompt_box.value == "How many shapes are there?"
    assert "2 images attached" in panel.attachments.value
    panel.send_button.click()  # the retry sends the same two images once, not four
    panel.wait(10)
    assert panel.error is None and len(panel.conversation.turns[0].images) == 2
    assert panel.conversation.turns[0].text == "How many shapes are there?"
