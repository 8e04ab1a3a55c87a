"""Release format -> Hugging Face format (mllm_nb.honeybee.convert) and the release download.

Conversion runs on the tiny reference releases of ``tests/data/honeybee``; downloads run against a
local HTTP server in a thread (with Range support) - nothing here touches the internet.
"""

from __future__ import annotations

import http.server
import io
import json
import shutil
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_honeybee import VECTORS, byte_tokenizer

import mllm_nb.honeybee as hb
from mllm_nb.errors import MllmNbError
from mllm_nb.honeybee.convert import convert_config, load_shard, new_key

download_module = sys.modules["mllm_nb.honeybee.download"]
C_ABS = VECTORS / "c-abs" / "checkpoint"
D_ABS = VECTORS / "d-abs" / "checkpoint"


def release_config(kind: str = "c-abs") -> dict:
    return json.loads((VECTORS / kind / "checkpoint" / "last" / "config.json").read_text())


def copy_release(tmp_path: Path, kind: str = "c-abs") -> Path:
    folder = tmp_path / f"{kind}-release" / "last"
    shutil.copytree(VECTORS / kind / "checkpoint" / "last", folder)
    return folder


# ------------------------------------------------------------------------------------ config and keys


def test_new_key_renames_prefixes_and_drops_recomputed_buffers() -> None:
    assert new_key("vision_model.vision_model.encoder.layers.0.mlp.fc1.weight") == (
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight"
    )
    assert new_key("abstractor.net.0.b1.conv1.conv.weight") == "model.abstractor.net.0.b1.conv1.conv.weight"
    assert new_key("language_model.model.norm.weight") == "model.language_model.norm.weight"
    assert new_key("language_model.lm_head.weight") == "lm_head.weight"
    assert new_key("vision_model.vision_model.embeddings.position_ids") is None
    assert new_key("language_model.model.layers.1.self_attn.rotary_emb.inv_freq") is None
    with pytest.raises(hb.HoneybeeError, match="Unexpected tensor 'decoder.weight'"):
        new_key("decoder.weight")


def test_convert_config_maps_the_old_schema() -> None:
    c_abs, d_abs = convert_config(release_config("c-abs")), convert_config(release_config("d-abs"))
    assert c_abs.model_type == "honeybee" and c_abs.architectures == ["HoneybeeForConditionalGeneration"]
    assert c_abs.abstractor_config == {**hb.C_ABS_DEFAULTS, "hidden_size": 64, "num_queries": 16}
    assert (c_abs.vision_config.image_size, c_abs.vision_config.patch_size, c_abs.vision_config.hidden_act) == (
        112, 14, "quick_gelu"
    )
    text = c_abs.text_config
    assert (text.hidden_size, text.vocab_size, text.num_key_value_heads, text.rms_norm_eps) == (128, 512, 4, 1e-5)
    assert text.rope_parameters["rope_theta"] == 10000.0 and not text.attention_bias
    assert c_abs.image_token_id == 512 and c_abs.vision_feature_layer == -1 and c_abs.num_visual_tokens == 16
    assert not hasattr(c_abs.vision_config, "pretrained_vision_name_or_path")
    assert d_abs.abstractor_config["projector_type"] == "d-abs"
    assert {k: d_abs.abstractor_config[k] for k in ("d_model", "decoder_layers", "decoder_attention_heads")} == {
        "d_model": 64, "decoder_layers": 2, "decoder_attention_heads": 8,
    }  # fmt: skip
    assert (d_abs.abstractor_config["decoder_n_points"], d_abs.abstractor_config["decoder_ffn_dim"]) == (8, 128)


def test_convert_config_refuses_configs_that_are_not_releases() -> None:
    with pytest.raises(hb.HoneybeeError, match="not an official Honeybee release config"):
        convert_config({"model_type": "llava"})
    broken = release_config()
    broken["num_query_tokens"] = 25
    with pytest.raises(hb.HoneybeeError, match="num_query_tokens=25 but the projector has num_queries=16"):
        convert_config(broken)
    broken = release_config()
    broken["visual_projector_config"]["projector_type"] = "resampler"
    with pytest.raises(hb.HoneybeeError, match="Projector type 'resampler' is not supported"):
        convert_config(broken)


# ------------------------------------------------------------------------------------ writing


