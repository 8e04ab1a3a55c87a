"""The LoRA training planner: catalog plans on a T4, refusal with the fixes, bad settings, and the plan
checked against the memory one training step of a tiny LLaVA really uses on CPU."""

from __future__ import annotations

import subprocess
import sys
import weakref
from typing import Any

import pytest

import mllm_nb as mn
from mllm_nb.errors import MllmNbError
from mllm_nb.memory.training import TrainingPlan, TrainingSettings, plan_training

LLAVA = "llava-hf/llava-1.5-7b-hf"
QWEN = "Qwen/Qwen2.5-VL-3B-Instruct"
GB = 10**9


# --------------------------------------------------------------------------- catalog models on a T4


def test_llava_7b_qlora_fits_a_t4_with_a_believable_total() -> None:
    plan = plan_training(LLAVA, TrainingSettings(rank=16, batch_size=1, text_tokens=256), target="t4")
    assert plan.fits and plan.sequence_length == 576 + 256
    # LoRA on q,k,v,o,gate,up,down of 32 layers: 16 x (7h + 2Hd + 2KVd + 3I) each, plus the 2-layer projector
    assert plan.lora_params == 16 * 32 * (7 * 4096 + 4 * 4096 + 3 * 11008) + 16 * (1024 + 3 * 4096)
    assert plan.gradient_bytes == 4 * plan.lora_params and plan.optimizer_bytes == 8 * plan.lora_params
    assert 4.0 * GB < plan.weights_bytes < 5.0 * GB  # NF4 base plus embeddings/head upcast to fp32
    assert 5 * GB < plan.total_bytes < 10 * GB
    assert plan.total_bytes == plan.weights_bytes + plan.training_bytes + plan.overhead_bytes
    text = str(plan)
    assert text.startswith(f"{LLAVA} LoRA training fits on T4") and "AdamW state" in text


def test_qwen_3b_fits_with_448px_images_and_not_at_its_largest_image() -> None:
    small = plan_training(QWEN, TrainingSettings(image_tokens=258, text_tokens=256), target="t4")
    assert small.fits and 4 * GB < small.total_bytes < 9 * GB
    assert small.logits_bytes == 514 * 151936 * 14  # fp16 logits + fp32 log-softmax and two fp32 gradients
    largest = plan_training(QWEN, TrainingSettings(text_tokens=256), target="t4")
    assert not largest.fits and largest.sequence_length == 16386 + 256
    assert any("fewer image tokens" in tip for tip in largest.suggestions)


def test_planning_a_catalog_id_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, mllm_nb as mn\n"
        f"p = mn.plan_training({LLAVA!r}, mn.TrainingSettings(), target='t4')\n"
        f"r = mn.fit({QWEN!r}, target='t4', training=mn.TrainingSettings(image_tokens=258))\n"
        "assert p.fits and r.training.fits, (p, r)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_batch_8_without_checkpointing_at_long_sequences_is_refused_with_the_fixes() -> None:
    settings = TrainingSettings(rank=16, batch_size=8, gradient_checkpointing=False, sequence_length=2048)
    plan = plan_training(LLAVA, settings, target="t4")
    assert not plan.fits and plan.total_bytes > plan.available_bytes
    assert plan.activation_bytes > 10 * plan.weights_bytes  # 32 layers x 8 x 2048 tokens of activations
    with pytest.raises(mn.WontFitError) as info:
        plan.raise_if_wont_fit()
    message = str(info.value)
    assert info.value.report is plan and "\n" not in message
    for fix in ("gradient_checkpointing=True", "batch_size=1 with gradient_accumulation=8", "rank=8", "T4 has 15.8 GB"):
        assert fix in message, fix
    # each fix is applied on top of the ones before; batch 1 with checkpointing fits
    relaxed = plan_training(LLAVA, TrainingSettings(batch_size=1, gradient_accumulation=8, sequence_length=2048), target="t4")
    assert relaxed.fits and f"needs {mn.hardware.format_bytes(relaxed.total_bytes)}, fits" in message


