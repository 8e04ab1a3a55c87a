"""Start and stop a real ``transformers serve`` for tests and benchmarks, and always clean it up.

``transformers serve MODEL_DIR`` (transformers 5.2x, extra ``transformers[serving]``) preloads the
model before it opens the port, so the first ``GET /health`` that answers 200 means "ready". The
server runs in its own process group; :meth:`ServeProcess.stop` ends the whole group (SIGTERM, then
SIGKILL), and an ``atexit`` hook plus a Linux parent-death signal stop it even when the caller dies::

    >>> with ServeProcess("/path/to/tiny-llava") as server:  # doctest: +SKIP
    ...     OpenAIBackend(server.url, model=server.model).ask("w1", images=image)

Flags used (read from ``transformers/cli/serve.py``): the model folder is the positional
``FORCE_MODEL`` (requests must name it exactly, or omit it), ``--host``, ``--port``, ``--device cpu``,
``--dtype`` (``auto`` reads it from the weights) and ``--continuous-batching`` (LLaVA falls back to
sequential generation: the server only batches text-only LLMs).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

#: Every server started here that is still running (stopped at interpreter exit if a caller forgot).
_RUNNING: set[ServeProcess] = set()


class ServeError(RuntimeError):
    """``transformers serve`` did not start, or died; the message ends with the tail of its log."""


def serving_available() -> bool:
    """Whether ``transformers serve`` can run here (fastapi, uvicorn, pydantic and openai installed).

    >>> isinstance(serving_available(), bool)
    True
    """
    return all(importlib.util.find_spec(name) is not None for name in ("fastapi", "uvicorn", "pydantic", "openai"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """One ``transformers serve MODEL_DIR`` on 127.0.0.1, offline, on CPU, in its own process group.

    ``threads`` sets ``OMP_NUM_THREADS`` for the server; ``extra_args`` are more CLI flags.
    ``url`` is the ``/v1`` API root and ``model`` the name requests must use.

    >>> server = ServeProcess("/tmp/tiny", port=8123)
    >>> server.url, server.model
    ('http://127.0.0.1:8123/v1', '/tmp/tiny')
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        port: int | None = None,
        threads: int = 1,
        extra_args: tuple[str, ...] = (),
        log_path: str | os.PathLike | None = None,
    ) -> None:
        self.model = str(model_dir)
        self.port = port or free_port()
        self.threads = threads
        self.extra_args = tuple(extra_args)
        self.log_path = Path(log_path) if log_path else None  # a temporary file, made by start()
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        """The command line: this interpreter running the ``transformers`` CLI's ``serve``.

        >>> ServeProcess("/m", port=1).command()[3:6]
        ['serve', '/m', '--host']
        """
        return [
            sys.executable, "-m", "transformers.cli.transformers", "serve", self.model,
            "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", "--dtype", "auto",
            "--log-level", "warning", *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        """Offline, few threads, and an empty Hub cache (``/v1/models`` fails when the cache folder is missing)."""
        cache = Path(tempfile.gettempdir()) / "mllm-nb-serve-empty-hub-cache"
        cache.mkdir(exist_ok=True)
        threads = str(self.threads)
        return {
            **os.environ,
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
            "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1",
        }

    def start(self, timeout: float = 60.0) -> ServeProcess:
        """Launch the server and wait until ``/health`` answers (model loaded); raise ServeError otherwise."""
        if self.running:
            return self
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="transformers-serve-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        started = time.monotonic()
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.environment(), start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - one C call, nothing that takes a lock
            )
        finally:
            log.close()
        _RUNNING.add(self)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll ``GET /health`` until it answers 200, the process exits, or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ServeError(f"transformers serve exited with code {self.returncode} before it was ready.\n"
                                 + self.log_tail())
            with contextlib.suppress(OSError), _no_proxy_opener().open(health, timeout=1.0) as reply:
                if reply.status == 200:  # URLError and timeouts are OSErrors
                    return
            time.sleep(0.1)
        raise ServeError(f"transformers serve was not ready within {timeout:g} s.\n" + self.log_tail())

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """Crash the server at once (SIGKILL to its whole process group), like a pulled plug."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        _RUNNING.discard(self)

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # also reaps anything the server left in its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        _RUNNING.discard(self)

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)  # start_new_session: the group id is the server's pid

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the server's log (its own words when it fails)."""
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __hash__(self) -> int:
        return id(self)


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _load_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (ImportError, OSError, AttributeError):  # not Linux / glibc: the other guards still apply
        return None


_PRCTL = _load_prctl()  # looked up here, so the child runs no import between fork and exec


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the parent (thread) dies, so no server outlives a crash."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(grace=2.0)
