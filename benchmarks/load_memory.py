"""Private memory of ``load_vlm(..., quantization="4bit")`` on the CPU, with and without its trim hook.

A randomly initialised llava-style checkpoint (CLIP-L/14-like vision tower, a 6-layer Llama with
2048 hidden units and an 8k vocabulary, about 1.6 GB in float32) is saved in a temporary folder in
three shards of at most 550 MB: the layout of ``llava-hf/llava-1.5-7b-hf`` (three shards, the largest
about a third of the checkpoint), scaled down (``--shard-size 300MB`` gives six smaller shards). Fresh
Python processes then load it with ``load_vlm(folder, quantization="4bit")`` (bitsandbytes NF4 on the
CPU), alternately with the loader's memory hook (``malloc_trim`` before each tensor transformers reads)
and with the hook replaced by a no-op, ``--repeats`` times each; a process that only imports what loading
imports gives the baseline. Colab's RAM limit counts private (anonymous) memory, not the clean
file-backed pages of memory-mapped shards, so the figures are peaks of ``RssAnon`` (``/proc/PID/status``,
polled every 2 ms); peak RSS is printed beside them. The figures:

    hook / no hook = (private peak with the hook - baseline) / (private peak without - baseline), medians
    (private peak with the hook - baseline) / size of the largest shard

On a CPU-only machine the loaded 4-bit model itself (about 320 MB here) stays in RAM and is part of
the difference; on Colab it goes to the GPU. The hook stays in ``mllm_nb.loading`` only while the first
figure is <= 0.80 (at least 20% less private memory). Bar for the second: <= 1.2.
Run: ``.venv/bin/python benchmarks/load_memory.py [--dtype float32|float16] [--shard-size 550MB] [--repeats 3]``.
The last line is the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 10**6
SHARD = "550MB"  # three shards, the largest about a third of the checkpoint, as llava-1.5-7b-hf

_IMPORTS = """
import importlib.util, json, resource, sys, types
import torch, transformers, bitsandbytes
import mllm_nb, mllm_nb.loading, mllm_nb.vlm
from transformers.models.llava import modeling_llava, processing_llava
"""

_STUB_PLANNER = """
if importlib.util.find_spec("mllm_nb.plan") is None:  # the planner is not in this checkout yet: say it fits
    from dataclasses import dataclass, field
    @dataclass
    class _Target:
        name: str = "cpu"
        gpu_bytes: int | None = None
    @dataclass
    class _Report:
        fits: bool = True
        weights_bytes: int = 0
        compute_dtype: str = "float32"
        target: _Target = field(default_factory=_Target)
        suggestions: list = field(default_factory=list)
    plan = types.ModuleType("mllm_nb.plan")
    plan.fit = lambda *a, **k: _Report()
    plan.WontFitError = type("WontFitError", (mllm_nb.errors.MllmNbError,), {})
    sys.modules["mllm_nb.plan"] = plan
    print("note: mllm_nb.plan is absent; a stub planner said the model fits", file=sys.stderr)
"""

#: The loader's memory hook in mllm_nb.loading (a context manager): on in "trim", replaced by a no-op in "none".
HOOK = "_trim_between_tensors"
VARIANTS = ("none", "trim")

_REPORT = "print(json.dumps({'peak_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))"


def build_checkpoint(folder: Path, dtype: str, shard_size: str = SHARD) -> None:
    """Save the random llava-style model in ``dtype`` shards of at most ``shard_size`` (in a child process)."""
    code = f"""
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=4, num_attention_heads=16,
                          image_size=224, patch_size=14)
text = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=6, num_attention_heads=16,
                   num_key_value_heads=16, vocab_size=8192)
config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=8000)
torch.manual_seed(0)
model = LlavaForConditionalGeneration(config).to(torch.{dtype})
model.save_pretrained({str(folder)!r}, max_shard_size={shard_size!r})
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast
vocab = {{("<image>" if i == 8000 else "<pad>" if i == 0 else f"t{{i}}"): i for i in range(8192)}}
tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<pad>")), pad_token="<pad>",
                                    extra_special_tokens={{"image_token": "<image>"}})
LlavaProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer, patch_size=14,
               vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained({str(folder)!r})
