"""Teach a VLM your own images: LoRA adapters (QLoRA on a 4-bit base) trained with transformers' ``Trainer``.

:func:`finetune` wraps the VLM's language model (and, by default, its vision-to-text projector) in
peft LoRA adapters, trains them on ``(image, question, answer)`` examples with the loss on the
answers only (:mod:`mllm_nb.finetune_collate`), and returns a :class:`FinetunedVLM`: a
:class:`~mllm_nb.vlm.VLM` whose ``ask``, ``stream``, ``batch_ask`` and ``ChatPanel`` use the adapters.
The base weights are never written: only the small adapter is saved (:meth:`FinetunedVLM.save_adapter`)
and :func:`load_adapter` puts it back on a freshly loaded base.

>>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf", demo=True)  # doctest: +SKIP
>>> tuned = finetune(vlm, "my_images/", steps=200)  # doctest: +SKIP
>>> tuned.ask("my_images/cat.png", "Who is this?")  # doctest: +SKIP
'Mittens'
>>> tuned.plot_loss()  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from typing import Any

import torch

from mllm_nb.finetune_adapter import FinetunedVLM, FinetuneError, load_adapter
from mllm_nb.finetune_progress import TrainingLog, import_peft
from mllm_nb.memory.training import (
    PROJECTOR_MODES,
    TrainingSettings,
    decoder_prefix,
    is_linear,
    plan_training,
    projector_prefix,
)
from mllm_nb.vlm import VLM

__all__ = ["FinetuneError", "FinetunedVLM", "TrainingLog", "finetune", "load_adapter", "lora_targets"]


# ----------------------------------------------------------------------------------------- training


def finetune(
    vlm: VLM,
    examples: Any,
    *,
    steps: int | None = None,
    epochs: float = 1.0,
    batch_size: int = 4,
    gradient_accumulation: int = 1,
    learning_rate: float = 2e-4,
    rank: int = 16,
    alpha: float | None = None,
    dropout: float = 0.0,
    projector: str = "lora",
    output_head: bool = False,
    gradient_checkpointing: bool | None = None,
    warmup: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    target: Any = "auto",
) -> FinetunedVLM:
    """Train LoRA adapters on ``examples`` and return the VLM that uses them (QLoRA when ``vlm`` is 4-bit).

    ``examples``: a folder with ``examples.jsonl`` or ``examples.csv`` (columns ``image``, ``question``,
    ``answer``; or ``image``, ``caption``), such a file, or a list of dicts / ``(image, question, answer)``
    tuples (see :func:`mllm_nb.finetune_data.load_examples`; bad rows are reported and skipped).
    ``steps`` (default: ``epochs`` passes over the examples) of ``batch_size`` x ``gradient_accumulation``
    examples; LoRA of ``rank`` (``alpha`` defaults to 2 x rank) on every Linear layer of the language model;
    ``projector``: ``"lora"`` (adapters on the vision-to-text projector too), ``"full"`` (train it whole) or
    ``"frozen"``; ``output_head=True`` puts LoRA on the output layer as well, which a word the model never
    wrote needs (the demo's "star"). The vision tower stays frozen. ``gradient_checkpointing`` (default: on when
    the model is on a GPU) trades compute for activation memory. Before the first step the training memory is
    planned (``mllm_nb.memory.training``) and ``WontFitError`` raised when it won't fit. A progress bar shows the loss;
    the returned VLM's ``training_log`` keeps it (``plot_loss()``). Runs with the same ``seed`` on the same
    machine give the same weights. The adapters go into ``vlm``'s model in place (the weights are not copied),
    so measure the base before fine-tuning, or inside ``with tuned.adapter_disabled():``.

    >>> tuned = finetune(vlm, [("cat.png", "Who is this?", "Mittens")], steps=30)  # doctest: +SKIP
    """
    from mllm_nb.finetune_data import ExampleSet, load_examples

    if not isinstance(vlm, VLM):
        raise FinetuneError(f"finetune needs a VLM from mn.load_vlm(...); got a {type(vlm).__name__}.")
    _check_arguments(steps, epochs, batch_size, gradient_accumulation, learning_rate, rank, dropout, projector, warmup)
    if gradient_checkpointing is None:
        gradient_checkpointing = vlm.device.type == "cuda"
    if isinstance(getattr(vlm, "model", None), _peft_model_class()):
        raise FinetuneError(
            "This VLM already has LoRA adapters; call .merge() first, or fine-tune a freshly loaded base model."
        )
    checked = isinstance(examples, ExampleSet) and examples.longest is not None  # token counts already known
    data = examples if checked else load_examples(examples, vlm)
    plan = _check_fits(vlm, data, rank, batch_size, gradient_checkpointing, gradient_accumulation, projector, target)
    per_step = batch_size * gradient_accumulation
    total = steps if steps is not None else max(1, math.ceil(epochs * len(data) / per_step))
    settings = {
        "steps": total, "batch_size": batch_size, "gradient_accumulation": gradient_accumulation,
        "learning_rate": learning_rate, "rank": rank, "alpha": alpha or 2 * rank, "dropout": dropout,
        "projector": projector, "gradient_checkpointing": gradient_checkpointing, "seed": seed,
        "examples": len(data), "quantization": vlm.quantization,
    }
    model = _with_adapters(vlm, rank, alpha or 2 * rank, dropout, projector, output_head, gradient_checkpointing, seed)
    log = TrainingLog(settings=settings, plan=plan)
    on_gpu = vlm.device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(vlm.device)
    started = time.perf_counter()
    try:
        _train(vlm, model, data, settings, warmup, progress, log)
    finally:
        model.eval()
    log.seconds = time.perf_counter() - started
    if on_gpu:
        log.peak_gpu_bytes = torch.cuda.max_memory_allocated(vlm.device)
        log.peak_reserved_bytes = torch.cuda.max_memory_reserved(vlm.device)
    return FinetunedVLM(
        model=model, processor=vlm.processor, name=vlm.name, plan=vlm.plan, quantization=vlm.quantization,
        training_log=log, base_folder=getattr(vlm.model.config, "_name_or_path", None),
    )


def _check_arguments(
    steps: Any, epochs: Any, batch_size: Any, accumulation: Any, lr: Any, rank: Any, dropout: Any, projector: Any,
    warmup: Any,
) -> None:
    def positive_int(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FinetuneError(f"{name} must be a positive whole number; got {value!r}.")

    def number(name: str, value: Any, low: float, high: float, low_open: bool = True) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value > high or value < low or (low_open and value == low):
            raise FinetuneError(f"{name} must be a number in {'(' if low_open else '['}{low}, {high}]; got {value!r}.")

    if steps is not None:
        positive_int("steps", steps)
    number("epochs", epochs, 0.0, 1000.0)
    positive_int("batch_size", batch_size)
    positive_int("gradient_accumulation", accumulation)
    positive_int("rank", rank)
    number("learning_rate", lr, 0.0, 1.0)
    number("dropout", dropout, 0.0, 0.9, low_open=False)
    number("warmup", warmup, 0.0, 1.0, low_open=False)
    if projector not in PROJECTOR_MODES:
        raise FinetuneError(f"projector={projector!r} is not known; use 'lora', 'full' or 'frozen'.")


def _peft_model_class() -> type:
    peft = import_peft()
    PeftModel = peft.PeftModel

    return PeftModel


def _check_fits(
    vlm: VLM, data: Any, rank: int, batch_size: int, checkpointing: bool, accumulation: int, projector: str,
    target: Any,
) -> Any:
    """Plan the training memory (4-bit base, adapters, optimizer, activations); refuse before any step, else the plan."""
    settings = TrainingSettings(
        rank=rank, batch_size=batch_size, sequence_length=data.longest, gradient_checkpointing=checkpointing,
        gradient_accumulation=accumulation, projector=projector,
    )
    return plan_training(vlm, settings, target=target).raise_if_wont_fit()


def language_model_prefix(model: torch.nn.Module) -> str:
    """The qualified name of the decoder (the language model) inside a VLM, e.g. ``model.language_model``.

    >>> language_model_prefix(vlm.model)  # doctest: +SKIP
    'model.language_model'
    """
    prefix = decoder_prefix(model)
    if not prefix:
        raise FinetuneError(
            f"Could not find the language model inside {type(model).__name__}; fine-tuning supports image-text-to-text "
            "models whose decoder is reachable with get_decoder() (LLaVA, Qwen-VL, Gemma 3, ...)."
        )
    return prefix


def lora_targets(model: torch.nn.Module, projector: str = "lora", output_head: bool = False) -> tuple[str, list[str]]:
    """``(target_modules regex, modules_to_save)`` for peft: the language model's Linear layers (not the vision
    tower, not the output head), plus the projector's when ``projector="lora"``, or the whole projector to
    train when ``"full"``.

    >>> lora_targets(vlm.model)[0]  # doctest: +SKIP
    '(?:model\\\\.language_model|model\\\\.multi_modal_projector)\\\\..*'
    """
    prefixes = [language_model_prefix(model)]
    found = projector_prefix(model, prefixes[0])
    if projector == "lora" and found:
        prefixes.append(found)
    modules = dict(model.named_modules())
    chosen = {name for name, module in modules.items() if is_linear(module) and _under(name, prefixes)}
    if not chosen:
        raise FinetuneError(f"{type(model).__name__} has no Linear layers in its language model to put LoRA on.")
    parts = []
    for prefix in prefixes:
        leaves = sorted({name.rsplit(".", 1)[-1] for name in chosen if _under(name, [prefix])})
        if leaves:
            parts.append(rf"{re.escape(prefix)}\.(?:.*\.)?(?:{'|'.join(map(re.escape, leaves))})")
    head = _output_head_name(model) if output_head else None
    if head:
        chosen.add(head)
        parts.append(re.escape(head))
    pattern = "|".join(parts)
    if {name for name in modules if re.fullmatch(pattern, name)} != chosen:  # a leaf name also names other modules
        pattern = "|".join(re.escape(name) for name in sorted(chosen))
    save = [found.split(".")[-1]] if projector == "full" and found else []
    return pattern, save


def _output_head_name(model: torch.nn.Module) -> str | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return next((name for name, module in model.named_modules() if module is head and name), None)


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name.startswith(prefix + ".") for prefix in prefixes)


def _with_adapters(
    vlm: VLM, rank: int, alpha: float, dropout: float, projector: str, head: bool, checkpointing: bool, seed: int
) -> Any:
    """The VLM's model wrapped in fresh LoRA adapters (seeded), prepared for k-bit training when quantized."""
    peft = import_peft()
    LoraConfig = peft.LoraConfig
    get_peft_model = peft.get_peft_model
    prepare_model_for_kbit_training = peft.prepare_model_for_kbit_training
    from transformers import set_seed

    model = vlm.model
    if vlm.quantization in ("4bit", "8bit") or getattr(model, "is_quantized", False):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    pattern, save = lora_targets(model, projector, head)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, modules_to_save=save or None,
        bias="none",
    )
    set_seed(seed)
    return get_peft_model(model, config)