def test_checkpointing_and_batch_move_the_activations_the_right_way() -> None:
    def activations(**kwargs: Any) -> int:
        return plan_training(LLAVA, TrainingSettings(**kwargs), target="t4").activation_bytes

    assert activations(gradient_checkpointing=False) > 5 * activations(gradient_checkpointing=True)
    assert activations(batch_size=4) > 3 * activations(batch_size=1)
    assert activations(attention="eager", gradient_checkpointing=False) > activations(gradient_checkpointing=False)
    rank_64 = plan_training(LLAVA, TrainingSettings(rank=64), target="t4")
    assert rank_64.lora_params == 4 * plan_training(LLAVA, TrainingSettings(rank=16), target="t4").lora_params


def test_fit_with_training_answers_for_training() -> None:
    report = mn.fit(LLAVA, target="t4", training=TrainingSettings(text_tokens=256))
    assert isinstance(report.training, TrainingPlan) and report.fits
    assert "LoRA training fits the T4" in report.summary()
    assert any(label == "training" for label, _ in report.rows())
    heavy = mn.fit(LLAVA, target="t4", training=TrainingSettings(batch_size=8, gradient_checkpointing=False, sequence_length=2048))
    assert not heavy.fits and heavy.gpu_fits  # inference fits, training does not
    with pytest.raises(mn.WontFitError, match="gradient_checkpointing=True"):
        heavy.raise_if_wont_fit()
    assert "Training suggestions" in str(heavy)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rank": 0}, {"batch_size": -1}, {"rank": "16"}, {"rank": 2.5}, {"gradient_checkpointing": "yes"},
        {"sequence_length": 0}, {"gradient_accumulation": 0}, {"target_modules": "everything"},
        {"target_modules": ["q_proj", "wrong"]}, {"projector": "train"}, {"attention": "flash"}, {"n_images": -1},
    ],
)  # fmt: skip
def test_bad_settings_raise_one_sentence(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MllmNbError) as info:
        TrainingSettings(**kwargs)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".") and next(iter(kwargs)) in message


def test_bad_arguments_raise_one_sentence() -> None:
    with pytest.raises(MllmNbError, match=r"must be a mllm_nb\.TrainingSettings"):
        plan_training(LLAVA, {"rank": 8})  # type: ignore[arg-type]
    with pytest.raises(MllmNbError, match="does not generate text"):
        plan_training("openai/clip-vit-base-patch32", target="t4")
    with pytest.raises(MllmNbError, match="Unknown target"):
        plan_training(LLAVA, target="tpu")
    with pytest.raises(MllmNbError, match="Unknown quantization"):
        plan_training(LLAVA, quantization="3bit", target="t4")


def test_lora_counts_from_the_config_match_the_real_modules() -> None:
    """The catalog path's shapes formula against the Linear layers of the model built on the meta device."""
    import torch
    from transformers import AutoModelForImageTextToText

    from mllm_nb import catalog

    for model_id, projector in ((LLAVA, "lora"), (QWEN, "frozen")):
        settings = TrainingSettings(rank=16, projector=projector)
        with torch.device("meta"):
            built = AutoModelForImageTextToText.from_config(catalog.get(model_id).build_config())
        exact = plan_training(built, settings, target="t4")
        assert exact.lora_params == plan_training(model_id, settings, target="t4").lora_params, model_id


# --------------------------------------------------------------------------- measured on CPU


