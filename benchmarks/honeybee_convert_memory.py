"""Peak memory of ``mllm_nb.honeybee.convert`` relative to the largest tensor of the checkpoint.

A randomly initialised Honeybee release (old ``"mllm"`` config, release key names, one pickled
``pytorch_model.bin`` of about 1.5 GB in float32: a 1-layer CLIP-L-wide vision tower, a C-Abstractor
1024 wide, a 1-layer Llama 4096 wide with a 32k vocabulary, so the largest tensors are the 524 MB
embedding and LM head) is written into a temporary folder by a child process. A fresh Python
process then runs ``convert(release, out, tokenizer=None)`` and reports its peak RSS
(``ru_maxrss``, which counts the memory-mapped file pages it touched); a second fresh process only
imports ``mllm_nb.honeybee`` and reports its peak the same way (the baseline). Printed:

    peak RSS, baseline, largest tensor, peak / largest, (peak - baseline) / largest,
    and last the figure (peak - 300 MB) / largest tensor

Bar: peak <= 1.2 x largest tensor + 300 MB, i.e. the figure <= 1.2.
Run: ``.venv/bin/python benchmarks/honeybee_convert_memory.py [--keep]``. Needs ~3.2 GB of disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 10**6
BAR = 1.2
ALLOWANCE = 300 * MB
REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "tests" / "data" / "honeybee" / "c-abs" / "checkpoint" / "last"

_WRITE = r"""
import json, sys, torch
from pathlib import Path
torch.set_num_threads(1)
from mllm_nb.honeybee import HoneybeeForConditionalGeneration
from mllm_nb.honeybee.convert import convert_config

release = Path(sys.argv[1])
old = json.loads(Path(sys.argv[2]).read_text())
old["vision_config"].update(hidden_size=1024, intermediate_size=4096, num_hidden_layers=1, num_attention_heads=16,
                            image_size=224, patch_size=14)
old["text_config"].update(hidden_size=4096, intermediate_size=512, num_hidden_layers=1, num_attention_heads=32,
                          num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
old["visual_projector_config"].update(hidden_size=1024, encoder_hidden_size=1024, num_queries=144)
old["num_query_tokens"] = 144
config = convert_config(old)
with torch.device("meta"):
    shapes = {k: tuple(v.shape) for k, v in HoneybeeForConditionalGeneration(config).state_dict().items()}
back = [("model.vision_tower.", "vision_model.vision_model."), ("model.abstractor.", "abstractor."),
        ("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head.")]
generator = torch.Generator().manual_seed(0)
state = {}
for name, shape in shapes.items():
    prefix, old_prefix = next(p for p in back if name.startswith(p[0]))
    if name == "model.abstractor.pos_emb":
        shape = (1, shape[1] + 1, shape[2])  # the release keeps a CLS row
    state[old_prefix + name[len(prefix):]] = torch.randn(shape, generator=generator) * 0.02
state["vision_model.vision_model.embeddings.position_ids"] = torch.arange(257)[None]
head_dim = 4096 // 32
state["language_model.model.layers.0.self_attn.rotary_emb.inv_freq"] = 1 / 10000 ** (
    torch.arange(0, head_dim, 2).float() / head_dim)
release.mkdir(parents=True)
torch.save(state, release / "pytorch_model.bin")
(release / "config.json").write_text(json.dumps(old, indent=2))
largest = max(t.numel() * t.element_size() for t in state.values())
print(json.dumps({"largest": largest, "total": sum(t.numel() * t.element_size() for t in state.values()),
                  "tensors": len(state)}))
"""

_CONVERT = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from mllm_nb.honeybee import convert
start = time.perf_counter()
convert(sys.argv[1], sys.argv[2], tokenizer=None, progress=False)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - start}))
"""

_BASELINE = r"""
import json, resource
import torch
import mllm_nb.honeybee
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _child(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        sys.exit(f"child process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="honeybee-convert-bench-"))
    try:
        started = time.perf_counter()
        made = _child(_WRITE, str(root / "release" / "last"), str(TEMPLATE / "config.json"))
        size = (root / "release" / "last" / "pytorch_model.bin").stat().st_size
        print(f"release: one pytorch_model.bin of {size / MB:,.0f} MB, {made['tensors']} tensors, "
              f"largest tensor {made['largest'] / MB:,.0f} MB (written in {time.perf_counter() - started:.0f} s)")
        run = _child(_CONVERT, str(root / "release"), str(root / "out"))
        base = _child(_BASELINE)
        peak, baseline, largest = run["peak_kib"] * 1024, base["peak_kib"] * 1024, made["largest"]
        written = sum(p.stat().st_size for p in (root / "out").glob("model*.safetensors"))
        print(f"converted in {run['seconds']:.1f} s to {written / MB:,.0f} MB of safetensors")
        print(f"peak RSS while converting:            {peak / MB:8,.0f} MB")
        print(f"peak RSS of importing mllm_nb.honeybee: {baseline / MB:6,.0f} MB")
        print(f"peak / largest tensor:                 {peak / largest:8.2f}")
        print(f"(peak - baseline) / largest tensor:    {(peak - baseline) / largest:8.2f}")
        figure = (peak - ALLOWANCE) / largest
        verdict = "meets" if figure <= BAR else "misses"
        print(f"bar: peak <= {BAR} x largest + 300 MB = {(BAR * largest + ALLOWANCE) / MB:,.0f} MB -> {verdict} it")
        print(f"(peak - 300 MB) / largest tensor = {figure:.3f}")
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
