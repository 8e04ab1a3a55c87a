"""The ``mllm-nb`` command line against hostile input: every error is one line on stderr, a non-zero exit, no traceback.

Each row of ``CASES`` runs ``python -m mllm_nb.cli ...`` in a fresh process (its own empty working folder;
shared broken files in ``ws``) and checks the exit code, that what stderr holds besides progress notes is one
line, and that this line holds a phrase naming what happened and one saying what to do. Network cases talk
to a local HTTP server on 127.0.0.1 (daemon threads, port 0). ``ask`` and ``caption`` also run end to end
in demo mode (``MLLM_NB_DEMO=1``, the tiny offline fixture).
"""

from __future__ import annotations

import gzip
import http.server
import importlib
import io
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mllm_nb.cli import main

C_ABS = Path(__file__).resolve().parent / "data" / "honeybee" / "c-abs" / "checkpoint" / "last"
#: stderr lines that are progress notes, not errors
NOTES = ("loading the model", "converting (", "checking this machine", "reading the model's config", "DEMO MODE",
         "Loaded ", "Loading transformers")


# ------------------------------------------------------------------------------------ inputs


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _Evil:
    """A pickle that would create ``marker`` when unpickled without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _png(path: Path, color: str) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64), color).save(path)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of broken and awkward inputs shared by the cases."""
    root = tmp_path_factory.mktemp("cli-inputs")
    (root / "afile").write_bytes(b"")
    (root / "notes.txt").write_text("hello\n")
    (root / "page.png").write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    (root / "empty").mkdir()
    (root / "imgs").mkdir()
    _png(root / "imgs" / "a.png", "red")
    (root / "nb_broken").mkdir()
    (root / "nb_broken" / "a.ipynb").write_text("{not json")
    for name, text in {"m_unknown": '{"model_type": "no-such-architecture"}', "m_badjson": "{bad"}.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(text)
    for name in ("rel_badjson", "rel_notmllm", "rel_noweights", "rel_badbin", "rel_evil", "rel_list"):
        (root / name).mkdir()
    (root / "rel_badjson" / "config.json").write_text('{"model_type": "mllm",')
    (root / "rel_notmllm" / "config.json").write_text('{"model_type": "llama"}')
    (root / "rel_list" / "config.json").write_text("[1, 2, 3]")
    for name in ("rel_noweights", "rel_badbin", "rel_evil"):
        shutil.copy(C_ABS / "config.json", root / name / "config.json")
    (root / "rel_badbin" / "pytorch_model.bin").write_bytes(b"PK\x03\x04 truncated zip")
    (root / "rel_evil" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Evil(root / "pwned")}, protocol=2))
    (root / "binary.jsonl").write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    (root / "outdir").mkdir()
    (root / "has_model").mkdir()
    (root / "has_model" / "config.json").write_text("{}")
    return root