class _LivePeak:
    """The peak of bytes allocated by tensor operations (storages new to the operation), tracked by a
    ``TorchDispatchMode`` that watches every output storage until it is freed."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                return tracker.record(func(*args, **(kwargs or {})), (args, kwargs))

        self.mode = _Mode()
        self.live = self.peak = 0
        self.refs: dict[int, weakref.ref] = {}

    def record(self, out: Any, inputs: Any) -> Any:
        import torch
        from torch.utils._pytree import tree_leaves

        seen = {id(t.untyped_storage()) for t in tree_leaves(inputs) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in self.refs or key in seen:  # views and in-place results allocate nothing
                continue
            size = storage.nbytes()
            self.live += size
            self.refs[key] = weakref.ref(storage, lambda _, key=key, size=size: self.freed(key, size))
        self.peak = max(self.peak, self.live)
        return out

    def freed(self, key: int, size: int) -> None:
        self.refs.pop(key, None)
        self.live -= size

    def __enter__(self) -> _LivePeak:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)


def _tiny_llava(vocab: int, attention: str) -> Any:
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
        ),
        text_config=LlamaConfig(
            hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=vocab, pad_token_id=0,
        ),
        image_token_index=4, vision_feature_select_strategy="default", image_seq_length=16,
    )  # fmt: skip
    config._attn_implementation = attention
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config)


def _measure_step(model: Any, settings: TrainingSettings) -> dict[str, int]:
    """Wrap ``model`` in LoRA as finetune does and measure a steady-state AdamW step: exact adapter and
    optimizer-state bytes, plus the peak of everything the step allocates (activations, logits, gradients)."""
    import torch
    from peft import LoraConfig, get_peft_model

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if settings.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)
        kwargs = {"use_reentrant": False}
        enable(activation_checkpointing_kwargs=kwargs) if enable else model.gradient_checkpointing_enable(kwargs)
    leaves = "|".join(settings.targets)
    pattern = rf"(?:model\.language_model\..*\b(?:{leaves})|model\.multi_modal_projector\.linear_\d)"
    peft_model = get_peft_model(model, LoraConfig(r=settings.rank, lora_alpha=16, lora_dropout=0.0, target_modules=pattern))
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.text_config.vocab_size
    ids = torch.randint(10, vocab, (settings.batch_size, settings.sequence_length), generator=generator)
    ids[:, 1:17] = model.config.image_token_index
    batch = {"input_ids": ids, "labels": ids, "pixel_values": torch.randn(settings.batch_size, 3, 32, 32, generator=generator)}
    for _ in range(2):  # the first step creates the optimizer state; the second is the steady state
        with _LivePeak() as tracker:
            loss = peft_model(**batch).loss  # like Trainer: only the loss outlives the forward
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del loss
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    return {
        "params": sum(p.numel() for p in trainable),
        "lora_bytes": sum(p.numel() * p.element_size() for p in trainable),
        "optimizer_bytes": sum(t.numel() * t.element_size() for t in state),
        "step_peak": tracker.peak,
    }


CPU_CASES = [
    pytest.param(TrainingSettings(rank=8, batch_size=1, sequence_length=256, gradient_checkpointing=False), 4000, id="no-ckpt-b1"),
    pytest.param(TrainingSettings(rank=8, batch_size=4, sequence_length=256, gradient_checkpointing=True), 4000, id="ckpt-b4"),
    pytest.param(TrainingSettings(rank=16, batch_size=2, sequence_length=192, gradient_checkpointing=True), 512, id="ckpt-small-vocab"),
    pytest.param(
        TrainingSettings(batch_size=2, sequence_length=128, gradient_checkpointing=False, attention="eager"), 512, id="eager"
    ),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("settings", "vocab"), CPU_CASES)
def test_training_plan_is_within_15_percent_of_a_measured_cpu_step(settings: TrainingSettings, vocab: int) -> None:
    model = _tiny_llava(vocab, settings.attention)
    plan = plan_training(model, settings, target="cpu")  # the loaded model: real Linear shapes, float32
    from_config = plan_training(model.config, settings, quantization=None, target="cpu")
    measured = _measure_step(model, settings)
    assert plan.lora_params == measured["params"] == from_config.lora_params
    assert plan.lora_bytes == measured["lora_bytes"] and plan.optimizer_bytes == measured["optimizer_bytes"]
    footprint = measured["lora_bytes"] + measured["optimizer_bytes"] + measured["step_peak"]
    print(f"planned {plan.training_bytes:,} B, measured {footprint:,} B")
    assert abs(plan.training_bytes - footprint) <= 0.15 * footprint, (plan.training_bytes, footprint)
    assert from_config.training_bytes == plan.training_bytes
