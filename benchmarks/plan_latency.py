"""How long planning takes: ``mllm-nb fit`` in a fresh process and ``mn.fit`` again in a warm session.

Issue 17, P7: ``mllm-nb fit <catalog id>`` <= 3 s cold; ``mn.fit`` for a catalog id <= 0.5 s after the first
call in a session. Catalog models are planned from stored figures (``mllm_nb/catalog_figures.json``), so
neither torch nor transformers is imported; for comparison, the same plans from a transformers config (the
architecture built on the meta device, as for a model outside the catalog) are timed side by side.

    python benchmarks/plan_latency.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

IDS = (
    "llava-hf/llava-1.5-7b-hf",
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "google/gemma-3-4b-it",
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
    "meta-llama/Llama-3.2-11B-Vision-Instruct",
)


def cold_cli(model_id: str) -> float:
    """Wall time of ``mllm-nb fit`` in a new Python process (exit 1 = does not fit, still a plan)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mllm_nb.cli", "fit", model_id, "--target", "t4"], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"mllm-nb fit {model_id} failed:\n{done.stderr}")
    return elapsed


def main() -> None:
    import mllm_nb as mn
    from mllm_nb import catalog

    cold = {model_id: cold_cli(model_id) for model_id in IDS}
    first = time.perf_counter()
    mn.fit(IDS[0], target="t4")
    first_call = time.perf_counter() - first
    warm = {}
    for model_id in IDS[1:]:
        start = time.perf_counter()
        mn.fit(model_id, target="t4")
        warm[model_id] = time.perf_counter() - start
    from_config = {}
    for model_id in IDS[1:]:
        config = catalog.get(model_id).build_config()
        start = time.perf_counter()
        mn.fit(config, target="t4")
        from_config[model_id] = time.perf_counter() - start

    print(f"{'model':44} {'cold CLI s':>11} {'warm fit s':>11} {'from config s':>14}")
    for model_id in IDS:
        warm_text = f"{warm[model_id]:11.3f}" if model_id in warm else f"{'(first)':>11}"
        config_text = f"{from_config[model_id]:14.2f}" if model_id in from_config else ""
        print(f"{model_id:44} {cold[model_id]:11.2f} {warm_text} {config_text}")
    print(f"first mn.fit in this session: {first_call:.3f} s")
    worst_cold, worst_warm = max(cold.values()), max(warm.values())
    ratio = statistics.median(from_config.values()) / statistics.median(warm.values())
    print(f"P7 cold `mllm-nb fit`: max {worst_cold:.2f} s (bar 3 s) {'OK' if worst_cold <= 3 else 'OVER'}")
    print(f"P7 warm `mn.fit`: max {worst_warm:.4f} s (bar 0.5 s) {'OK' if worst_warm <= 0.5 else 'OVER'}")
    print(f"planning from a built config (meta device) / from stored figures, median: {ratio:.0f}x")


if __name__ == "__main__":
    main()
