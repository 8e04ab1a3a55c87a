"""Load a vision-language chat model (any image-text-to-text model transformers supports) so that it fits, and say how.

``load_vlm`` plans before it loads: :func:`mllm_nb.plan.fit` estimates what the checkpoint needs on
this machine, and the loader picks the precision from that (full compute dtype when it fits, else
4-bit NF4 with double quantization) or refuses with the numbers before any weight is read. One
line then says what was loaded, where, in which precision and why.

>>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf")  # doctest: +SKIP
Loaded llava-hf/llava-1.5-7b-hf (LlavaForConditionalGeneration, 7.1B parameters) on cuda:0 in 4-bit NF4 + ...
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import json
import logging
import math
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import torch

from mllm_nb.errors import MllmNbError, ModelLoadError
from mllm_nb.hardware import PlacementError, choose_placement, dtype_name, format_bytes
from mllm_nb.upstream import TENSOR_READ_HOOK, tensor_read_hook_expected
from mllm_nb.vlm import VLM, VLMError

QUANTIZATIONS: tuple[str | None, ...] = ("auto", "4bit", "8bit", None)

# device_map strings that spread the model over the devices there are (accelerate's names)
_SPREADING = ("auto", "balanced", "balanced_low_0", "sequential")

# config sizes that no checkpoint can have at zero or below (checked in every nested config)
_POSITIVE_SIZES = frozenset({"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                             "num_key_value_heads", "vocab_size", "head_dim", "max_position_embeddings",
                             "patch_size", "image_size", "num_channels"})


@dataclass(frozen=True)
class _Choice:
    """What the planner let us load: the quantization, its report and the reason in words."""

    quantization: str | None
    report: Any
    why: str


def load_vlm(
    model_id: str | os.PathLike,
    quantization: str | None = "auto",
    dtype: torch.dtype | str = "auto",
    device_map: Any = "auto",
    force: bool = False,
    demo: bool | None = None,
) -> VLM:
    """Load an image-text-to-text checkpoint (Hub id or local folder) that fits this machine, as a :class:`VLM`.

    ``quantization``: ``"auto"`` (full precision when it fits, else 4-bit NF4), ``"4bit"``,
    ``"8bit"`` or None. ``dtype``: ``"auto"`` is :func:`mllm_nb.best_dtype` (float16 on a T4,
    bfloat16 from sm80 on, float32 on CPU); 4-bit layers compute in it. If the planner says the
    model won't fit, ``WontFitError`` is raised before any weight is read, unless ``force=True``.
    In demo mode (``MLLM_NB_DEMO=1`` or ``demo=True``) catalog chat models load a tiny offline fixture.

    >>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf", demo=True)  # doctest: +SKIP
    DEMO MODE: ...
    >>> vlm.ask("scene.png", "What shape is red?")  # doctest: +SKIP
    """
    from mllm_nb.demo.mode import demo_banner, resolve_model

    requested = _model_id_text(model_id)
    _check_arguments(quantization, device_map, force, demo)
    path, is_fixture = resolve_model(requested, "vlm", demo)
    device, compute_dtype = _placement(dtype)
    if not is_fixture and "transformers.models.auto.modeling_auto" not in sys.modules:
        print(f"Loading transformers and {requested} (the first load in a session takes a while) ...", flush=True)
    if os.path.isdir(path):
        check_checkpoint_folder(path, requested)
    config = _read_config(path, requested)
    if is_fixture:
        print(demo_banner(requested, path, _fixture_role(requested, config)))
    stored = stored_quantization(config)
    if stored is not None:  # a pre-quantized checkpoint (e.g. unsloth's -bnb-4bit) loads as it was saved
        quantization = _check_stored_quantization(requested, stored, quantization)
    planned_dtype = None if dtype == "auto" else compute_dtype
    choice = _choose_quantization(path, requested, quantization, planned_dtype, force)
    model, processor = _from_pretrained(
        path, requested, None if stored else choice.quantization, compute_dtype,
        _device_map(device_map, device, choice), is_fixture,
    )
    if choice.quantization == "4bit" and model.device.type == "cpu":
        avoid_packed_cpu_kernel(model)
    print(_loaded_line(requested, model, choice, compute_dtype))
    return VLM(model=model, processor=processor, name=requested, plan=choice.report, quantization=choice.quantization)


# ------------------------------------------------------------------------------------ arguments


def _model_id_text(model_id: Any) -> str:
    """The Hub id or folder as text; spaces around an id that is not a path are dropped (a pasting slip)."""
    text = os.fspath(model_id) if isinstance(model_id, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text.strip():
        shown = repr(model_id) if len(repr(model_id)) <= 80 else f"a {type(model_id).__name__}"
        raise VLMError(
            f"model_id must be a Hub id such as 'llava-hf/llava-1.5-7b-hf' or the path of a model folder; got {shown}."
        )
    return text if os.path.exists(text) else text.strip()


def _check_arguments(quantization: Any, device_map: Any, force: Any, demo: Any = None) -> None:
    if quantization not in QUANTIZATIONS:
        raise VLMError(f"quantization={quantization!r} is not supported; use 'auto', '4bit', '8bit' or None.")
    if not isinstance(device_map, (str, dict)):
        raise VLMError(f"device_map={device_map!r} must be 'auto', a device name such as 'cpu', or a dict.")
    if not isinstance(force, bool):
        raise VLMError(f"force must be True or False; got {force!r}.")
    if demo is not None and not isinstance(demo, bool):
        raise VLMError(f"demo must be True, False or None (None reads MLLM_NB_DEMO); got {demo!r}.")
    targets = [] if device_map in _SPREADING else [device_map] if isinstance(device_map, str) else device_map.values()
    for target in targets:
        _check_device(target, device_map)


def _check_device(target: Any, device_map: Any) -> None:
    """Refuse a device_map entry that is no device, or a device this machine lacks (before any weight moves)."""
    if isinstance(target, int) and not isinstance(target, bool):
        target = f"cuda:{target}"  # accelerate's meaning of a bare index, on every torch release
    try:
        device = torch.device("cpu" if target == "disk" else target) if not isinstance(target, bool) else None
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None:  # a word such as 'gpu', or a bool
        raise VLMError(
            f"device_map={device_map!r} names {target!r}, which is not a device; "
            "use 'auto', 'cpu', 'cuda:0' or a dict of module names to such devices."
        )
    backend = getattr(torch, device.type, None)
    count = backend.device_count() if hasattr(backend, "device_count") and backend.is_available() else 0
    if device.type not in ("cpu", "meta") and (device.index or 0) >= count:
        raise VLMError(
            f"device_map={device_map!r} asks for {device}, but this machine has {count} {device.type} device(s); "
            "use device_map='auto' to take the GPU there is (or the CPU), or 'cpu'."
        )


def _placement(dtype: torch.dtype | str) -> tuple[torch.device, torch.dtype]:
    """The shared device and dtype choice (the current GPU, else the CPU), a bad dtype as a ``VLMError``."""
    try:
        placement = choose_placement(None, dtype)
    except PlacementError as err:
        raise VLMError(str(err)) from err
    return placement.device, placement.dtype


# ---------------------------------------------------------------------------------- the folder


def check_checkpoint_folder(folder: str | os.PathLike, requested: str | None = None) -> None:
    """Refuse a local checkpoint whose config, JSON files, shard index or safetensors headers are broken, in one
    sentence (:class:`ModelLoadError`), before transformers or the planner trips on them.

    >>> check_checkpoint_folder("/no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    mllm_nb.errors.ModelLoadError: '/no/such/folder' has no config.json, ...
    """
    root = Path(folder)
    name = requested or str(folder)
    if not (root / "config.json").is_file():
        raise ModelLoadError(
            f"{name!r} has no config.json, so it is not a saved model folder; pass the folder that "
            "save_pretrained wrote, or a Hub id such as 'llava-hf/llava-1.5-7b-hf'."
        )
    for file in sorted(root.glob("*.json")):
        data = _read_json(file, name)
        if file.name == "config.json" and (not isinstance(data, dict) or "model_type" not in data):
            problem = "has no model_type" if isinstance(data, dict) else f"holds a {type(data).__name__}, not an object"
            raise ModelLoadError(
                f"config.json in {name!r} {problem}, so transformers cannot tell which model it is; "
                "download the checkpoint again or re-save it with save_pretrained."
            )
        if file.name == "config.json":
            _check_sizes(data, name)
        elif file.name.endswith(".index.json"):
            _check_index(root, file.name, data, name)
    weights = sorted(root.glob("*.safetensors"))
    for file in weights:
        _check_safetensors(file, name)
    if not weights and not any(root.glob("*.bin")) and not any(root.glob("*.index.json")):
        raise ModelLoadError(f"{name!r} has a config.json but no weights (*.safetensors); download the whole folder.")


def _read_json(file: Path, name: str) -> Any:
    """The file's JSON, or one sentence saying which file is broken and how."""
    try:
        with open(file, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}" if file.stat().st_size else "the file is empty"
        problem = f"is not valid JSON ({err.msg}, {where})"
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except OSError as err:
        problem = f"cannot be read ({err.strerror or type(err).__name__})"
    raise ModelLoadError(
        f"{file.name} in {name!r} {problem}; download the checkpoint again or re-save it with save_pretrained."
    )


def _check_sizes(config: dict, name: str, prefix: str = "") -> None:
    """Refuse impossible sizes (zero or negative layers, widths, vocabularies), which would load silently wrong."""
    for key, value in config.items():
        if isinstance(value, dict):
            _check_sizes(value, name, f"{prefix}{key}.")
        elif key in _POSITIVE_SIZES and isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise ModelLoadError(
                f"config.json of {name!r} sets {prefix}{key} to {value}, which no model can have; "
                "fix config.json (it must be a positive number) or download the checkpoint again."
            )


def _check_index(root: Path, index_name: str, data: Any, name: str) -> None:
    """A shard index must map weights to files inside the folder (never ``..`` or absolute paths) that exist."""
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelLoadError(
            f"{index_name} in {name!r} has no weight_map of weight names to shard files; "
            "download the checkpoint again or re-save it with save_pretrained."
        )
    for shard in sorted(set(weight_map.values())):
        parts = PurePath(shard).parts
        if not parts or PurePath(shard).is_absolute() or ".." in parts or "\\" in shard or ":" in shard:
            raise ModelLoadError(
                f"{index_name} in {name!r} points at {shard!r}, outside the model folder, so it was refused; "
                "use a checkpoint whose index names only files in its own folder."
            )
        if not (root / shard).is_file():
            raise ModelLoadError(f"{name!r} lacks the shard {shard!r} that {index_name} lists; download it again.")


def _check_safetensors(file: Path, name: str) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt"):  # reads and checks the header only
            pass
    except (SafetensorError, OSError) as err:  # e.g. an interrupted download or copy
        problem = f"is damaged or incomplete ({_first_sentence(err)})"
        raise ModelLoadError(f"{file.name} in {name!r} {problem}; download it again.") from None


# -------------------------------------------------------------------------------------- config


def _read_config(path: str, requested: str) -> Any:
    """The checkpoint's config (a few KB): proves the id or folder is usable before planning."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    import mllm_nb.honeybee  # noqa: F401  registers Honeybee with the Auto classes

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_failure_message(requested, err)) from err
    except Exception as err:  # a config.json transformers' own checks reject (strict fields, impossible shapes)
        if not os.path.isdir(path):  # a Hub id: the network failed (a timeout, a dropped connection)
            raise ModelLoadError(_failure_message(requested, err)) from err
        raise ModelLoadError(
            f"config.json of {requested!r} is not a valid model config ({_first_sentence(err)}); "
            "fix config.json or download the checkpoint again."
        ) from err
    _check_sizes(config.to_dict(), requested)
    if type(config) not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:  # built-in and registered (Honeybee) models
        raise ModelLoadError(
            f"{requested!r} is a {config.model_type!r} model, not an image-text-to-text chat model; "
            "use a LLaVA checkpoint such as 'llava-hf/llava-1.5-7b-hf' (CLIP models load with load_clip)."
        )
    return config


def _fixture_role(requested: str, config: Any) -> str:
    """The fixture's architecture, and the real one it stands in for when they differ."""
    from mllm_nb import catalog

    architecture = (getattr(config, "architectures", None) or [config.model_type])[0]
    entry = catalog.get(requested)
    if entry is not None and entry.architecture != architecture:
        return f"{architecture} standing in for {entry.architecture}"
    return architecture


def _failure_message(requested: str, err: BaseException) -> str:
    """One sentence for a load that failed: the first sentence of the cause, and what to do for a folder or an id."""
    reason = _first_sentence(err)
    if os.path.isdir(requested):
        return f"Could not load the folder {requested!r} ({reason}); its checkpoint is incomplete: download it again."
    return (f"Could not load {requested!r} ({reason}); check the id or folder, connect to the "
            "internet for Hub ids, or set MLLM_NB_DEMO=1 to use the offline demo model.")


def _first_sentence(err: BaseException) -> str:
    """The first sentence of an exception's message (one line, at most 160 characters), else its type."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    text = lines[-1] if lines[0].endswith(":") else lines[0]  # "Class validation error ...:\n    ValueError: X"
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= 160 else text[:157] + "..."


def stored_quantization(config: Any) -> str | None:
    """``"4bit"`` or ``"8bit"`` when the checkpoint was saved quantized by bitsandbytes (its config says so), else None.

    >>> from transformers import LlavaConfig
    >>> stored_quantization(LlavaConfig()) is None
    True
    """
    stored = getattr(config, "quantization_config", None)
    if stored is None:
        return None
    settings = stored if isinstance(stored, dict) else stored.to_dict()
    if settings.get("quant_method", "bitsandbytes") != "bitsandbytes":
        raise ModelLoadError(
            f"This checkpoint is quantized with {settings.get('quant_method')!r}, which load_vlm does not plan; "
            "load it with transformers' AutoModelForImageTextToText.from_pretrained, or use an unquantized checkpoint."
        )
    return "4bit" if settings.get("load_in_4bit") else "8bit" if settings.get("load_in_8bit") else None


def _check_stored_quantization(requested: str, stored: str, quantization: str | None) -> str:
    """A pre-quantized checkpoint keeps its quantization: ``"auto"`` becomes it, another choice is refused."""
    if quantization in ("auto", stored):
        return stored
    asked = "full precision" if quantization is None else quantization
    raise VLMError(
        f"{requested!r} was saved in {stored} by bitsandbytes and cannot be loaded in {asked}; "
        f"use quantization='auto' or '{stored}', or load the original unquantized checkpoint."
    )


# ------------------------------------------------------------------------------------ planning


def _plan(path: str, requested: str, quantization: str | None, dtype: torch.dtype | None) -> Any:
    from mllm_nb.errors import MllmNbError
    from mllm_nb.plan import fit

    kwargs: dict[str, Any] = {"quantization": quantization, "target": "auto"}
    if dtype is not None:
        kwargs["dtype"] = dtype_name(dtype)
    try:
        return fit(path, **kwargs)
    except MllmNbError:
        raise
    except (OSError, ValueError) as err:
        raise ModelLoadError(_failure_message(requested, err)) from err


def _choose_quantization(
    path: str, requested: str, quantization: str | None, dtype: torch.dtype | None, force: bool
) -> _Choice:
    """Honour an explicit choice; for ``"auto"`` take full precision, else 4-bit, else refuse."""
    if quantization != "auto":
        report = _plan(path, requested, quantization, dtype)
        if not report.fits:
            _refuse_or_warn(requested, report, quantization, force)
            return _Choice(quantization, report, f"forced past the planner; needs {_gb(report.weights_bytes)}")
        needs = _gb(report.weights_bytes)
        return _Choice(quantization, report, f"{_label(quantization)} chosen by the caller; needs {needs}")
    full = _plan(path, requested, None, dtype)
    if full.fits:
        return _Choice(None, full, f"{full.compute_dtype} weights ({_gb(full.weights_bytes)}) fit {_where(full)}")
    small = _plan(path, requested, "4bit", dtype)
    too_big = f"{full.compute_dtype} weights ({_gb(full.weights_bytes)}) don't fit {_where(full)}"
    if small.fits:
        return _Choice("4bit", small, f"{too_big}; 4-bit needs {_gb(small.weights_bytes)}")
    _refuse_or_warn(requested, small, "4bit", force)
    return _Choice("4bit", small, f"{too_big}, nor does 4-bit ({_gb(small.weights_bytes)}); forced past the planner")


def _refuse_or_warn(requested: str, report: Any, quantization: str | None, force: bool) -> None:
    from mllm_nb.plan import WontFitError

    verdict = _verdict(requested, report, quantization)
    if force:
        print(f"WARNING: {verdict}; loading anyway because force=True.")
        return
    error = WontFitError(f"{verdict}; or pass force=True to try anyway.\n{report}")
    error.report = report
    raise error


def _verdict(requested: str, report: Any, quantization: str | None) -> str:
    """One sentence (no final period) with the numbers and the planner's first suggestion."""
    summary = getattr(report, "summary", None)
    if callable(summary):
        return summary().rstrip(".")
    hint = report.suggestions[0].rstrip(".") if getattr(report, "suggestions", None) else "pick a smaller model"
    needs = f"{_gb(report.weights_bytes)} of weights in {_label(quantization)}"
    return f"{requested} needs {needs} and won't fit {_where(report)}; {hint}"


def _where(report: Any) -> str:
    target = report.target
    if getattr(target, "gpu_bytes", None):
        return f"this {target.name} ({format_bytes(target.gpu_bytes, 'GiB', 1)})"
    ram = getattr(target, "ram_bytes", None)
    return f"in RAM ({_gb(ram)}, no GPU)" if ram else "in RAM (no GPU)"


def _gb(num_bytes: float) -> str:
    return format_bytes(num_bytes, decimals=1, small_unit="MiB")


def _label(quantization: str | None) -> str:
    return {"4bit": "4-bit NF4", "8bit": "8-bit"}.get(quantization or "", "full precision")


# ------------------------------------------------------------------------------------- loading


def _device_map(device_map: Any, device: torch.device, choice: _Choice) -> Any:
    """``"auto"``: the whole model on the GPU (or the CPU); accelerate's spreading only when forced past the plan."""
    if device_map != "auto":
        return device_map
    if device.type == "cpu":
        return "cpu"
    if choice.quantization is None and not choice.report.fits:
        return "auto"
    return {"": device.index or 0}


def _quantization_config(quantization: str | None, dtype: torch.dtype) -> Any:
    if quantization is None:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"{quantization} loading needs bitsandbytes; run pip install bitsandbytes and restart the runtime."
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )


def _from_pretrained(
    path: str, requested: str, quantization: str | None, dtype: torch.dtype, device_map: Any, quiet: bool
) -> tuple[Any, Any]:
    """Processor, then weights shard by shard (quantized on the fly); failures become one line."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mllm_nb.demo.mode import quiet_fixture_loading

    quantization_config = _quantization_config(quantization, dtype)
    try:
        with quiet_fixture_loading(quiet), _quiet_bitsandbytes(), _trim_between_tensors():
            processor = AutoProcessor.from_pretrained(path)
            _check_chat_template(processor, requested)
            quantized = {"quantization_config": quantization_config} if quantization_config is not None else {}
            # (an explicit quantization_config=None would hide a pre-quantized checkpoint's own config)
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, device_map=device_map, **quantized)
    except MllmNbError:
        raise
    except torch.OutOfMemoryError as err:
        raise ModelLoadError(
            f"Out of memory while loading {requested!r}; restart the runtime to free memory, "
            "or use quantization='4bit'."
        ) from err
    except pickle.UnpicklingError as err:
        raise ModelLoadError(_pickle_message(requested, err)) from None  # torch's text suggests the unsafe way out
    except Exception as err:
        raise ModelLoadError(_load_error_message(requested, err)) from err
    return model, processor


def _pickle_message(requested: str, err: BaseException) -> str:
    problem = "want to run code while loading" if "GLOBAL" in str(err) else "are damaged or hold more than tensors"
    return (
        f"The pytorch_model.bin weights of {requested!r} {problem}, so they were refused for safety; "
        "download the checkpoint again as .safetensors, from a source you trust."
    )


def _load_error_message(requested: str, err: BaseException) -> str:
    from safetensors import SafetensorError

    if isinstance(err, SafetensorError):
        return (
            f"A weights file of {requested!r} is damaged or incomplete ({_first_sentence(err)}); delete the model "
            "from the Hugging Face cache (hf cache delete) and download it again."
        )
    if "ignore_mismatched_sizes" in str(err):
        return (
            f"The weights of {requested!r} have other shapes than its config.json describes (the load report "
            "above lists them); download the checkpoint again or restore the config.json it was saved with."
        )
    return _failure_message(requested, err)


def _check_chat_template(processor: Any, requested: str) -> None:
    """Render the checkpoint's chat template once on a sample turn: a broken template fails now, in words."""
    import jinja2

    sample = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hello"}]}]
    try:
        if getattr(processor, "chat_template", None):
            processor.apply_chat_template(sample, add_generation_prompt=True, tokenize=False)
    except (jinja2.TemplateSyntaxError, jinja2.exceptions.SecurityError) as err:
        raise ModelLoadError(
            f"The chat template of {requested!r} is broken ({type(err).__name__}: {_first_sentence(err)}); "
            "fix chat_template.jinja in the checkpoint folder, or download the checkpoint again."
        ) from err
    except Exception:  # noqa: BLE001, S110  a template may refuse this sample turn (e.g. wants a system turn)
        pass


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)`` (hand freed heap pages back to the system), or ``None`` off glibc."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