# ------------------------------------------------------------------------------------ a misbehaving server


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/octet-stream", length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        name = self.path.strip("/").split("/")[0]
        if name == "hang":
            time.sleep(60)
        elif name == "404":
            self._send(404, b"not here", "text/plain")
        elif name == "500":
            self._send(500, b"oops", "text/plain")
        elif name == "page":
            self._send(200, b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html")
        elif name == "garbage":
            self._send(200, b"\x1f\x8b garbage, not an archive")
        elif name == "truncated":
            self._send(200, b"\x1f\x8b only ten", length=100_000)
        elif name == "escape":
            self._send(200, _tar_gz({"../escaped.txt": b"x", "7B-C-Abs-M144/last/config.json": b"{}"}))
        elif name == "noconfig":
            self._send(200, _tar_gz({"7B-C-Abs-M144/readme.txt": b"hello"}))
        else:
            self._send(404, b"unknown", "text/plain")


@pytest.fixture(scope="module")
def server() -> str:
    """Base URL of the misbehaving server; it stops with the test process (daemon thread)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------ running the CLI


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, limit: float = 90
) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m mllm_nb.cli ARGS`` offline, without demo mode unless ``env`` says so; (result, seconds)."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLLM_NB_DEMO"}
    full_env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}, **(env or {}))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mllm_nb.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=limit)
    return done, time.monotonic() - started


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not progress notes (tqdm bars, loading notices)."""
    lines = [line.strip() for chunk in stderr.split("\n") for line in chunk.split("\r") if line.strip()]
    return [line for line in lines if not line.startswith(NOTES) and "%|" not in line and "B/s]" not in line]


@dataclass
class Case:
    id: str
    args: list[str]
    rc: int
    phrases: tuple[str, ...]  # what happened, what to do: all in the one error line (case-insensitive)
    env: dict[str, str] = field(default_factory=dict)
    limit: float = 90
    slow: bool = False


DEMO = {"MLLM_NB_DEMO": "1"}
NAME = "7B-C-Abs-M144"

CASES = [
    # argument mistakes (argparse): one line, "see --help"
    Case("no-command", [], 2, ("arguments are required", "--help")),
    Case("unknown-command", ["chat"], 2, ("invalid choice", "--help")),
    Case("fit-no-model", ["fit"], 2, ("required: model", "--help")),
    Case("fit-empty-model", ["fit", "  "], 2, ("model id is empty", "--help")),
    Case("fit-bad-quantization", ["fit", "x", "--quantization", "3bit"], 2, ("invalid choice", "--help")),
    Case("fit-negative-images", ["fit", "x", "--images", "-1"], 2, ("too small", "--help")),
    Case("fit-text-tokens", ["fit", "x", "--max-new-tokens", "many"], 2, ("not a whole number", "--help")),
    Case("fit-unknown-flag", ["fit", "x", "--gpu", "t4"], 2, ("unrecognized arguments", "--help")),
    Case("demo-zero-timeout", ["demo", "--timeout", "0"], 2, ("too small", "--help")),
    Case("ask-empty-question", ["ask", "{ws}/imgs/a.png", ""], 2, ("question is empty", "--help")),
    Case("ask-missing-question", ["ask", "{ws}/imgs/a.png"], 2, ("required: question", "--help")),
    Case("ask-zero-tokens", ["ask", "{ws}/imgs/a.png", "hi", "--max-new-tokens", "0"], 2, ("too small", "--help")),
    Case("ask-empty-model", ["ask", "{ws}/imgs/a.png", "hi", "--model", ""], 2, ("model id is empty", "--help")),
    # doctor
    Case("doctor-missing-disk-path", ["doctor", "--disk-path", "/nonexistent/folder"], 2,
         ("does not exist", "check the path")),
    Case("doctor-disk-path-is-file", ["doctor", "--disk-path", "{ws}/afile"], 2, ("is a file", "pass a folder")),
    # fit
    Case("fit-missing-folder", ["fit", "./no-such-checkpoint"], 2, ("does not exist", "check the path")),
    Case("fit-folder-without-config", ["fit", "{ws}/empty"], 2, ("config.json", "save_pretrained")),
    Case("fit-unknown-model-type", ["fit", "{ws}/m_unknown"], 2, ("no-such-architecture", "config.json")),
    Case("fit-broken-config", ["fit", "{ws}/m_badjson"], 2, ("config.json", "check")),
    Case("fit-hub-id-offline", ["fit", "someone/not-in-the-catalog"], 2, ("offline", "someone/not-in-the-catalog")),
    # demo
    Case("demo-missing-notebooks", ["demo", "--notebooks", "nowhere"], 2, ("no notebooks found", "--notebooks")),
    Case("demo-notebooks-is-file", ["demo", "--notebooks", "{ws}/afile"], 2, ("no notebooks found", "--notebooks")),
    Case("demo-broken-notebook", ["demo", "--notebooks", "{ws}/nb_broken"], 2, ("a.ipynb", "fix or remove it")),
    Case("demo-out-is-file", ["demo", "--notebooks", "{ws}/nb_broken", "--out", "{ws}/afile"], 2,
         ("is a file", "pass a folder")),
    Case("demo-out-under-file", ["demo", "--out", "{ws}/afile/demo"], 2, ("is a file", "pass another path")),
    # convert-honeybee
    Case("convert-missing-src", ["convert-honeybee", "nowhere", "out"], 2, ("does not exist", "check the path")),
    Case("convert-src-is-file", ["convert-honeybee", "{ws}/afile", "out"], 2, ("is a file", "pass a folder")),
    Case("convert-no-release", ["convert-honeybee", "{ws}/empty", "out", "--tokenizer", "none"], 2,
         ("config.json", "extract")),
    Case("convert-dst-is-file", ["convert-honeybee", str(C_ABS), "{ws}/afile"], 2, ("is a file", "pass a folder")),
    Case("convert-dst-under-file", ["convert-honeybee", str(C_ABS), "{ws}/afile/out"], 2,
         ("is a file", "pass another path")),
    Case("convert-broken-config-json", ["convert-honeybee", "{ws}/rel_badjson", "out", "--tokenizer", "none"], 2,
         ("config.json", "re-extract")),
    Case("convert-config-is-a-list", ["convert-honeybee", "{ws}/rel_list", "out", "--tokenizer", "none"], 2,
         ("config.json", "release")),
    Case("convert-not-a-honeybee-config", ["convert-honeybee", "{ws}/rel_notmllm", "out", "--tokenizer", "none"], 2,
         ("not an official honeybee release", "pass the")),
    Case("convert-no-weights", ["convert-honeybee", "{ws}/rel_noweights", "out", "--tokenizer", "none"], 2,
         ("pytorch_model", "re-extract")),
    Case("convert-broken-weights", ["convert-honeybee", "{ws}/rel_badbin", "out", "--tokenizer", "none"], 2,
         ("pytorch_model.bin", "re-extract")),
    Case("convert-pickle-with-code", ["convert-honeybee", "{ws}/rel_evil", "out", "--tokenizer", "none"], 2,
         ("pytorch_model.bin",)),
    Case("convert-tokenizer-offline", ["convert-honeybee", str(C_ABS), "out", "--tokenizer", "nobody/no-tokenizer"], 2,
         ("tokenizer", "nobody/no-tokenizer")),
    Case("convert-dst-holds-a-model", ["convert-honeybee", str(C_ABS), "{ws}/has_model", "--tokenizer", "none"], 2,
         ("already holds a model", "overwrite")),
    Case("convert-dst-is-src", ["convert-honeybee", "{ws}/rel_noweights", "{ws}/rel_noweights"], 2,
         ("release folder itself", "new folder")),
    # download-honeybee (network cases against the local server)
    Case("download-unknown-name", ["download-honeybee", "13B-Z-Abs"], 2, ("unknown honeybee model", "use one of")),
    Case("download-dst-is-file", ["download-honeybee", NAME, "{ws}/afile"], 2, ("is a file", "pass a folder")),
    Case("download-dst-under-file", ["download-honeybee", NAME, "{ws}/afile/x"], 2, ("is a file", "another path")),
    Case("download-url-not-http", ["download-honeybee", NAME, "--url", "ftp://example.org/a.tar.gz"], 2,
         ("not an http(s) address", "full url")),
    Case("download-name-with-slash", ["download-honeybee", "../evil", "--url", "{srv}/404"], 2,
         ("plain folder name",), slow=True),
    Case("download-404", ["download-honeybee", NAME, "--url", "{srv}/404"], 2, ("404", "mirror"), slow=True),
    Case("download-500", ["download-honeybee", NAME, "--url", "{srv}/500"], 2, ("500", "try again"), slow=True),
    Case("download-connection-refused", ["download-honeybee", NAME, "--url", "http://127.0.0.1:{closed}/a.tar.gz"], 2,
         ("refused", "again"), slow=True),
    Case("download-html-page", ["download-honeybee", NAME, "--url", "{srv}/page"], 2, (NAME, "again"), slow=True),
    Case("download-garbage-archive", ["download-honeybee", NAME, "--url", "{srv}/garbage"], 2,
         ("could not be extracted", "download again"), slow=True),
    Case("download-truncated", ["download-honeybee", NAME, "--url", "{srv}/truncated"], 2, ("stopped", "again"),
         slow=True),
    Case("download-path-traversal", ["download-honeybee", NAME, "--url", "{srv}/escape"], 2, ("escaped.txt",),
         slow=True),
    Case("download-archive-without-release", ["download-honeybee", NAME, "--url", "{srv}/noconfig"], 2,
         ("config.json", "honeybee release"), slow=True),
    # ask (the image is checked before the model loads)
    Case("ask-missing-image", ["ask", "nope.png", "What is it?"], 2, ("no such file", "check the path")),
    Case("ask-empty-image", ["ask", "{ws}/afile", "What is it?"], 2, ("empty", "image")),
    Case("ask-text-file", ["ask", "{ws}/notes.txt", "What is it?"], 2, ("notes.txt", "image")),
    Case("ask-html-as-png", ["ask", "{ws}/page.png", "What is it?"], 2, ("html", "image")),
    Case("ask-folder-as-image", ["ask", "{ws}/imgs", "What is it?"], 2, ("imgs", "image")),
    Case("ask-url-404", ["ask", "{srv}/404/cat.png", "What is it?"], 2, ("404", "url"), slow=True),
    Case("ask-url-html", ["ask", "{srv}/page/cat.png", "What is it?"], 2, ("html", "image"), slow=True),
    Case("ask-url-refused", ["ask", "http://127.0.0.1:{closed}/cat.png", "What is it?"], 2, ("cat.png", "refused"),
         slow=True),
    Case("ask-url-hangs", ["ask", "{srv}/hang/cat.png", "What is it?"], 2, ("cat.png", "timed out"), limit=60,
         slow=True),
    Case("ask-demo-unknown-model", ["ask", "{ws}/imgs/a.png", "What is it?", "--model", "nobody/vlm"], 2,
         ("no offline fixture", "nobody/vlm"), env=DEMO),
    Case("ask-demo-missing-folder-model", ["ask", "{ws}/imgs/a.png", "hi", "--demo", "--model", "./no/model"], 2,
         ("no model folder", "check the path")),
    Case("ask-offline-real-model", ["ask", "{ws}/imgs/a.png", "What is it?"], 2, ("llava-1.5-7b-hf", "MLLM_NB_DEMO")),
    # caption (the folder and the output are checked before the model loads)
    Case("caption-missing-folder", ["caption", "nowhere"], 2, ("no such folder", "check the path")),
    Case("caption-file-as-folder", ["caption", "{ws}/afile"], 2, ("is a file", "load_image")),
    Case("caption-empty-folder", ["caption", "{ws}/empty"], 2, ("no image files", "another folder")),
    Case("caption-out-is-folder", ["caption", "{ws}/imgs", "--out", "{ws}/outdir"], 2, ("is a folder", "file path")),
    Case("caption-out-under-file", ["caption", "{ws}/imgs", "--out", "{ws}/afile/c.jsonl"], 2,
         ("is a file", "another path")),
    Case("caption-out-binary", ["caption", "{ws}/imgs", "--out", "{ws}/binary.jsonl"], 2,
         ("not a utf-8 text file", "another --out")),
    Case("caption-out-empty", ["caption", "{ws}/imgs", "--out", ""], 2, ("--out is empty", "file path")),
]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES]
)
def test_bad_input_ends_in_one_line(case: Case, ws: Path, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    srv = request.getfixturevalue("server") if case.slow else ""
    args = [a.format(ws=ws, srv=srv, closed=_closed_port()) for a in case.args]
    done, seconds = run_cli(args, tmp_path, case.env, case.limit)
    assert seconds < case.limit
    assert done.returncode == case.rc, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    for phrase in case.phrases:
        assert phrase.lower() in lines[0].lower(), lines[0]
    assert not (ws / "pwned").exists()  # no pickle ran code
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


# ------------------------------------------------------------------------------------ in-process failures


def _raise(err: BaseException):
    def fake(*args, **kwargs):
        raise err

    return fake


@pytest.mark.parametrize(
    ("err", "rc", "expected"),
    [
        (RuntimeError("boom\nsecond line"), 1, "mllm-nb fit failed: RuntimeError: boom; run again with --debug"),
        (KeyboardInterrupt(), 130, "mllm-nb fit interrupted"),
        (ModuleNotFoundError("No module named 'torch'", name="torch"), 1, "needs the Python package 'torch'"),
        (OSError(28, "No space left on device"), 1, "OSError: [Errno 28] No space left on device; run again"),
    ],
    ids=["unexpected-error", "ctrl-c", "missing-package", "disk-full"],
)
def test_unexpected_failures_are_one_line(err, rc, expected, monkeypatch, capsys) -> None:
    import mllm_nb.plan

    monkeypatch.setattr(mllm_nb.plan, "fit", _raise(err))
    assert main(["fit", "llava-hf/llava-1.5-7b-hf"]) == rc
    captured = capsys.readouterr().err
    assert captured.count("\n") == 1 and expected in captured, captured


def test_a_message_with_newlines_is_printed_on_one_line(monkeypatch, capsys) -> None:
    import mllm_nb.plan
    from mllm_nb.errors import ModelLoadError

    monkeypatch.setattr(mllm_nb.plan, "fit", _raise(ModelLoadError("Could not read it.\n\nCheck the folder.")))
    assert main(["fit", "llava-hf/llava-1.5-7b-hf"]) == 2
    assert capsys.readouterr().err == "error: Could not read it. Check the folder.\n"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(where, monkeypatch) -> None:
    import mllm_nb.plan

    monkeypatch.setattr(mllm_nb.plan, "fit", _raise(RuntimeError("boom")))
    argv = ["fit", "llava-hf/llava-1.5-7b-hf"]
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", *argv] if where == "before" else [*argv, "--debug"])


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_download_that_hangs_ends_in_one_line(server, monkeypatch, capsys, tmp_path) -> None:
    download = importlib.import_module("mllm_nb.honeybee.download")  # the package's `download` is the function
    monkeypatch.setattr(download, "TIMEOUT_S", 1)
    started = time.monotonic()
    assert main(["download-honeybee", NAME, str(tmp_path), "--url", f"{server}/hang"]) == 2
    assert time.monotonic() - started < 30
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "again" in lines[0], lines


@pytest.mark.timeout(120)
def test_ctrl_c_while_loading_exits_130(ws: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()} | {"MLLM_NB_DEMO": "1", "PYTHONUNBUFFERED": "1"}
    # a background job's children start with SIGINT ignored (no KeyboardInterrupt at all): give it back
    proc = subprocess.Popen([sys.executable, "-m", "mllm_nb.cli", "ask", str(ws / "imgs" / "a.png"), "hi"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr.readline().startswith("loading the model")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and error_lines(err) == ["mllm-nb ask interrupted"], err


@pytest.mark.timeout(60)
def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``mllm-nb fit ... | head -0``: the reader is gone before the report is printed."""
    proc = subprocess.Popen([sys.executable, "-m", "mllm_nb.cli", "fit", "llava-hf/llava-1.5-7b-hf", "--target", "t4"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) != 0
    assert err == "", err


# ------------------------------------------------------------------------------------ what works, in demo mode


@pytest.mark.timeout(120)
def test_fit_of_a_catalog_model_does_not_import_torch(tmp_path: Path) -> None:
    code = ("import sys; from mllm_nb.cli import main; "
            "rc = main(['fit', 'llava-hf/llava-1.5-7b-hf', '--target', 't4']); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("llava-hf/llava-1.5-7b-hf fits on T4") and done.stderr == ""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stream", [False, True], ids=["ask", "ask-stream"])
def test_ask_in_demo_mode(stream: bool, ws: Path, tmp_path: Path) -> None:
    args = ["ask", str(ws / "imgs" / "a.png"), "What color is the square?"] + (["--stream"] if stream else [])
    done, _ = run_cli(args, tmp_path, DEMO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "\n" not in done.stdout.strip()  # stdout holds only the answer
    assert done.stderr.startswith("loading the model (first run imports torch and transformers, ~20 s)")
    assert "DEMO MODE" in done.stderr and error_lines(done.stderr) == []


@pytest.mark.timeout(180)
def test_caption_in_demo_mode_resumes_and_reports_counts(ws: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    _png(folder / "a.png", "red")
    _png(folder / "b.png", "blue")
    (folder / "c.png").write_text("<html>a saved web page</html>")
    out = tmp_path / "captions.jsonl"
    out.write_text('not json\n{"file": "a.png", "caption": "a red square"}\n')
    done, _ = run_cli(["caption", str(folder), "--demo", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"captioned 1, skipped 1, failed 1; captions in {out}"
    records = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert [r["file"] for r in records] == ["a.png", "c.png", "b.png"] and "error" in records[1]
    warnings_ = [line for line in error_lines(done.stderr) if line.startswith("warning:")]
    assert len(warnings_) == 1 and "line 1 is not valid JSON" in warnings_[0], done.stderr  # one line, no source
    assert "could not be read" in done.stderr


@pytest.mark.timeout(180)
def test_caption_default_out_and_all_failed(ws: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "x.png").write_bytes(gzip.compress(b"not an image"))
    done, _ = run_cli(["caption", str(folder)], tmp_path, DEMO)
    assert done.returncode == 1, done.stderr  # nothing captioned: not a silent success
    assert done.stdout.startswith("captioned 0, skipped 0, failed 1") and (tmp_path / "captions.jsonl").is_file()
