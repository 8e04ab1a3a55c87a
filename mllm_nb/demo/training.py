"""What every fixture training script here shares: seeding, CPU threads, AdamW, the LR schedule, one
optimizer step, the command line (``--out --seed --steps --batch-size``) and writing the fixture folder.

>>> generator = seed_everything(0)
>>> round(lr_factor(0, total=100, warmup=10), 2), round(lr_factor(100, total=100, warmup=10), 2)
(0.1, 0.05)
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

Settings = TypeVar("Settings")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way for batch sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (the fixtures are trained and timed on two cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Run the block with torch's deterministic algorithms: with several CPU threads, the backward pass of
    indexing with repeated indices (``keys[rows]``) otherwise adds its pieces in a varying order, so two runs of
    the same seed drift apart (measured: 2 of 3 short train_llava runs differed, none of 3 with this)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5% of the peak rate at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_adamw(
    named_params: Iterable[tuple[str, torch.nn.Parameter]],
    lr: float,
    weight_decay: float,
    no_decay: Sequence[str] = ("embed",),
) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.98) with weight decay on weight matrices only: not on norms, biases, scalars or
    parameters whose name contains one of ``no_decay``."""
    decay, keep = [], []
    for name, param in named_params:
        (decay if param.ndim >= 2 and not any(part in name for part in no_decay) else keep).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    clip: torch.nn.Module | Iterable[torch.Tensor] | None = None,
) -> None:
    """Backward, optional gradient clipping (norm 1 over ``clip``: a module's or the given parameters), step,
    schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip.parameters() if isinstance(clip, torch.nn.Module) else clip, 1.0)
    optimizer.step()
    scheduler.step()


def settings_from_command_line(
    description: str, defaults: Settings, default_out: Path, argv: Sequence[str] | None = None
) -> tuple[Path, Settings]:
    """``(out, settings)`` from ``--out --seed --steps --batch-size``; the rest of ``defaults`` is kept."""
    import transformers

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=default_out, help="output folder (default: the committed fixture)")
    parser.add_argument("--seed", type=int, default=defaults.seed)  # type: ignore[attr-defined]
    parser.add_argument("--steps", type=int, default=defaults.steps)  # type: ignore[attr-defined]
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)  # type: ignore[attr-defined]
    args = parser.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    return args.out, replace(defaults, seed=args.seed, steps=args.steps, batch_size=args.batch_size)  # type: ignore[type-var]


def write_fixture(out: Path, model: Any, processor: Any, metrics: dict, model_card: str) -> None:
    """Save ``model`` and ``processor`` (safetensors, configs, tokenizer) with ``training_metrics.json`` and the
    ``README.md`` model card into ``out``, every file readable by all (it ships as package data)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(model_card, encoding="utf-8")
    for path in out.iterdir():
        if path.is_file():
            path.chmod(0o644)  # safetensors writes owner-only files