def test_without_tokenizer_writes_weights_config_and_image_processor_only(tmp_path: Path) -> None:
    out = hb.convert(C_ABS, tmp_path / "out", tokenizer=None, progress=False)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json"]
    weights = load_file(out / "model.safetensors")
    old = load_shard(C_ABS / "last" / "pytorch_model.bin")[0]
    assert torch.equal(weights["model.abstractor.pos_emb"], old["abstractor.pos_emb"][:, 1:])  # CLS row dropped
    assert not any(k.endswith(("position_ids", "inv_freq")) for k in weights)
    assert len(weights) == len(old) - 3
    assert torch.equal(weights["lm_head.weight"], old["language_model.lm_head.weight"])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "honeybee" and config["image_token_id"] == 512
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == {"height": 112, "width": 112} and preprocessor["do_center_crop"] is False
    assert preprocessor["image_processor_type"] == "HoneybeeImageProcessor"
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["do_sample"], generation["top_k"], generation["eos_token_id"]) == (True, 3, 2)
    assert "max_length" not in generation  # 512 would cut prompts with 576 visual tokens


def test_small_shards_get_an_index_and_keep_every_tensor(tmp_path: Path) -> None:
    single = load_file(hb.convert(D_ABS, tmp_path / "one", tokenizer=None, progress=False) / "model.safetensors")
    out = hb.convert(D_ABS, tmp_path / "many", tokenizer=None, max_shard_size=300_000, progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    merged = {}
    for shard in shards:
        tensors = load_file(out / shard)
        assert sum(t.numel() * t.element_size() for t in tensors.values()) <= 300_000 or len(tensors) == 1
        merged.update(tensors)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in merged.values())
    assert merged.keys() == single.keys() and all(torch.equal(merged[k], single[k]) for k in single)
    model = hb.HoneybeeForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    assert torch.equal(model.model.abstractor.reference_points.data, single["model.abstractor.reference_points"])


def test_streaming_in_small_pieces_writes_exact_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of 1000 bytes (cast or copied straight from the memory map, then released) add up to the tensors."""
    monkeypatch.setattr(sys.modules["mllm_nb.honeybee.convert"], "CHUNK_BYTES", 1000)
    out = hb.convert(D_ABS, tmp_path / "out", tokenizer=None, progress=False)
    half = hb.convert(D_ABS, tmp_path / "half", tokenizer=None, dtype="bfloat16", progress=False)
    old = {new_key(k): v for k, v in load_shard(D_ABS / "last" / "pytorch_model.bin")[0].items() if new_key(k)}
    written, cast = load_file(out / "model.safetensors"), load_file(half / "model.safetensors")
    assert written.keys() == old.keys() == cast.keys()
    assert all(torch.equal(written[k], old[k]) and torch.equal(cast[k], old[k].bfloat16()) for k in old)


def test_dtype_casts_floating_weights_and_records_it(tmp_path: Path) -> None:
    out = hb.convert(C_ABS, tmp_path / "out", tokenizer=None, dtype="float16", progress=False)
    with safe_open(out / "model.safetensors", "pt") as handle:
        tensor = handle.get_tensor("model.language_model.embed_tokens.weight")
    old = load_shard(C_ABS / "last" / "pytorch_model.bin")[0]["language_model.model.embed_tokens.weight"]
    assert tensor.dtype == torch.float16 and torch.equal(tensor, old.half())
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    with pytest.raises(hb.HoneybeeError, match="dtype='int8' is not supported"):
        hb.convert(C_ABS, tmp_path / "bad", tokenizer=None, dtype="int8", progress=False)


def test_existing_model_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = hb.convert(C_ABS, tmp_path / "out", tokenizer=byte_tokenizer(), max_shard_size=500_000, progress=False)
    with pytest.raises(hb.HoneybeeError, match="already holds a model"):
        hb.convert(C_ABS, out, tokenizer=None, progress=False)
    assert hb.convert(D_ABS, out, tokenizer=None, progress=False, overwrite=True) == out
    assert json.loads((out / "config.json").read_text())["abstractor_config"]["projector_type"] == "d-abs"
    assert sorted(p.name for p in out.iterdir()) == [  # nothing stale from the first conversion
        "config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
    ]  # fmt: skip


def test_bad_release_folders_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(hb.HoneybeeError, match="No Honeybee release found"):
        hb.convert(tmp_path, tmp_path / "out", tokenizer=None)
    release = copy_release(tmp_path)
    (release / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"x": "pytorch_model-9.bin"}}))
    with pytest.raises(hb.HoneybeeError, match="lacks pytorch_model-9.bin named by its index"):
        hb.convert(release.parent, tmp_path / "out", tokenizer=None)
    (release / "pytorch_model.bin.index.json").unlink()
    state = torch.load(release / "pytorch_model.bin", weights_only=True)
    del state["abstractor.readout.2.bias"]
    torch.save(state, release / "pytorch_model.bin")
    with pytest.raises(hb.HoneybeeError, match=r"do not match its config.json \(missing \['model.abstractor.readout"):
        hb.convert(release.parent, tmp_path / "out", tokenizer=None, progress=False)
    (release / "pytorch_model.bin").write_bytes(b"not a zip file at all")
    with pytest.raises(hb.HoneybeeError, match="is not a readable PyTorch checkpoint"):
        hb.convert(release.parent, tmp_path / "out", tokenizer=None, progress=False)
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------ pickle safety


class _WritesAFile:
    """A pickle payload that creates ``path`` when unpickled (what a malicious checkpoint would do)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused_before_it_runs(tmp_path: Path) -> None:
    live_marker, marker = tmp_path / "live.txt", tmp_path / "pwned.txt"
    torch.save({"language_model.lm_head.weight": _WritesAFile(live_marker)}, tmp_path / "live.bin")
    torch.load(tmp_path / "live.bin", weights_only=False)  # prove that the payload really runs when trusted
    assert live_marker.read_text() == "pwned"
    release = copy_release(tmp_path)
    torch.save({"language_model.lm_head.weight": _WritesAFile(marker)}, release / "pytorch_model.bin")
    refused = r"Refusing to load .pytorch_model.bin.: its pickle needs more than tensors \(exec, which could run"
    with pytest.raises(hb.HoneybeeError, match=refused):
        hb.convert(release.parent, tmp_path / "out", tokenizer=None, progress=False)
    assert not marker.exists()
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------ tokenizer


