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

import html
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mllm_nb import catalog
from mllm_nb.errors import MllmNbError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PretrainedConfig

GB = 10**9
GIB = 2**30
MIB = 2**20

NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 0.515869: codes + uint8 absmax + nested fp32 absmax
NF4_BYTES_PER_TENSOR = 16 * 4 + 4 + 256 * 4  # 1092: NF4 code book, absmax offset, nested code book
INT8_ROW_SCALE_BYTES = 4  # Int8Params.SCB: one fp32 absmax per output row
LOAD_BASELINE_RAM_BYTES = 1_500_000_000  # Python + torch + transformers + CUDA runtime, before any weight
DEFAULT_SHARD_BYTES = 5 * GB  # the Hub's usual shard size when a checkpoint's own sizes are unknown
CUDA_CONTEXT_BYTES = 512 * MIB
RESERVE_FRACTION = 0.05
RESERVE_MIN_BYTES = 256 * MIB
PROMPT_TOKENS = 256
QUANTIZATIONS = ("4bit", "8bit", None)

_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
_DTYPE_ALIASES = {
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "fp32": "float32", "float": "float32",
}  # fmt: skip
_QUANT_ALIASES = {
    "4bit": "4bit", "4-bit": "4bit", "nf4": "4bit", "int4": "4bit",
    "8bit": "8bit", "8-bit": "8bit", "int8": "8bit",
    "none": None, "": None,
}  # fmt: skip
_QUANT_WORDS = {"4bit": "4-bit NF4 (double quant)", "8bit": "8-bit LLM.int8", None: "no quantization"}
_GENERIC_ERRORS = (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError)


class PlanError(MllmNbError, ValueError):
    """A fit could not be planned: unknown model offline, unreadable folder, or a bad argument."""


class WontFitError(MllmNbError):
    """A model will not fit the target; ``.report`` holds the ``FitReport`` when one was given.

    >>> str(WontFitError("llava needs 21 GB of GPU memory but the T4 has 15.8 GB; use 4-bit."))[:6]
    'llava '
    """

    def __init__(self, report_or_message: FitReport | str) -> None:
        self.report = report_or_message if isinstance(report_or_message, FitReport) else None
        message = report_or_message.summary() if self.report is not None else str(report_or_message)
        super().__init__(message)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """Where the model should run: GPU memory (None = CPU only), system RAM, native bf16.

    >>> Target("T4", gpu_bytes=15_837_691_904, ram_bytes=12_700_000_000, bf16=False).describe()
    'T4 (15.8 GB GPU, 12.7 GB RAM, float16)'
    """

    name: str
    gpu_bytes: int | None
    ram_bytes: int
    bf16: bool

    @property
    def is_cpu(self) -> bool:
        """True when the target has no GPU.

        >>> TARGETS["cpu"].is_cpu
        True
        """
        return self.gpu_bytes is None

    def describe(self) -> str:
        """One line: name, GPU memory, RAM and the 16-bit dtype it computes in.

        >>> TARGETS["a100-40"].describe()
        'A100 40GB (42.4 GB GPU, 83.5 GB RAM, bfloat16)'
        """
        gpu = "no GPU" if self.gpu_bytes is None else f"{_gb(self.gpu_bytes)} GPU"
        dtype = "float32" if self.is_cpu else ("bfloat16" if self.bf16 else "float16")
        return f"{self.name} ({gpu}, {_gb(self.ram_bytes)} RAM, {dtype})"


# Usable GPU memory is what torch.cuda.get_device_properties().total_memory reports on Colab:
# T4 14.75 GiB, L4 22.5 GiB (23,034 MiB of its 24 GB), A100-40GB 39.5 GiB.
_FIXED_TARGETS: dict[str, Target] = {
    "t4": Target("T4", gpu_bytes=int(14.75 * GIB), ram_bytes=12_700_000_000, bf16=False),
    "l4": Target("L4", gpu_bytes=int(22.5 * GIB), ram_bytes=53_000_000_000, bf16=True),
    "a100-40": Target("A100 40GB", gpu_bytes=int(39.5 * GIB), ram_bytes=83_500_000_000, bf16=True),
}


def _cpu_target() -> Target:
    """This machine without its GPU: the RAM available right now."""
    import psutil

    return Target("cpu", gpu_bytes=None, ram_bytes=int(psutil.virtual_memory().available), bf16=False)


