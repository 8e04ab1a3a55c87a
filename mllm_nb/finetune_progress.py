"""What a fine-tuning run shows while it trains: one progress bar with the loss, and nothing else.

``Trainer``'s own callbacks print a dictionary per logged step (or an HTML table in notebooks);
:class:`LossBar` replaces them with a single ``tqdm.auto`` bar whose postfix is the latest loss, and
records every logged loss in a :class:`TrainingLog`.

>>> trainer.add_callback(LossBar(log))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class TrainingLog:
    """What a fine-tuning run did: the loss at each step, its settings and how long it took.

    >>> TrainingLog(steps=[1, 2], losses=[2.0, 1.5]).final_loss
    1.5
    """

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    plan: Any = None  # the TrainingPlan checked before the first step
    peak_gpu_bytes: int | None = None  # torch.cuda.max_memory_allocated over the run; None off a GPU
    peak_reserved_bytes: int | None = None  # torch.cuda.max_memory_reserved over the run

    def memory(self) -> str:
        """The planned training memory beside the GPU peak measured while training (two lines).

        >>> print(TrainingLog(peak_gpu_bytes=6_100_000_000, peak_reserved_bytes=6_900_000_000).memory())
        planned:  (no plan)
        measured: 6.10 GB peak allocated by PyTorch on the GPU (6.90 GB reserved)
        """
        planned = "(no plan)" if self.plan is None else self.plan.summary()
        if self.peak_gpu_bytes is None:
            measured = "no GPU counters: this run was on the CPU (on a GPU the peak is measured here)"
        else:
            measured = (
                f"{self.peak_gpu_bytes / 1e9:.2f} GB peak allocated by PyTorch on the GPU "
                f"({(self.peak_reserved_bytes or 0) / 1e9:.2f} GB reserved)"
            )
        return f"planned:  {planned}\nmeasured: {measured}"

    @property
    def final_loss(self) -> float | None:
        """The last logged training loss (None before any step)."""
        return self.losses[-1] if self.losses else None

    def plot(self, ax: Any = None) -> Figure:
        """The training loss against the step, as a matplotlib Figure.

        >>> TrainingLog(steps=[1, 2, 3], losses=[2.0, 1.2, 0.8]).plot()  # doctest: +ELLIPSIS
        <Figure size ...>
        """
        from matplotlib.figure import Figure

        if ax is None:
            figure = Figure(figsize=(5.0, 3.0))
            ax = figure.add_subplot()
        else:
            figure = ax.figure
        ax.plot(self.steps, self.losses, color="tab:blue", linewidth=1.5)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (answer tokens)")
        ax.set_title("Fine-tuning loss")
        if self.losses and min(self.losses) > 0 and max(self.losses) / min(self.losses) > 20:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        figure.tight_layout()
        return figure


class LossBar(TrainerCallback):
    """A ``tqdm.auto`` bar over the training steps showing the loss; logged losses go to ``log``.

    >>> bar = LossBar(TrainingLog(), enabled=False)  # doctest: +SKIP
    """

    def __init__(self, log: Any, enabled: bool = True) -> None:
        self.log = log
        self.enabled = enabled
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, desc="Fine-tuning", unit="step", disable=not self.enabled)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        self.log.steps.append(int(state.global_step))
        self.log.losses.append(loss)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def mixed_precision(device: torch.device) -> dict[str, bool]:
    """``Trainer``'s mixed-precision switches for ``device``: bf16 from sm80 on, fp16 on older GPUs (a T4), none on CPU.

    >>> mixed_precision(torch.device("cpu"))
    {'fp16': False, 'bf16': False}
    """
    if device.type != "cuda":
        return {"fp16": False, "bf16": False}
    bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
    return {"fp16": not bf16, "bf16": bf16}


def checkpointing_arguments(enabled: bool) -> dict[str, Any]:
    """``TrainingArguments`` keywords for (non-reentrant) activation checkpointing, under this transformers' names.

    transformers 5.25 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` (the old name warns).

    >>> list(checkpointing_arguments(True).values())[0]
    True
    """
    import inspect

    from transformers import TrainingArguments

    parameters = inspect.signature(TrainingArguments).parameters
    name = "activation_checkpointing" if "activation_checkpointing" in parameters else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False}}


@contextmanager
def quiet_trainer() -> Iterator[None]:
    """Silence transformers' and peft's info/warning log lines while the trainer starts and runs.

    >>> with quiet_trainer():
    ...     pass
    """
    loggers = [logging.getLogger(name) for name in ("transformers", "peft", "accelerate")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def import_peft() -> Any:
    """Import peft without bitsandbytes' notice about an optional CPU kernel it could not fetch.

    On CPUs with AVX512-BF16, importing bitsandbytes (peft does) tries to download a kernel from the Hub
    that needs ``trust_remote_code`` and logs a warning when it can't: noise for a notebook, and this
    package never trusts remote code. Other bitsandbytes messages are untouched.

    >>> import_peft().__name__
    'peft'
    """
    notice = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = notice.level
    notice.setLevel(logging.ERROR)
    try:
        import bitsandbytes  # noqa: F401  (peft imports it lazily, in the middle of adding adapters)
        import peft
    finally:
        notice.setLevel(level)
    return peft