print(sum(p.numel() for p in model.parameters()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    print(f"checkpoint: {int(out.stdout.split()[-1]) / 1e6:.0f}M parameters in {dtype}")


def child_peaks(body: str) -> tuple[int, int, int]:
    """Run ``body`` after the common imports in a fresh interpreter.

    Returns its peak RSS (``ru_maxrss``, reported by the child itself), the peak of its private,
    anonymous memory (``RssAnon`` in ``/proc/PID/status``, polled every 2 ms) and the model footprint it
    printed (0 if none), all in bytes.
    """
    code = _IMPORTS + body + "\n" + _REPORT
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_anon = 0
    while child.poll() is None:
        peak_anon = max(peak_anon, _rss_anon(child.pid))
        time.sleep(0.002)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"child failed:\n{stderr[-3000:]}")
    footprint = 0
    for line in stderr.splitlines():
        if line.startswith("note:"):
            print(line)
        elif line.startswith("footprint:"):
            footprint = int(line.split()[-1])
    return json.loads(stdout.strip().splitlines()[-1])["peak_kib"] * 1024, peak_anon, footprint


def _rss_anon(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"RssAnon:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="dtype stored in the shards")
    parser.add_argument("--shard-size", default=SHARD, help=f"largest shard, e.g. 300MB (default {SHARD})")
    parser.add_argument("--repeats", type=int, default=3, help="loads per variant, interleaved (medians are shown)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="mllm_nb_load_memory_"))
    try:
        build_checkpoint(folder, args.dtype, args.shard_size)
        shards = sorted(folder.glob("*.safetensors"))
        largest = max(p.stat().st_size for p in shards)
        total = sum(p.stat().st_size for p in shards)
        print(f"{len(shards)} shards, {total / MB:.0f} MB in all, largest {largest / MB:.0f} MB")

        baseline, baseline_anon, _ = child_peaks("")
        runs: dict[str, list[tuple[int, int, int]]] = {variant: [] for variant in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:
                runs[variant].append(child_peaks(_disable_hooks(variant) + _load_body(folder)))
        results = {variant: _median_run(found) for variant, found in runs.items()}
        for variant, found in runs.items():
            print(f"{variant}: private peaks over import-only "
                  f"{', '.join(f'{(anon - baseline_anon) / MB:.0f}' for _, anon, _ in found)} MB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _print_results(results, baseline, baseline_anon, largest)


def _disable_hooks(variant: str) -> str:
    """Child code that turns the loader's memory hook off for the "none" variant (benchmark only)."""
    if variant == "trim":
        return ""
    return f"import contextlib\nmllm_nb.loading.{HOOK} = contextlib.nullcontext\n"


def _median_run(found: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """The run whose private peak is the median one (RSS and footprint of that same run)."""
    return sorted(found, key=lambda run: run[1])[len(found) // 2]


def _load_body(folder: Path) -> str:
    return (
        _STUB_PLANNER
        + f"vlm = mllm_nb.loading.load_vlm({str(folder)!r}, quantization='4bit')\n"
        + "import bitsandbytes as bnb\n"
        + "n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in vlm.model.modules())\n"
        + "print(f'note: {n4} Linear4bit layers, model footprint '"
        + " f'{vlm.model.get_memory_footprint() / 1e6:.0f} MB', file=sys.stderr)\n"
        + "print(f'footprint: {vlm.model.get_memory_footprint()}', file=sys.stderr)\n"
    )


def _print_results(results: dict, baseline: int, baseline_anon: int, largest: int) -> None:
    print(f"import-only: peak RSS {baseline / MB:.0f} MB, private {baseline_anon / MB:.0f} MB")
    print("variant  private peak - import-only (x largest shard)   RSS peak - import-only (x shard)   in flight")
    for variant, (peak, peak_anon, footprint) in results.items():
        extra, extra_anon = peak - baseline, peak_anon - baseline_anon
        print(f"{variant:<7}  {extra_anon / MB:6.0f} MB ({extra_anon / largest:.2f})"
              f"{'':>24}{extra / MB:6.0f} MB ({extra / largest:.2f}){'':>14}{(extra - footprint) / largest:.2f}")
    without, with_trim = (results[v][1] - baseline_anon for v in VARIANTS)
    print(f"private peak over import-only, with the trim hook / without it = {with_trim / without:.2f}"
          "  (the hook stays only while this is <= 0.80)")
    print(f"(private peak - baseline) / largest shard = {with_trim / largest:.2f}  (bar <= 1.2)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
