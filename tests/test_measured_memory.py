"""Tests for mllm_nb.memory.measured and VLM.memory(): measured memory beside the plan."""

from __future__ import annotations

import pytest
import torch

from mllm_nb.loading import load_vlm
from mllm_nb.memory import measured
from mllm_nb.memory.measured import (
    MeasuredMemory,
    measure_memory,
    process_ram,
    weights_by_device,
)
from mllm_nb.plan import fit


def test_weights_by_device_counts_parameters_and_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
    # Linear: 8*4 + 4 float32; BatchNorm: weight, bias, running mean, running var (4 each) + an int64 counter
    assert weights_by_device(model) == {"cpu": (36 + 16) * 4 + 8}


def test_weights_by_device_counts_tied_weights_once() -> None:
    embed = torch.nn.Embedding(100, 16)
    head = torch.nn.Linear(16, 100, bias=False)
    head.weight = embed.weight
    assert weights_by_device(torch.nn.ModuleDict({"embed": embed, "head": head})) == {"cpu": 100 * 16 * 4}


def test_weights_by_device_half_precision_is_half_the_bytes() -> None:
    model = torch.nn.Linear(64, 64)
    full = weights_by_device(model)["cpu"]
    assert weights_by_device(model.half())["cpu"] * 2 == full


def test_a_4bit_weight_counts_its_packed_storage_and_statistics() -> None:
    bnb = pytest.importorskip("bitsandbytes")
    layer = bnb.nn.Linear4bit(1024, 1024, bias=False, compute_dtype=torch.float32, quant_type="nf4").to("cpu")
    state = layer.weight.quant_state
    assert state is not None  # moving to the CPU quantized it
    stats = [state.absmax, state.code, state.offset, state.state2.absmax, state.state2.code]
    expected = 1024 * 1024 // 2 + sum(t.numel() * t.element_size() for t in stats)
    got = weights_by_device(layer)["cpu"]
    assert got == expected
    assert 1024 * 1024 * 4.1 / 8 < got < 1024 * 1024 * 4.2 / 8  # ~4.13 bits per weight, not 32


def test_measure_memory_on_cpu_has_no_cuda_counters() -> None:
    used = measure_memory(torch.nn.Linear(4, 4), name="probe")
    assert used.model == "probe" and not used.on_gpu
    assert used.allocated_bytes is used.peak_allocated_bytes is used.reserved_bytes is None
    assert used.rss_bytes and used.rss_bytes > 0
    assert [row[0] for row in used.rows()] == ["weights", "process RAM in use", "process RAM peak (plan: loading)"]
    assert used.rows()[0][1] == "—"  # nothing planned


def test_process_ram_is_in_bytes() -> None:
    now, peak = process_ram()
    assert now is not None and 10 * 2**20 < now < 2**40  # a Python process with torch: tens of MB at least
    assert peak is not None and peak >= now * 0.5  # KiB from getrusage were turned into bytes


def test_vlm_memory_puts_the_load_plan_beside_the_measurement(tiny_llava_dir, capsys) -> None:
    vlm = load_vlm(tiny_llava_dir)
    used = vlm.memory()
    assert isinstance(used, MeasuredMemory)
    assert used.planned is vlm.plan
    assert list(used.weights_bytes) == ["cpu"]
    exact = sum(p.numel() * p.element_size() for p in vlm.model.parameters())
    assert exact <= used.total_weights_bytes <= exact + sum(b.numel() * b.element_size() for b in vlm.model.buffers())
    assert abs(used.total_weights_bytes - vlm.plan.weights_bytes) / vlm.plan.weights_bytes < 0.02
    text = str(used)
    lines = text.splitlines()
    assert lines[0] == f"{vlm.name}: memory measured on cpu, planned for cpu (float32)"
    assert lines[1].split() == ["planned", "measured"]
    weights = next(line for line in lines if line.strip().startswith("weights"))
    assert weights.split()[1:3] == weights.split()[3:5]  # planned and measured agree for the tiny model
    assert "KV cache for" in text and "process RAM in use" in text and "GPU" not in text


def test_vlm_memory_replans_when_no_plan_was_kept_and_takes_an_explicit_one(tiny_llava_dir, capsys) -> None:
    vlm = load_vlm(tiny_llava_dir)
    kept = vlm.plan
    vlm.plan = None
    replanned = vlm.memory().planned
    assert replanned is not None and replanned is not kept
    assert replanned.weights_bytes == kept.weights_bytes and replanned.compute_dtype == "float32"
    t4 = fit("llava-hf/llava-1.5-7b-hf", target="t4")
    used = vlm.memory(planned=t4)
    assert used.planned is t4 and "planned for T4 (4bit)" in str(used).splitlines()[0]


def test_vlm_memory_of_a_4bit_model_counts_the_packed_weights(tiny_llava_dir, capsys) -> None:
    pytest.importorskip("bitsandbytes")
    full = load_vlm(tiny_llava_dir).memory().total_weights_bytes
    four = load_vlm(tiny_llava_dir, quantization="4bit").memory()
    assert four.total_weights_bytes < full / 2
    assert abs(four.total_weights_bytes - four.planned.weights_bytes) / four.planned.weights_bytes < 0.05


def test_cuda_branch_reads_the_allocator_of_the_model_gpus(monkeypatch) -> None:
    calls = []

    def counter(value):
        def read(device):
            calls.append(str(device))
            return value
        return read

    monkeypatch.setattr(measured, "weights_by_device", lambda model: {"cpu": 10**8, "cuda:0": 4 * 10**9})
    monkeypatch.setattr(torch.cuda, "memory_allocated", counter(4_200_000_000))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", counter(5_100_000_000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", counter(5_600_000_000))
    plan = fit("llava-hf/llava-1.5-7b-hf", target="t4")
    used = measure_memory(torch.nn.Linear(2, 2), plan, name="llava-hf/llava-1.5-7b-hf")
    assert calls == ["cuda:0"] * 3  # the CPU part of the weights has no allocator to read
    assert (used.allocated_bytes, used.peak_allocated_bytes, used.reserved_bytes) == (4.2e9, 5.1e9, 5.6e9)
    assert used.on_gpu and used.devices == ["cuda:0", "cpu"]
    rows = {what: (planned, got) for what, planned, got in used.rows()}
    assert rows["weights"][1] == "4.10 GB (cuda:0 4.00 GB, cpu 0.10 GB)"
    assert rows["GPU peak allocated"] == (f"{plan.gpu_need_bytes / 1e9:.2f} GB", "5.10 GB")
    assert rows["GPU allocated now"] == ("—", "4.20 GB") and rows["GPU reserved by PyTorch"] == ("—", "5.60 GB")
    assert rows["process RAM in use"][0] == "—"  # a GPU plan predicts the loading peak, not RAM afterwards
    assert rows["process RAM peak (plan: loading)"][0] == f"{plan.peak_load_ram_bytes / 1e9:.2f} GB"
    assert "measured on cuda:0, cpu, planned for T4 (4bit)" in str(used)


def test_html_escapes_the_model_name() -> None:
    used = MeasuredMemory("<script>x</script>", {"cpu": 2048}, rss_bytes=10**9)
    page = used._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<tr>") == 1 + len(used.rows())
