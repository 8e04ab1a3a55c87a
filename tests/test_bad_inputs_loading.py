"""Hostile inputs to load_vlm (issue 19): each ends in one actionable sentence, fast, and nothing unsafe runs.

Every case copies the tiny random LLaVA (``tiny_llava_dir``), breaks one thing, calls ``load_vlm`` and
asserts the ``MllmNbError`` subclass, phrases naming what happened and what to do, one line, and a
time limit. The Hub cases point huggingface_hub at a local server (127.0.0.1, port 0, daemon thread).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mllm_nb.errors import MllmNbError, ModelLoadError
from mllm_nb.loading import load_vlm
from mllm_nb.vlm import VLMError

pytestmark = pytest.mark.timeout(60)

PWNED = "mllm_nb_pwned"


class _RunsCode:
    """A pickle payload that would create a marker file if unpickled with weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------------------ breaking a checkpoint


def _config(folder: Path, change: Callable[[dict], Any]) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def _text(name: str, content: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(content)


def _weights(change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        file = folder / "model.safetensors"
        file.write_bytes(change(file.read_bytes()))

    return apply


def _keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return list(handle.keys())


def _index(shard_of: Callable[[Path], str], move_to: Callable[[Path], Path] | None = None) -> Callable[[Path], None]:
    """Replace model.safetensors by an index whose every weight lives in ``shard_of(folder)``."""

    def apply(folder: Path) -> None:
        keys = _keys(folder)
        weights = folder / "model.safetensors"
        if move_to is not None:
            shutil.move(weights, move_to(folder))
        else:
            weights.unlink()
        index = {"metadata": {"total_size": 1}, "weight_map": {key: shard_of(folder) for key in keys}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    return apply


def _malicious_bin(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    torch.save({"weight": _RunsCode(folder.parent / PWNED)}, folder / "pytorch_model.bin")


def _garbage_bin(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02garbage" * 50)


def _text_size(key: str, value: Any) -> Callable[[Path], None]:
    return lambda folder: _config(folder, lambda c: c["text_config"].update({key: value}))


def _vision_size(key: str, value: Any) -> Callable[[Path], None]:
    return lambda folder: _config(folder, lambda c: c["vision_config"].update({key: value}))


def _remove(*names: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()

    return apply


HUGE_HEADER = (2**60).to_bytes(8, "little") + b"{}"

# (case id, how to break the folder, error class, phrases the sentence must hold)
BROKEN_FOLDERS: list[tuple[str, Callable[[Path], None], type, tuple[str, ...]]] = [
    ("empty-safetensors", _weights(lambda b: b""), ModelLoadError,
     ("model.safetensors", "damaged", "download it again")),
    ("truncated-safetensors", _weights(lambda b: b[: len(b) // 2]), ModelLoadError, ("damaged or incomplete",)),
    ("garbage-safetensors", _weights(lambda b: b"\x10" + b"\x00" * 7 + b"not json" * 4), ModelLoadError,
     ("model.safetensors", "damaged")),
    ("huge-header-safetensors", _weights(lambda b: HUGE_HEADER), ModelLoadError, ("damaged", "download it again")),
    ("header-offsets-past-end", _weights(lambda b: b[:8] + b[8:].replace(b"[0,", b"[9999999,", 1)), ModelLoadError,
     ("model.safetensors", "download it again")),
    ("malicious-pytorch-bin", _malicious_bin, ModelLoadError, ("want to run code", "refused", ".safetensors")),
    ("garbage-pytorch-bin", _garbage_bin, ModelLoadError,
     ("pytorch_model.bin", "damaged", "download the checkpoint again")),
    ("index-points-outside", _index(lambda f: "../outside.safetensors", lambda f: f.parent / "outside.safetensors"),
     ModelLoadError, ("outside the model folder", "refused")),
    ("index-absolute-path", _index(lambda f: str(f.parent / "abs.safetensors"), lambda f: f.parent / "abs.safetensors"),
     ModelLoadError, ("outside the model folder",)),
    ("index-missing-shard", _index(lambda f: "model-00001-of-00002.safetensors"), ModelLoadError,
     ("lacks the shard", "model-00001-of-00002.safetensors", "download it again")),
    ("index-not-json", lambda f: (_remove("model.safetensors")(f), _text("model.safetensors.index.json", "{oops")(f)),
     ModelLoadError, ("model.safetensors.index.json", "not valid JSON")),
    ("index-without-weight-map", lambda f: _text("model.safetensors.index.json", "{}")(f), ModelLoadError,
     ("has no weight_map",)),
    ("no-weights", _remove("model.safetensors"), ModelLoadError, ("no weights", "download the whole folder")),
    ("no-config", _remove("config.json"), ModelLoadError, ("no config.json", "save_pretrained")),
    ("config-not-json", _text("config.json", "{oops"), ModelLoadError, ("config.json", "not valid JSON")),
    ("config-empty", _text("config.json", ""), ModelLoadError, ("config.json", "the file is empty")),
    ("config-a-list", _text("config.json", "[]"), ModelLoadError, ("holds a list, not an object",)),
    ("config-binary", lambda f: (f / "config.json").write_bytes(b"\xff\xfe\x00garbage"), ModelLoadError,
     ("config.json", "not UTF-8")),
    ("config-no-model-type", lambda f: _config(f, lambda c: c.pop("model_type")), ModelLoadError,
     ("has no model_type", "download the checkpoint again")),
    ("config-unknown-model-type", lambda f: _config(f, lambda c: c.update(model_type="llava_9000")), ModelLoadError,
     ("llava_9000", "download it again")),
    ("negative-layers", _text_size("num_hidden_layers", -3), ModelLoadError,
     ("text_config.num_hidden_layers to -3", "positive")),
    ("zero-hidden-size", _text_size("hidden_size", 0), ModelLoadError, ("text_config.hidden_size to 0",)),
    ("negative-vocab", _text_size("vocab_size", -1), ModelLoadError, ("vocab_size to -1",)),
    ("zero-heads", _text_size("num_attention_heads", 0), ModelLoadError, ("num_attention_heads to 0",)),
    ("zero-patch-size", _vision_size("patch_size", 0), ModelLoadError, ("vision_config.patch_size to 0",)),
    ("layers-as-text", _text_size("num_hidden_layers", "two"), ModelLoadError,
     ("not a valid model config", "num_hidden_layers", "fix config.json")),
    ("heads-do-not-divide", _text_size("num_attention_heads", 3), ModelLoadError,
     ("not a valid model config", "multiple of the number of attention heads")),
    ("tensor-size-mismatch", _text_size("hidden_size", 128), ModelLoadError,
     ("other shapes than its config.json", "download the checkpoint again")),
    ("tokenizer-json-broken", _text("tokenizer.json", "{broken"), ModelLoadError,
     ("tokenizer.json", "not valid JSON", "download the checkpoint again")),
    ("tokenizer-json-empty", _text("tokenizer.json", ""), ModelLoadError, ("tokenizer.json", "empty")),
    ("tokenizer-json-wrong-shape", _text("tokenizer.json", '{"model": 3}'), ModelLoadError,
     ("Could not load the folder", "download it again")),
    ("tokenizer-config-broken", _text("tokenizer_config.json", "{broken"), ModelLoadError,
     ("tokenizer_config.json", "not valid JSON")),
    ("processor-config-broken", _text("processor_config.json", "[1, 2"), ModelLoadError,
     ("processor_config.json", "not valid JSON")),
    ("processor-config-missing", _remove("processor_config.json"), ModelLoadError,
     ("Could not load the folder", "image processor", "download it again")),
    ("chat-template-escapes-sandbox", _text("chat_template.jinja", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
     ModelLoadError, ("chat template", "broken", "SecurityError", "fix chat_template.jinja")),
    ("chat-template-syntax-error", _text("chat_template.jinja", "{% for m in messages %}{{ m['role'] "),
     ModelLoadError, ("chat template", "broken", "TemplateSyntaxError")),
]


@pytest.mark.parametrize(
    "case, breaks, error, phrases", BROKEN_FOLDERS, ids=[case[0] for case in BROKEN_FOLDERS]
)
def test_a_broken_checkpoint_folder_fails_in_one_sentence(tiny_llava_dir, tmp_path, case, breaks, error, phrases):
    folder = Path(shutil.copytree(tiny_llava_dir, tmp_path / "model"))
    breaks(folder)
    started = time.monotonic()
    with pytest.raises(error) as info:
        load_vlm(folder)
    _assert_one_sentence(info.value, phrases)
    assert time.monotonic() - started < 30
    assert not (tmp_path / PWNED).exists()  # the pickle payload never ran


def _assert_one_sentence(err: BaseException, phrases: tuple[str, ...]) -> None:
    message = str(err)
    assert isinstance(err, MllmNbError)
    assert "\n" not in message and message.endswith("."), message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "Traceback" not in message


# ------------------------------------------------------------------------------------ bad arguments

BAD_ARGUMENTS: list[tuple[str, dict[str, Any], type, tuple[str, ...]]] = [
    ("model-id-none", {"model_id": None}, VLMError, ("model_id must be a Hub id", "got None")),
    ("model-id-int", {"model_id": 123}, VLMError, ("model_id must be", "got 123")),
    ("model-id-bytes", {"model_id": b"llava-hf/llava-1.5-7b-hf"}, VLMError, ("model_id must be",)),
    ("model-id-list", {"model_id": ["llava-hf/llava-1.5-7b-hf"]}, VLMError, ("model_id must be",)),
    ("model-id-empty", {"model_id": ""}, VLMError, ("model_id must be", "got ''")),
    ("model-id-spaces", {"model_id": "   "}, VLMError, ("model_id must be",)),
    ("model-id-huge-object", {"model_id": list(range(1000))}, VLMError, ("got a list",)),
    ("model-id-a-file", {"model_id": "FOLDER/config.json"}, ModelLoadError, ("is a file", "folder that holds it")),
    ("model-id-missing-folder", {"model_id": "./no/such/model"}, ModelLoadError, ("No model folder", "check the path")),
    ("device-map-cuda-7", {"device_map": "cuda:7"}, VLMError, ("asks for cuda:7", "device_map='auto'")),
    ("device-map-cuda", {"device_map": "cuda:99"}, VLMError, ("asks for cuda:99",)),
    ("device-map-dict-gpu", {"device_map": {"": "cuda:3"}}, VLMError, ("asks for cuda:3",)),
    ("device-map-dict-int", {"device_map": {"": 5}}, VLMError, ("asks for cuda:5",)),
    ("device-map-gpu-word", {"device_map": "gpu"}, VLMError, ("names 'gpu', which is not a device", "'cpu'")),
    ("device-map-dict-bool", {"device_map": {"": True}}, VLMError, ("which is not a device",)),
    ("device-map-none", {"device_map": None}, VLMError, ("device_map=None must be",)),
    ("device-map-list", {"device_map": ["cpu"]}, VLMError, ("must be 'auto'",)),
    ("quantization-int", {"quantization": 4}, VLMError, ("quantization=4 is not supported",)),
    ("quantization-4bits", {"quantization": "4bits"}, VLMError, ("'auto', '4bit', '8bit' or None",)),
    ("dtype-number", {"dtype": 16}, VLMError, ("dtype",)),
    ("dtype-misspelt", {"dtype": "fp17"}, VLMError, ("dtype='fp17'",)),
    ("force-int", {"force": 1}, VLMError, ("force must be True or False",)),
    ("demo-string-no", {"demo": "no"}, VLMError, ("demo must be True, False or None", "'no'")),
    ("demo-int", {"demo": 0}, VLMError, ("demo must be True, False or None",)),
    ("demo-unknown-id", {"model_id": "someone/unknown-vlm", "demo": True}, ModelLoadError, ("no offline fixture",)),
]


@pytest.mark.parametrize("case, kwargs, error, phrases", BAD_ARGUMENTS, ids=[case[0] for case in BAD_ARGUMENTS])
def test_a_bad_argument_fails_in_one_sentence(tiny_llava_dir, case, kwargs, error, phrases):
    arguments = {"model_id": tiny_llava_dir, **kwargs}
    if arguments["model_id"] == "FOLDER/config.json":
        arguments["model_id"] = str(Path(tiny_llava_dir) / "config.json")
    started = time.monotonic()
    with pytest.raises(error) as info:
        load_vlm(**arguments)
    _assert_one_sentence(info.value, phrases)
    assert time.monotonic() - started < 10


def test_spaces_around_a_folder_or_id_are_a_pasting_slip(tiny_llava_dir, capsys):
    vlm = load_vlm(f"  {tiny_llava_dir}\n")
    assert vlm.name == str(tiny_llava_dir)


# ------------------------------------------------------------------------------------- a flaky Hub


class _Hub(http.server.BaseHTTPRequestHandler):
    """Answers every request the way ``server.mode`` says: 500, a 200 HTML page (a captive portal),
    or a dropped connection after a second of silence (a flaky link)."""

    def _answer(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "drop":
            time.sleep(1)
            self.close_connection = True
            return
        body = b"<html>captive portal: please log in</html>"
        self.send_response(500 if mode == "500" else 200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


def _serve(mode: str) -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    server.daemon_threads = True
    server.mode = mode  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Timer(50, server.shutdown).start()  # stops by itself
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.slow  # huggingface_hub retries 5 times with backoff (about 25 s) before it gives up
@pytest.mark.parametrize("mode", ["500", "html", "drop"])
def test_a_flaky_hub_fails_in_one_sentence_without_hanging(mode, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("MLLM_NB_DEMO", raising=False)  # make test runs in demo mode: this one asks the (fake) Hub
    endpoint = _serve(mode)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 2)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 2)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_vlm(f"mllm-nb-tests/flaky-{mode}")
    _assert_one_sentence(info.value, ("Could not load 'mllm-nb-tests/flaky-", "connect to the internet"))
    assert time.monotonic() - started < 45


# ---------------------------------------------------------------------------------- the slow first load


@pytest.mark.slow  # a fresh Python imports torch and transformers
@pytest.mark.timeout(180)
def test_the_first_load_in_a_fresh_python_says_it_is_coming(tiny_llava_dir):
    code = f"import mllm_nb as mn; mn.load_vlm({str(tiny_llava_dir)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=170, check=True)
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"Loading transformers and {tiny_llava_dir} (the first load in a session takes a while) ..."
    assert lines[1].startswith(f"Loaded {tiny_llava_dir} ") and len(lines) == 2


def test_socket_helpers_only_listen_locally():
    address = _serve("500").split("//")[1].split(":")[0]
    assert socket.inet_aton(address) == socket.inet_aton("127.0.0.1")
