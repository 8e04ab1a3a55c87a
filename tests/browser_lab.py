"""Helpers for tests/test_browser.py: a throwaway JupyterLab 4 server and a headless Chromium.

``lab_server`` starts ``jupyter lab`` on 127.0.0.1 (a free port, a random token, a temporary root
and temporary Jupyter config/data/runtime/settings folders, so nothing of the user's own Jupyter
setup is read or written) with ``MLLM_NB_DEMO=1``. Its one kernel, ``mllm-nb``, runs the Python that
has mllm_nb and torch (the project's ``.venv``), which need not be the Python running the server:
``make test-browser`` runs the server and pytest from the small ``.venv-browser`` (JupyterLab,
selenium) and the kernel from ``.venv``. The server is wrapped in coreutils ``timeout``, so it ends
by itself even when the test process is killed, and it is stopped (its whole process group,
kernel included) when the test ends.

``chrome`` opens Debian's ``chromium`` through Debian's ``chromedriver`` (no Selenium Manager,
no download). ``missing()`` names what is not installed, for the test's skip reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The Python that runs the notebook's kernel: $MLLM_NB_KERNEL_PYTHON, else the project's .venv, else this one.
KERNEL_PYTHON_ENV = "MLLM_NB_KERNEL_PYTHON"
KERNEL_NAME = "mllm-nb"
#: Seconds after which the server is killed whatever happens (the test itself takes about a minute).
SERVER_HARD_TIMEOUT = 600
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMEDRIVER_NAMES = ("chromedriver",)

DEMO_ENV = {
    "MLLM_NB_DEMO": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _which(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return next((path for path in extra if os.access(path, os.X_OK)), None)


def chromium_path() -> str | None:
    return os.environ.get("MLLM_NB_CHROMIUM") or _which(CHROMIUM_NAMES, ("/usr/lib/chromium/chromium",))


def chromedriver_path() -> str | None:
    return os.environ.get("MLLM_NB_CHROMEDRIVER") or _which(CHROMEDRIVER_NAMES, ("/usr/lib/chromium/chromedriver",))


def jupyter_lab_command() -> list[str] | None:
    """``python -m jupyterlab`` with this Python when it has JupyterLab 4, else None."""
    try:
        import jupyterlab
    except ImportError:
        return None
    if int(jupyterlab.__version__.split(".")[0]) < 4:
        return None
    return [sys.executable, "-m", "jupyterlab"]


def kernel_python() -> str | None:
    """The Python for the notebook kernel, when it can import mllm_nb and ipykernel."""
    candidates = [os.environ.get(KERNEL_PYTHON_ENV), str(ROOT / ".venv" / "bin" / "python"), sys.executable]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import mllm_nb, ipykernel, ipywidgets"],
            check=False, capture_output=True, timeout=120, cwd=ROOT, env={**os.environ, **DEMO_ENV},
        )
        if probe.returncode == 0:
            return candidate
        if candidate == os.environ.get(KERNEL_PYTHON_ENV):
            return None  # asked for explicitly and unusable: say so instead of taking another
    return None


def missing() -> list[str]:
    """What the browser test needs and this machine lacks (empty when it can run).

    The kernel's Python is probed (a subprocess importing mllm_nb) only when everything else is there,
    so collecting the test where it cannot run costs nothing.
    """
    lacks = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        lacks.append("selenium (Python package)")
    if jupyter_lab_command() is None:
        lacks.append("JupyterLab 4 (Python package jupyterlab)")
    if chromium_path() is None:
        lacks.append("chromium (apt install chromium)")
    if chromedriver_path() is None:
        lacks.append("chromedriver (apt install chromium-driver)")
    if not lacks and kernel_python() is None:
        lacks.append(f"a Python with mllm_nb + ipykernel for the kernel (.venv, or ${KERNEL_PYTHON_ENV})")
    return lacks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook of code cells, on the ``mllm-nb`` kernel, without outputs."""
    notebook = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {}, "outputs": [],
             "source": source}
            for i, source in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"name": KERNEL_NAME, "display_name": "mllm_nb (demo)", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1), encoding="utf-8")
    return path


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}lab/tree/{name}?token={self.token}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (server, kernel, timeout wrapper), then SIGKILL what is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # a kernel that outlived its server
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextlib.contextmanager
def lab_server(workdir: Path, python: str, startup_timeout: float = 120) -> Iterator[Lab]:
    """JupyterLab 4 on 127.0.0.1 with the ``mllm-nb`` kernel; stopped on exit, killed after SERVER_HARD_TIMEOUT s."""
    command = jupyter_lab_command()
    assert command is not None, "JupyterLab 4 is not installed"
    root, jupyter = workdir / "root", workdir / "jupyter"
    root.mkdir(parents=True, exist_ok=True)
    kernel_dir = jupyter / "data" / "kernels" / KERNEL_NAME
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mllm_nb (demo)",
        "language": "python",
        "env": {**DEMO_ENV, "PYTHONPATH": str(ROOT)},
    }), encoding="utf-8")
    # Quiet, offline Lab: no news fetching, no update check, no announcements toast.
    settings = jupyter / "settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8"
    )
    port, token = free_port(), secrets.token_hex(24)
    env = {
        **os.environ,
        **DEMO_ENV,
        "JUPYTER_CONFIG_DIR": str(jupyter / "config"),
        "JUPYTER_DATA_DIR": str(jupyter / "data"),
        "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
        "JUPYTER_PATH": str(jupyter / "data"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(jupyter / "ipython"),
        "JUPYTER_TOKEN": token,
    }
    env.pop(KERNEL_PYTHON_ENV, None)
    log = workdir / "jupyter-lab.log"
    argv = [
        "timeout", "--kill-after=10", str(SERVER_HARD_TIMEOUT), *command,
        "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={jupyter / 'workspaces'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--KernelSpecManager.allowed_kernelspecs={KERNEL_NAME}",
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}/", token, root, process, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n{lab.log_tail()}")
            try:
                with urllib.request.urlopen(f"{lab.url}api/status?token={token}", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer within {startup_timeout:.0f} s:\n{lab.log_tail()}")
            time.sleep(0.5)
        yield lab
    finally:
        _stop_group(process)


@contextlib.contextmanager
def chrome(workdir: Path, width: int = 1400, height: int = 1100) -> Iterator:
    """Headless Debian Chromium under Selenium, with Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path()
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        f"--window-size={width},{height}", "--no-first-run", "--no-default-browser-check",
        "--disable-extensions", "--disable-background-networking", "--disable-sync",
        f"--user-data-dir={workdir / 'chromium-profile'}", "--lang=en-US",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver_path(), log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(60)
        yield driver
    finally:
        driver.quit()