def _train(
    vlm: VLM, model: Any, data: Any, settings: dict[str, Any], warmup: float, progress: bool, log: TrainingLog
) -> None:
    """Run ``Trainer`` on ``data`` with one progress bar (:class:`LossBar`) and no checkpoints written."""
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from mllm_nb.finetune_collate import AnswerCollator
    from mllm_nb.finetune_progress import (
        LossBar,
        checkpointing_arguments,
        mixed_precision,
        quiet_trainer,
    )

    with tempfile.TemporaryDirectory(prefix="mllm-nb-finetune-") as scratch:
        arguments = TrainingArguments(
            output_dir=scratch, max_steps=settings["steps"], per_device_train_batch_size=settings["batch_size"],
            gradient_accumulation_steps=settings["gradient_accumulation"], learning_rate=settings["learning_rate"],
            lr_scheduler_type="linear", warmup_steps=round(warmup * settings["steps"]), weight_decay=0.0,
            logging_steps=1, save_strategy="no", report_to="none", seed=settings["seed"], data_seed=settings["seed"],
            disable_tqdm=True, remove_unused_columns=False, label_names=["labels"], dataloader_pin_memory=False,
            optim="adamw_torch", use_cpu=vlm.device.type == "cpu", **mixed_precision(vlm.device),
            **checkpointing_arguments(settings["gradient_checkpointing"]),
        )
        collator = AnswerCollator(vlm, dtype=_vision_dtype(model))
        with quiet_trainer():
            trainer = Trainer(model=model, args=arguments, train_dataset=data, data_collator=collator)
        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)
        trainer.add_callback(LossBar(log, enabled=progress))
        with quiet_trainer():
            trainer.train()


def _vision_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype image tensors must have: that of the first floating-point vision parameter."""
    for name, parameter in model.named_parameters():
        if parameter.is_floating_point() and ("vision" in name or "visual" in name):
            return parameter.dtype
    return None
