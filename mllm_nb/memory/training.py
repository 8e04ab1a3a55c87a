"""Will LoRA fine-tuning fit? GPU memory of one training step, planned before a step runs.

``plan_training(model, TrainingSettings(rank=16, batch_size=1), target="t4")`` sizes QLoRA the way
:func:`mllm_nb.finetune` runs it (peft LoRA on a bitsandbytes 4-bit base, ``prepare_model_for_kbit_training``,
``Trainer`` with 16-bit autocast, AdamW). With ``h`` the decoder's hidden size, ``I`` its MLP width, ``Hd``
and ``KVd`` the widths of the query and key/value projections, ``H`` its heads, ``L`` its layers, ``V`` the
vocabulary, ``r`` the rank, ``T = batch x sequence`` tokens (image tokens included), ``c`` the bytes of the
compute dtype (2 on a GPU, 4 on a CPU) and ``s`` the bytes of the residual stream:

* **weights**: the inference plan's (NF4 for the quantized Linear layers, the rest in the compute dtype), plus
  the upcast peft's ``prepare_model_for_kbit_training`` does on a quantized base: every 16-bit parameter
  that is not 4-bit (embeddings, norms, output layer, vision convolutions) becomes float32.
* **LoRA parameters**: ``r x (in + out)`` for every targeted Linear of the language model, per layer
  ``r x (7h + 2Hd + 2KVd + 3I)`` for ``"all-linear"`` (q, k, v, o, gate, up, down), plus the projector's
  Linear layers (``projector="lora"``; ``"full"`` trains the projector's own weights); float32 (peft keeps
  adapters in fp32). **Gradients** 4 bytes and **AdamW state** 8 bytes (two moments) per trainable parameter.
* **activations** saved for backward, per token and decoder layer: the inputs of the two norms and their
  outputs ``4h x s`` (on a quantized base the upcast embeddings and norms make ``s = 4``; else ``s = c``), the
  16-bit copies autocast makes of those fp32 norm outputs for the q, k, v, gate and up adapters ``5h x c``
  (only when ``s != c``), query/key/value and attention output ``(2Hd + 2KVd) x c`` with SDPA (eager attention
  keeps ``4Hd x c`` and the probabilities ``H x sequence x (4 + c)``), the MLP's gate, up, activation and
  product ``4I x c``, and the adapters' rank-``r`` outputs ``7r x c``.
  Without gradient checkpointing all ``L`` layers are kept; with it only the layer inputs ``(L + 1) x h x s``
  are kept and one layer is recomputed at a time during backward.
* **logits**: the loss upcasts the logits and backward holds their log-softmax and two gradients,
  ``T x V x (12 + c)`` bytes (``T x V x 12`` when computing in fp32) -- the largest term for big vocabularies.
  The activation peak is ``T x (L x layer + h x s) + logits`` without checkpointing and
  ``T x (L + 1) x h x s + max(logits, T x V x c + T x layer)`` with it (the model's output keeps its logits
  while backward recomputes each layer).
* **overhead** (GPU targets): the 512 MiB CUDA context, one dequantized 4-bit weight for forward and one for
  backward, the 16-bit copy autocast makes of the fp32 output layer (quantized base), and an allocator reserve
  of 5% (at least 256 MiB) of everything else. CPU targets get the copies and reserve, no CUDA context.

Gradient accumulation does not change the peak: gradients are kept between micro-batches anyway. The vision
tower is frozen and runs without saving activations; its transient memory is left to the reserve.
A test trains a tiny LLaVA on CPU and checks the trainable part of this plan against the measured peak.

>>> plan = plan_training("llava-hf/llava-1.5-7b-hf", TrainingSettings(rank=16), target="t4")
>>> plan.fits, plan.lora_params
(True, 40189952)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mllm_nb import catalog
from mllm_nb.hardware import format_bytes
from mllm_nb.memory.architecture import text_config
from mllm_nb.memory.arguments import DTYPE_BYTES, QUANT_WORDS, PlanError, parse_dtype, parse_quantization
from mllm_nb.memory.report import Report, WontFitError
from mllm_nb.memory.resolution import ResolvedModel, resolve_model
from mllm_nb.memory.sizes import weight_bytes
from mllm_nb.memory.targets import FIXED_TARGETS, Target, resolve_target
from mllm_nb.memory.tokens import catalog_image_tokens

MIB = 2**20
CUDA_CONTEXT_BYTES = 512 * MIB
RESERVE_FRACTION = 0.05
RESERVE_MIN_BYTES = 256 * MIB
ADAPTER_BYTES = 4  # peft keeps LoRA weights in float32 on a k-bit base
ADAM_BYTES = 8  # AdamW: exp_avg and exp_avg_sq in float32
LOGIT_FP32_BYTES = 12  # log-softmax output + its incoming gradient + the gradient it passes on, fp32 each
DEFAULT_TEXT_TOKENS = 128
#: The Linear layers of a decoder layer LoRA's ``"all-linear"`` targets.
DECODER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Names of vision-to-text projectors (LLaVA families, Qwen-VL's merger, Idefics/SmolVLM's connector, ...).
PROJECTOR_NAMES = ("multi_modal_projector", "merger", "mm_projector", "connector", "visual_projection", "abstractor")
PROJECTOR_MODES = ("lora", "full", "frozen")
ATTENTIONS = ("sdpa", "eager")


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(f"{what} must be a positive integer, got {value!r}.")
    return value


@dataclass(frozen=True)
class TrainingSettings:
    """What one LoRA training step looks like: rank, batch, tokens per example, checkpointing.

    ``sequence_length`` counts every token of one example, image tokens included; None means
    ``n_images`` images (``image_tokens`` each, None: the most the model's processor gives one image)
    plus ``text_tokens`` of text. ``target_modules`` is ``"all-linear"`` (the language model's Linear
    layers; the vision tower stays frozen) or names among ``q_proj ... down_proj``.

    >>> TrainingSettings(rank=8, batch_size=2).rank
    8
    >>> TrainingSettings(rank=0)
    Traceback (most recent call last):
    ...
    mllm_nb.memory.arguments.PlanError: rank must be a positive integer, got 0.
    """

    rank: int = 16
    batch_size: int = 1
    sequence_length: int | None = None
    gradient_checkpointing: bool = True
    gradient_accumulation: int = 1
    target_modules: str | tuple[str, ...] = "all-linear"
    projector: str = "lora"
    n_images: int = 1
    image_tokens: int | None = None
    text_tokens: int = DEFAULT_TEXT_TOKENS
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        for name in ("rank", "batch_size", "gradient_accumulation", "text_tokens"):
            _positive(getattr(self, name), name)
        for name in ("sequence_length", "image_tokens"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), name)
        if isinstance(self.n_images, bool) or not isinstance(self.n_images, int) or self.n_images < 0:
            raise PlanError(f"n_images must be a non-negative integer, got {self.n_images!r}.")
        if not isinstance(self.gradient_checkpointing, bool):
            raise PlanError(f"gradient_checkpointing must be True or False, got {self.gradient_checkpointing!r}.")
        if self.projector not in PROJECTOR_MODES:
            raise PlanError(f"projector must be one of {PROJECTOR_MODES}, got {self.projector!r}.")
        if self.attention not in ATTENTIONS:
            raise PlanError(f"attention must be 'sdpa' or 'eager', got {self.attention!r}.")
        modules = self.target_modules
        if isinstance(modules, str) and modules != "all-linear":
            modules = (modules,)
        if not isinstance(modules, str):
            names = tuple(modules) if isinstance(modules, Iterable) else ()
            unknown = [name for name in names if name not in DECODER_LINEARS]
            if not names or unknown:
                raise PlanError(
                    f"target_modules must be 'all-linear' or names among {', '.join(DECODER_LINEARS)}, "
                    f"got {self.target_modules!r}."
                )
            object.__setattr__(self, "target_modules", names)

    @property
    def targets(self) -> tuple[str, ...]:
        """The decoder Linear names LoRA goes on.

        >>> TrainingSettings(target_modules=["q_proj", "v_proj"]).targets
        ('q_proj', 'v_proj')
        """
        return DECODER_LINEARS if self.target_modules == "all-linear" else tuple(self.target_modules)


def _size(num: int) -> str:
    """GB (two decimals below 10 GB, one above), MB below 0.01 GB.

    >>> _size(7_310_000_000), _size(127_040_000_000), _size(800_000)
    ('7.31 GB', '127.0 GB', '0.8 MB')
    """
    return format_bytes(num, decimals=2, small_unit="MB") if abs(num) < 10**8 else format_bytes(num)


@dataclass(frozen=True)
class TrainingPlan(Report):
    """Whether one training step fits the target, with every term of the sum and what to do instead.

    ``total_bytes = weights + lora + gradients + optimizer + activations + overhead`` against
    ``available_bytes`` (GPU memory, or RAM for CPU targets). ``lora_params`` counts every trainable
    parameter (the adapters, plus the projector with ``projector="full"``).

    >>> plan = plan_training("llava-hf/llava-1.5-7b-hf", target="t4")
    >>> plan.total_bytes == plan.weights_bytes + plan.training_bytes + plan.overhead_bytes
    True
    """

    error = WontFitError

    model_id: str
    target: Target
    quantization: str | None
    compute_dtype: str
    settings: TrainingSettings
    sequence_length: int
    image_tokens: int
    fits: bool
    weights_bytes: int
    upcast_bytes: int  # part of weights_bytes: 16-bit parameters made float32 for k-bit training
    lora_params: int
    lora_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int  # the peak of activations, logits included
    logits_bytes: int  # part of activation_bytes
    layer_activation_bytes: int  # one decoder layer's saved activations for the whole batch
    overhead_bytes: int
    total_bytes: int
    available_bytes: int
    suggestions: tuple[str, ...] = ()
    source: str = ""

    @property
    def training_bytes(self) -> int:
        """What training adds to the loaded model: adapters, gradients, optimizer state and activations.

        >>> plan_training("llava-hf/llava-1.5-7b-hf", target="t4").training_bytes > 0
        True
        """
        return self.lora_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes

    @property
    def margin_bytes(self) -> int:
        """Available minus needed; negative when it does not fit."""
        return self.available_bytes - self.total_bytes

    def subject(self) -> str:
        """The model id."""
        return self.model_id

    def place(self) -> str:
        """`` on <target>``."""
        return f" for LoRA training on {self.target.name}"

    def memory_name(self) -> str:
        """``GPU memory`` or ``RAM``."""
        return "RAM" if self.target.is_cpu else "GPU memory"

    def headline(self) -> str:
        """``<model> LoRA training fits on <target> (<quantization>)``."""
        how = self.quantization or self.compute_dtype
        return f"{self.model_id} LoRA training {self.verdict()} on {self.target.name} ({how})"

    def summary(self) -> str:
        """One sentence: the verdict, the numbers and the fixes.

        >>> plan_training("llava-hf/llava-1.5-7b-hf", target="t4").summary()[:43]
        'llava-hf/llava-1.5-7b-hf LoRA training fits'
        """
        s = self.settings
        step = (
            f"rank {s.rank}, batch {s.batch_size} x {self.sequence_length:,} tokens, "
            f"checkpointing {'on' if s.gradient_checkpointing else 'off'}"
        )
        need = f"{_size(self.total_bytes)} of {self.memory_name()}"
        if self.fits:
            return (
                f"{self.model_id} LoRA training fits the {self.target.name} ({step}): it needs about {need} "
                f"of {_size(self.available_bytes)}."
            )
        parts = (
            f"weights {_size(self.weights_bytes)}, activations {_size(self.activation_bytes)} "
            f"(logits {_size(self.logits_bytes)}), LoRA + gradients + AdamW "
            f"{_size(self.lora_bytes + self.gradient_bytes + self.optimizer_bytes)}"
        )
        fixes = "; ".join(self.suggestions) if self.suggestions else "use a smaller model"
        return (
            f"{self.model_id} LoRA training does not fit the {self.target.name} ({step}): it needs about {need} "
            f"({parts}) but the {self.target.name} has {_size(self.available_bytes)}; to fix it: {fixes}."
        )

    def raise_if_wont_fit(self) -> TrainingPlan:
        """Return self when it fits, else raise ``mllm_nb.WontFitError`` with the one-sentence summary.

        >>> plan_training("llava-hf/llava-1.5-7b-hf", target="t4").raise_if_wont_fit().fits
        True
        """
        self.raise_unless_fits()
        return self

    def table(self) -> list[tuple[str, str]]:
        """(label, value) rows shown by ``str()`` and in a notebook.

        >>> [label for label, _ in plan_training("llava-hf/llava-1.5-7b-hf", target="t4").table()][:3]
        ['model', 'target', 'step']
        """
        s = self.settings
        checkpointing = "on" if s.gradient_checkpointing else "off"
        images = f" ({s.n_images} x {self.image_tokens:,} image + {s.text_tokens} text)" if self.image_tokens else ""
        step = (
            f"rank {s.rank} on {'all linear layers' if s.target_modules == 'all-linear' else ', '.join(s.targets)}, "
            f"projector {s.projector}; batch {s.batch_size} x {self.sequence_length:,} tokens{images}; "
            f"gradient checkpointing {checkpointing}; accumulation {s.gradient_accumulation}"
        )
        loading = f"{QUANT_WORDS[self.quantization]}, compute {self.compute_dtype}"
        weights = _size(self.weights_bytes)
        if self.upcast_bytes:
            weights += f" (incl. {_size(self.upcast_bytes)} for non-4-bit parameters upcast to float32)"
        layers = "one layer recomputed" if s.gradient_checkpointing else "all layers kept"
        per_layer = _size(self.layer_activation_bytes)
        activations = (
            f"{_size(self.activation_bytes)} peak (logits {_size(self.logits_bytes)}; "
            f"{per_layer} per decoder layer, {layers}; {s.attention} attention)"
        )
        sign = "+" if self.margin_bytes >= 0 else "-"
        return [
            ("model", f"{self.model_id} ({self.source})" if self.source else self.model_id),
            ("target", self.target.describe()),
            ("step", step),
            ("loading", loading),
            ("weights", weights),
            ("LoRA", f"{_size(self.lora_bytes)} ({self.lora_params:,} trainable params, float32)"),
            ("gradients", _size(self.gradient_bytes)),
            ("AdamW state", _size(self.optimizer_bytes)),
            ("activations", activations),
            ("overhead", _size(self.overhead_bytes)),
            ("total", f"{_size(self.total_bytes)} needed of {_size(self.available_bytes)} {self.memory_name()}"),
            ("margin", f"{sign}{_size(abs(self.margin_bytes))}"),
        ]

    def sections(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The suggestions, under the table."""
        return (("Suggestions", self.suggestions),)


# --------------------------------------------------------------------------- model shapes


@dataclass(frozen=True)
class _Model:
    """What the formulas need about a model, from a catalog entry, a config or loaded modules."""

    model_id: str
    source: str
    layers: int
    hidden: int
    q_dim: int  # heads x head_dim
    kv_dim: int  # kv_heads x head_dim
    intermediate: int
    heads: int
    vocab: int
    vision_hidden: int
    base_image_tokens: int
    max_image_tokens: int
    inference_weights: int  # bytes as the inference plan counts them
    kept_16bit_params: int  # 16-bit params that are not quantized (upcast to fp32 for k-bit training)
    largest_quant: int  # numel of the largest quantized weight
    quantization: str | None
    dtype: str
    lora_counts: dict[str, int] | None = field(default=None, hash=False)  # exact counts of a loaded model


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def _text_part(config: Any) -> Any:
    if isinstance(config, Mapping):
        return config.get("text_config") or config
    return text_config(config)


def _shape_fields(config: Any, decoder: Any) -> dict[str, int]:
    """Decoder and vision widths read from a config dict or a transformers config."""
    text = _text_part(config)
    heads = int(_get(text, "num_attention_heads", 0) or 0)
    vision = _get(config, "vision_config") or {}
    return {
        "layers": decoder.layers, "hidden": decoder.hidden, "q_dim": heads * decoder.head_dim,
        "kv_dim": decoder.kv_heads * decoder.head_dim, "intermediate": decoder.intermediate, "heads": heads,
        "vocab": int(_get(text, "vocab_size", 0) or _get(config, "vocab_size", 0) or 0),
        "vision_hidden": int(_get(vision, "hidden_size", 0) or _get(vision, "embed_dim", 0) or decoder.hidden),
    }  # fmt: skip


def _from_resolved(model: Any, quantization: str | None, dtype: str) -> _Model:
    """A catalog id, folder, config or Hub id (or one ``fit`` resolved already), planned from its config."""
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    counted = resolved.census
    if not counted.can_generate:
        raise PlanError(
            f"{resolved.model_id} ({counted.architecture}) does not generate text: LoRA fine-tuning plans "
            "image-text-to-text models (pick one with mllm_nb.catalog.table())."
        )
    if resolved.prequantized and quantization != "4bit":
        raise PlanError(f"{resolved.model_id} is saved in 4-bit; plan it with quantization='4bit'.")
    size, _, kept = weight_bytes(counted, quantization, dtype)
    config = resolved.entry.config if resolved.entry is not None else resolved.config
    if resolved.entry is not None:
        base, most = resolved.entry.image_tokens.base, resolved.entry.image_tokens.max
    else:
        base, most = catalog_image_tokens(resolved.config, None, 1)
    fp32 = counted.fp32_params + counted.fp32_strict_params
    return _Model(
        model_id=resolved.model_id, source=resolved.source, **_shape_fields(config, resolved.decoder),
        base_image_tokens=base, max_image_tokens=most, inference_weights=size,
        kept_16bit_params=max(kept - fp32, 0) if DTYPE_BYTES[dtype] == 2 else 0,
        largest_quant=counted.largest_quant if quantization else 0, quantization=quantization, dtype=dtype,
    )  # fmt: skip


def is_linear(module: Any) -> bool:
    """A plain or bitsandbytes-quantized Linear layer (judged by class names, so torch need not be imported).

    >>> import torch
    >>> is_linear(torch.nn.Linear(2, 3)), is_linear(torch.nn.Conv2d(1, 1, 1))
    (True, False)
    """
    names = {cls.__name__ for cls in type(module).__mro__}
    return bool(names & {"Linear", "Linear4bit", "Linear8bitLt"}) and hasattr(module, "in_features")


def decoder_prefix(model: Any) -> str:
    """The qualified name of the language model inside a VLM (``""`` when none is found).

    >>> decoder_prefix(vlm.model)  # doctest: +SKIP
    'model.language_model'
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    names = {id(module): name for name, module in model.named_modules()}
    if decoder is not None and names.get(id(decoder)):
        return names[id(decoder)]
    return next((name for name, _ in model.named_modules() if name.split(".")[-1] == "language_model"), "")


def projector_prefix(model: Any, decoder: str = "") -> str | None:
    """The qualified name of the vision-to-text projector outside ``decoder`` (None when none is known).

    >>> projector_prefix(vlm.model, "model.language_model")  # doctest: +SKIP
    'model.multi_modal_projector'
    """
    for name, _ in model.named_modules():
        if name.split(".")[-1] in PROJECTOR_NAMES and not (decoder and name.startswith(decoder + ".")):
            return name
    return None


def _loaded_quantization(model: Any) -> str | None:
    kinds = {type(p).__name__ for p in model.parameters()}
    return "4bit" if "Params4bit" in kinds else "8bit" if "Int8Params" in kinds else None


def _param_bytes(param: Any) -> int:
    """Bytes of a parameter, with a bitsandbytes 4-bit weight's quantization statistics."""
    size = param.numel() * param.element_size()
    state = getattr(param, "quant_state", None)
    for holder in (state, getattr(state, "state2", None)):
        for name in ("absmax", "code", "offset"):
            value = getattr(holder, name, None) if holder is not None else None
            if hasattr(value, "element_size"):
                size += value.numel() * value.element_size()
    return size


def _linear_counts(model: Any, settings: TrainingSettings) -> dict[str, int]:
    """Exact ``{"lora": params, "full": params}`` of a loaded model for these settings."""
    prefix = decoder_prefix(model)
    counts = {"lora": 0, "full": 0}
    for name, module in model.named_modules():
        inside = bool(prefix) and name.startswith(prefix + ".")
        if inside and is_linear(module) and name.split(".")[-1] in settings.targets:
            counts["lora"] += settings.rank * (module.in_features + module.out_features)
    projector = projector_prefix(model, prefix)
    if projector is not None:
        linears = [m for m in model.get_submodule(projector).modules() if is_linear(m)]
        if settings.projector == "lora":
            counts["lora"] += sum(settings.rank * (m.in_features + m.out_features) for m in linears)
        elif settings.projector == "full":
            counts["full"] += sum(m.in_features * m.out_features + m.out_features for m in linears)
    return counts


def _from_loaded(model: Any, settings: TrainingSettings) -> _Model:
    """A loaded ``mllm_nb.VLM`` or transformers model: real parameters, exact Linear shapes."""
    from mllm_nb.memory.sizes import decoder_shape

    name = getattr(model, "name", None)
    hf = model.model if hasattr(model, "ask") and hasattr(model, "model") else model
    hf = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
    config = getattr(hf, "config", None)
    if config is None or not hasattr(hf, "named_modules"):
        raise PlanError(f"Cannot plan training for a {type(model).__name__}: pass a VLM, a model id or a config.")
    quantization = _loaded_quantization(hf)
    embeddings = hf.get_input_embeddings() if hasattr(hf, "get_input_embeddings") else None
    dtype = parse_dtype(getattr(getattr(embeddings, "weight", None), "dtype", None) or "float32") or "float32"
    params = {id(p): p for p in hf.parameters()}.values()
    buffers = sum(b.numel() * b.element_size() for b in hf.buffers())
    quantized = [p for p in params if type(p).__name__ in ("Params4bit", "Int8Params")]
    quantized_ids = {id(p) for p in quantized}
    kept_16 = sum(p.numel() for p in params if id(p) not in quantized_ids and p.element_size() == 2)
    base, most = catalog_image_tokens(config, None, 1)
    largest = max((p.quant_state.shape.numel() if hasattr(p, "quant_state") else p.numel() for p in quantized), default=0)
    return _Model(
        model_id=str(name or getattr(config, "_name_or_path", "") or type(hf).__name__), source="loaded model",
        **_shape_fields(config, decoder_shape(config)), base_image_tokens=base, max_image_tokens=most,
        inference_weights=sum(_param_bytes(p) for p in params) + buffers,
        kept_16bit_params=kept_16 if quantization else 0, largest_quant=largest, quantization=quantization,
        dtype=dtype, lora_counts=_linear_counts(hf, settings),
    )  # fmt: skip


# --------------------------------------------------------------------------- the sums


def _trainable(m: _Model, s: TrainingSettings) -> tuple[int, int]:
    """(LoRA params, fully trained params) from the exact counts or the config's shapes."""
    if m.lora_counts is not None:
        return m.lora_counts["lora"], m.lora_counts["full"]
    widths = {
        "q_proj": m.hidden + m.q_dim, "k_proj": m.hidden + m.kv_dim, "v_proj": m.hidden + m.kv_dim,
        "o_proj": m.q_dim + m.hidden, "gate_proj": m.hidden + m.intermediate, "up_proj": m.hidden + m.intermediate,
        "down_proj": m.intermediate + m.hidden,
    }  # fmt: skip
    lora = s.rank * m.layers * sum(widths[name] for name in s.targets)
    # the projector taken as two Linear layers: vision width -> hidden -> hidden (LLaVA's)
    if s.projector == "lora":
        lora += s.rank * (m.vision_hidden + 3 * m.hidden)
    full = m.vision_hidden * m.hidden + m.hidden * m.hidden + 2 * m.hidden if s.projector == "full" else 0
    return lora, full


def _layer_bytes_per_token(m: _Model, s: TrainingSettings, sequence: int, residual: int) -> int:
    """Bytes one decoder layer saves for backward per token (see the module docstring)."""
    c = DTYPE_BYTES[m.dtype]
    norms = 4 * m.hidden * residual + 2 * 4  # inputs and outputs of the two norms, and their fp32 rsqrt
    casts = 5 * m.hidden * c if residual != c else 0
    if s.attention == "eager":
        attention = 4 * m.q_dim * c + m.heads * sequence * (4 + (c if c != 4 else 0))
    else:
        attention = (2 * m.q_dim + 2 * m.kv_dim) * c + 4 * m.heads
    return norms + casts + attention + 4 * m.intermediate * c + len(s.targets) * s.rank * c


def _assess(m: _Model, s: TrainingSettings, target: Target) -> TrainingPlan:
    """The plan for one model, settings and target, without suggestions."""
    c = DTYPE_BYTES[m.dtype]
    image_tokens = s.image_tokens or m.max_image_tokens
    sequence = s.sequence_length or image_tokens * s.n_images + s.text_tokens
    tokens = s.batch_size * sequence
    residual = 4 if m.quantization and c == 2 else c
    upcast = m.kept_16bit_params * 2 if m.quantization else 0
    weights = m.inference_weights + upcast
    lora, full = _trainable(m, s)
    params = lora + full
    layer = tokens * _layer_bytes_per_token(m, s, sequence, residual)
    logits = tokens * m.vocab * (LOGIT_FP32_BYTES + (c if c != 4 else 0))
    if s.gradient_checkpointing:  # the model's output keeps its logits while each layer is recomputed
        kept_logits = tokens * m.vocab * c
        activations = tokens * (m.layers + 1) * m.hidden * residual + max(logits, kept_logits + layer)
    else:
        activations = m.layers * layer + tokens * m.hidden * residual + logits
    trainable = params * (ADAPTER_BYTES + 4 + ADAM_BYTES)
    copies = 2 * m.largest_quant * c + (m.vocab * m.hidden * c if upcast else 0)
    reserve = max(RESERVE_MIN_BYTES, int(RESERVE_FRACTION * (weights + trainable + activations)))
    overhead = (0 if target.is_cpu else CUDA_CONTEXT_BYTES) + copies + reserve
    total = weights + trainable + activations + overhead
    available = target.ram_bytes if target.is_cpu else target.gpu_bytes or 0
    return TrainingPlan(
        model_id=m.model_id, target=target, quantization=m.quantization, compute_dtype=m.dtype, settings=s,
        sequence_length=sequence, image_tokens=0 if s.sequence_length else image_tokens, fits=total <= available,
        weights_bytes=weights, upcast_bytes=upcast, lora_params=params, lora_bytes=params * ADAPTER_BYTES,
        gradient_bytes=params * 4, optimizer_bytes=params * ADAM_BYTES, activation_bytes=activations,
        logits_bytes=logits, layer_activation_bytes=layer, overhead_bytes=overhead, total_bytes=total,
        available_bytes=available, source=m.source,
    )  # fmt: skip


# --------------------------------------------------------------------------- what to do instead


def _longest_fitting(m: _Model, s: TrainingSettings, target: Target) -> int:
    """The longest example (tokens) that fits with these settings; 0 when none does."""
    low, high = 0, max(s.sequence_length or 0, 1)
    while _assess(m, replace(s, sequence_length=high), target).fits and high < 1 << 20:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _assess(m, replace(s, sequence_length=middle), target).fits else (low, middle)
    return low


def _needs(plan: TrainingPlan) -> str:
    return f"needs {_size(plan.total_bytes)}{', fits' if plan.fits else ''}"


def _suggestions(m: _Model, s: TrainingSettings, target: Target) -> tuple[str, ...]:
    """The fixes, each applied on top of the ones before, with what the step would then need."""
    tips, best = [], s
    if not s.gradient_checkpointing:
        best = replace(best, gradient_checkpointing=True)
        tips.append(f"turn gradient checkpointing on (gradient_checkpointing=True): {_needs(_assess(m, best, target))}")
    if s.batch_size > 1:
        steps = s.batch_size * s.gradient_accumulation
        best = replace(best, batch_size=1, gradient_accumulation=steps)
        then = "then " if tips else ""
        tips.append(
            f"{then}use batch_size=1 with gradient_accumulation={steps} (the same effective batch): "
            f"{_needs(_assess(m, best, target))}"
        )
    if s.rank > 4:
        best = replace(best, rank=max(4, s.rank // 2))
        then = "then " if tips else ""
        tips.append(f"{then}use a smaller rank (rank={best.rank}): {_needs(_assess(m, best, target))}")
    sequence = _assess(m, best, target).sequence_length
    longest = _longest_fitting(m, replace(best, sequence_length=sequence), target)
    if 0 < longest < sequence:
        with_those = " with those settings" if best != s else ""
        tips.append(
            f"use fewer image tokens (smaller images, e.g. a lower max_pixels in the processor) or shorter texts: "
            f"examples of up to {longest:,} tokens fit{with_those}, not {sequence:,}"
        )
    elif longest == 0:
        tips.append("even one short example does not fit next to the weights: use a smaller model")
    for key, bigger in FIXED_TARGETS.items():
        if (bigger.gpu_bytes or 0) > (target.gpu_bytes or 0) and _assess(m, s, bigger).fits:
            tips.append(f"or use a bigger GPU: as it is, it fits target='{key}' ({bigger.name})")
            break
    return tuple(tips)


def _is_loaded(model: Any) -> bool:
    """A loaded VLM or torch module (not an id, folder, catalog entry, config or config dict)."""
    if isinstance(model, (str, os.PathLike, catalog.CatalogEntry, Mapping)):
        return False
    return hasattr(model, "named_modules") or (hasattr(model, "ask") and hasattr(model, "model"))


def plan_training(
    model: Any,
    settings: TrainingSettings | None = None,
    *,
    quantization: str | None = "4bit",
    target: str | Target = "auto",
    dtype: str | None = None,
) -> TrainingPlan:
    """Plan the memory of one LoRA training step of ``model`` on ``target``; downloads no weights.

    ``model`` is what :func:`mllm_nb.fit` takes (catalog id, folder, config, Hub id) or a loaded
    ``mllm_nb.VLM`` / transformers model, which is planned as loaded (its real parameters, quantization and
    dtype; ``quantization`` is then ignored). ``target`` is ``"auto"`` (this machine), ``"t4"``, ``"l4"``,
    ``"a100-40"``, ``"cpu"`` or a ``Target``; ``dtype`` the compute dtype (None: the target's).
    ``.raise_if_wont_fit()`` refuses with the numbers and the fixes.

    >>> plan = plan_training("Qwen/Qwen2.5-VL-3B-Instruct", TrainingSettings(image_tokens=258), target="t4")
    >>> plan.fits, plan.sequence_length
    (True, 386)
    """
    settings = TrainingSettings() if settings is None else settings
    if not isinstance(settings, TrainingSettings):
        raise PlanError(f"settings must be a mllm_nb.TrainingSettings, got {type(settings).__name__}.")
    where = resolve_target(target)
    if _is_loaded(model):
        described = _from_loaded(model, settings)
    else:
        described = _from_resolved(model, parse_quantization(quantization), parse_dtype(dtype) or where.dtype)
    plan = _assess(described, settings, where)
    return plan if plan.fits else replace(plan, suggestions=_suggestions(described, settings, where))


__all__ = ["TrainingPlan", "TrainingSettings", "WontFitError", "plan_training"]