class _Targets(Mapping):
    """The preset targets; ``"cpu"`` is measured on each lookup (available RAM changes)."""

    def __getitem__(self, key: str) -> Target:
        return _cpu_target() if key == "cpu" else _FIXED_TARGETS[key]

    def __iter__(self) -> Iterator[str]:
        return iter((*_FIXED_TARGETS, "cpu"))

    def __len__(self) -> int:
        return len(_FIXED_TARGETS) + 1


TARGETS: Mapping[str, Target] = _Targets()


def _auto_target() -> Target:
    """This machine: its CUDA GPU (total memory) when there is one, else the CPU target."""
    from mllm_nb.hardware import BF16_MIN_CAPABILITY, hardware_report

    report = hardware_report()
    if report.device != "cuda" or not report.gpu_total_bytes:
        return _cpu_target()
    capability = report.compute_capability or (0, 0)
    return Target(
        name=f"this machine ({report.gpu_name or 'GPU'})",
        gpu_bytes=int(report.gpu_total_bytes),
        ram_bytes=int(report.ram_available_bytes or report.ram_total_bytes or 0),
        bf16=tuple(capability) >= BF16_MIN_CAPABILITY,
    )


def resolve_target(target: str | Target) -> Target:
    """``"auto"``, a preset name (``"t4"``, ``"l4"``, ``"a100-40"``, ``"cpu"``) or a ``Target`` -> ``Target``.

    >>> resolve_target("T4").name
    'T4'
    """
    if isinstance(target, Target):
        return target
    key = str(target).strip().lower()
    if key == "auto":
        return _auto_target()
    if key not in TARGETS:
        names = ", ".join(repr(name) for name in ("auto", *TARGETS))
        raise PlanError(f"Unknown target {target!r}: use one of {names} or a mllm_nb.plan.Target.")
    return TARGETS[key]


# --------------------------------------------------------------------------- argument parsing


def _quantization(value: str | None) -> str | None:
    """Normalise ``"4bit"``/``"8bit"``/None (and spellings like ``"4-bit"``, ``"none"``)."""
    if value is None:
        return None
    key = str(value).strip().lower()
    if key not in _QUANT_ALIASES:
        raise PlanError(f"Unknown quantization {value!r}: use '4bit', '8bit' or None.")
    return _QUANT_ALIASES[key]


def _dtype_name(dtype: str | torch.dtype | None) -> str | None:
    """``torch.float16`` / ``"fp16"`` / ``"float16"`` -> ``"float16"``; None or ``"auto"`` -> None."""
    if dtype is None:
        return None
    key = str(dtype).removeprefix("torch.").strip().lower()
    if key == "auto":
        return None
    if key not in _DTYPE_ALIASES:
        raise PlanError(f"Unsupported dtype {dtype!r}: use 'float16', 'bfloat16' or 'float32'.")
    return _DTYPE_ALIASES[key]


def _compute_dtype(dtype: str | torch.dtype | None, target: Target) -> str:
    """The dtype asked for, else the target's: bf16 where native, float16 on other GPUs, float32 on CPU."""
    name = _dtype_name(dtype)
    if name is not None:
        return name
    if target.is_cpu:
        return "float32"
    return "bfloat16" if target.bf16 else "float16"


def _count(value: int, what: str) -> int:
    """Check a non-negative integer argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(f"{what} must be a non-negative integer, got {value!r}.")
    return value


# --------------------------------------------------------------------------- the architecture census


@dataclass(frozen=True)
class _Census:
    """What the meta-device model holds, independent of dtype and quantization."""

    architecture: str
    total_params: int
    quant_params: int  # weights of the linears bitsandbytes would quantize
    quant_tensors: int
    quant_rows: int  # their output features (8-bit keeps one fp32 scale per row)
    largest_quant: int  # numel of the biggest one (dequantized per matmul)
    fp32_params: int  # kept in fp32 when loading in float16 (``_keep_in_fp32_modules``)
    fp32_strict_params: int  # kept in fp32 in float16 and bfloat16 (``..._strict``)
    buffer_bytes: int
    can_generate: bool


class _ConfigKey:
    """Hashable wrapper of a config: equal when class and full JSON are equal (for ``lru_cache``)."""

    def __init__(self, config: PretrainedConfig) -> None:
        self.config = config
        self.key = (type(config), config.to_json_string(use_diff=False))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ConfigKey) and other.key == self.key


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers warnings (e.g. harmless default token ids) while building on meta."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _instantiate(config: PretrainedConfig) -> nn.Module:
    """The model class transformers would pick, built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    with torch.device("meta"), _quiet_transformers():
        for auto in (AutoModelForImageTextToText, AutoModelForCausalLM, AutoModel):
            try:
                return auto.from_config(config)
            except (ValueError, KeyError):
                continue
    raise PlanError(
        f"transformers has no model class for config type {type(config).__name__!r}; "
        "upgrade transformers or pick a catalog model (mllm_nb.catalog.table())."
    )


