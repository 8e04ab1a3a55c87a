"""A classroom on one shared ``transformers serve``: N students ask 3 image questions each, at once.

One ``transformers serve`` (offline, CPU) serves a LLaVA folder: the trained demo fixture
``mllm_nb/demo/fixtures/tiny-llava`` when it is built, else the tiny random LLaVA of
``tests/test_loading.save_tiny_llava`` (or ``--model DIR``). Each simulated student is a thread with
its own ``OpenAIBackend`` and ``ChatSession``: three turns, each with a new image (so the third
request carries three images), greedy, exactly ``--tokens`` new tokens per answer. First one student
alone (after one uncounted warm-up student), then ``--students`` at once (a bounded pool, one thread
per student). The server generates one answer at a time (``--continuous-batching`` only batches
text-only LLMs; LLaVA falls back to sequential generation), so concurrency shows as queueing.

Every request ends as exactly one of: answered (and the answer equals the lone student's answer to
the same turn: no cross-talk between concurrent streams), refused (a one-line ``MllmNbError``),
lost (any other exception, an empty or different answer), or hung (not finished by the deadline).
The script stops by itself within ``--deadline`` seconds (default 300: a watchdog kills the server
and exits), and the server is always killed (process group; atexit; parent-death signal).
Bar: answered_or_refused N*3/N*3, hangs 0.

Run: ``.venv/bin/python benchmarks/classroom_load.py [--students 20] [--tokens 32]``. The last line is the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # serve_util, test_loading (tiny random LLaVA)
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from PIL import Image, ImageDraw
from serve_util import ServeProcess

QUESTIONS = ("What colour is the circle?", "And this one?", "Which one is the largest?")
COLOURS = ("red", "blue", "green")
TURNS = len(QUESTIONS)


@dataclass
class Outcome:
    """One request: which student, which turn, how it ended, how long it took."""

    student: int
    turn: int
    status: str  # answered | refused | lost
    seconds: float
    detail: str = ""
    answer: str = ""
    comparable: bool = True  # every earlier turn of this student was answered (same history as the lone student)


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0
    hung: int = 0  # requests still in flight at the deadline
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            if not self.closed:  # whatever ends after the deadline was a hang, not an answer or a refusal
                self.outcomes.append(outcome)

    def close(self, in_flight: int) -> None:
        with self.lock:
            self.closed, self.hung = True, in_flight


def picture(turn: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((8 + 4 * turn, 8, 56, 56 - 4 * turn), fill=COLOURS[turn])
    return image


def model_folder(given: str | None, scratch: str) -> Path:
    """``--model``, else the trained demo fixture, else a tiny random LLaVA saved under ``scratch``."""
    if given:
        return Path(given)
    from mllm_nb.demo.mode import FIXTURES_DIR

    trained = FIXTURES_DIR / "tiny-llava"
    if (trained / "config.json").is_file():
        return trained
    from tiny_llava import save_tiny_llava

    return save_tiny_llava(Path(scratch) / "tiny-llava", seed=5)


def student(number: int, server: ServeProcess, tokens: int, timeout: float, run: Run, stop: threading.Event) -> None:
    """Three turns of one conversation; each request's outcome is recorded, whatever happens.

    A refused turn is dropped from the conversation (``ChatSession.ask`` does that) and the student asks
    the next question, as a person would.
    """
    from mllm_nb.backends import ChatSession, OpenAIBackend
    from mllm_nb.errors import MllmNbError

    backend = OpenAIBackend(server.url, model=server.model, timeout=timeout, max_retries=0)
    chat = ChatSession(backend)
    force = json.dumps({"min_new_tokens": tokens})
    comparable = True
    for turn in range(TURNS):
        if stop.is_set():
            return
        started = time.monotonic()
        try:
            answer = chat.ask(QUESTIONS[turn], images=picture(turn), max_new_tokens=tokens,
                              generation_config=force)
            status, detail = ("answered", "") if answer else ("lost", "empty answer")
        except MllmNbError as err:
            answer, text = "", str(err)
            status, detail = ("refused", text) if text and "\n" not in text else ("lost", f"unclear: {text!r}")
        except Exception as err:  # noqa: BLE001 - counted as lost: not a clear error
            answer, status, detail = "", "lost", f"{type(err).__name__}: {err}"
        run.add(Outcome(number, turn, status, time.monotonic() - started, detail, answer, comparable))
        comparable = comparable and status == "answered"  # a failed turn is not in the conversation: asks on


def classroom(students: int, server: ServeProcess, tokens: int, timeout: float, deadline: float) -> Run:
    """Run ``students`` at once until they finish or ``deadline`` (a ``time.monotonic`` value) passes."""
    run, stop = Run(), threading.Event()
    pool = ThreadPoolExecutor(max_workers=students, thread_name_prefix="student")
    started = time.monotonic()
    futures = [pool.submit(student, i, server, tokens, timeout, run, stop) for i in range(students)]
    done, pending = wait(futures, timeout=max(deadline - time.monotonic(), 1.0))
    run.close(in_flight=len(pending))  # one request in flight per unfinished student
    run.wall_s = time.monotonic() - started
    stop.set()
    pool.shutdown(wait=False, cancel_futures=True)
    for future in done:
        if future.exception() is not None:  # a bug in this script, not in the server
            print(f"student thread crashed: {future.exception()!r}")
            run.hung += 1  # its request is unaccounted for: count it against the bar
    return run


def not_asked(run: Run, students: int) -> int:
    """Turns never sent because the deadline came first."""
    return students * TURNS - len(run.outcomes) - run.hung


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def report(label: str, run: Run, tokens: int) -> float:
    answered = [o for o in run.outcomes if o.status == "answered"]
    latencies = [o.seconds for o in answered]
    rate = len(answered) / run.wall_s if run.wall_s else 0.0
    print(
        f"{label}: {len(answered)} answered in {run.wall_s:.2f} s -> {rate:.2f} answers/s "
        f"({rate * tokens:.0f} tokens/s); latency p50 {percentile(latencies, 50):.2f} s, "
        f"p95 {percentile(latencies, 95):.2f} s, max {max(latencies, default=float('nan')):.2f} s"
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per answer (forced)")
    parser.add_argument("--timeout", type=float, default=60.0, help="OpenAIBackend timeout per wait, seconds")
    parser.add_argument("--deadline", type=float, default=300.0, help="the whole script's hard limit, seconds")
    parser.add_argument("--server-threads", type=int, default=1, help="OMP threads of the server")
    parser.add_argument("--model", default=None, help="a LLaVA folder (default: the demo fixture or a tiny random one)")
    args = parser.parse_args()
    started = time.monotonic()
    hard_stop = started + args.deadline
    server: ServeProcess | None = None

    def watchdog() -> None:  # the last resort: never run past the deadline, never leave the server behind
        print(f"DEADLINE: {args.deadline:g} s passed; killing the server and exiting", flush=True)
        if server is not None:
            server.kill()
        print(f"answered_or_refused ?/{args.students * TURNS}, hangs ? (deadline hit)", flush=True)
        os._exit(2)

    timer = threading.Timer(args.deadline, watchdog)
    timer.daemon = True
    timer.start()
    scratch = tempfile.TemporaryDirectory(prefix="classroom-")
    try:
        folder = model_folder(args.model, scratch.name)
        server = ServeProcess(folder, threads=args.server_threads)
        server.start(timeout=120)
        print(f"transformers serve {folder} on {server.url}: ready in {server.startup_s:.1f} s "
              f"(server threads {args.server_threads}, {os.cpu_count()} CPUs here; log {server.log_path})")
        budget = hard_stop - min(20.0, args.deadline / 5)  # leave time to report and stop the server
        classroom(1, server, args.tokens, args.timeout, budget)  # warm-up (first-call costs), not counted
        solo = classroom(1, server, args.tokens, args.timeout, budget)
        solo_rate = report("1 student alone   ", solo, args.tokens)
        reference = {o.turn: o.answer for o in solo.outcomes if o.status == "answered"}
        room = classroom(args.students, server, args.tokens, args.timeout, budget)
        room_rate = report(f"{args.students} students at once", room, args.tokens)
    finally:
        if server is not None:
            server.stop()
        scratch.cleanup()
        # the watchdog stays armed: should a student thread still block the interpreter's exit, it ends it

    for outcome in room.outcomes:  # an answer that differs from the lone student's is not an answer
        if outcome.status == "answered" and outcome.comparable and outcome.turn in reference \
                and outcome.answer != reference[outcome.turn]:
            outcome.status, outcome.detail = "lost", f"answer differs from the lone student's: {outcome.answer!r}"
    counts = {s: sum(o.status == s for o in room.outcomes) for s in ("answered", "refused", "lost")}
    total = args.students * TURNS
    hung, unasked = room.hung, not_asked(room, args.students)
    speedup = f"x{room_rate / solo_rate:.2f}" if solo_rate else "n/a"
    print(f"throughput {room_rate:.2f} vs {solo_rate:.2f} answers/s alone ({speedup}); "
          f"answered {counts['answered']}, refused {counts['refused']}, lost {counts['lost']}, "
          f"not asked (deadline) {unasked}, hung {hung}; solo hung {solo.hung}; "
          f"server stopped: {server is not None and not server.running}; total {time.monotonic() - started:.1f} s")
    for outcome in room.outcomes:
        if outcome.status != "answered":
            print(f"  student {outcome.student} turn {outcome.turn + 1}: {outcome.status}: {outcome.detail}")
    print(f"answered_or_refused {counts['answered'] + counts['refused']}/{total}, hangs {hung}")
    return 0 if counts["answered"] + counts["refused"] == total and hung == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
