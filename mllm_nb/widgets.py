"""A chat panel for notebooks: images in, streamed answers out, on ipywidgets 7 (Colab) and 8.

:class:`ChatPanel` shows the conversation (thumbnails, HTML-escaped text), lets a person attach
images (upload button, or a path / URL box for files Colab's uploader cannot take), type a
question and press Send; the answer streams in from a worker thread, so the kernel stays free.
Stop keeps the partial answer (marked *stopped*), Regenerate asks again, Clear starts over; any
failure is shown as one sentence and the panel keeps working. Settings: max new tokens,
sampling, temperature, top-p.

In a notebook::

    >>> import mllm_nb as mn
    >>> vlm = mn.load_vlm("llava-hf/llava-1.5-7b-hf")  # doctest: +SKIP
    >>> panel = mn.ChatPanel(vlm, max_new_tokens=128)  # doctest: +SKIP
    >>> panel  # doctest: +SKIP

or against a shared server: ``ChatPanel(OpenAIBackend("http://host:8000/v1", model=...))``.
The same panel is scriptable, which is how notebooks and tests drive it::

    >>> from mllm_nb.backends import Backend
    >>> class Parrot(Backend):
    ...     name = "parrot"
    ...     def stream(self, chat, images=None, *, stop_event=None, **settings):
    ...         yield "you said: "
    ...         yield chat[-1].text
    >>> panel = ChatPanel(Parrot())
    >>> panel.send("<b>hi</b>")
    'you said: <b>hi</b>'
    >>> print(panel.transcript())
    USER: <b>hi</b>
    ASSISTANT: you said: <b>hi</b>
    >>> "&lt;b&gt;hi&lt;/b&gt;" in panel.view.value
    True
"""

from __future__ import annotations

import base64
import html
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import ipywidgets as widgets
from PIL import Image

from mllm_nb.backends import Backend, ChatSession
from mllm_nb.chat import Conversation, Turn, as_images
from mllm_nb.errors import MllmNbError
from mllm_nb.settings import GenerationSettings
from mllm_nb.worker_output import WORKER_THREAD_PREFIX, route_worker_output

#: Longest side of the thumbnails shown in the conversation, in pixels.
THUMBNAIL_SIZE = 96
#: At most this many view refreshes per second while streaming.
_REFRESH_PER_SECOND = 20
#: ``clear()`` waits at most this long for a reply to stop (it runs on the kernel's thread).
CLEAR_WAIT_SECONDS = 5.0


class ChatPanelError(MllmNbError):
    """A ChatPanel was asked to do something it cannot do now (or got bad settings)."""