def _skip_modules(model: nn.Module) -> list[str]:
    """Module names bitsandbytes leaves unquantized, found through the model's public methods.

    What transformers' bitsandbytes quantizer skips by default: the output embeddings (``lm_head``),
    the module of the last parameter, modules holding tied weights; plus what the model declares
    (``_keep_in_fp32_modules``, a model class's ``quantization_skip_modules`` such as Honeybee's).
    """
    names = {name for name, module in model.named_modules() if module is model.get_output_embeddings()}
    parameters = [name for name, _ in model.named_parameters()]
    if parameters:
        names.add(parameters[-1].removesuffix(".weight"))  # a last bias names no module: nothing skipped
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    names |= {key.removesuffix(".weight") for pair in tied.items() for key in pair}
    declared = [*sorted(getattr(model, "_keep_in_fp32_modules", None) or []), *getattr(model, "quantization_skip_modules", ())]
    return [*sorted(names - {""}), *declared]


def _matches(name: str, patterns: list[str]) -> bool:
    """Whether module ``name`` is covered by a skip pattern: the pattern names it, a module above it, or its tail."""
    return any(name == p or name.startswith(p + ".") or name.endswith("." + p) for p in patterns)


def _quantizable_types() -> tuple[type, ...]:
    """Module types bitsandbytes replaces: ``nn.Linear`` exactly, and GPT-2's ``Conv1D``."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def _quantized_weights(model: nn.Module) -> dict[int, int]:
    """id(weight) -> output rows, for every linear bitsandbytes would quantize."""
    from torch import nn

    skip = _skip_modules(model)
    found: dict[int, int] = {}
    for name, module in model.named_modules():
        if type(module) not in _quantizable_types() or _matches(name, skip):
            continue
        rows = module.out_features if type(module) is nn.Linear else module.weight.shape[1]
        found[id(module.weight)] = int(rows)
    return found


def _fp32_params(model: nn.Module, attr: str) -> int:
    """Parameters inside the modules listed in ``model.<attr>`` (kept in fp32 by transformers)."""
    patterns = sorted(getattr(model, attr, None) or [])
    if not patterns:
        return 0
    kept = re.compile("|".join(re.escape(pattern) for pattern in patterns))  # transformers' own rule: a search
    return sum(p.numel() for name, p in model.named_parameters() if kept.search(name))


@lru_cache(maxsize=64)
def _census(key: _ConfigKey) -> _Census:
    """Build the model on meta once per distinct config and count what bitsandbytes would do."""
    model = _instantiate(key.config)
    quantized = _quantized_weights(model)
    quant = [(p.numel(), quantized[id(p)]) for _, p in model.named_parameters() if id(p) in quantized]
    can_generate = getattr(model, "can_generate", lambda: False)
    return _Census(
        architecture=type(model).__name__,
        total_params=sum(p.numel() for p in model.parameters()),
        quant_params=sum(n for n, _ in quant),
        quant_tensors=len(quant),
        quant_rows=sum(rows for _, rows in quant),
        largest_quant=max((n for n, _ in quant), default=0),
        fp32_params=_fp32_params(model, "_keep_in_fp32_modules"),
        fp32_strict_params=_fp32_params(model, "_keep_in_fp32_modules_strict"),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        can_generate=bool(can_generate()),
    )


def _register_project_models() -> None:
    """Make ``AutoConfig`` know the model types this package adds (Honeybee)."""
    import mllm_nb.honeybee  # noqa: F401  registration happens at import


def _as_config(config: PretrainedConfig | Mapping[str, Any]) -> PretrainedConfig:
    """Accept a transformers config or a plain config dict (with ``model_type``)."""
    from transformers import AutoConfig, PretrainedConfig

    _register_project_models()

    if isinstance(config, PretrainedConfig):
        return config
    if isinstance(config, Mapping) and "model_type" in config:
        with _quiet_transformers():
            return AutoConfig.for_model(**dict(config))
    raise PlanError("config must be a transformers PretrainedConfig or a config dict with a 'model_type' key.")


def _fp32_kept(census: _Census, dtype: str) -> int:
    """How many kept parameters transformers upcasts to fp32 for this compute dtype."""
    if dtype == "float16":
        return census.fp32_params + census.fp32_strict_params
    if dtype == "bfloat16":
        return census.fp32_strict_params
    return 0


def _quantized_bytes(census: _Census, quantization: str | None) -> int:
    """Bytes of the quantized linear weights with their quantization state."""
    if quantization == "4bit":
        return math.ceil(census.quant_params * NF4_BYTES_PER_PARAM) + census.quant_tensors * NF4_BYTES_PER_TENSOR
    if quantization == "8bit":
        return census.quant_params + census.quant_rows * INT8_ROW_SCALE_BYTES
    return 0


def weight_bytes(
    config: PretrainedConfig | Mapping[str, Any],
    quantization: str | None = "4bit",
    dtype: str | torch.dtype = "float16",
) -> tuple[int, int, int]:
    """``(bytes, quantized_params, kept_params)`` of the loaded weights; kept params are in ``dtype``.

    >>> from mllm_nb import catalog
    >>> size, quantized, kept = weight_bytes(catalog.get("llava-hf/llava-1.5-7b-hf").build_config(), "4bit")
    >>> round(size / 1e9, 2), quantized > 20 * kept
    (4.04, True)
    """
    quant = _quantization(quantization)
    name = _dtype_name(dtype) or "float16"
    census = _census(_ConfigKey(_as_config(config)))
    quantized = census.quant_params if quant else 0
    kept = census.total_params - quantized
    fp32 = min(_fp32_kept(census, name), kept)
    size = _quantized_bytes(census, quant) + (kept - fp32) * _DTYPE_BYTES[name] + fp32 * 4 + census.buffer_bytes
    return size, quantized, kept


def _text_config(config: PretrainedConfig) -> Any:
    """The decoder's config of a multimodal config (the config itself for text-only models)."""
    getter = getattr(config, "get_text_config", None)
    return getter(decoder=True) if getter is not None else config


