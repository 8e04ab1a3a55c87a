"""Will this model fit? Plan GPU memory and system RAM before downloading anything.

``fit(model, quantization="4bit", target="t4")`` builds the model's architecture on the meta device
(no weights, no download for catalog models) and sizes it the way transformers + bitsandbytes load it:

* **Quantized weights**: every ``nn.Linear`` (and GPT-2 ``Conv1D``) that transformers' bitsandbytes
  quantizer does not skip by default (``lm_head``, the last module and tied weights stay; the vision
  tower and projector *are* quantized; a test compares the list with transformers' own). NF4 + double quantization costs ``0.515869`` bytes per parameter
  (4-bit codes, a uint8 absmax per 64 values, an fp32 absmax per 256 blocks) plus ``1092`` bytes per
  tensor (code books); 8-bit costs 1 byte per parameter plus the fp32 per-row scale ``Int8Params.SCB``.
  Biases, norms, embeddings, convolutions and skipped linears stay in the compute dtype; modules a model
  keeps in fp32 stay fp32; tied weights count once; buffers count at their own dtype.
* **KV cache**: ``2 (K, V) x layers x kv_heads x head_dim x dtype bytes`` per token, for
  ``image_tokens_max x n_images + max_new_tokens + 256`` prompt tokens.
* **Overhead** (GPU targets): a 512 MiB CUDA context (kernels, cuBLAS workspace), the prefill activations of
  one decoder layer ``tokens x (6 x hidden + 3 x intermediate) x dtype bytes``, one dequantized weight
  (bitsandbytes dequantizes a 4/8-bit weight per matmul), and a reserve of 5% of weights + KV cache
  (at least 256 MiB) for allocator fragmentation and the growing KV cache; transformers itself plans bnb
  device maps with only 90% of the memory. CPU targets get the same without the CUDA context.
* **Peak RAM while loading**: transformers 5 reads safetensors shard by shard through a memory map, so RAM
  holds about one shard at a time on top of a 1.5 GB baseline (Python, torch, transformers and the CUDA
  runtime); pickled ``.bin`` shards count twice (unpickling materialises the tensors, then they are copied
  into the model). CPU targets also hold the final weights. Unknown shard sizes are taken as 5 GB files,
  the Hub convention (note that transformers 5 ``save_pretrained`` writes up to 50 GB per file).

>>> report = fit("llava-hf/llava-1.5-7b-hf", quantization="4bit", target="t4")
>>> report.fits, round(report.weights_bytes / 1e9, 1)
(True, 4.0)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mllm_nb import catalog
from mllm_nb.hardware import format_bytes
from mllm_nb.memory.architecture import census
from mllm_nb.memory.arguments import DTYPE_BYTES, QUANT_WORDS, PlanError, parse_count, parse_dtype, parse_quantization
from mllm_nb.memory.report import Report, WontFitError  # WontFitError lives there: memory.training raises it too
from mllm_nb.memory.resolution import DEFAULT_SHARD_BYTES, ResolvedModel, resolve_model, stored_bytes
from mllm_nb.memory.sizes import activation_bytes, kv_bytes_per_token, weight_bytes
from mllm_nb.memory.targets import FIXED_TARGETS, TARGETS, Target, resolve_target
from mllm_nb.memory.tokens import catalog_image_tokens
from mllm_nb.memory.training import TrainingPlan, TrainingSettings, plan_training

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

MIB = 2**20
LOAD_BASELINE_RAM_BYTES = 1_500_000_000  # Python + torch + transformers + CUDA runtime, before any weight
CUDA_CONTEXT_BYTES = 512 * MIB
RESERVE_FRACTION = 0.05
RESERVE_MIN_BYTES = 256 * MIB
PROMPT_TOKENS = 256


@dataclass(frozen=True)
class FitReport(Report):
    """Whether a model fits a target, with every number behind the verdict and what to do instead.

    Bytes are exact integers. ``weights_bytes`` sits on the GPU (in RAM for CPU targets);
    ``margin_bytes`` is the tighter of the GPU and RAM margins, negative when it does not fit;
    ``gpu_fits`` is True for CPU targets (nothing has to fit on a GPU).

    >>> r = fit("llava-hf/llava-v1.6-34b-hf", target="t4")
    >>> r.fits, r.gpu_fits
    (False, False)
    """

    error = WontFitError

    model_id: str
    source: str
    quantization: str | None
    compute_dtype: str
    target: Target
    weights_bytes: int
    quantized_params: int
    kept_params: int
    peak_load_ram_bytes: int
    largest_shard_bytes: int | None
    kv_bytes_per_1k_tokens: int
    image_tokens: int
    image_tokens_max: int
    context_length: int | None
    overhead_bytes: int
    fits: bool
    gpu_fits: bool
    ram_fits: bool
    margin_bytes: int
    suggestions: tuple[str, ...] = ()
    planned_tokens: int = 0
    n_images: int = 1
    max_new_tokens: int = 0
    architecture: str = ""
    download_bytes: int | None = None  # the checkpoint's weight files; None: unknown
    prequantized_download_bytes: int | None = None  # the catalog's pre-quantized 4-bit copy, where there is one
    prequantized: bool = False  # the checkpoint itself is saved in 4-bit
    training: TrainingPlan | None = None  # fit(..., training=TrainingSettings(...)): the LoRA training plan

    @property
    def kv_bytes(self) -> int:
        """KV cache for ``planned_tokens``.

        >>> fit("llava-hf/llava-1.5-7b-hf", target="t4").kv_bytes
        704643072
        """
        return self.kv_bytes_per_1k_tokens * self.planned_tokens // 1000

    @property
    def gpu_need_bytes(self) -> int | None:
        """Weights + KV cache + overhead on the GPU; None for CPU targets.

        >>> fit("llava-hf/llava-1.5-7b-hf", target="cpu").gpu_need_bytes is None
        True
        """
        if self.target.is_cpu:
            return None
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    @property
    def ram_need_bytes(self) -> int:
        """System RAM needed: the loading peak, or for CPU targets also weights + KV + overhead.

        >>> r = fit("llava-hf/llava-1.5-7b-hf", target="t4")
        >>> r.ram_need_bytes == r.peak_load_ram_bytes
        True
        """
        if not self.target.is_cpu:
            return self.peak_load_ram_bytes
        running = LOAD_BASELINE_RAM_BYTES + self.weights_bytes + self.kv_bytes + self.overhead_bytes
        return max(self.peak_load_ram_bytes, running)

    def verdict(self) -> str:
        """``"fits"`` or ``"does not fit"``.

        >>> fit("llava-hf/llava-v1.6-34b-hf", target="t4").verdict()
        'does not fit'
        """
        return super().verdict()

    def subject(self) -> str:
        """The model id."""
        return self.model_id

    def place(self) -> str:
        """`` on <target>``, after the verdict in the HTML heading."""
        return f" on {self.target.name}"

    def headline(self) -> str:
        """``<model> fits on <target> (<quantization or dtype>)``."""
        return f"{self.model_id} {self.verdict()} on {self.target.name} ({self.quantization or self.compute_dtype})"

    def summary(self) -> str:
        """One sentence: the verdict with the binding numbers and the first suggestion.

        >>> fit("llava-hf/llava-1.5-7b-hf", target="t4").summary()[:40]
        'llava-hf/llava-1.5-7b-hf fits the T4 in '
        """
        how = f"{self.quantization or self.compute_dtype}"
        if self.training is not None and (self.gpu_fits or self.target.is_cpu) and self.ram_fits:
            return self.training.summary()
        if self.fits:
            return f"{self.model_id} fits the {self.target.name} in {how} with {format_bytes(self.margin_bytes)} to spare."
        if not self.gpu_fits and self.gpu_need_bytes is not None:
            need, memory, has = self.gpu_need_bytes, "GPU memory", self.target.gpu_bytes or 0
        else:
            need, memory, has = self.ram_need_bytes, "RAM", self.target.ram_bytes
        short = f"needs about {format_bytes(need)} of {memory} but the {self.target.name} has {format_bytes(has)}"
        hint = f"; {self.suggestions[0]}" if self.suggestions else ""
        return f"{self.model_id} does not fit the {self.target.name} in {how}: it {short}{hint}."

    def raise_if_wont_fit(self) -> FitReport:
        """Return self when it fits, else raise ``WontFitError`` with the one-sentence summary.

        >>> fit("llava-hf/llava-1.5-7b-hf", target="t4").raise_if_wont_fit().fits
        True
        """
        self.raise_unless_fits()
        return self

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs shown by ``str()`` and the HTML table.

        >>> fit("llava-hf/llava-1.5-7b-hf", target="t4").rows()[0][0]
        'model'
        """
        images = f"{self.n_images} image(s) x {self.image_tokens_max} tokens"
        if self.image_tokens != self.image_tokens_max:
            images += f" (max; {self.image_tokens} for a small image)"
        kv = (
            f"{format_bytes(self.kv_bytes)} for {self.planned_tokens:,} tokens ({images}, {self.max_new_tokens} new, "
            f"{PROMPT_TOKENS} prompt; {format_bytes(self.kv_bytes_per_1k_tokens)} per 1k tokens)"
        )
        weights = (
            f"{format_bytes(self.weights_bytes)} ({self.quantized_params / 1e9:.2f} B params quantized, "
            f"{self.kept_params / 1e9:.2f} B kept in {self.compute_dtype})"
        )
        cuda = "" if self.target.is_cpu else "CUDA context, "
        rows = [
            ("model", f"{self.model_id} ({self.source}, {self.architecture})"),
            ("target", self.target.describe()),
            ("loading", f"{QUANT_WORDS[self.quantization]}, compute {self.compute_dtype}"),
            ("download", self.download_text()),
            ("weights", weights),
            ("KV cache", kv),
            ("overhead", f"{format_bytes(self.overhead_bytes)} ({cuda}activations, reserve)"),
        ]
        if self.gpu_need_bytes is not None:
            rows.append(("GPU", f"{format_bytes(self.gpu_need_bytes)} needed of {format_bytes(self.target.gpu_bytes or 0)}"))
        shard = "unknown, 5 GB assumed" if self.largest_shard_bytes is None else format_bytes(self.largest_shard_bytes)
        ram = f"{format_bytes(self.ram_need_bytes)} needed of {format_bytes(self.target.ram_bytes)} (largest shard {shard})"
        rows.append(("RAM", ram))
        if self.context_length:
            rows.append(("context", f"{self.context_length:,} tokens"))
        if self.training is not None:
            rows.append(("training", _training_row(self.training)))
        rows.append(("margin", f"{'+' if self.margin_bytes >= 0 else '-'}{format_bytes(abs(self.margin_bytes))}"))
        return rows

    table = rows

    def download_text(self) -> str:
        """The bytes this choice downloads, and what the pre-quantized copy would.

        >>> fit("llava-hf/llava-1.5-7b-hf", target="t4").download_text()[:30]
        '14.1 GB of weight files (quant'
        """
        if self.download_bytes is None:
            return "unknown (the weight files' sizes are not known)"
        text = f"{format_bytes(self.download_bytes)} of weight files"
        if self.prequantized:
            text += " (saved in 4-bit)"
        elif self.quantization:
            text += " (quantized while loading)"
        if self.prequantized_download_bytes is not None:
            text += f"; about {format_bytes(self.prequantized_download_bytes)} as a pre-quantized 4-bit copy"
        return text

    def sections(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The suggestions, under the table (and the training plan's, when there is one)."""
        training = self.training.suggestions if self.training is not None else ()
        return (("Suggestions", self.suggestions), ("Training suggestions", training))


def _training_row(plan: TrainingPlan) -> str:
    """The training plan in one table cell: verdict, total and its biggest terms."""
    s = plan.settings
    return (
        f"LoRA rank {s.rank}, batch {s.batch_size} x {plan.sequence_length:,} tokens, checkpointing "
        f"{'on' if s.gradient_checkpointing else 'off'}: {plan.verdict()}, {format_bytes(plan.total_bytes)} needed of "
        f"{format_bytes(plan.available_bytes)} (activations {format_bytes(plan.activation_bytes)}, LoRA + gradients + "
        f"AdamW {format_bytes(plan.lora_bytes + plan.gradient_bytes + plan.optimizer_bytes)})"
    )


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Request:
    """Everything one assessment depends on (alternatives are assessed by replacing fields)."""

    model: ResolvedModel
    quantization: str | None
    dtype: str | None  # None: the target's default
    target: Target
    max_new_tokens: int
    n_images: int


def _overhead(config: Any, tokens: int, dtype: str, largest_quant: int, base: int, gpu: bool) -> int:
    """CUDA context + one layer's prefill activations + a dequantized weight + the allocator reserve."""
    dequantized = largest_quant * DTYPE_BYTES[dtype]
    reserve = max(RESERVE_MIN_BYTES, int(RESERVE_FRACTION * base))
    return (CUDA_CONTEXT_BYTES if gpu else 0) + activation_bytes(config, tokens, dtype) + dequantized + reserve


def _peak_load_ram(model: ResolvedModel, weights: int, target: Target) -> int:
    """RAM while loading: baseline + the largest shard (twice if pickled) (+ the weights on CPU targets)."""
    shard = model.largest_shard
    if shard is None:
        shard = min(DEFAULT_SHARD_BYTES, stored_bytes(model.config, model.census.total_params))
    peak = LOAD_BASELINE_RAM_BYTES + shard * (2 if model.pickled else 1)
    return peak + (weights if target.is_cpu else 0)


def _assess(req: _Request) -> FitReport:
    """The report for one request, without suggestions."""
    model, target = req.model, req.target
    dtype = req.dtype or target.dtype
    counted = model.census
    weights, quantized, kept = weight_bytes(counted, req.quantization, dtype)
    base_tokens, max_tokens = _image_tokens(model, req.n_images)
    text_tokens = req.max_new_tokens + PROMPT_TOKENS if counted.can_generate else 0
    tokens = max_tokens * req.n_images + text_tokens
    kv_1k = kv_bytes_per_token(model.decoder, dtype) * 1000 if counted.can_generate else 0
    kv = kv_1k * tokens // 1000
    largest_quant = counted.largest_quant if req.quantization else 0
    overhead = _overhead(model.decoder, tokens, dtype, largest_quant, weights + kv, not target.is_cpu)
    peak = _peak_load_ram(model, weights, target)
    report = FitReport(
        model_id=model.model_id,
        source=model.source,
        quantization=req.quantization,
        compute_dtype=dtype,
        target=target,
        weights_bytes=weights,
        quantized_params=quantized,
        kept_params=kept,
        peak_load_ram_bytes=peak,
        largest_shard_bytes=model.largest_shard,
        kv_bytes_per_1k_tokens=kv_1k,
        image_tokens=base_tokens,
        image_tokens_max=max_tokens,
        context_length=model.context_length,
        overhead_bytes=overhead,
        fits=False,
        gpu_fits=False,
        ram_fits=False,
        margin_bytes=0,
        planned_tokens=tokens,
        n_images=req.n_images,
        max_new_tokens=req.max_new_tokens,
        architecture=counted.architecture,
        download_bytes=model.download_bytes,
        prequantized_download_bytes=_prequantized_bytes(model, req.quantization),
        prequantized=model.prequantized,
    )
    return _with_verdict(report)


def _image_tokens(model: ResolvedModel, n_images: int) -> tuple[int, int]:
    """(base, max) tokens per image: the catalog's, else counted from the config."""
    if model.entry is not None:
        return model.entry.image_tokens.base, model.entry.image_tokens.per_image(n_images)
    return catalog_image_tokens(model.config, None, n_images)


def _prequantized_bytes(model: ResolvedModel, quantization: str | None) -> int | None:
    """What the catalog's pre-quantized 4-bit copy downloads: 4-bit weights, the rest in the stored dtype."""
    if quantization != "4bit" or model.entry is None or not model.entry.prequantized or model.prequantized:
        return None
    stored = model.entry.stored_dtype if model.entry.stored_dtype in DTYPE_BYTES else "bfloat16"
    return weight_bytes(model.census, "4bit", stored)[0]


def _with_verdict(report: FitReport) -> FitReport:
    """Fill ``fits``, ``gpu_fits``, ``ram_fits`` and ``margin_bytes`` from the needs."""
    target = report.target
    ram_margin = target.ram_bytes - report.ram_need_bytes
    gpu_need = report.gpu_need_bytes
    gpu_margin = None if gpu_need is None else (target.gpu_bytes or 0) - gpu_need
    margin = ram_margin if gpu_margin is None else min(gpu_margin, ram_margin)
    gpu_fits, ram_fits = gpu_margin is None or gpu_margin >= 0, ram_margin >= 0
    return replace(report, gpu_fits=gpu_fits, ram_fits=ram_fits, fits=gpu_fits and ram_fits, margin_bytes=margin)


# --------------------------------------------------------------------------- suggestions


def _family_of(model: ResolvedModel) -> str | None:
    """The catalog family of the model, by catalog entry or by model type."""
    if model.entry is not None:
        return model.entry.family
    model_type = model.model_type
    return next((e.family for e in catalog.entries() if e.config.get("model_type") == model_type), None)


def _suggest_4bit(req: _Request, report: FitReport) -> list[str]:
    """Quantize harder when memory is the problem."""
    if req.quantization == "4bit" or report.gpu_fits and not report.target.is_cpu:
        return []
    alt = _assess(replace(req, quantization="4bit"))
    verb = "fits" if alt.fits else "still does not fit"
    return [f"load it in 4-bit (quantization='4bit'): weights drop to {format_bytes(alt.weights_bytes)} and it {verb}"]


def _suggest_smaller(req: _Request, report: FitReport) -> list[str]:
    """The biggest smaller catalog model of the same family that fits."""
    family = _family_of(req.model)
    params = report.quantized_params + report.kept_params
    for entry in sorted(catalog.entries(family), key=lambda e: -e.params) if family else []:
        if entry.params >= params or entry.id == req.model.model_id:
            continue
        alt = _assess(replace(req, model=resolve_model(entry)))
        if alt.fits:
            size = f"{entry.params / 1e9:.1f} B params"
            return [f"try the smaller {entry.id} ({size}), which fits with {format_bytes(alt.margin_bytes)} to spare"]
    return []


def _suggest_images(req: _Request, report: FitReport) -> list[str]:
    """Fewer images or smaller image tiles when the image tokens tip it over."""
    tips = []
    if report.image_tokens < report.image_tokens_max and report.kv_bytes_per_1k_tokens:
        tokens = report.image_tokens * req.n_images + report.planned_tokens - report.image_tokens_max * req.n_images
        alt_kv = report.kv_bytes_per_1k_tokens * tokens // 1000
        if alt_kv < report.kv_bytes and -report.margin_bytes <= report.kv_bytes - alt_kv:
            tips.append(
                f"use fewer or smaller image tiles (about {report.image_tokens} instead of {report.image_tokens_max} "
                "tokens per image, e.g. resize images to the vision tower's input size): the KV cache shrinks by "
                f"{format_bytes(report.kv_bytes - alt_kv)}"
            )
    if req.n_images > 1 and _assess(replace(req, n_images=1)).fits:
        tips.append("send one image per prompt: with a single image it fits")
    return tips


def _suggest_gpu(req: _Request, report: FitReport) -> list[str]:
    """The smallest preset GPU with more memory where it fits."""
    current = report.target.gpu_bytes or 0
    what = "a GPU runtime" if report.target.is_cpu else "a bigger GPU"
    for key, target in FIXED_TARGETS.items():
        if (target.gpu_bytes or 0) > current and _assess(replace(req, target=target, dtype=None)).fits:
            return [f"use {what}: it fits target='{key}' ({target.name}, {format_bytes(target.gpu_bytes or 0)})"]
    return []


def _suggest_shards(req: _Request, report: FitReport) -> list[str]:
    """Smaller or safetensors shards when loading runs out of system RAM."""
    if report.ram_fits:
        return []
    tips = []
    if req.model.pickled:
        tips.append("use a safetensors copy of the checkpoint: pickled .bin shards need twice their size in RAM while loading")
    if not report.target.is_cpu:
        tips.append(
            "re-save the checkpoint with smaller shards (model.save_pretrained(folder, max_shard_size='2GB')) "
            "or use a runtime with more system RAM"
        )
    return tips


def _suggest_context(report: FitReport) -> list[str]:
    """Warn when the planned tokens exceed the model's context window."""
    if report.context_length and report.planned_tokens > report.context_length:
        return [
            f"the planned {report.planned_tokens:,} tokens exceed the {report.context_length:,}-token context: "
            "use fewer images or a smaller max_new_tokens"
        ]
    return []


def _suggest_prequantized(req: _Request, report: FitReport) -> list[str]:
    """The catalog's pre-quantized 4-bit copy when it downloads fewer bytes."""
    entry, saved = req.model.entry, report.prequantized_download_bytes
    if entry is None or saved is None or report.download_bytes is None or saved >= report.download_bytes:
        return []
    repo = entry.prequantized[0]
    return [
        f"download the pre-quantized {repo} instead (load_vlm('{repo}')): about {format_bytes(saved)} "
        f"instead of {format_bytes(report.download_bytes)}, the same 4-bit weights in memory"
    ]


def _suggestions(req: _Request, report: FitReport) -> tuple[str, ...]:
    """What to do instead, most effective first (the context warning and download tip when it fits)."""
    tips = _suggest_context(report) + _suggest_prequantized(req, report)
    if not report.fits:
        tips = (
            _suggest_4bit(req, report)
            + _suggest_smaller(req, report)
            + _suggest_images(req, report)
            + _suggest_gpu(req, report)
            + _suggest_shards(req, report)
            + tips
        )
    return tuple(dict.fromkeys(tips))


def fit(
    model: Any,
    quantization: str | None = "4bit",
    target: str | Target = "auto",
    dtype: str | torch.dtype | None = None,
    max_new_tokens: int = 512,
    n_images: int = 1,
    training: TrainingSettings | None = None,
) -> FitReport:
    """Plan whether ``model`` fits ``target`` when loaded with ``quantization``; downloads no weights.

    ``model`` is a catalog id, a local checkpoint folder, a transformers config, or another Hub id (then
    only its config.json and shard index are downloaded). ``target`` is ``"auto"`` (this machine),
    ``"t4"``, ``"l4"``, ``"a100-40"``, ``"cpu"`` or a ``Target``. With ``training=TrainingSettings(...)``
    it also plans one LoRA training step (``report.training``, see :mod:`mllm_nb.memory.training`) and
    ``fits`` answers for training.

    >>> r = fit("llava-hf/llava-1.5-13b-hf", quantization="4bit", target="t4")
    >>> r.fits, r.compute_dtype
    (True, 'float16')
    >>> fit("llava-hf/llava-1.5-7b-hf", target="t4", training=TrainingSettings(batch_size=2)).training.fits
    True
    """
    resolved = resolve_model(model)
    if resolved.prequantized and parse_quantization(quantization) != "4bit":
        raise PlanError(f"{resolved.model_id} is saved in 4-bit ({resolved.source}); plan it with quantization='4bit'.")
    req = _Request(
        model=resolved,
        quantization=parse_quantization(quantization),
        dtype=parse_dtype(dtype),
        target=resolve_target(target),
        max_new_tokens=parse_count(max_new_tokens, "max_new_tokens"),
        n_images=parse_count(n_images, "n_images"),
    )
    report = _assess(req)
    report = replace(report, suggestions=_suggestions(req, report))
    if training is None:
        return report
    plan = plan_training(resolved, training, quantization=req.quantization, target=req.target, dtype=req.dtype)
    margin = min(report.margin_bytes, plan.margin_bytes)
    return replace(report, training=plan, fits=report.fits and plan.fits, margin_bytes=margin)


__all__ = [
    "FitReport", "PlanError", "TARGETS", "Target", "TrainingPlan", "TrainingSettings", "WontFitError", "fit",
    "kv_bytes_per_token", "plan_training", "resolve_target", "weight_bytes",
]