class ChatPanel:
    """A chat widget around a model: a ``VLM``, a ``(model, processor)`` pair or a backend.

    Settings (all adjustable in the panel): ``max_new_tokens``, ``do_sample``, ``temperature``,
    ``top_p``; ``system`` is an optional system prompt; ``conversation`` continues an existing one.

    >>> panel = ChatPanel(vlm, max_new_tokens=64)  # doctest: +SKIP
    >>> panel.send("What colour is the circle?", images="scene.png")  # doctest: +SKIP
    'red'
    """

    def __init__(
        self,
        model: Any,
        *,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        system: str | None = None,
        conversation: Conversation | None = None,
        title: str = "Chat",
    ) -> None:
        GenerationSettings(max_new_tokens, do_sample)  # the one validation (SettingsError)
        GenerationSettings(max_new_tokens, True, temperature, top_p)  # the sampling sliders' start values
        if conversation is not None and not isinstance(conversation, Conversation):
            raise ChatPanelError(f"conversation must be a mllm_nb.Conversation; got a {type(conversation).__name__}.")
        #: The backend and the conversation, with the send lifecycle (add, stream, record or roll back).
        self.session = ChatSession(model, conversation if conversation is not None else Conversation(system=system))
        #: The last failure as one sentence (None after a successful reply).
        self.error: str | None = None
        self._pending: list[Image.Image] = []
        self._partial: str | None = None
        self._pieces = 0
        self._started = 0.0
        self._last_refresh = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._send_lock = threading.Lock()  # the busy check and the start of a reply are one step
        #: Warnings and log lines the worker threads produced (shown in the status line, never printed).
        self.notes: list[str] = []
        self._fragments: dict[int, tuple[Turn, str]] = {}
        self._build(title, max_new_tokens, do_sample, temperature, top_p)
        self._set_busy(False)
        self._render()
        self._set_status("ready")

    # ---------------------------------------------------------------------------------- layout

    @property
    def backend(self) -> Backend:
        """What answers: a ``LocalBackend``, an ``OpenAIBackend`` or another :class:`~mllm_nb.backends.Backend`."""
        return self.session.backend

    @property
    def conversation(self) -> Conversation:
        """The conversation shown (export it with ``to_json`` / ``save``)."""
        return self.session.conversation

    def _build(self, title: str, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float) -> None:
        about = self.backend.describe()
        loud = getattr(self.backend, "demo", False) is True or about.startswith("DEMO MODE")
        colour = "#b45309" if loud else "#555"
        self.header = widgets.HTML(
            f"<b>{html.escape(title)}</b> <span style='color:{colour}'>{html.escape(about)}</span>"
        )
        # column-reverse keeps the scroll position at the newest message while it grows (no JavaScript needed);
        # "auto" widths fill the panel without the horizontal overflow that "100%" plus margins gives
        self.view = widgets.HTML(layout=widgets.Layout(
            width="auto", max_height="480px", overflow="auto", display="flex", flex_flow="column-reverse"
        ))
        self.attachments = widgets.HTML()
        self.upload = widgets.FileUpload(accept="image/*", multiple=True, description="Images")
        self.source_box = widgets.Text(
            placeholder="or an image path / URL", layout=widgets.Layout(flex="1 1 200px", min_width="160px")
        )
        self.add_button = widgets.Button(description="Add", layout=_button_layout())
        self.remove_images_button = widgets.Button(description="Remove images", layout=_button_layout())
        self.prompt_box = widgets.Textarea(
            placeholder="Ask about the images, then press Send", rows=3, layout=widgets.Layout(width="auto")
        )
        #: The last error, next to the prompt where the person is looking (also in the conversation).
        self.error_line = widgets.HTML()
        self.send_button = widgets.Button(
            description="Send", button_style="primary", icon="paper-plane", layout=_button_layout()
        )
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", layout=_button_layout())
        self.regenerate_button = widgets.Button(description="Regenerate", icon="repeat", layout=_button_layout())
        self.clear_button = widgets.Button(description="Clear", icon="trash", layout=_button_layout())
        style = {"description_width": "initial"}
        self.max_tokens_slider = widgets.IntSlider(
            value=max_new_tokens, min=1, max=max(2048, max_new_tokens), description="max new tokens",
            continuous_update=False, style=style, layout=_slider_layout(),
        )
        self.sampling_box = widgets.Checkbox(value=do_sample, description="sampling", indent=False)
        self.temperature_slider = widgets.FloatSlider(
            value=temperature, min=min(0.05, temperature), max=max(2.0, temperature), step=0.05, description="temperature",
            continuous_update=False, style=style, layout=_slider_layout(),
        )
        self.top_p_slider = widgets.FloatSlider(
            value=top_p, min=min(0.05, top_p), max=1.0, step=0.05, description="top-p", continuous_update=False, style=style,
            layout=_slider_layout(),
        )
        self.status = widgets.HTML()
        self._tooltips()
        self._wire()
        self.widget = widgets.VBox([
            self.header,
            self.view,
            self.attachments,
            _row([self.upload, self.source_box, self.add_button, self.remove_images_button]),
            self.prompt_box,
            self.error_line,
            _row([self.send_button, self.stop_button, self.regenerate_button, self.clear_button]),
            _row([self.max_tokens_slider, self.sampling_box, self.temperature_slider, self.top_p_slider]),
            self.status,
        ], layout=widgets.Layout(width="auto"))
        self._sampling_changed()

    def _tooltips(self) -> None:
        _tooltip(self.upload, "Attach images to your next question (Colab: use the path / URL box for files over 1 MB)")
        _tooltip(self.source_box, "A file path or an http(s) URL of an image; press Add (or just Send)")
        _tooltip(self.send_button, "Send the question with the attached images")
        _tooltip(self.stop_button, "Stop the answer; the part already written is kept")
        _tooltip(self.regenerate_button, "Ask the last question again")
        _tooltip(self.clear_button, "Start a new conversation")
        _tooltip(self.sampling_box, "Off: greedy decoding (repeatable); on: temperature and top-p sampling")

    def _wire(self) -> None:
        self.send_button.on_click(lambda _: self._send_from_inputs())
        self.stop_button.on_click(lambda _: self.stop())
        self.regenerate_button.on_click(lambda _: self._regenerate_from_button())
        self.clear_button.on_click(lambda _: self.clear())
        self.add_button.on_click(lambda _: self._add_source())
        self.remove_images_button.on_click(lambda _: self._remove_images())
        self.upload.observe(lambda change: self._uploaded(change["new"]), names="value")
        self.sampling_box.observe(lambda _: self._sampling_changed(), names="value")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        state = "streaming" if self.busy else "idle"
        return f"ChatPanel({self.backend.name!r}, {len(self.conversation)} turns, {state})"

    # ------------------------------------------------------------------------------ public API

    @property
    def busy(self) -> bool:
        """Whether a reply is being generated right now."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def settings(self) -> dict[str, Any]:
        """The generation settings the panel currently shows, as backend keywords.

        >>> ChatPanel(backend).settings  # doctest: +SKIP
        {'max_new_tokens': 256, 'do_sample': False}
        """
        tokens = int(self.max_tokens_slider.value)
        if not self.sampling_box.value:
            return GenerationSettings(tokens).to_kwargs()
        sampling = float(self.temperature_slider.value), float(self.top_p_slider.value)
        return GenerationSettings(tokens, True, *sampling).to_kwargs()

    def send(self, text: str, images: Any = None, wait: bool = True) -> str | None:
        """Ask ``text`` with ``images`` (any ``load_images`` source) plus images attached in the panel.

        With ``wait=True`` returns the reply (None when it failed: the sentence is in ``error``
        and shown in the panel); with ``wait=False`` returns None at once and streams in the background.

        >>> panel.send("What colour is the circle?", images="scene.png")  # doctest: +SKIP
        'red'
        """
        with self._send_lock:
            if self.busy:
                raise ChatPanelError("A reply is still streaming; call panel.stop() or panel.wait() first.")
            if not self._start(text, images, from_inputs=False):
                return None
        return self._result() if wait else None

    def regenerate(self, wait: bool = True) -> str | None:
        """Drop the last answer and ask the last question again; returns the new reply like ``send``.

        >>> panel.regenerate()  # doctest: +SKIP
        """
        with self._send_lock:
            if self.busy:
                raise ChatPanelError("A reply is still streaming; call panel.stop() or panel.wait() first.")
            if not self._regenerate():
                return None
        return self._result() if wait else None

    def stop(self) -> None:
        """End the streaming reply; the part already written stays, marked stopped.

        >>> panel.stop()  # doctest: +SKIP
        """
        if self.busy:
            self._stop.set()
            self._set_status("stopping")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current reply is finished (or ``timeout`` seconds passed); True when idle.

        >>> panel.wait(timeout=30)  # doctest: +SKIP
        True
        """
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy

    def clear(self) -> None:
        """Start over: stop any reply, forget every turn, attachment and error.

        >>> panel.clear()  # doctest: +SKIP
        """
        if self.busy:
            self.stop()
            if not self.wait(CLEAR_WAIT_SECONDS):  # never block the kernel: leave the reply to end on its own
                self._fail(ChatPanelError(
                    f"The reply did not stop within {CLEAR_WAIT_SECONDS:.0f} s; press Clear again once the status "
                    "says stopped."
                ))
                return
        self.conversation.clear()
        self._pending.clear()
        self._fragments.clear()
        self.error = None
        self._render_attachments()
        self._render()
        self._set_status("ready")

    def transcript(self) -> str:
        """The conversation as plain text, e.g. ``USER: [image 1] What colour?`` / ``ASSISTANT: red``.

        >>> print(panel.transcript())  # doctest: +SKIP
        """
        return self.conversation.transcript()

    # ------------------------------------------------------------------------------ the inputs

    def _send_from_inputs(self) -> None:
        with self._send_lock:
            if self.busy:  # the button is disabled while streaming; a late click does nothing
                return
            self._start(self.prompt_box.value, None, from_inputs=True)

    def _regenerate_from_button(self) -> None:
        with self._send_lock:
            if not self.busy:
                self._regenerate()

    def _uploaded(self, value: Any) -> None:
        from mllm_nb.images import iter_upload, load_image

        if not value:
            return
        try:
            files = iter_upload(value)
        except MllmNbError as err:
            self._fail(err)
            return
        for name, data in files:
            try:
                self._pending.append(load_image(data))
            except MllmNbError as err:
                self._fail(err, prefix=f"Could not read the upload {name!r}: ")
        _clear_upload(self.upload)
        self._render_attachments()

    def _add_source(self) -> bool:
        from mllm_nb.images import load_image

        source = self.source_box.value.strip()
        if not source:
            return True
        try:
            self._pending.append(load_image(source))
        except MllmNbError as err:
            self._fail(err)
            return False
        self.source_box.value = ""
        self._render_attachments()
        return True

    def _remove_images(self) -> None:
        self._pending.clear()
        self._render_attachments()

    def _sampling_changed(self) -> None:
        self.temperature_slider.disabled = self.top_p_slider.disabled = not self.sampling_box.value

    # ------------------------------------------------------------------------------ generating

    def _start(self, text: Any, images: Any, from_inputs: bool) -> bool:
        """Add the user turn and start the worker; False (error shown) when the input is unusable."""
        if not isinstance(text, str):
            self._fail(ChatPanelError(f"The question must be text; got a {type(text).__name__}."))
            return False
        if from_inputs and not self._add_source():
            return False
        try:
            extra = as_images(images)
        except MllmNbError as err:
            self._fail(err)
            return False
        attached = self._pending + extra
        if not text.strip() and not attached:
            self._fail(ChatPanelError("Type a question (and attach images if you like) before pressing Send."))
            return False
        stream = self.session.stream(text.strip(), attached, stop_event=self._stop, **self.settings)
        restore = (text, list(self._pending)) if from_inputs else None
        self._pending = []
        self._render_attachments()
        if from_inputs:
            self.prompt_box.value = ""
        self._launch(stream, restore)
        return True

    def _regenerate(self) -> bool:
        if not any(turn.role == "user" for turn in self.conversation.turns):
            self._fail(ChatPanelError("Nothing to regenerate yet; send a question first."))
            return False
        self._launch(self.session.stream_again(stop_event=self._stop, **self.settings), None)
        return True

    def _launch(self, stream: Iterator[str], restore: tuple[str, list[Image.Image]] | None) -> None:
        self.error = None
        self.notes = []
        self._stop.clear()
        self._partial, self._pieces = "", 0
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=self._work, args=(stream, restore), name=WORKER_THREAD_PREFIX + "chat", daemon=True
        )
        route_worker_output(self)
        self._set_busy(True)
        self._render()
        self._set_status("generating")
        self._thread.start()

    def _work(self, stream: Iterator[str], restore: tuple[str, list[Image.Image]] | None) -> None:
        """Stream the answer (the session records it, or rolls the conversation back) and keep the view live."""
        pieces: list[str] = []
        try:
            for piece in stream:
                pieces.append(piece)
                self._partial, self._pieces = "".join(pieces), len(pieces)
                self._refresh()
            state = "stopped" if self._stop.is_set() else "done"
        except BaseException as err:  # noqa: BLE001 - shown in the panel; the panel stays usable
            if restore is not None:  # exactly what was sent, ready to retry: nothing appended to it
                self.prompt_box.value = restore[0]
                self._pending = list(restore[1])
                self._render_attachments()
            self._fail(err)
            state = None
        finally:
            self._partial = None
            self._set_busy(False)
        self._render()
        if state:
            self._set_status(state)

    def _result(self) -> str | None:
        self.wait()
        if self.error is not None or not self.conversation.turns:
            return None
        last = self.conversation.turns[-1]
        return last.text if last.role == "assistant" else None

    # ------------------------------------------------------------------------------- rendering

    def _set_busy(self, busy: bool) -> None:
        self.send_button.disabled = busy
        self.regenerate_button.disabled = busy
        self.clear_button.disabled = busy
        self.stop_button.disabled = not busy

    def _fail(self, err: BaseException, prefix: str = "") -> None:
        self.error = prefix + one_sentence(err)
        self._render()
        self._set_status("error")

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._last_refresh >= 1.0 / _REFRESH_PER_SECOND:
            self._last_refresh = now
            self._render()
            self._set_status("generating")

    def _set_status(self, state: str) -> None:
        parts = [f"<b>{html.escape(state)}</b>"]
        if state in ("generating", "stopping", "done", "stopped"):
            elapsed = max(time.monotonic() - self._started, 1e-6)
            tokens = self.backend.tokens_generated
            count = tokens if isinstance(tokens, int) and tokens > 0 else self._pieces
            noun = "token" if count == 1 else "tokens"
            parts += [f"{count} {noun}", f"{count / elapsed:.1f} tokens/s", f"{elapsed:.1f} s"]
        elif state == "error" and self.error:
            parts.append(html.escape(self.error))
        if self.notes and state != "error":
            parts.append(f"<span style='color:#b45309'>note: {html.escape(self.notes[-1])}</span>")
        self.status.value = " · ".join(parts)

    def note(self, text: str) -> None:
        """Show a warning that arose while answering (from a worker thread) in the status line, not on stderr.

        >>> panel.note("MultiImageWarning: several images")  # doctest: +SKIP
        """
        self.notes.append(" ".join(str(text).split())[:300])

    def _render(self) -> None:
        blocks, number = [], 0
        if self.conversation.system:
            blocks.append(_bubble("system", html.escape(self.conversation.system), "#f3f4f6"))
        fragments: dict[int, tuple[Turn, str]] = {}
        for turn in list(self.conversation.turns):
            fragments[id(turn)] = self._fragment(turn, number)
            blocks.append(fragments[id(turn)][1])
            number += len(turn.images)
        self._fragments = fragments  # only the turns still in the conversation stay cached
        if self._partial is not None:
            cursor = "<span style='opacity:.5'>▌</span>"
            blocks.append(_bubble("assistant", html.escape(self._partial) + cursor, "#eef6ee"))
        if self.error:
            blocks.append(
                "<div style='color:#b91c1c;margin:4px 0'><b>Error:</b> " + html.escape(self.error) + "</div>"
            )
        if not blocks:
            blocks.append("<div style='color:#888'>Attach images, type a question and press Send.</div>")
        self.view.value = "<div style='font-family:sans-serif;font-size:14px'>" + "".join(blocks) + "</div>"
        self.error_line.value = (
            "<div style='color:#b91c1c'><b>Error:</b> " + html.escape(self.error) + "</div>" if self.error else ""
        )

    def _fragment(self, turn: Turn, first_image: int) -> tuple[Turn, str]:
        """The HTML of one finished turn, rendered once (thumbnails are the costly part)."""
        cached = self._fragments.get(id(turn))
        if cached is not None and cached[0] is turn:
            return cached
        thumbs = "".join(_thumbnail(image, first_image + i + 1) for i, image in enumerate(turn.images))
        body = html.escape(turn.text)
        if turn.stopped:
            body += " <i style='color:#b45309'>(stopped)</i>"
        colour = "#eef2ff" if turn.role == "user" else "#eef6ee"
        return turn, _bubble(turn.role, (f"<div>{thumbs}</div>" if thumbs else "") + body, colour)

    def _render_attachments(self) -> None:
        if not self._pending:
            self.attachments.value = ""
            self.remove_images_button.disabled = True
            return
        thumbs = "".join(_thumbnail(image, i + 1) for i, image in enumerate(self._pending))
        count = len(self._pending)
        self.attachments.value = f"<div>{thumbs} <span>{count} image{'s' if count > 1 else ''} attached</span></div>"
        self.remove_images_button.disabled = False