def kv_bytes_per_token(config: PretrainedConfig, dtype: str = "float16") -> int:
    """KV-cache bytes per token: ``2 x layers x kv_heads x head_dim x dtype bytes`` of the decoder.

    >>> from mllm_nb import catalog
    >>> kv_bytes_per_token(catalog.get("llava-hf/llava-1.5-7b-hf").build_config())
    524288
    """
    text = _text_config(config)
    heads = getattr(text, "num_attention_heads", None)
    layers = getattr(text, "num_hidden_layers", None)
    if not heads or not layers:
        return 0
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return 2 * int(layers) * int(kv_heads) * int(head_dim) * _DTYPE_BYTES[_dtype_name(dtype) or "float16"]


# --------------------------------------------------------------------------- where the model comes from


@dataclass(frozen=True)
class _Model:
    """A resolved ``model`` argument: its config and what is known about its checkpoint files."""

    model_id: str
    source: str
    config: PretrainedConfig
    largest_shard: int | None  # None: unknown
    pickled: bool = False
    entry: catalog.CatalogEntry | None = None


def _stored_bytes(config: PretrainedConfig, params: int) -> int:
    """Checkpoint size guessed from the parameter count and the config's stored dtype (float32 if unset)."""
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = _dtype_name(stored) if stored is not None and str(stored) != "auto" else None
    return params * _DTYPE_BYTES.get(name or "float32", 4)


def _shards_from_index(total: int, count: int) -> int:
    """Largest shard of ``count`` shards totalling ``total`` bytes, filled up to a size limit in order."""
    if count <= 1:
        return total
    return min(math.ceil(total / (count - 1)), max(math.ceil(total / count), DEFAULT_SHARD_BYTES))


