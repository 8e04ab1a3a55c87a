"""Where the answers come from: a model in this kernel, or any OpenAI-compatible server.

A backend (the :class:`Backend` protocol) has one job: ``stream(chat, images=None, *,
max_new_tokens, temperature, top_p, do_sample, stop_event)`` yields the reply to a conversation
piece by piece, and stops within one token once ``stop_event`` is set. ``chat`` is a
:class:`~mllm_nb.chat.Conversation`, a question string (with ``images``), or chat-template messages
whose ``{"type": "image"}`` items take ``images`` in order. ``ask`` joins the pieces; ``name`` and
``describe()`` say what it is; ``tokens_generated`` counts the tokens of the current reply.

- :class:`LocalBackend` wraps a :class:`~mllm_nb.vlm.VLM` (or a model and its processor); the whole
  conversation goes through ``processor.apply_chat_template``; generation runs in a worker thread and
  each token's text is handed over as soon as it decodes (:mod:`mllm_nb.streaming`).
- :class:`OpenAIBackend` talks to ``transformers serve``, vLLM, SGLang, Ollama or LM Studio with the
  official ``openai`` client (``pip install openai``); images travel as base64 PNG data URLs.
- :class:`ChatSession` is a backend plus a conversation with the one send lifecycle: add the
  question, stream the answer, record it (marked stopped when cut short), or roll back on error.

Example, one shared server for a classroom::

    >>> server = OpenAIBackend("http://127.0.0.1:8000/v1", model="llava-hf/llava-1.5-7b-hf")
    >>> server
    OpenAIBackend('http://127.0.0.1:8000/v1', model='llava-hf/llava-1.5-7b-hf', api_key=None)
    >>> server.ask("What is in the picture?", images="cat.jpg")  # doctest: +SKIP
    'A cat sleeping on a sofa.'
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mllm_nb.chat import (
    Conversation,
    ConversationError,
    as_conversation,
    image_to_data_url,
)
from mllm_nb.errors import MllmNbError
from mllm_nb.server_io import (
    Feed,
    NotAnEventStream,
    chunk_sentence,
    event_data,
    failure_sentence,
    parse_chunk,
    retry_delay,
)
from mllm_nb.settings import GenerationSettings
from mllm_nb.streaming import TokenCounter

if TYPE_CHECKING:
    from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

    from mllm_nb.vlm import VLM

#: What a backend is asked: a conversation, a question string, or chat-template messages.
Chat = Conversation | str | list[dict[str, Any]]

#: Environment variable (and Colab secret) an ``OpenAIBackend`` reads its API key from.
API_KEY_ENV = "OPENAI_API_KEY"
#: What servers that need no key (transformers serve, vLLM, Ollama, LM Studio) are sent instead.
_NO_KEY = "EMPTY"


class BackendError(MllmNbError):
    """A backend could not produce a reply (server unreachable, timeout, refused request, bad settings)."""


@runtime_checkable
class Backend(Protocol):
    """What answers questions: ``stream`` plus ``ask``, ``name``, ``describe()`` and a live ``tokens_generated``.

    Any object with these members is a backend (``isinstance(obj, Backend)``); subclassing gives
    ``ask``, ``describe`` and the two attributes, so only ``stream`` needs writing.

    >>> class Echo(Backend):
    ...     name = "echo"
    ...     def stream(self, chat, images=None, *, stop_event=None, **settings):
    ...         yield as_conversation(chat, images)[-1].text
    >>> Echo().ask("hello")
    'hello'
    """

    name: str = "backend"
    #: Tokens generated so far by the current (or last) ``stream``; updated while it runs.
    tokens_generated: int = 0

    @abc.abstractmethod
    def stream(
        self,
        chat: Chat,
        images: Any = None,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        do_sample: bool = False,
        stop_event: threading.Event | None = None,
        **extra: Any,
    ) -> Iterator[str]:
        """Yield the reply piece by piece; stop within one token once ``stop_event`` is set."""

    def ask(self, chat: Chat, images: Any = None, **settings: Any) -> str:
        """The whole reply as one string (the joined ``stream``), without surrounding whitespace.

        >>> backend.ask("What colour is the circle?", images="scene.png")  # doctest: +SKIP
        'red'
        """
        return "".join(self.stream(chat, images, **settings)).strip()

    def describe(self) -> str:
        """One line for a status bar: what answers and where.

        >>> backend.describe()  # doctest: +SKIP
        'local model llava-hf/llava-1.5-7b-hf (LlavaForConditionalGeneration, float16, cuda:0)'
        """
        return self.name


def as_backend(model: Backend | VLM | tuple[PreTrainedModel, ProcessorMixin]) -> Backend:
    """A backend for ``model``: a backend as it is, a ``VLM`` or ``(model, processor)`` as a ``LocalBackend``.

    >>> as_backend(OpenAIBackend("http://127.0.0.1:8000/v1", model="m")).name
    'm @ http://127.0.0.1:8000/v1'
    """
    if isinstance(model, Backend):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        return LocalBackend(*model)
    if hasattr(model, "model") and hasattr(model, "processor"):
        return LocalBackend(model)
    hint = " (subclass mllm_nb.Backend: only stream is needed)" if callable(getattr(model, "stream", None)) else ""
    raise BackendError(
        f"A {type(model).__name__} cannot answer questions{hint}; pass a VLM (mllm_nb.load_vlm), "
        "a (model, processor) pair, or an OpenAIBackend."
    )


# ----------------------------------------------------------------------------------- session


class ChatSession:
    """A backend and a conversation, with the one send lifecycle that ``ChatPanel`` uses too.

    ``stream`` adds the question at once, then yields the answer; when the answer is complete it is
    recorded. Stopping (``stop_event``, or leaving the loop early) records the partial answer marked
    stopped; an error puts the conversation back as it was and is raised. ``stream_again`` answers
    the last question again (the old answer is dropped, and restored on error).

    >>> class Parrot(Backend):
    ...     def stream(self, chat, images=None, *, stop_event=None, **settings):
    ...         yield "you said " + chat[-1].text
    >>> session = ChatSession(Parrot())
    >>> session.ask("hi")
    'you said hi'
    >>> print(session.conversation.transcript())
    USER: hi
    ASSISTANT: you said hi
    """

    def __init__(self, model: Any, conversation: Conversation | None = None) -> None:
        if conversation is not None and not isinstance(conversation, Conversation):
            raise ConversationError(f"conversation must be a mllm_nb.Conversation; got a {type(conversation).__name__}.")
        self.backend = as_backend(model)
        self.conversation = conversation if conversation is not None else Conversation()

    def __repr__(self) -> str:
        return f"ChatSession({self.backend.name!r}, {self.conversation!r})"

    def stream(
        self, text: str, images: Any = None, *, stop_event: threading.Event | None = None, **settings: Any
    ) -> Iterator[str]:
        """Add the question now; iterate the result for the answer, which is recorded when it ends.

        ``settings`` are ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p`` (and a backend's extras).

        >>> for piece in session.stream("What colour is it?", images="scene.png"):  # doctest: +SKIP
        ...     print(piece, end="")
        """
        snapshot = list(self.conversation.turns)
        self.conversation.add_user(text, images)
        return self._answer(snapshot, stop_event or threading.Event(), settings)

    def stream_again(self, *, stop_event: threading.Event | None = None, **settings: Any) -> Iterator[str]:
        """Drop the last answer now and stream a new one to the same question (recorded like ``stream``).

        >>> "".join(session.stream_again(do_sample=True, temperature=0.9))  # doctest: +SKIP
        """
        turns = self.conversation.turns
        if not any(turn.role == "user" for turn in turns):
            raise ConversationError("Nothing to regenerate yet; send a question first.")
        snapshot = list(turns)
        while turns[-1].role == "assistant":
            turns.pop()
        return self._answer(snapshot, stop_event or threading.Event(), settings)

    def ask(self, text: str, images: Any = None, **settings: Any) -> str:
        """Add the question and the whole answer; returns the answer.

        >>> ChatSession(vlm).ask("What colour is the circle?", images="scene.png")  # doctest: +SKIP
        'red'
        """
        for _ in self.stream(text, images, **settings):
            pass
        return self.conversation.turns[-1].text

    def _answer(self, snapshot: list[Any], stop: threading.Event, settings: dict[str, Any]) -> Iterator[str]:
        pieces: list[str] = []
        try:
            with contextlib.closing(self.backend.stream(self.conversation, stop_event=stop, **settings)) as stream:
                for piece in stream:
                    pieces.append(piece)
                    yield piece
                    if stop.is_set():
                        break
        except GeneratorExit:  # the caller left the loop early: keep the partial answer, marked stopped
            self.conversation.add_assistant("".join(pieces).strip(), stopped=True)
            raise
        except BaseException:
            self.conversation.turns[:] = snapshot
            raise
        self.conversation.add_assistant("".join(pieces).strip(), stopped=stop.is_set())


# ------------------------------------------------------------------------------------ local


class LocalBackend(Backend):
    """A model in this kernel: a :class:`~mllm_nb.vlm.VLM`, or a model and its processor.

    ``generate`` runs in a worker thread and each token's text is handed over as soon as it decodes
    (whole characters only, see :mod:`mllm_nb.streaming`); setting ``stop_event`` ends generation
    after at most one more token (a ``StoppingCriteria`` checks it after every token).

    >>> backend = LocalBackend(load_vlm("llava-hf/llava-1.5-7b-hf", demo=True))  # doctest: +SKIP
    >>> "".join(backend.stream("What colour is the circle?", images="scene.png"))  # doctest: +SKIP
    'red'
    """

    def __init__(self, vlm: VLM | PreTrainedModel, processor: ProcessorMixin | None = None,
                 name: str | None = None) -> None:
        from mllm_nb.vlm import VLM

        if processor is not None:
            vlm = VLM(model=vlm, processor=processor, name=name or _model_name(vlm))
        if not isinstance(vlm, VLM):
            raise BackendError(
                f"LocalBackend needs a VLM (mllm_nb.load_vlm) or a model and its processor; got a {type(vlm).__name__}."
            )
        self.vlm = vlm
        self.name = name or vlm.name or _model_name(vlm.model)
        self._counter = TokenCounter()

    @property
    def tokens_generated(self) -> int:  # type: ignore[override]
        """Tokens generated so far by the current (or last) ``stream``."""
        return self._counter.count

    @property
    def demo(self) -> bool:
        """Whether the model is one of mllm_nb's tiny offline demo fixtures (answers are not real)."""
        from mllm_nb.demo.mode import FIXTURES_DIR

        path = str(getattr(self.vlm.model, "name_or_path", "") or "")
        return bool(path) and os.path.abspath(path).startswith(str(FIXTURES_DIR))

    def describe(self) -> str:
        """``local model NAME (class, dtype or quantization, device)``, with a DEMO MODE prefix for fixtures."""
        vlm = self.vlm
        how = vlm.quantization or str(vlm.dtype).removeprefix("torch.")
        text = f"local model {self.name} ({type(vlm.model).__name__}, {how}, {vlm.device})"
        return ("DEMO MODE (tiny model trained on synthetic data): " + text) if self.demo else text

    def __repr__(self) -> str:
        return f"LocalBackend({self.vlm!r})"

    def prepare(self, chat: Chat, images: Any = None) -> BatchFeature:
        """The model inputs for the whole conversation: its chat template, then the processor.

        >>> inputs = backend.prepare(conversation)  # doctest: +SKIP
        """
        conversation = as_conversation(chat, images)
        if not conversation.turns or conversation.turns[-1].role != "user":
            raise BackendError("The conversation must end with a user turn to be answered; add_user(...) first.")
        return self.vlm.encode([conversation.images], [self.vlm.chat_prompt(conversation.to_messages())])

    def stream(
        self,
        chat: Chat,
        images: Any = None,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        do_sample: bool = False,
        stop_event: threading.Event | None = None,
        **extra: Any,
    ) -> Iterator[str]:
        """Yield the reply piece by piece (extra keywords go to ``generate``, e.g. ``min_new_tokens``).

        Like ``VLM.stream`` it checks the token budget first (``mllm_nb.context_budget``) and warns once when
        several images go to a model not trained on them. A chat keeps working as it grows: ``max_new_tokens``
        (None: the model's default) is an upper bound, lowered to what the context leaves, and when earlier
        turns' images no longer fit the context the oldest are left out of the prompt (the turn says so); both
        come with a ``ContextWarning`` (a ChatPanel shows it in its status line).

        >>> for piece in backend.stream(conversation, stop_event=stop):  # doctest: +SKIP
        ...     print(piece, end="")
        """
        settings = GenerationSettings(max_new_tokens, do_sample, temperature, top_p)
        conversation = as_conversation(chat, images)
        if not conversation.turns or conversation.turns[-1].role != "user":
            raise BackendError("The conversation must end with a user turn to be answered; add_user(...) first.")
        conversation, inputs = self.vlm.encode_conversation(conversation)
        self.vlm.warn_multi_image(len(conversation.images))
        bare = [self.vlm.chat_prompt(conversation.to_messages(), images=False)]
        generation = self.vlm.check_budget(
            inputs, {**settings.to_kwargs(), **extra}, [conversation.images], bare, cap=True
        )
        self._counter = TokenCounter()
        stops = [*(generation.pop("stopping_criteria", None) or []), self._counter]
        yield from self.vlm.stream_inputs(inputs, stop_event=stop_event, stopping_criteria=stops, **generation)


def _model_name(model: Any) -> str:
    return str(getattr(model, "name_or_path", "") or type(model).__name__)


# ----------------------------------------------------------------------------------- server


class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat server: ``transformers serve``, vLLM, SGLang, Ollama, LM Studio.

    ``base_url`` is the server's API root (``/v1`` is added when the URL has no path). The API key
    is ``api_key``, else ``$OPENAI_API_KEY``, else the Colab secret ``OPENAI_API_KEY``, else none
    (local servers need none). It is never shown: ``repr`` masks it, and errors scrub it and carry
    no exception that holds it. Greedy decoding is sent as ``temperature=0``.

    Every request ends, whatever the server does. ``timeout`` (seconds) bounds the wait for each piece
    of the answer, the first one included (connecting, the server reading the images); keep-alive
    comments are no piece, reasoning text is. ``deadline`` (seconds, 10 minutes by default; None: no limit)
    bounds the whole request, from connecting to the last piece. ``max_new_tokens`` is enforced here too (one streamed
    piece counts as one token) for servers that ignore ``max_tokens``. ``max_retries`` retries a refused
    connection or a busy or failing server (HTTP 408, 409, 429, 5xx), only while the wait (the server's
    ``Retry-After``) fits in ``timeout`` and ``deadline``. An answer is complete only when the server
    says so (a ``finish_reason``, or ``data: [DONE]`` after some text); a stream that ends otherwise
    raises a :class:`BackendError` whose ``partial`` attribute holds the text received.
    ``finish_reason`` is the last answer's ('stop', 'length', ...).

    >>> OpenAIBackend("http://localhost:11434", model="llava", api_key="sk-secret")
    OpenAIBackend('http://localhost:11434/v1', model='llava', api_key='***')
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        deadline: float | None = 600.0,
        max_retries: int = 1,
    ) -> None:
        self.base_url = _check_url(base_url)
        if not isinstance(model, str) or not model.strip():
            raise BackendError(f"model must be the model name the server knows (a non-empty string); got {model!r}.")
        for name, value in (("timeout", timeout), ("deadline", deadline)):
            if (value is not None or name == "timeout") and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
            ):
                raise BackendError(f"{name} must be a positive number of seconds; got {value!r}.")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise BackendError(f"max_retries must be a whole number >= 0; got {max_retries!r}.")
        self.model = model
        self.timeout = float(timeout)
        self.deadline = None if deadline is None else float(deadline)
        self.max_retries = max_retries
        self.name = f"{model} @ {self.base_url}"
        self.tokens_generated = 0
        self.finish_reason: str | None = None
        self.__key, self._key_source = _find_api_key(api_key)
        self._client: Any = None
        self._bare: Any = None

    def __repr__(self) -> str:
        key = "'***'" if self.__key else "None"
        return f"OpenAIBackend({self.base_url!r}, model={self.model!r}, api_key={key})"

    __str__ = __repr__

    def describe(self) -> str:
        """``model M on server URL (API key from ...)``; never the key itself."""
        return f"model {self.model} on server {self.base_url} (API key: {self._key_source})"

    def client(self) -> Any:
        """The ``openai.OpenAI`` client (created once); for anything this class does not wrap.

        >>> server.client().models.list()  # doctest: +SKIP
        """
        if self._client is None:
            openai = _import_openai()
            timeout = openai.Timeout(self.timeout, connect=min(self.timeout, 10.0))
            self._client = openai.OpenAI(
                base_url=self.base_url, api_key=self.__key or _NO_KEY, timeout=timeout, max_retries=self.max_retries
            )
        return self._client

    def _bare_client(self) -> Any:
        """The client without retries of its own (``_open`` retries within the time left); reads outlast ``timeout``."""
        if self._bare is None:
            openai = _import_openai()
            timeout = openai.Timeout(self.timeout + 1.0, connect=min(self.timeout, 10.0))
            self._bare = self.client().with_options(max_retries=0, timeout=timeout)
        return self._bare

    def messages(self, chat: Chat, images: Any = None) -> list[dict[str, Any]]:
        """The request's ``messages``: user images first as ``image_url`` data URLs, then the text.

        >>> OpenAIBackend("http://127.0.0.1:8000/v1", model="m").messages("Hi")
        [{'role': 'user', 'content': 'Hi'}]
        """
        conversation = as_conversation(chat, images)
        messages: list[dict[str, Any]] = []
        if conversation.system:
            messages.append({"role": "system", "content": conversation.system})
        for turn in conversation.turns:
            if not turn.images:
                messages.append({"role": turn.role, "content": turn.text})
                continue
            content: list[dict[str, Any]] = [
                {"type": "image_url", "image_url": {"url": image_to_data_url(image)}} for image in turn.images
            ]
            if turn.text:
                content.append({"type": "text", "text": turn.text})
            messages.append({"role": turn.role, "content": content})
        return messages

    def models(self) -> list[str]:
        """The model names the server offers (a quick way to check ``base_url`` and ``model``).

        >>> server.models()  # doctest: +SKIP
        ['llava-hf/llava-1.5-7b-hf']
        """
        try:
            return [m.id for m in self._bare_client().models.list()]
        except MllmNbError:
            raise
        except Exception as err:  # noqa: BLE001 - turned into one sentence
            failure = self._error(err)
        raise failure from None  # outside the handler: no chain back to the client's error, which holds the key

    def stream(
        self,
        chat: Chat,
        images: Any = None,
        *,
        max_new_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        do_sample: bool = False,
        stop_event: threading.Event | None = None,
        **extra: Any,
    ) -> Iterator[str]:
        """Yield the reply as the server streams it; extra keywords go in the request body as they are.

        Servers differ in the extra fields they take: vLLM and SGLang accept e.g. ``top_k=20``, while
        ``transformers serve`` refuses unknown fields such as ``top_k`` (HTTP 422) and takes its own, such
        as ``generation_config`` (a JSON string of ``GenerationConfig`` fields, used instead of the model's).
        The request runs in a reader thread, so ``stop_event`` and the clocks end it at once (see the class).

        >>> for piece in server.stream("Describe the image.", images="cat.jpg"):  # doctest: +SKIP
        ...     print(piece, end="")
        >>> vllm.ask("Describe the image.", images="cat.jpg", do_sample=True, top_k=20)  # doctest: +SKIP
        >>> serve.ask("Describe it.", images="cat.jpg", generation_config='{"min_new_tokens": 20}')  # doctest: +SKIP
        """
        settings = GenerationSettings(max_new_tokens, do_sample, temperature, top_p)
        request: dict[str, Any] = {"model": self.model, "messages": self.messages(chat, images), "stream": True}
        if settings.max_new_tokens is not None:  # None: the server's default
            request["max_tokens"] = settings.max_new_tokens
        if do_sample:
            request.update({k: v for k, v in (("temperature", temperature), ("top_p", top_p)) if v is not None})
        else:
            request["temperature"] = 0.0
        if extra:
            request["extra_body"] = extra
        self.tokens_generated, self.finish_reason = 0, None
        feed = Feed()
        threading.Thread(target=self._fetch, args=(request, feed, time.monotonic()), daemon=True,
                         name="mllm_nb-openai-reader").start()
        pieces: list[str] = []
        try:
            for piece in self._pieces(feed, stop_event or threading.Event(), settings.max_new_tokens):
                pieces.append(piece)
                self.tokens_generated += 1
                yield piece
        except BackendError as err:
            err.partial = self._scrub("".join(pieces))  # type: ignore[attr-defined]
            raise
        finally:
            feed.cancel()

    def _fetch(self, request: dict[str, Any], feed: Feed, started: float) -> None:
        """In the reader thread: send the request (retrying while time allows), then hand over each event's data."""
        try:
            stream = self._open(request, feed, started)
            if stream is not None and feed.attach(stream.response):
                if "text/html" in stream.response.headers.get("content-type", ""):
                    raise NotAnEventStream("html", "")
                for data in event_data(feed.chunks()):
                    feed.put("data", data)
                feed.put("end")
        except Exception as err:  # noqa: BLE001 - handed over; the caller turns it into one sentence
            feed.put("error", err)
        finally:
            feed.close()

    def _open(self, request: dict[str, Any], feed: Feed, started: float) -> Any:
        """The streamed response, after retries whose waits end before the first piece is due; None once cancelled."""
        give_up = started + min(self.timeout, self.deadline or self.timeout)
        attempt = 0
        while True:
            try:
                return self._bare_client().chat.completions.create(**request)
            except Exception as err:  # retried, or raised to _fetch
                delay = retry_delay(err, attempt) if attempt < self.max_retries else None
                if delay is None or time.monotonic() + delay >= give_up:
                    raise
            if feed.cancelled.wait(delay):
                return None
            attempt += 1

    def _pieces(self, feed: Feed, stop: threading.Event, limit: int | None) -> Iterator[str]:
        """The answer's pieces as the reader thread hands them over, until the server says it is done.

        Ends quietly at a ``finish_reason``, ``[DONE]`` after some text, ``stop``, or ``limit`` pieces of text
        (answer or reasoning; the server ignored ``max_tokens``). Raises one sentence when a clock runs out
        (``timeout`` without new text, ``deadline`` in all), on an error, or when the stream just ends.
        """
        started = last = time.monotonic()
        count = 0
        while not stop.is_set():
            due = last + self.timeout if self.deadline is None else min(last + self.timeout, started + self.deadline)
            item = feed.get(min(_POLL_S, due - time.monotonic()))
            if item is None:
                if time.monotonic() >= due:
                    raise self._late(time.monotonic() - started, count) from None
                continue
            kind, value = item
            if kind != "data":  # the raw error holds the key in its request headers: keep no reference to it
                failure = self._error(value, feed.opened) if kind == "error" else self._cut(count, "the stream ended")
                del item, value
                raise failure from None
            if value.startswith("[DONE]"):
                if count:
                    return
                raise self._cut(count, "[DONE] came") from None
            chunk = parse_chunk(value)
            if chunk.error or chunk.malformed:
                raise BackendError(self._scrub(chunk_sentence(f"The server at {self.base_url}", chunk, value))) from None
            if chunk.text or chunk.thinking:
                count, last = count + 1, time.monotonic()
            if chunk.text:
                yield chunk.text
            if chunk.finish or (limit is not None and count >= limit):
                self.finish_reason = chunk.finish or "length"
                return

    def _error(self, err: BaseException, mid_answer: bool = False) -> BackendError:
        """One sentence for what went wrong talking to the server (``mid_answer``: it had started answering)."""
        where = f"the server at {self.base_url}"
        text = failure_sentence(err, where, self.timeout, self.model, API_KEY_ENV, mid_answer)
        return BackendError(self._scrub(text[:1].upper() + text[1:]))

    def _late(self, elapsed: float, count: int) -> BackendError:
        """The sentence for a clock that ran out: the whole request's ``deadline``, or ``timeout`` for a piece."""
        if self.deadline is not None and elapsed >= self.deadline:
            return BackendError(
                f"The server at {self.base_url} did not finish the answer within the {self.deadline:g} s deadline "
                f"({count} pieces so far); ask for fewer max_new_tokens or raise OpenAIBackend(deadline=...)."
            )
        if count:
            return self._cut(count, f"no new text came for {self.timeout:g} s")
        return self._error(TimeoutError())

    def _cut(self, count: int, how: str) -> BackendError:
        """The sentence for an answer the server did not finish (no ``finish_reason``, no ``[DONE]``)."""
        return BackendError(
            f"The server at {self.base_url} cut the answer short: {how} after {count} pieces without a finish_reason "
            "(the text so far is the error's .partial); check the server, then send again."
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self.__key, "***") if self.__key else text