# ------------------------------------------------------------------------------------ helpers


def one_sentence(err: BaseException) -> str:
    """An exception as one line a person can act on (our errors keep their message).

    >>> one_sentence(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    'The model ran out of memory; lower max new tokens, send fewer or smaller images, or load the model in 4-bit.'
    """
    text = " ".join(str(err).split())
    if isinstance(err, MllmNbError) and text:
        return text[:400]
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return (
            "The model ran out of memory; lower max new tokens, send fewer or smaller images, "
            "or load the model in 4-bit."
        )
    detail = f": {text[:200]}" if text else ""
    return f"The model failed ({type(err).__name__}{detail}); check the inputs and settings, then try again."


def _button_layout() -> widgets.Layout:
    """Buttons as wide as their label (never cut to "A…"), not narrower than a finger."""
    return widgets.Layout(width="auto", min_width="72px")


def _slider_layout() -> widgets.Layout:
    """Sliders that keep a usable track when the row wraps on a narrow window."""
    return widgets.Layout(flex="1 1 300px", min_width="300px", max_width="460px")


def _row(children: list[widgets.Widget]) -> widgets.HBox:
    """A row that wraps onto a second line instead of squeezing its widgets on a narrow window."""
    return widgets.HBox(children, layout=widgets.Layout(flex_flow="row wrap", width="auto", align_items="center"))