def test_offline_without_tokenizer_stops_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(hb.HoneybeeError) as caught:
        hb.convert(C_ABS, tmp_path / "out", progress=False)
    message = str(caught.value)
    assert message.startswith("Could not load the tokenizer 'lmsys/vicuna-7b-v1.5'")
    assert "tokenizer=None" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_tokenizer_shipped_in_the_release_wins(tmp_path: Path) -> None:
    from transformers import AutoProcessor

    release = copy_release(tmp_path)
    byte_tokenizer().save_pretrained(release)
    out = hb.convert(release.parent, tmp_path / "out", tokenizer="no/such-tokenizer", progress=False)
    processor = AutoProcessor.from_pretrained(out)
    assert processor.image_token_id == 512 == json.loads((out / "config.json").read_text())["image_token_id"]
    assert processor.tokenizer("AI", add_special_tokens=False)["input_ids"] == [3 + ord("A"), 3 + ord("I")]


def test_tokenizer_object_is_copied_and_a_too_large_one_refused(tmp_path: Path) -> None:
    tokenizer = byte_tokenizer()
    hb.convert(C_ABS, tmp_path / "out", tokenizer=tokenizer, progress=False)
    assert "<image>" not in tokenizer.get_vocab()  # the caller's object is not changed
    tokenizer.add_tokens([f"extra{i}" for i in range(10)])
    with pytest.raises(hb.HoneybeeError, match="tokenizer has 522 tokens but the language model only 512"):
        hb.convert(C_ABS, tmp_path / "other", tokenizer=tokenizer, progress=False)


# ------------------------------------------------------------------------------------ download


