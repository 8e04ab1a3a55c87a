"""Execute notebooks headless in demo mode; write executed copies + HTML and print a summary.

This is what ``make demo`` and ``mllm-nb demo`` run. The key answers in the summary are the outputs
of the cells marked ``# NBVAL_CHECK_OUTPUT`` (the same cells nbval checks in ``make test``). Every
stored output is removed before a notebook runs, so what the summary and the HTML show was produced
by this run: after a failing cell, the remaining cells show nothing.
"""

from __future__ import annotations

import os
import re
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mllm_nb.demo.mode import DEMO_ENV_VAR
from mllm_nb.errors import MllmNbError
from mllm_nb.fonts import MISSING_GLYPH_LOG_ENV, missing_glyphs, read_missing_glyph_log

CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class NotebookRun:
    """How one notebook went: cells executed, seconds, the checked answers, and any error."""

    name: str
    cells: int
    seconds: float
    answers: list[str] = field(default_factory=list)
    error: str | None = None
    html: Path | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_notebooks(folder: str | os.PathLike, out: str | os.PathLike, timeout: int = 600) -> list[NotebookRun]:
    """Run every ``*.ipynb`` in ``folder`` (sorted) in demo mode and print the summary table.

    >>> run_notebooks("notebooks", "build/demo")  # doctest: +SKIP
    """
    paths = sorted(Path(folder).glob("*.ipynb"))
    if not paths:
        raise MllmNbError(f"No notebooks found in {str(folder)!r}; run from the repository root or pass --notebooks.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with demo_environment():
        for path in paths:
            print(f"running {path.name} ...", flush=True)
            results.append(run_notebook(path, out, timeout))
    print(format_summary(results))
    print(f"executed notebooks and their HTML pages are in {out.resolve()}")
    return results


@contextmanager
def demo_environment() -> Iterator[None]:
    """Demo mode and an offline Hub for the kernels started inside; the old values come back after."""
    wanted = {DEMO_ENV_VAR: "1", "HF_HUB_OFFLINE": "1"}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute_notebook(path: Path, timeout: int = 600):
    """Execute a notebook in its own folder, from empty outputs; return ``(notebook, seconds, error or None)``.

    The error names the failing cell (its number among the code cells and first line) and the exception,
    or the first cell that drew text with missing glyphs (empty boxes, "tofu"). Consecutive stream outputs
    of a cell are merged, so text printed in pieces reads as one block in the notebook and its HTML.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code_cells:  # stored outputs would otherwise pass for this run's answers
        cell.outputs = []
        cell.execution_count = None
    started = time.perf_counter()
    error = None
    with tempfile.TemporaryDirectory(prefix="mllm-nb-run-") as scratch:
        glyph_log = Path(scratch) / "missing-glyphs.log"
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
            config=_kernel_config(Path(scratch)),
        )
        try:
            client.execute(env={**os.environ, MISSING_GLYPH_LOG_ENV: str(glyph_log)})
        except CellExecutionError as err:
            error = _describe_failure(err, code_cells)
        silenced = read_missing_glyph_log(glyph_log)
    seconds = time.perf_counter() - started
    for cell in code_cells:
        cell.outputs = merge_streams(cell.outputs)
    return notebook, seconds, error or _describe_tofu(code_cells, silenced)


def _kernel_config(scratch: Path):
    """Kernel-manager settings: local sockets (IPC) on POSIX, which need no encryption, else CurveZMQ keys.

    ipykernel 7 warns at every start that plain TCP is unencrypted; a kernel on IPC sockets (files in
    ``scratch``, readable by this user only) or with encryption keys has nothing to warn about.
    """
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    config = Config()
    if os.name == "posix":
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(scratch / "kernel")
    elif KernelManager.class_traits().get("transport_encryption") is not None:
        import zmq

        if zmq.has("curve"):
            config.KernelManager.transport_encryption = "auto"
    return config


def merge_streams(outputs: list) -> list:
    """Join consecutive stream outputs of the same name (stdout, stderr) into one, keeping the order.

    A token streamer's ``print(piece, end="", flush=True)`` sends one message per piece; a notebook
    front end shows them as one text, and so does the HTML after this.

    >>> from nbformat.v4 import new_output
    >>> merged = merge_streams([new_output("stream", name="stdout", text=t) for t in ("a ", "cat", "\\n")])
    >>> [(o.name, o.text) for o in merged]
    [('stdout', 'a cat\\n')]
    """
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (
            output.get("output_type") == "stream"
            and previous is not None
            and previous.get("output_type") == "stream"
            and previous.get("name") == output.get("name")
        ):
            previous["text"] = _text(previous) + _text(output)
        else:
            merged.append(output)
    return merged


def _text(output) -> str:
    text = output.get("text", "")
    return "".join(text) if isinstance(text, list) else str(text)


def _describe_tofu(code_cells: list, silenced: list[tuple[int | None, str]]) -> str | None:
    """``cell N (first line): ...`` for the first cell whose figures lack glyphs, or None when none does.

    Two sources: glyphs ``mllm_nb.fonts`` silenced (logged with the IPython execution count) and
    matplotlib's own "Glyph ... missing from font" warnings in a cell's stderr.
    """
    found: dict[int, list[str]] = {}
    by_count = {cell.execution_count: number for number, cell in enumerate(code_cells, 1)}
    for count, char in silenced:
        found.setdefault(by_count.get(count, 0), []).append(char)
    for number, cell in enumerate(code_cells, 1):
        for output in cell.outputs:
            if output.get("output_type") == "stream":
                found.setdefault(number, []).extend(missing_glyphs(_text(output)))
    found = {number: chars for number, chars in found.items() if chars}
    if not found:
        return None
    number = min(found, key=lambda n: n or len(code_cells) + 1)
    chars = "".join(dict.fromkeys(found[number]))
    reason = (
        f"a figure drew {chars!r} as empty boxes (no font has these glyphs; "
        "mllm_nb draws Korean/CJK text with the NanumGothic font of koreanize-matplotlib)"
    )
    if number == 0:
        return reason
    first_line = next((line for line in code_cells[number - 1].source.splitlines() if line.strip()), "")
    return f"cell {number} ({first_line.strip()[:60]}): {reason}"


def _describe_failure(err: Exception, code_cells: list) -> str:
    """``cell N (first line): ExceptionName: message``, for the cell whose outputs hold the error."""
    failed = next(
        (i for i, cell in enumerate(code_cells, 1) if any(o.get("output_type") == "error" for o in cell.outputs)),
        None,
    )
    name, value = getattr(err, "ename", None), getattr(err, "evalue", None)
    reason = f"{name}: {value}" if name else _ANSI.sub("", str(err)).strip().splitlines()[-1]
    if failed is None:
        return _ANSI.sub("", reason)
    first_line = next((line for line in code_cells[failed - 1].source.splitlines() if line.strip()), "")
    return _ANSI.sub("", f"cell {failed} ({first_line.strip()[:60]}): {reason}")


def run_notebook(path: Path, out: Path, timeout: int) -> NotebookRun:
    """Execute one notebook and save the executed copy and its HTML rendering to ``out``."""
    import nbformat

    notebook, seconds, error = execute_notebook(path, timeout)
    nbformat.write(notebook, out / path.name)
    html = out / path.with_suffix(".html").name
    _write_html(notebook, html)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    return NotebookRun(path.name, len(code_cells), seconds, _checked_answers(code_cells), error, html)


def _write_html(notebook, target: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(notebook)
    target.write_text(body, encoding="utf-8")


_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _checked_answers(cells) -> list[str]:
    answers = []
    for cell in cells:
        if CHECK_MARKER not in cell.source:
            continue
        for output in cell.get("outputs", []):
            if output.get("name") == "stderr" or _WIDGET_MIME in output.get("data", {}):
                continue  # progress bars and warnings are not answers
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            answers.extend(line.strip() for line in text.splitlines() if line.strip())
    return answers


def format_summary(results: list[NotebookRun], width: int = 100) -> str:
    """The summary table: notebook, code cells, seconds, status, the key answers (wrapped, never cut) and the HTML.

    >>> print(format_summary([NotebookRun("01.ipynb", 3, 1.5, ["a cat"], None, Path("build/01.html"))]))
    ... # doctest: +NORMALIZE_WHITESPACE
    notebook                         cells  seconds  status
    ------------------------------------------------------------
    01.ipynb                             3      1.5  ok
        a cat
        HTML: build/01.html
    ------------------------------------------------------------
    1 notebooks, 1 ok, 1.5 s in all
    """
    lines = [f"{'notebook':32} {'cells':>5} {'seconds':>8}  status", "-" * 60]
    for run in results:
        lines.append(f"{run.name:32} {run.cells:5d} {run.seconds:8.1f}  {'ok' if run.ok else 'FAILED'}")
        if not run.ok:
            lines.extend(_wrapped(f"FAILED at {run.error}", width))
        for answer in run.answers:
            lines.extend(_wrapped(answer, width))
        if run.html is not None:
            lines.extend(_wrapped(f"HTML: {run.html}", width))
    total = sum(r.seconds for r in results)
    lines.append("-" * 60)
    lines.append(f"{len(results)} notebooks, {sum(r.ok for r in results)} ok, {total:.1f} s in all")
    return "\n".join(lines)


def _wrapped(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, initial_indent="    ", subsequent_indent="      ",
                         break_long_words=True, break_on_hyphens=False) or ["    "]