def _bubble(role: str, body: str, colour: str) -> str:
    return (
        f"<div style='background:{colour};border-radius:6px;padding:6px 8px;margin:4px 0;white-space:pre-wrap'>"
        f"<b>{role.capitalize()}:</b> {body}</div>"
    )


def _thumbnail(image: Image.Image, number: int) -> str:
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, format="JPEG", quality=85)
    url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img src='{url}' alt='image {number}' title='image {number}' style='margin:2px;border-radius:4px'>"


def _ipywidgets_major() -> int:
    return int(str(widgets.__version__).split(".")[0])


def _tooltip(widget: widgets.Widget, text: str) -> None:
    """``tooltip`` (buttons, and every widget in ipywidgets 8) or ``description_tooltip`` (ipywidgets 7)."""
    if widget.has_trait("tooltip"):
        widget.tooltip = text
    elif widget.has_trait("description_tooltip"):
        widget.description_tooltip = text


def _clear_upload(upload: widgets.FileUpload) -> None:
    """Empty a ``FileUpload`` so the same file can be picked again: a tuple in 8.x, a read-only dict in 7.x."""
    if _ipywidgets_major() >= 8:
        upload.value = ()
        return
    upload.set_trait("value", {})
    upload.metadata = []
    upload.data = []
    upload._counter = 0
