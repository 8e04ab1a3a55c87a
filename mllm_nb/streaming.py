"""Streaming an answer out of ``generate``: the token streamer, cancellation, and trimming.

- :func:`streamer_for` picks the streamer for a tokenizer: :class:`TokenStreamer` (one piece per
  token, whole characters only) when the tokenizer decodes in Rust alone, else transformers'
  ``TextIteratorStreamer`` (whole words).
- :func:`stream_in_thread` runs ``generate`` in a worker thread, yields the streamer's pieces,
  re-raises the worker's error in the caller and cancels generation when the caller stops reading.
- :class:`StopWhenSet` (a stopping criterion: stop once an event is set) and :class:`TokenCounter`
  (a stopping criterion that only counts tokens).
- :func:`trimmed` strips the joined stream like ``str.strip`` without holding pieces back.

torch, transformers and tokenizers are imported only when used, so this module imports without them.

    >>> list(trimmed(["  ", " red", " and", " blue ", " "]))
    ['red', ' and', ' blue']
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def trimmed(pieces: Iterable[str]) -> Iterator[str]:
    """Drop leading and trailing whitespace of the whole stream, like ``str.strip`` on the joined text.

    >>> "".join(trimmed(["\\n", " Hi", " there", "  "]))
    'Hi there'
    """
    started, pending = False, ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        body = piece.rstrip()
        if body:
            yield pending + body
            pending = piece[len(body) :]
        else:
            pending += piece


class StopWhenSet:
    """A ``generate`` stopping criterion that ends generation once any of ``events`` is set.

    >>> event = threading.Event(); stop = StopWhenSet(event); event.set(); stop.stopped()
    True
    """

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def stopped(self) -> bool:
        """Whether one of the events is set."""
        return any(event.is_set() for event in self.events)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.stopped(), dtype=torch.bool, device=input_ids.device)


class TokenCounter:
    """A ``generate`` stopping criterion that never stops: ``count`` is the number of tokens generated so far.

    >>> TokenCounter().count
    0
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.count += 1
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)


def stream_in_thread(work: Callable[[threading.Event], None], streamer: Any) -> Iterator[str]:
    """Run ``work(cancel)`` (which calls ``generate`` with ``streamer``) in a worker thread; yield the pieces.

    ``work``'s error is raised here, in the caller's thread; leaving the loop early sets ``cancel``
    (give ``generate`` a :class:`StopWhenSet` on it) and waits for the worker to end.

    >>> def work(cancel): streamer.put("a"); streamer.end()  # doctest: +SKIP
    >>> list(stream_in_thread(work, streamer))  # doctest: +SKIP
    ['a']
    """
    cancel = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work(cancel)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread below
            errors.append(err)
            streamer.end()

    thread = threading.Thread(target=run, name="mllm_nb-stream", daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:
        cancel.set()
        thread.join()
    if errors:
        raise errors[0]


def streamer_for(tokenizer: Any) -> Any:
    """A :class:`TokenStreamer` when ``tokenizer`` decodes with the ``tokenizers`` library alone, else
    ``TextIteratorStreamer`` (whole words): slow tokenizers, and fast ones that clean up spaces after decoding.

    >>> streamer = streamer_for(vlm.processor.tokenizer)  # doctest: +SKIP
    """
    from transformers import TextIteratorStreamer

    if _decodes_in_rust(tokenizer):
        return _token_streamer_class()(tokenizer)
    return TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _decodes_in_rust(tokenizer: Any) -> bool:
    """Whether ``tokenizer.decode`` is exactly ``backend_tokenizer.decode`` (no Python clean-up afterwards)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return False
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        return False
    if not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return True
    # transformers skips the clean-up for BPE models unless forced (tokenization_utils_tokenizers._decode)
    forced = getattr(tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
    return type(backend.model).__name__ == "BPE" and not forced


def __getattr__(name: str) -> Any:
    """``TokenStreamer`` is built on first use, so that importing this module does not import transformers."""
    if name == "TokenStreamer":
        return _token_streamer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _token_streamer_class() -> type:
    from transformers.generation.streamers import BaseStreamer

    class TokenStreamer(BaseStreamer):
        """A ``generate`` streamer that yields each new token's text as soon as it decodes to whole characters.

        It skips the prompt and special tokens. After each token it decodes all new tokens and yields what
        was added to the text, holding it back while the text ends in an unfinished character (U+FFFD: a
        Korean syllable or an emoji split over byte tokens) or in a run of byte-fallback tokens (``<0xEB>``:
        such a run decodes as a whole, so it comes out with the token after it). The pieces join to ``tokenizer.decode(new_tokens, skip_special_tokens=True)`` exactly,
        also when byte tokens never complete a character (then the U+FFFD comes out as ``decode`` writes
        it, at the latest when generation ends). Iterate it in another thread than ``generate`` (batch size 1).

        >>> streamer = TokenStreamer(processor.tokenizer)  # doctest: +SKIP
        >>> threading.Thread(target=model.generate, kwargs={**inputs, "streamer": streamer}).start()  # doctest: +SKIP
        >>> for piece in streamer:  # doctest: +SKIP
        ...     print(piece, end="")
        """

        def __init__(self, tokenizer: Any) -> None:
            self.tokenizer = tokenizer
            self._backend = tokenizer.backend_tokenizer
            self._pieces: queue.SimpleQueue[str | None] = queue.SimpleQueue()
            self._tokens: list[int] = []  # the new tokens so far
            self._done = ""  # the text yielded so far
            self._prompt = True

        def put(self, value: Any) -> None:
            """Called by ``generate``: first with the prompt (skipped), then with each new token."""
            if value.dim() > 1 and value.shape[0] > 1:
                raise ValueError("TokenStreamer only supports batch size 1.")
            if self._prompt:
                self._prompt = False
                return
            self._tokens.extend(value.reshape(-1).tolist())
            if self._in_byte_run():
                return
            text = self._backend.decode(self._tokens, skip_special_tokens=True)
            if not text.endswith("\ufffd"):
                self._emit_up_to(text)

        def _in_byte_run(self) -> bool:
            """Whether the last token is a byte-fallback token (``<0xEB>``): its run decodes only once it ends,
            since one bad byte turns the whole run into U+FFFD."""
            token = self._backend.id_to_token(self._tokens[-1]) or ""
            return len(token) == 6 and token.startswith("<0x") and token.endswith(">")

        def end(self) -> None:
            """Called by ``generate`` when it is done: flush what is left, then end the iteration."""
            if self._tokens:
                self._emit_up_to(self._backend.decode(self._tokens, skip_special_tokens=True), last=True)
            self._pieces.put(None)

        def _emit_up_to(self, text: str, last: bool = False) -> None:
            """Yield what ``text`` adds to the text so far; a decoding that rewrote earlier text waits for the end."""
            if len(text) > len(self._done) and (last or text.startswith(self._done)):
                self._pieces.put(text[len(self._done) :])
                self._done = text

        def __iter__(self) -> TokenStreamer:
            return self

        def __next__(self) -> str:
            piece = self._pieces.get()
            if piece is None:
                raise StopIteration
            return piece

    TokenStreamer.__module__ = __name__
    return TokenStreamer
