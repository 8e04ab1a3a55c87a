"""Where the warnings and log records of mllm_nb's worker threads go: to a chat panel, never to stdout/stderr.

A thread other than the kernel's that writes to stdout/stderr can freeze ipykernel 6.29 (its ``parent_header``
lookup spins), and the chat panel streams from worker threads (named ``mllm_nb-...``). :func:`route_worker_output`
sends what those threads warn or log to the panel's ``note`` instead; everything from other threads passes
through unchanged. torch and transformers are not imported here.

>>> WORKER_THREAD_PREFIX
'mllm_nb-'
"""

from __future__ import annotations

import logging
import threading
import warnings
import weakref
from typing import Any

#: Threads whose warnings and log records go to a panel instead of the kernel's stdout/stderr.
WORKER_THREAD_PREFIX = "mllm_nb-"

_ROUTE_LOCK = threading.Lock()
_route_target: Any = None  # weakref to the panel that launched the latest reply


def route_worker_output(panel: Any) -> None:
    """Send warnings and log records raised in mllm_nb's worker threads to ``panel.note`` from now on.

    A thread writing to stdout/stderr can freeze ipykernel 6.29 (its ``parent_header`` lookup spins), so the
    panel's threads never write there: ``warnings.showwarning`` is wrapped once, and every logging handler
    that exists when a reply starts gets a filter; both pass everything from other threads through unchanged.

    >>> route_worker_output(panel)  # doctest: +SKIP
    """
    global _route_target
    with _ROUTE_LOCK:
        _route_target = weakref.ref(panel)
        if not getattr(warnings.showwarning, "routes_mllm_nb_workers", False):  # again after a catch_warnings
            _wrap_showwarning()
        _filter_handlers()


def _in_worker() -> bool:
    return threading.current_thread().name.startswith(WORKER_THREAD_PREFIX)


def _to_panel(text: str) -> None:
    panel = _route_target() if _route_target is not None else None
    if panel is not None:
        panel.note(text)


class _WorkerLogFilter(logging.Filter):
    """Keeps log records of worker threads off the handlers (they go to the panel instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName.startswith(WORKER_THREAD_PREFIX):
            _to_panel(f"{record.levelname.lower()}: {record.getMessage()}")
            return False
        return True


_LOG_FILTER = _WorkerLogFilter()


def _wrap_showwarning() -> None:
    original = warnings.showwarning

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                    line: str | None = None) -> None:
        if _in_worker():  # the package's own warnings read as notes; others keep their category's name
            _to_panel(str(message) if category.__module__.startswith("mllm_nb") else f"{category.__name__}: {message}")
        else:
            original(message, category, filename, lineno, file, line)

    showwarning.routes_mllm_nb_workers = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


def _filter_handlers() -> None:
    """Add the worker filter to every handler of every logger (and logging's last resort) that lacks it."""
    loggers = [logging.getLogger(), *(value for value in list(logging.root.manager.loggerDict.values())
                                      if isinstance(value, logging.Logger))]
    handlers = [handler for logger in loggers for handler in logger.handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _LOG_FILTER not in handler.filters:
            handler.addFilter(_LOG_FILTER)