@contextmanager
def _trim_between_tensors() -> Iterator[None]:
    """Give freed memory back to the system before transformers reads each checkpoint tensor.

    Every tensor read from a shard (and its float copy while it is quantized) is freed once converted, but
    glibc keeps most freed blocks for reuse, so without this the process's private memory (what Colab's
    RAM limit counts) grows while loading; ``benchmarks/load_memory.py`` measures the difference. The hook
    point is a private transformers function (:data:`mllm_nb.upstream.TENSOR_READ_HOOK`), used only on the
    releases it was checked on; ``tests/test_upstream.py`` fails when a release in the range lacks it.
    Off glibc (macOS, Windows) or outside those releases this does nothing.
    """
    trim = _malloc_trim()
    module_name, function_name = TENSOR_READ_HOOK
    module = importlib.import_module(module_name) if tensor_read_hook_expected() else None
    original = getattr(module, function_name, None)
    if trim is None or original is None:
        yield
        return

    def trimmed_copy(*args: Any, **kwargs: Any) -> Any:
        trim()
        return original(*args, **kwargs)

    setattr(module, function_name, trimmed_copy)
    try:
        yield
    finally:
        setattr(module, function_name, original)
        trim()


def avoid_packed_cpu_kernel(model: torch.nn.Module) -> None:
    """Keep bitsandbytes' packed AVX512-BF16 CPU kernel off the layers it cannot pack.

    That kernel needs ``out_features % 32 == 0`` and ``in_features % 64 == 0``; other 4-bit layers
    (SigLIP's 4304-wide MLP, small demo models) would crash at their first forward, so they use the
    generic CPU kernel instead. :func:`load_vlm` calls it for every 4-bit model on the CPU.

    >>> import bitsandbytes as bnb
    >>> model = torch.nn.Sequential(bnb.nn.Linear4bit(96, 96))
    >>> avoid_packed_cpu_kernel(model)
    >>> model[0].support_avx512bf16_for_cpu
    False
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and (module.out_features % 32 or module.in_features % 64):
            module.support_avx512bf16_for_cpu = False


@contextmanager
def _quiet_bitsandbytes() -> Iterator[None]:
    """Hide bitsandbytes' import-time warning about optional CPU kernels (it is not actionable here)."""
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------- the one line


def _loaded_line(requested: str, model: Any, choice: _Choice, dtype: torch.dtype) -> str:
    precision = dtype_name(dtype)
    if choice.quantization == "4bit":
        precision = f"4-bit NF4 + {precision} compute"
    elif choice.quantization == "8bit":
        precision = f"8-bit + {precision} compute"
    return (
        f"Loaded {requested} ({type(model).__name__}, {_count(_count_params(model))} parameters) "
        f"on {model.device} in {precision}: {choice.why}."
    )


def _count_params(model: torch.nn.Module) -> int:
    """Parameters as in the checkpoint: a packed 4-bit weight counts its original shape."""
    total = 0
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        total += math.prod(state.shape) if state is not None else param.numel()
    return total


def _count(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.1f}B"
    if n >= 10**6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}K"
