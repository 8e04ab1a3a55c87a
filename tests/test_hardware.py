"""Tests of mllm_nb.hardware: the dtype policy on mocked devices and the hardware report."""

from __future__ import annotations

import subprocess
import sys
import types
from importlib import metadata

import pytest
import torch

from mllm_nb import hardware
from mllm_nb.errors import MllmNbError
from mllm_nb.hardware import HardwareReport, best_dtype, doctor, hardware_report, is_colab, supports_bf16

T4_TOTAL = 15_828_320_256  # 14.74 GiB, what a Colab T4 reports
T4_FREE = 15_720_000_000  # 14.64 GiB


def _index(device: object) -> int:
    """Device index the way torch.cuda functions read their ``device`` argument (None = current = 0)."""
    if device is None:
        return 0
    if isinstance(device, int):
        return device
    return torch.device(device).index or 0


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    """Install a fake CUDA machine: ``fake_gpu({0: (7, 5)}, name="Tesla T4", bf16=True)``."""

    def install(
        capabilities: dict[int, tuple[int, int]],
        name: str = "Tesla T4",
        bf16: bool = False,
        mem: tuple[int, int] = (T4_FREE, T4_TOTAL),
    ) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capabilities[_index(device)])
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: mem)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)

    return install


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch):
    """A machine with neither CUDA nor MPS."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def not_colab(monkeypatch: pytest.MonkeyPatch):
    """Make sure nothing looks like Colab."""
    for name in ("COLAB_RELEASE_TAG", "COLAB_GPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)


# --------------------------------------------------------------------------- dtype policy


def test_t4_is_float16_even_when_torch_claims_bf16(fake_gpu) -> None:
    fake_gpu({0: (7, 5)}, bf16=True)
    assert best_dtype() == torch.float16
    assert best_dtype("cuda") == torch.float16
    assert supports_bf16() is False


def test_v100_is_float16(fake_gpu) -> None:
    fake_gpu({0: (7, 0)}, name="Tesla V100-SXM2-16GB", bf16=True)
    assert best_dtype() == torch.float16
    assert supports_bf16("cuda") is False


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (9, 0)], ids=["A100", "L4", "H100"])
def test_ampere_and_newer_are_bfloat16_by_capability_alone(fake_gpu, capability) -> None:
    fake_gpu({0: capability}, name="NVIDIA GPU", bf16=False)  # is_bf16_supported must not matter
    assert best_dtype() == torch.bfloat16
    assert best_dtype(torch.device("cuda")) == torch.bfloat16
    assert supports_bf16() is True


def test_no_cuda_is_float32(no_gpu) -> None:
    assert best_dtype() == torch.float32
    assert supports_bf16() is False


def test_mps_is_float16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert best_dtype() == torch.float16
    assert best_dtype("mps") == torch.float16
    assert supports_bf16() is False


def test_explicit_cpu_on_a_cuda_machine_is_float32(fake_gpu) -> None:
    fake_gpu({0: (8, 0)}, name="NVIDIA A100-SXM4-40GB")
    assert best_dtype("cpu") == torch.float32
    assert best_dtype(torch.device("cpu")) == torch.float32
    assert supports_bf16("cpu") is False


def test_cuda_index_uses_that_devices_capability(fake_gpu) -> None:
    fake_gpu({0: (7, 5), 1: (8, 0)})
    assert best_dtype("cuda:1") == torch.bfloat16
    assert best_dtype(torch.device("cuda", 1)) == torch.bfloat16
    assert best_dtype("cuda:0") == torch.float16
    assert best_dtype("cuda") == torch.float16
    assert supports_bf16("cuda:1") is True
    assert supports_bf16("cuda:0") is False


def test_explicit_cuda_without_cuda_raises_a_clear_error(no_gpu) -> None:
    with pytest.raises(MllmNbError, match="CUDA is not available"):
        best_dtype("cuda")


def test_unknown_device_string_raises_a_clear_error() -> None:
    with pytest.raises(MllmNbError, match="Unknown device 'gpu0'"):
        best_dtype("gpu0")


# --------------------------------------------------------------------------- report on this CPU machine


def test_report_on_this_cpu_machine(no_gpu, not_colab, tmp_path) -> None:
    report = hardware_report(tmp_path)
    assert report.device == "cpu"
    assert report.gpu_name is None and report.compute_capability is None
    assert report.gpu_total_bytes is None and report.gpu_free_bytes is None
    assert report.ram_total_bytes > 0
    assert 0 < report.ram_available_bytes <= report.ram_total_bytes
    assert report.disk_free_bytes > 0
    assert report.disk_path == str(tmp_path)
    assert report.is_colab is False
    assert report.recommended_dtype == "float32"
    assert report.versions["torch"] == torch.__version__
    assert report.versions["transformers"] == metadata.version("transformers")
    assert report.versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(report.versions) == {"python", "torch", "transformers", "bitsandbytes", "accelerate", "ipywidgets"}
    assert any(note.startswith("No GPU:") and "T4 GPU" in note for note in report.notes)


def test_report_text_and_html_contain_the_values(no_gpu, not_colab) -> None:
    report = hardware_report()
    text, page = str(report), report._repr_html_()
    ram_gb = f"{report.ram_total_bytes / 1e9:.1f} GB"
    for needle in ("cpu", "float32", torch.__version__, metadata.version("transformers"), ram_gb, "No GPU"):
        assert needle in text
        assert needle in page
    assert page.startswith("<div>") and "<table>" in page


def test_text_table_is_aligned(no_gpu, not_colab) -> None:
    report = hardware_report()
    lines = str(report).splitlines()
    starts = set()
    for label, value in report.rows():
        line = next(line for line in lines if line.strip().startswith(label) and line.endswith(value))
        starts.add(len(line) - len(value))
    assert len(starts) == 1  # every value starts in the same column
    assert len(report.rows()) >= 12


def test_missing_package_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real_version = metadata.version

    def fake_version(name: str) -> str:
        if name == "bitsandbytes":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", fake_version)
    versions = hardware.package_versions()
    assert versions["bitsandbytes"] == "not installed"
    assert versions["torch"] == torch.__version__
    assert hardware.package_version("surely-not-a-real-package-xyz") == "not installed"


def test_low_ram_and_widget_notes(monkeypatch: pytest.MonkeyPatch, no_gpu, not_colab) -> None:
    ram = types.SimpleNamespace(total=13_600_000_000, available=12_000_000_000)  # a Colab VM
    monkeypatch.setattr("psutil.virtual_memory", lambda: ram)
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda n: "7.7.1" if n == "ipywidgets" else real_version(n))
    report = hardware_report()
    assert report.ram_total_bytes == 13_600_000_000
    assert "Low system RAM (< 16 GB): load checkpoints with small shards" in report.notes
    assert any(note.startswith("ipywidgets 7.x") for note in report.notes)
    assert "13.6 GB total" in str(report)


def test_plenty_of_ram_gives_no_low_ram_note(monkeypatch: pytest.MonkeyPatch, no_gpu, not_colab) -> None:
    ram = types.SimpleNamespace(total=64 * 10**9, available=60 * 10**9)
    monkeypatch.setattr("psutil.virtual_memory", lambda: ram)
    assert not any("Low system RAM" in note for note in hardware_report().notes)


# --------------------------------------------------------------------------- report with a mocked T4


def test_report_on_a_mocked_t4(fake_gpu, not_colab) -> None:
    fake_gpu({0: (7, 5)}, name="Tesla T4", bf16=True)
    report = hardware_report()
    assert report.device == "cuda"
    assert report.gpu_name == "Tesla T4"
    assert report.compute_capability == (7, 5)
    assert (report.gpu_free_bytes, report.gpu_total_bytes) == (T4_FREE, T4_TOTAL)
    assert report.recommended_dtype == "float16"
    assert "T4-class GPU (sm 7.5): no native bf16, computing in float16" in report.notes
    assert not any(note.startswith("No GPU") for note in report.notes)
    text = str(report)
    for needle in ("Tesla T4", "7.5", "14.6 GiB free", "14.7 GiB total", "float16"):
        assert needle in text
        assert needle in report._repr_html_()
    assert report.to_dict()["compute_capability"] == [7, 5]


def test_report_on_a_mocked_a100_recommends_bfloat16(fake_gpu, not_colab) -> None:
    fake_gpu({0: (8, 0)}, name="NVIDIA A100-SXM4-40GB", mem=(40 * 2**30, 40 * 2**30))
    report = hardware_report()
    assert report.recommended_dtype == "bfloat16"
    assert "bf16-capable GPU (sm 8.0): computing in bfloat16" in report.notes
    assert not any("no native bf16" in note for note in report.notes)


def test_failing_gpu_memory_probe_gives_none_and_a_note(fake_gpu, monkeypatch: pytest.MonkeyPatch, not_colab) -> None:
    fake_gpu({0: (7, 5)})

    def boom(device=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "mem_get_info", boom)
    report = hardware_report()
    assert report.gpu_free_bytes is None and report.gpu_total_bytes is None
    assert report.gpu_name == "Tesla T4" and report.compute_capability == (7, 5)
    assert any("GPU memory" in note and "illegal memory access" in note for note in report.notes)
    assert "unknown" in str(report)


def test_failing_capability_probe_falls_back_to_float16(fake_gpu, monkeypatch: pytest.MonkeyPatch, not_colab) -> None:
    fake_gpu({0: (8, 0)})

    def boom(device=None):
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setattr(torch.cuda, "get_device_capability", boom)
    report = hardware_report()
    assert report.compute_capability is None
    assert report.recommended_dtype == "float16"
    assert any("compute capability" in note and "insufficient" in note for note in report.notes)


def test_failing_ram_and_disk_probes_give_none_and_notes(monkeypatch: pytest.MonkeyPatch, no_gpu, not_colab) -> None:
    def boom(*args, **kwargs):
        raise OSError("probe failed")

    monkeypatch.setattr("psutil.virtual_memory", boom)
    monkeypatch.setattr("shutil.disk_usage", boom)
    report = hardware_report()
    assert report.ram_total_bytes is None and report.ram_available_bytes is None
    assert report.disk_free_bytes is None
    assert sum("probe failed" in note for note in report.notes) == 2
    assert "unknown" in str(report)


def test_html_escapes_every_value(fake_gpu, not_colab) -> None:
    fake_gpu({0: (7, 5)}, name="<script>alert('x')</script> & T4")
    page = hardware_report()._repr_html_()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; T4" in page


def test_report_is_frozen() -> None:
    report = HardwareReport(device="cpu")
    with pytest.raises(AttributeError):
        report.device = "cuda"  # type: ignore[misc]


# --------------------------------------------------------------------------- colab, doctor, import


def test_is_colab_false_outside_colab(not_colab) -> None:
    assert is_colab() is False


@pytest.mark.parametrize("var", ["COLAB_RELEASE_TAG", "COLAB_GPU"])
def test_is_colab_from_env_var(not_colab, monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, "release-colab_20250101-060000_RC00")
    assert is_colab() is True


def test_is_colab_from_google_colab_module(not_colab, monkeypatch: pytest.MonkeyPatch, no_gpu) -> None:
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert is_colab() is True
    report = hardware_report()
    assert report.is_colab is True
    assert "yes" in dict(report.rows())["Colab"]


def test_doctor_prints_and_returns_the_report(capsys, no_gpu, not_colab, tmp_path) -> None:
    report = doctor(tmp_path)
    out = capsys.readouterr().out
    assert isinstance(report, HardwareReport)
    assert report.disk_path == str(tmp_path)
    assert out.strip() == str(report).strip()
    assert "Recommended dtype" in out and "float32" in out


def test_import_does_not_touch_cuda() -> None:
    code = (
        "import torch\n"
        "def boom(*a, **k): raise SystemExit('CUDA was touched at import')\n"
        "for name in ('is_available', 'init', 'get_device_capability', 'mem_get_info', 'get_device_name'):\n"
        "    setattr(torch.cuda, name, boom)\n"
        "import mllm_nb.hardware\n"
        "assert not torch.cuda.is_initialized()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