def _tar_gz(
    members: dict[str, bytes], links: dict[str, str] | None = None, hardlinks: dict[str, str] | None = None
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, target in (hardlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def release_archive(name: str = "7B-C-Abs-M144") -> bytes:
    last = C_ABS / "last"
    return _tar_gz({f"{name}/last/{f}": (last / f).read_bytes() for f in ("config.json", "generation_config.json")})


class _Server:
    """A local HTTP server for one file with Range support; it can cut the first response short."""

    def __init__(self, payload: bytes, cut_first_at: int | None = None) -> None:
        self.payload, self.cut_first_at, self.ranges = payload, cut_first_at, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()

            def do_GET(self) -> None:
                if "missing" in self.path:
                    self.send_error(404)
                    return
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                start = int(requested.removeprefix("bytes=").rstrip("-")) if requested else 0
                body = server.payload[start:]
                self.send_response(206 if requested else 200)
                if requested:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first_at is not None:
                    body, server.cut_first_at = body[: server.cut_first_at], None
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server_factory() -> Iterator:
    servers: list[_Server] = []

    def make(payload: bytes, cut_first_at: int | None = None) -> _Server:
        servers.append(_Server(payload, cut_first_at).__enter__())
        return servers[-1]

    yield make
    for server in servers:
        server.__exit__()


def test_model_zoo_names_and_urls() -> None:
    assert list(hb.MODEL_ZOO) == [
        "7B-C-Abs-M144", "7B-D-Abs-M144", "13B-C-Abs-M256", "13B-D-Abs-M256", "7B-C-Abs-M256", "13B-C-Abs-M576",
    ]  # fmt: skip
    assert hb.MODEL_ZOO["13B-C-Abs-M576"] == "https://twg.kakaocdn.net/brainrepo/models/honeybee/13B-C-Abs-M576.tar.gz"
    with pytest.raises(hb.HoneybeeError, match="Unknown Honeybee model '7B-X'; use one of 7B-C-Abs-M144"):
        hb.download("7B-X", ".")


def test_interrupted_download_resumes_with_a_range_request(tmp_path: Path, server_factory) -> None:
    payload = release_archive()
    server = server_factory(payload, cut_first_at=len(payload) // 2)
    with pytest.raises(hb.HoneybeeError, match="stopped after .*run download\\(\\) again to resume"):
        hb.download("7b-c-abs-m144", tmp_path, url=server.url, progress=False)
    part = tmp_path / "7B-C-Abs-M144.tar.gz.part"
    assert part.stat().st_size == len(payload) // 2
    folder = hb.download("7B-C-Abs-M144", tmp_path, url=server.url, progress=False)
    assert server.ranges == [None, f"bytes={len(payload) // 2}-"]
    assert folder == tmp_path / "7B-C-Abs-M144" / "last"
    assert (folder / "config.json").read_bytes() == (C_ABS / "last" / "config.json").read_bytes()
    assert not part.exists() and not (tmp_path / "7B-C-Abs-M144.tar.gz").exists()
    assert hb.download("7B-C-Abs-M144", tmp_path, url="http://127.0.0.1:9/unreachable") == folder  # no network


def test_missing_archive_on_the_server_gets_a_clear_error(tmp_path: Path, server_factory) -> None:
    server = server_factory(release_archive())
    with pytest.raises(hb.HoneybeeError, match=r"The server answered 404 .* check the name, or pass url="):
        hb.download("7B-C-Abs-M144", tmp_path, url=server.url.replace("archive", "missing"), progress=False)


def test_download_checks_free_disk_before_writing(tmp_path: Path, server_factory, monkeypatch) -> None:
    server = server_factory(release_archive())
    monkeypatch.setattr(download_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 100))
    with pytest.raises(hb.HoneybeeError, match="Not enough disk space in .*the archive and its extracted copy need"):
        hb.download("7B-C-Abs-M144", tmp_path, url=server.url, progress=False)
    part = tmp_path / "7B-C-Abs-M144.tar.gz.part"
    assert not part.exists() or part.stat().st_size == 0


def test_archive_kept_on_request(tmp_path: Path, server_factory) -> None:
    server = server_factory(release_archive())
    archive = hb.download("7B-C-Abs-M144", tmp_path, url=server.url, extract_archive=False, progress=False)
    assert archive == tmp_path / "7B-C-Abs-M144.tar.gz" and archive.read_bytes() == server.payload
    folder = hb.download("7B-C-Abs-M144", tmp_path, url=server.url, keep_archive=True, progress=False)
    assert archive.is_file() and (folder / "generation_config.json").is_file()
    assert server.ranges == [None]  # the finished archive was not fetched again


@pytest.mark.parametrize(
    "archive,problem",
    [
        (lambda: _tar_gz({"7B-C-Abs-M144/last/config.json": b"{}", "../escaped.txt": b"x"}), "OutsideDestinationError"),
        (lambda: _tar_gz({"/tmp/mllm-nb-absolute-escape.txt": b"x"}), "AbsolutePathError"),
        (lambda: _tar_gz({"7B-C-Abs-M144/a.txt": b"x"}, links={"7B-C-Abs-M144/link": "../../escaped.txt"}),
         "LinkOutsideDestinationError"),
        (lambda: _tar_gz({"a.txt": b"x"}, hardlinks={"7B-C-Abs-M144/hard": "/etc/passwd"}), "Error"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink"],
)
def test_unsafe_archives_are_refused(tmp_path: Path, archive, problem: str) -> None:
    dst = tmp_path / "checkpoints"
    dst.mkdir()
    (dst / "7B-C-Abs-M144.tar.gz").write_bytes(archive())
    with pytest.raises(MllmNbError, match=f"Refusing to extract '7B-C-Abs-M144.tar.gz'.*{problem}"):
        hb.download("7B-C-Abs-M144", dst, progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/mllm-nb-absolute-escape.txt").exists()
    assert sorted(p.name for p in dst.iterdir()) == ["7B-C-Abs-M144.tar.gz"]  # nothing half-extracted left


def test_damaged_archive_gets_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "7B-D-Abs-M144.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(hb.HoneybeeError, match="could not be extracted .*delete it and download again") as caught:
        hb.download("7B-D-Abs-M144", tmp_path, progress=False)
    assert "\n" not in str(caught.value)


def test_command_line_converts_a_release(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mllm_nb.cli import main

    assert main(["convert-honeybee", str(C_ABS / "last"), str(tmp_path / "hf"), "--tokenizer", "none"]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert "load_vlm(" in capsys.readouterr().out
    assert main(["convert-honeybee", str(C_ABS / "last"), str(tmp_path / "hf"), "--tokenizer", "none"]) == 2
    assert "error:" in capsys.readouterr().err  # the folder exists: refused without --overwrite, one line