#: How often (seconds) a waiting ``stream`` looks at its stop event and clocks.
_POLL_S = 0.05


def _import_openai() -> Any:
    try:
        import openai
    except ImportError:
        raise BackendError(
            "OpenAIBackend needs the openai package; run `pip install openai` (or `pip install mllm-nb[chat]`)."
        ) from None
    return openai


def _check_url(base_url: Any) -> str:
    if not isinstance(base_url, str):
        raise BackendError(f"base_url must be a URL string such as 'http://127.0.0.1:8000/v1'; got {base_url!r}.")
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BackendError(f"base_url {base_url!r} is not an http(s) URL; use e.g. 'http://127.0.0.1:8000/v1'.")
    path = parts.path.rstrip("/") or "/v1"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _find_api_key(api_key: str | None) -> tuple[str | None, str]:
    """(key, where it came from): the argument, the environment, a Colab secret, or none."""
    if api_key:
        return str(api_key), "given"
    if os.environ.get(API_KEY_ENV):
        return os.environ[API_KEY_ENV], f"${API_KEY_ENV}"
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        secret = userdata.get(API_KEY_ENV)
    except Exception:  # noqa: BLE001 - not on Colab, no such secret, or access not granted
        secret = None
    if secret:
        return str(secret), f"Colab secret {API_KEY_ENV}"
    return None, "none"