def _local_weight_files(folder: Path) -> tuple[list[Path], bool]:
    """(weight files, pickled?) of a local checkpoint folder; empty when there are none."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / name for name in names if (folder / name).is_file()], False
    safetensors = sorted(folder.glob("model*.safetensors"))
    if safetensors:
        return safetensors, False
    return sorted(folder.glob("pytorch_model*.bin")), True


def _from_folder(folder: Path) -> _Model:
    """A local checkpoint folder: its config.json and the sizes of its weight files on disk."""
    from transformers import AutoConfig

    _register_project_models()

    if not (folder / "config.json").is_file():
        raise PlanError(f"Folder '{folder}' has no config.json: pass a checkpoint folder saved with save_pretrained.")
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(folder)
        files, pickled = _local_weight_files(folder)
    except _GENERIC_ERRORS as exc:
        raise PlanError(f"Could not read the checkpoint in '{folder}' ({exc}); check its config.json.") from exc
    largest = max((f.stat().st_size for f in files), default=None)
    return _Model(str(folder), "local config", config, largest, pickled and bool(files))


def _offline_error(model_id: str) -> PlanError:
    """The error for an id that is neither in the catalog nor downloadable."""
    return PlanError(
        f"cannot plan '{model_id}' offline: it is not in the catalog and its config.json can't be downloaded; "
        "pick a catalog model (mllm_nb.catalog.table()) or pass a local folder"
    )


def _download(model_id: str, filename: str) -> str:
    """``hf_hub_download`` of one small file, with Hub errors turned into ``PlanError``."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        return huggingface_hub.hf_hub_download(model_id, filename)
    except errors.HFValidationError as exc:
        raise PlanError(
            f"'{model_id}' is not a catalog model, a local folder or a valid Hub id; check the spelling "
            "or pick one from mllm_nb.catalog.table()."
        ) from exc
    except errors.GatedRepoError as exc:
        raise PlanError(
            f"'{model_id}' is gated on the Hub: accept its licence on huggingface.co and log in "
            "(huggingface_hub.login()), or pick a catalog model."
        ) from exc
    except errors.RepositoryNotFoundError as exc:
        raise PlanError(f"'{model_id}' was not found on the Hub; check the id or pick a catalog model.") from exc
    except errors.RemoteEntryNotFoundError as exc:
        raise PlanError(f"'{model_id}' has no {filename} on the Hub; pass a local checkpoint folder instead.") from exc
    except Exception as exc:  # offline mode, no network, cache miss: all mean "can't get it now"
        raise _offline_error(model_id) from exc


def _from_hub(model_id: str) -> _Model:
    """Any other Hub id: download only config.json (and the shard index for shard sizes)."""
    from transformers import AutoConfig

    _register_project_models()

    config_path = _download(model_id, "config.json")
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(os.path.dirname(config_path))
    except _GENERIC_ERRORS as exc:
        raise PlanError(f"The config.json of '{model_id}' could not be read ({exc}); pass a local folder.") from exc
    return _Model(model_id, "hub config", config, _hub_largest_shard(model_id, config))


def _hub_largest_shard(model_id: str, config: PretrainedConfig) -> int:
    """Largest shard from the Hub's safetensors index; without an index the checkpoint is one file."""
    try:
        index = json.loads(Path(_download(model_id, "model.safetensors.index.json")).read_text())
        total = int(index["metadata"]["total_size"])
        return _shards_from_index(total, len(set(index["weight_map"].values())))
    except (PlanError, *_GENERIC_ERRORS):
        return _stored_bytes(config, _census(_ConfigKey(config)).total_params)


def _from_catalog(entry: catalog.CatalogEntry) -> _Model:
    """A catalog model: its stored config and shard sizes, nothing downloaded."""
    with _quiet_transformers():
        config = entry.build_config()
    return _Model(entry.id, "catalog", config, max(entry.shard_bytes, default=None), entry=entry)


def _looks_like_path(text: str) -> bool:
    """Whether a string that names no existing folder was still meant as a path."""
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1


def _resolve_model(model: Any) -> _Model:
    """Turn the ``model`` argument (id, folder, config, catalog entry) into a ``_Model``."""
    from transformers import PretrainedConfig

    if isinstance(model, catalog.CatalogEntry):
        return _from_catalog(model)
    if isinstance(model, PretrainedConfig):
        name = getattr(model, "_name_or_path", "") or f"<{type(model).__name__}>"
        return _Model(name, "config", model, None)
    if not isinstance(model, (str, os.PathLike)):
        raise PlanError(f"Cannot plan a {type(model).__name__}: pass a model id, a local folder or a config.")
    path = Path(model).expanduser()
    if path.is_dir() or path.name == "config.json" and path.is_file():
        return _from_folder(path if path.is_dir() else path.parent)
    entry = catalog.get(str(model))
    if entry is not None:
        return _from_catalog(entry)
    if isinstance(model, os.PathLike) or _looks_like_path(str(model)):
        raise PlanError(f"Folder '{model}' does not exist: check the path or pass a catalog id.")
    return _from_hub(str(model))


# --------------------------------------------------------------------------- image tokens


def _catalog_twin(config: PretrainedConfig) -> catalog.CatalogEntry | None:
    """A catalog entry with the same model type and vision input (image size, patch size)."""
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return None
    for entry in catalog.entries():
        twin = entry.config.get("vision_config") or {}
        same_type = entry.config.get("model_type") == getattr(config, "model_type", None)
        if same_type and twin.get("image_size") == vision.image_size and twin.get("patch_size") == vision.patch_size:
            return entry
    return None


