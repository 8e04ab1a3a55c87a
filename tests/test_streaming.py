"""Streaming helpers (mllm_nb.streaming): trimming, the worker thread, cancellation, token counting."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading

import pytest

from mllm_nb.streaming import StopWhenSet, TokenCounter, stream_in_thread, trimmed


@pytest.mark.parametrize(
    "pieces",
    [
        ["  ", " red", " and", " blue ", " "],
        ["\n", "Hi", "  ", "there", "\n\n"],
        ["   "],
        [],
        ["a"],
        [" 안", "녕 ", " 😀"],
    ],
)
def test_trimmed_joins_to_the_stripped_text(pieces):
    out = list(trimmed(pieces))
    assert "".join(out) == "".join(pieces).strip()
    assert all(out)  # no empty pieces


def test_trimmed_does_not_hold_back_text():
    stream = trimmed(iter([" red", " and", " blue"]))
    assert next(stream) == "red" and next(stream) == " and"


class ListStreamer:
    """A minimal streamer: ``put`` a piece, ``end`` to finish; iterates in another thread."""

    def __init__(self) -> None:
        self.pieces: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, piece: str) -> None:
        self.pieces.put(piece)

    def end(self) -> None:
        self.pieces.put(None)

    def __iter__(self):
        while (piece := self.pieces.get()) is not None:
            yield piece


def threads_left() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "mllm_nb-stream"]


def test_stream_in_thread_yields_the_pieces_from_a_worker_thread():
    streamer, seen = ListStreamer(), []

    def work(cancel: threading.Event) -> None:
        seen.append(threading.current_thread().name)
        for piece in ("a", "b", "c"):
            streamer.put(piece)
        streamer.end()

    assert list(stream_in_thread(work, streamer)) == ["a", "b", "c"]
    assert seen == ["mllm_nb-stream"] and not threads_left()


def test_the_workers_error_is_raised_in_the_caller():
    streamer = ListStreamer()

    def work(cancel: threading.Event) -> None:
        streamer.put("a")
        raise RuntimeError("generate exploded")

    with pytest.raises(RuntimeError, match="generate exploded"):
        list(stream_in_thread(work, streamer))
    assert not threads_left()


def test_leaving_the_loop_early_cancels_the_worker():
    streamer, produced = ListStreamer(), []

    def work(cancel: threading.Event) -> None:
        stop = StopWhenSet(cancel)
        while not stop.stopped():
            produced.append("x")
            streamer.put("x")
            cancel.wait(0.001)
        streamer.end()

    stream = stream_in_thread(work, streamer)
    assert next(stream) == "x"
    stream.close()  # returns only once the worker has seen the cancel event and ended
    assert not threads_left() and produced


def test_stop_when_set_watches_every_event():
    first, second = threading.Event(), threading.Event()
    stop = StopWhenSet(first, second)
    assert not stop.stopped()
    second.set()
    assert stop.stopped()


def test_criteria_answer_generate_with_one_flag_per_row():
    torch = pytest.importorskip("torch")
    ids = torch.zeros((2, 5), dtype=torch.long)
    event = threading.Event()
    stop, counter = StopWhenSet(event), TokenCounter()
    assert stop(ids, None).tolist() == [False, False]
    event.set()
    assert stop(ids, None).tolist() == [True, True]
    assert counter(ids, None).tolist() == [False, False] and counter(ids, None).tolist() == [False, False]
    assert counter.count == 2


def test_the_module_imports_without_torch_or_transformers():
    code = (
        "import sys; import mllm_nb.streaming, mllm_nb.settings, mllm_nb.chat, mllm_nb.backends; "
        "bad = sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules); "
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