def _image_tokens(config: PretrainedConfig, entry: catalog.CatalogEntry | None, n_images: int) -> tuple[int, int]:
    """(base, max) tokens per image for ``n_images`` per prompt: from the catalog, else from the vision config."""
    entry = entry or _catalog_twin(config)
    if entry is not None:
        return entry.image_tokens.base, entry.image_tokens.per_image(n_images)
    vision = getattr(config, "vision_config", None)
    if vision is None or not getattr(vision, "patch_size", None):
        return 0, 0
    side = vision.image_size // vision.patch_size
    base = int(getattr(config, "image_seq_length", 0) or side * side)
    grids = getattr(config, "image_grid_pinpoints", None) or []
    # anyres: the biggest crop grid plus one newline token per feature row, on top of the base image
    extra = max(((h // vision.patch_size) * (w // vision.patch_size + 1) for h, w in grids), default=0)
    return base, base + extra


# --------------------------------------------------------------------------- the report


def _gb(num: int | float) -> str:
    """Bytes as decimal GB: two decimals below 10 GB, one above.

    >>> _gb(4_036_701_768), _gb(19_294_774_872)
    ('4.04 GB', '19.3 GB')
    """
    value = num / GB
    return f"{value:.2f} GB" if abs(value) < 10 else f"{value:.1f} GB"


@dataclass(frozen=True)
class FitReport:
    """Whether a model fits a target, with every number behind the verdict and what to do instead.

    Bytes are exact integers. ``weights_bytes`` sits on the GPU (in RAM for CPU targets);
    ``margin_bytes`` is the tighter of the GPU and RAM margins, negative when it does not fit;
    ``gpu_fits`` is True for CPU targets (nothing has to fit on a GPU).

    >>> r = fit("llava-hf/llava-v1.6-34b-hf", target="t4")
    >>> r.fits, r.gpu_fits
    (False, False)
    """

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
        return "fits" if self.fits else "does not fit"

    def summary(self) -> str:
        """One sentence: the verdict with the binding numbers and the first suggestion.

        >>> fit("llava-hf/llava-1.5-7b-hf", target="t4").summary()[:40]
        'llava-hf/llava-1.5-7b-hf fits the T4 in '
        """
        how = f"{self.quantization or self.compute_dtype}"
        if self.fits:
            return f"{self.model_id} fits the {self.target.name} in {how} with {_gb(self.margin_bytes)} to spare."
        if not self.gpu_fits and self.gpu_need_bytes is not None:
            short = f"needs about {_gb(self.gpu_need_bytes)} of GPU memory but the {self.target.name} has " + _gb(
                self.target.gpu_bytes or 0
            )
        else:
            short = f"needs about {_gb(self.ram_need_bytes)} of RAM but the {self.target.name} has " + _gb(
                self.target.ram_bytes
            )
        hint = f"; {self.suggestions[0]}" if self.suggestions else ""
        return f"{self.model_id} does not fit the {self.target.name} in {how}: it {short}{hint}."

    def raise_if_wont_fit(self) -> FitReport:
        """Return self when it fits, else raise ``WontFitError`` with the one-sentence summary.

        >>> fit("llava-hf/llava-1.5-7b-hf", target="t4").raise_if_wont_fit().fits
        True
        """
        if not self.fits:
            raise WontFitError(self)
        return self

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs shown by ``str()`` and the HTML table.

        >>> fit("llava-hf/llava-1.5-7b-hf", target="t4").rows()[0][0]
        'model'
        """
        images = f"{self.n_images} image(s) x {self.image_tokens_max} tokens"
        if self.image_tokens != self.image_tokens_max:
            images += f" (max; {self.image_tokens} for a small image)"
        rows = [
            ("model", f"{self.model_id} ({self.source}, {self.architecture})"),
            ("target", self.target.describe()),
            ("loading", f"{_QUANT_WORDS[self.quantization]}, compute {self.compute_dtype}"),
            (
                "weights",
                f"{_gb(self.weights_bytes)} ({self.quantized_params / 1e9:.2f} B params quantized, "
                f"{self.kept_params / 1e9:.2f} B kept in {self.compute_dtype})",
            ),
            (
                "KV cache",
                f"{_gb(self.kv_bytes)} for {self.planned_tokens:,} tokens ({images}, {self.max_new_tokens} new, "
                f"{PROMPT_TOKENS} prompt; {_gb(self.kv_bytes_per_1k_tokens)} per 1k tokens)",
            ),
            ("overhead", f"{_gb(self.overhead_bytes)} ({'' if self.target.is_cpu else 'CUDA context, '}activations, reserve)"),
        ]
        if self.gpu_need_bytes is not None:
            rows.append(("GPU", f"{_gb(self.gpu_need_bytes)} needed of {_gb(self.target.gpu_bytes or 0)}"))
        shard = "unknown, 5 GB assumed" if self.largest_shard_bytes is None else _gb(self.largest_shard_bytes)
        rows.append(("RAM", f"{_gb(self.ram_need_bytes)} needed of {_gb(self.target.ram_bytes)} (largest shard {shard})"))
        if self.context_length:
            rows.append(("context", f"{self.context_length:,} tokens"))
        rows.append(("margin", f"{'+' if self.margin_bytes >= 0 else '-'}{_gb(abs(self.margin_bytes))}"))
        return rows

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        lines = [f"{self.model_id} {self.verdict()} on {self.target.name} ({self.quantization or self.compute_dtype})"]
        lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
        if self.suggestions:
            lines.append("Suggestions:")
            lines += [f"  - {text}" for text in self.suggestions]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        color = "#1a7f37" if self.fits else "#cf222e"
        head = f"<b>{esc(self.model_id)}</b> <b style='color:{color}'>{esc(self.verdict())}</b> on {esc(self.target.name)}"
        cells = "".join(
            f"<tr><th style='text-align:left'>{esc(label)}</th><td style='text-align:left'>{esc(value)}</td></tr>"
            for label, value in self.rows()
        )
        tips = "".join(f"<li>{esc(text)}</li>" for text in self.suggestions)
        tips_html = f"<b>Suggestions</b><ul>{tips}</ul>" if tips else ""
        return f"<div>{head}<table>{cells}</table>{tips_html}</div>"


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Request:
    """Everything one assessment depends on (alternatives are assessed by replacing fields)."""

    model: _Model
    quantization: str | None
    dtype: str | None  # None: the target's default
    target: Target
    max_new_tokens: int
    n_images: int


def _overhead(config: PretrainedConfig, tokens: int, dtype: str, largest_quant: int, base: int, gpu: bool) -> int:
    """CUDA context + one layer's prefill activations + a dequantized weight + the allocator reserve."""
    text = _text_config(config)
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    intermediate = int(getattr(text, "intermediate_size", 0) or 4 * hidden)
    size = _DTYPE_BYTES[dtype]
    activations = tokens * (6 * hidden + 3 * intermediate) * size
    reserve = max(RESERVE_MIN_BYTES, int(RESERVE_FRACTION * base))
    return (CUDA_CONTEXT_BYTES if gpu else 0) + activations + largest_quant * size + reserve


def _peak_load_ram(model: _Model, weights: int, target: Target) -> int:
    """RAM while loading: baseline + the largest shard (twice if pickled) (+ the weights on CPU targets)."""
    census = _census(_ConfigKey(model.config))
    shard = model.largest_shard
    if shard is None:
        shard = min(DEFAULT_SHARD_BYTES, _stored_bytes(model.config, census.total_params))
    peak = LOAD_BASELINE_RAM_BYTES + shard * (2 if model.pickled else 1)
    return peak + (weights if target.is_cpu else 0)


def _assess(req: _Request) -> FitReport:
    """The report for one request, without suggestions."""
    model, target = req.model, req.target
    dtype = _compute_dtype(req.dtype, target)
    census = _census(_ConfigKey(model.config))
    weights, quantized, kept = weight_bytes(model.config, req.quantization, dtype)
    base_tokens, max_tokens = _image_tokens(model.config, model.entry, req.n_images)
    text_tokens = req.max_new_tokens + PROMPT_TOKENS if census.can_generate else 0
    tokens = max_tokens * req.n_images + text_tokens
    kv_1k = kv_bytes_per_token(model.config, dtype) * 1000 if census.can_generate else 0
    kv = kv_1k * tokens // 1000
    largest_quant = census.largest_quant if req.quantization else 0
    overhead = _overhead(model.config, tokens, dtype, largest_quant, weights + kv, not target.is_cpu)
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
        context_length=_context_length(model),
        overhead_bytes=overhead,
        fits=False,
        gpu_fits=False,
        ram_fits=False,
        margin_bytes=0,
        planned_tokens=tokens,
        n_images=req.n_images,
        max_new_tokens=req.max_new_tokens,
        architecture=census.architecture,
    )
    return _with_verdict(report)


def _with_verdict(report: FitReport) -> FitReport:
    """Fill ``fits``, ``gpu_fits``, ``ram_fits`` and ``margin_bytes`` from the needs."""
    target = report.target
    ram_margin = target.ram_bytes - report.ram_need_bytes
    gpu_need = report.gpu_need_bytes
    gpu_margin = None if gpu_need is None else (target.gpu_bytes or 0) - gpu_need
    margin = ram_margin if gpu_margin is None else min(gpu_margin, ram_margin)
    gpu_fits, ram_fits = gpu_margin is None or gpu_margin >= 0, ram_margin >= 0
    return replace(report, gpu_fits=gpu_fits, ram_fits=ram_fits, fits=gpu_fits and ram_fits, margin_bytes=margin)


def _context_length(model: _Model) -> int | None:
    """The catalog's context length, else the decoder's ``max_position_embeddings``."""
    if model.entry is not None:
        return model.entry.context_length
    value = getattr(_text_config(model.config), "max_position_embeddings", None)
    return int(value) if value else None


# --------------------------------------------------------------------------- suggestions


def _family_of(model: _Model) -> str | None:
    """The catalog family of the model, by catalog entry or by model type."""
    if model.entry is not None:
        return model.entry.family
    model_type = getattr(model.config, "model_type", None)
    return next((e.family for e in catalog.entries() if e.config.get("model_type") == model_type), None)


def _suggest_4bit(req: _Request, report: FitReport) -> list[str]:
    """Quantize harder when memory is the problem."""
    if req.quantization == "4bit" or report.gpu_fits and not report.target.is_cpu:
        return []
    alt = _assess(replace(req, quantization="4bit"))
    verb = "fits" if alt.fits else "still does not fit"
    return [f"load it in 4-bit (quantization='4bit'): weights drop to {_gb(alt.weights_bytes)} and it {verb}"]


def _suggest_smaller(req: _Request, report: FitReport) -> list[str]:
    """The biggest smaller catalog model of the same family that fits."""
    family = _family_of(req.model)
    params = report.quantized_params + report.kept_params
    for entry in sorted(catalog.entries(family), key=lambda e: -e.params) if family else []:
        if entry.params >= params or entry.id == req.model.model_id:
            continue
        alt = _assess(replace(req, model=_from_catalog(entry)))
        if alt.fits:
            size = f"{entry.params / 1e9:.1f} B params"
            return [f"try the smaller {entry.id} ({size}), which fits with {_gb(alt.margin_bytes)} to spare"]
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
                f"{_gb(report.kv_bytes - alt_kv)}"
            )
    if req.n_images > 1 and _assess(replace(req, n_images=1)).fits:
        tips.append("send one image per prompt: with a single image it fits")
    return tips


def _suggest_gpu(req: _Request, report: FitReport) -> list[str]:
    """The smallest preset GPU with more memory where it fits."""
    current = report.target.gpu_bytes or 0
    what = "a GPU runtime" if report.target.is_cpu else "a bigger GPU"
    for key, target in _FIXED_TARGETS.items():
        if (target.gpu_bytes or 0) > current and _assess(replace(req, target=target, dtype=None)).fits:
            return [f"use {what}: it fits target='{key}' ({target.name}, {_gb(target.gpu_bytes or 0)})"]
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


def _suggestions(req: _Request, report: FitReport) -> tuple[str, ...]:
    """What to do instead, most effective first (only the context warning when it fits)."""
    tips = _suggest_context(report)
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
) -> FitReport:
    """Plan whether ``model`` fits ``target`` when loaded with ``quantization``; downloads no weights.

    ``model`` is a catalog id, a local checkpoint folder, a transformers config, or another Hub id (then
    only its config.json and shard index are downloaded). ``target`` is ``"auto"`` (this machine),
    ``"t4"``, ``"l4"``, ``"a100-40"``, ``"cpu"`` or a ``Target``.

    >>> r = fit("llava-hf/llava-1.5-13b-hf", quantization="4bit", target="t4")
    >>> r.fits, r.compute_dtype
    (True, 'float16')
    """
    req = _Request(
        model=_resolve_model(model),
        quantization=_quantization(quantization),
        dtype=_dtype_name(dtype),
        target=resolve_target(target),
        max_new_tokens=_count(max_new_tokens, "max_new_tokens"),
        n_images=_count(n_images, "n_images"),
    )
    report = _assess(req)
    return replace(report, suggestions=_suggestions(req, report))
