"""Convert an official Honeybee release (``<NAME>/last/``) to a Hugging Face folder.

The release holds an old-schema ``config.json`` (``"model_type": "mllm"``) and pickled
``pytorch_model*.bin`` shards. :func:`convert` writes ``model*.safetensors`` shards (at most 2 GB),
the new ``config.json``, ``generation_config.json``, the processor (image processor, tokenizer with
``<image>``, chat template) and returns the folder, ready for ``mllm_nb.load_vlm``.

Safety and memory: every pickle is opened with ``torch.load(weights_only=True, mmap=True)``, which
refuses anything but tensors (a pickle that would run code is rejected before it runs). Tensors are
streamed from the memory map into the output file in 64 MiB pieces and the pages read are handed
back to the OS (``madvise``), so the converter needs about one piece of RAM on top of Python, not
one copy of the weights.

>>> convert("checkpoints/7B-C-Abs-M144/last", "honeybee-7b-c-abs-m144")  # doctest: +SKIP
PosixPath('honeybee-7b-c-abs-m144')
"""

from __future__ import annotations

import copy
import ctypes
import json
import mmap
import os
import pickle
import re
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mllm_nb.honeybee.configuration import HoneybeeConfig, HoneybeeError, abstractor_defaults
from mllm_nb.honeybee.release_checks import (
    check_generation_values, check_release_values, checked_section, member_path, read_json_object,
)  # fmt: skip

DEFAULT_TOKENIZER = "lmsys/vicuna-7b-v1.5"
MAX_SHARD_BYTES = 2_000_000_000
CHUNK_BYTES = 64 * 2**20
#: Old key prefix -> new key prefix (first match wins).
RENAMES: tuple[tuple[str, str], ...] = (
    ("vision_model.vision_model.", "model.vision_tower."),
    ("vision_model.", "model.vision_tower."),
    ("abstractor.", "model.abstractor."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
)
#: Persistent buffers of the old transformers that the new model recomputes.
DROPPED_SUFFIXES = ("embeddings.position_ids", "rotary_emb.inv_freq")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
_OUTPUT_FILES = (
    "config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
    "chat_template.jinja", "chat_template.json", "special_tokens_map.json", *_TOKENIZER_FILES,
)  # fmt: skip
_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip


# ------------------------------------------------------------------------------------ the config


def _clean_sub_config(old: dict[str, Any], cls: type, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of an old sub-config that ``cls`` still knows (drops generation and bookkeeping keys)."""
    known = set(cls().to_dict()) | set(keep)
    known -= {"transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"}
    return {key: value for key, value in old.items() if key in known}


def _abstractor_settings(old: dict[str, Any]) -> dict[str, Any]:
    projector = dict(checked_section(old, "visual_projector_config"))
    kind = projector.get("projector_type")
    if kind not in ("c-abs", "d-abs"):
        raise HoneybeeError(f"Projector type {kind!r} is not supported; Honeybee releases use 'c-abs' or 'd-abs'.")
    if isinstance(projector.get("feature_layer_index", -1), (list, tuple)):
        raise HoneybeeError("Multi-level vision features (a list feature_layer_index) are not supported.")
    settings = {key: projector[key] for key in abstractor_defaults(kind) if key in projector}
    queries = old.get("num_query_tokens", settings.get("num_queries"))
    if settings.setdefault("num_queries", queries) != queries:
        raise HoneybeeError(
            f"The release config is inconsistent: num_query_tokens={queries} but the projector has "
            f"num_queries={settings['num_queries']}."
        )
    return settings


def convert_config(old: dict[str, Any], image_token_id: int | None = None) -> HoneybeeConfig:
    """The ``HoneybeeConfig`` of an old-schema (``"model_type": "mllm"``) release ``config.json`` dict.

    ``image_token_id`` defaults to the language model's vocabulary size (32000 for Vicuna, the id the
    converter gives ``<image>``).

    >>> import json
    >>> config = convert_config(json.load(open("7B-C-Abs-M144/last/config.json")))  # doctest: +SKIP
    >>> config.num_visual_tokens  # doctest: +SKIP
    144
    """
    from transformers import CLIPVisionConfig, LlamaConfig

    if not isinstance(old, dict) or old.get("model_type") != "mllm" or "visual_projector_config" not in old:
        kind = old.get("model_type") if isinstance(old, dict) else type(old).__name__
        raise HoneybeeError(
            f"This config.json is not an official Honeybee release config (model_type {kind!r}, "
            "expected 'mllm' with a visual_projector_config); pass the <NAME>/last folder of the release."
        )
    check_release_values(old)
    vision, text = checked_section(old, "vision_config"), checked_section(old, "text_config")
    if vision.get("model_type", "clip_vision_model") != "clip_vision_model":
        raise HoneybeeError(f"Vision tower {vision.get('model_type')!r} is not supported; releases use CLIP.")
    if text.get("model_type", "llama") != "llama":
        raise HoneybeeError(f"Language model {text.get('model_type')!r} is not supported; releases use Llama.")
    text_config = _clean_sub_config(text, LlamaConfig, keep=("rope_theta", "rope_scaling"))
    if text_config.get("rope_scaling") is None:
        text_config.pop("rope_scaling", None)
    settings = _abstractor_settings(old)
    layer = checked_section(old, "visual_projector_config").get("feature_layer_index", -1)
    dtype = old.get("torch_dtype") or text.get("torch_dtype")
    try:
        return HoneybeeConfig(
            vision_config=_clean_sub_config(vision, CLIPVisionConfig),
            text_config=text_config,
            abstractor_config=settings,
            image_token_id=int(image_token_id if image_token_id is not None else text_config.get("vocab_size", 32000)),
            vision_feature_layer=int(layer),
            architectures=["HoneybeeForConditionalGeneration"],
            dtype=dtype.removeprefix("torch.") if isinstance(dtype, str) else dtype,
        )
    except HoneybeeError:
        raise
    except Exception as err:
        raise HoneybeeError(
            f"The release config.json holds values a Honeybee model cannot be built from ({_first_line(err)}); "
            "re-extract the release or restore the official config.json."
        ) from err


# ------------------------------------------------------------------------------------ reading


def release_folder(src: str | os.PathLike) -> Path:
    """The folder that holds the release ``config.json``: ``src`` itself or ``src/last``.

    >>> release_folder("checkpoints/7B-C-Abs-M144")  # doctest: +SKIP
    PosixPath('checkpoints/7B-C-Abs-M144/last')
    """
    root = Path(src).expanduser()
    for folder in (root, root / "last"):
        if (folder / "config.json").is_file():
            return folder
    raise HoneybeeError(
        f"No Honeybee release found in '{root}': expected config.json there or in its last/ folder "
        "(extract the <NAME>.tar.gz archive first, e.g. with mllm_nb.honeybee.download)."
    )


def _shard_files(folder: Path) -> list[Path]:
    index = folder / "pytorch_model.bin.index.json"
    if index.is_file():
        weight_map = read_json_object(index, "the shard index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise HoneybeeError(
                f"'{index}' has no weight_map object naming the shards (found {type(weight_map).__name__}); "
                "re-extract the release archive."
            )
        paths = {member_path(folder, name, f"'{index.name}'") for name in weight_map.values()}
        missing = sorted(path.name for path in paths if not path.is_file())
        if missing:
            raise HoneybeeError(f"The release in '{folder}' lacks {missing[0]} named by its index; re-extract it.")
        return sorted(paths)
    shards = sorted(folder.glob("pytorch_model*.bin"))
    if not shards:
        raise HoneybeeError(f"No pytorch_model*.bin weights in '{folder}'; re-extract the release archive.")
    return shards


def load_shard(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """``(state dict, memory-mapped?)`` of one pickled shard, loaded with ``weights_only=True``.

    A pickle that needs anything but tensors and plain containers is refused with a
    :class:`HoneybeeError` before any of its code can run.

    >>> state, mapped = load_shard(Path("7B-C-Abs-M144/last/pytorch_model-00001-of-00002.bin"))  # doctest: +SKIP
    """
    try:
        try:
            state, mapped = torch.load(path, map_location="cpu", weights_only=True, mmap=True), True
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state, mapped = torch.load(path, map_location="cpu", weights_only=True), False  # legacy format
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:
            raise HoneybeeError(
                f"'{path}' is not a readable PyTorch checkpoint (not a plain state dict); re-extract it."
            ) from err
        name = found.group(1).removeprefix("builtins.")  # torch < 2.7 names builtins.exec, later exec
        raise HoneybeeError(
            f"Refusing to load '{path.name}': its pickle needs more than tensors ({name}, which could run "
            "code when opened); only load checkpoints from the official release or another source you trust."
        ) from err
    except Exception as err:
        raise HoneybeeError(
            f"'{path}' is not a readable PyTorch checkpoint ({type(err).__name__}: {_first_line(err)}); re-extract it."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise HoneybeeError(
            f"'{path.name}' is not a state dict of tensors; pass the folder of an official Honeybee release "
            "or re-extract it."
        )
    return state, mapped


# ------------------------------------------------------------------------------------ the plan


@dataclass
class _Entry:
    """One output tensor: its new name, where it comes from and how it is changed."""

    name: str
    source: torch.Tensor
    mapped: bool
    dtype: torch.dtype
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor().shape) if self.transform else tuple(self.source.shape)

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * self.dtype.itemsize

    def tensor(self) -> torch.Tensor:
        return self.transform(self.source) if self.transform else self.source


def new_key(old: str) -> str | None:
    """The new name of a release tensor, or None for buffers the new model recomputes.

    >>> new_key("language_model.model.layers.0.mlp.up_proj.weight")
    'model.language_model.layers.0.mlp.up_proj.weight'
    >>> new_key("language_model.model.layers.0.self_attn.rotary_emb.inv_freq") is None
    True
    """
    if old.endswith(DROPPED_SUFFIXES):
        return None
    for prefix, replacement in RENAMES:
        if old.startswith(prefix):
            return replacement + old[len(prefix) :]
    raise HoneybeeError(f"Unexpected tensor {old!r} in the release; pass the folder of an official Honeybee release.")


def _transform(name: str, tensor: torch.Tensor, config: HoneybeeConfig) -> Callable | None:
    """Drop the CLS row of the C-Abstractor's positional embedding (CLS is dropped before it matters)."""
    if name == "model.abstractor.pos_emb" and tensor.ndim == 3 and tensor.shape[1] == config.num_patches + 1:
        return lambda t: t[:, 1:]
    return None


def _plan(
    shards: list[tuple[dict[str, torch.Tensor], bool]], config: HoneybeeConfig, dtype: torch.dtype | None
) -> list[_Entry]:
    entries = []
    for state, mapped in shards:
        for old, tensor in state.items():
            name = new_key(old)
            if name is None:
                continue
            out = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
            entries.append(_Entry(name, tensor, mapped, out, _transform(name, tensor, config)))
    _check_against_model(entries, config)
    return entries


def _load_shards(paths: list[Path]) -> list[tuple[dict[str, torch.Tensor], bool]]:
    """Every shard loaded, refusing a tensor name that two shards both hold (which copy would be right?)."""
    shards, seen = [], {}
    for path in paths:
        state, mapped = load_shard(path)
        for name in state:
            if seen.setdefault(name, path.name) != path.name:
                raise HoneybeeError(
                    f"The tensor {name!r} is in both {seen[name]} and {path.name}; the release mixes two "
                    "checkpoints, re-extract it from one archive."
                )
        shards.append((state, mapped))
    return shards


def _expected_tensors(config: HoneybeeConfig) -> dict[str, torch.Tensor]:
    from mllm_nb.honeybee.modeling import HoneybeeForConditionalGeneration

    try:
        with torch.device("meta"):
            model = HoneybeeForConditionalGeneration(config)
    except HoneybeeError:
        raise
    except Exception as err:
        raise HoneybeeError(
            f"No Honeybee model can be built from the release config.json ({type(err).__name__}: "
            f"{_first_line(err)}); re-extract the release or restore the official config.json."
        ) from err
    return model.state_dict()


def _check_against_model(entries: list[_Entry], config: HoneybeeConfig) -> None:
    """Every tensor the model needs is there, with its shape, and nothing else."""
    tensors = _expected_tensors(config)
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    expected = {name: tuple(t.shape) for name, t in tensors.items()}
    found = {entry.name: entry.shape for entry in entries}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(name for name in set(found) & set(expected) if found[name] != expected[name])
    kind = sorted((e.name, str(e.source.dtype)) for e in entries
                  if e.name in tensors and e.source.is_floating_point() != tensors[e.name].is_floating_point())
    if missing or extra or wrong or kind:
        detail = (
            f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
            else f"{wrong[0]} has shape {list(found[wrong[0]])}, the config asks for {list(expected[wrong[0]])}"
            if wrong else f"{kind[0][0]} holds {kind[0][1]} values, the model needs {tensors[kind[0][0]].dtype}"
        )
        raise HoneybeeError(f"The release weights do not match its config.json ({detail}); re-extract the archive.")


def _group(entries: list[_Entry], max_bytes: int) -> list[list[_Entry]]:
    """Consecutive tensors packed into shards of at most ``max_bytes`` (a bigger tensor gets its own)."""
    groups: list[list[_Entry]] = [[]]
    size = 0
    for entry in entries:
        if groups[-1] and size + entry.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.nbytes
    return groups


# ------------------------------------------------------------------------------------ writing


def _madvise() -> Callable[[int, int], None] | None:
    """``release(address, length)``: drop mapped file pages from this process (Linux/macOS), else None."""
    if not sys.platform.startswith(("linux", "darwin")):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.madvise
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page, dont_need = mmap.PAGESIZE, 4  # MADV_DONTNEED

    def release(address: int, length: int) -> None:
        start, end = -(-address // page) * page, (address + length) // page * page  # whole pages inside only
        if end > start:
            call(start, end - start, dont_need)

    return release


_RELEASE = _madvise()


def _pieces(entry: _Entry) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(bytes to write, mapped source range to release)`` in pieces of at most ``CHUNK_BYTES``."""
    tensor = entry.tensor()
    view = tensor.is_contiguous() and tensor.untyped_storage().data_ptr() == entry.source.untyped_storage().data_ptr()
    flat = (tensor if tensor.is_contiguous() else tensor.contiguous()).reshape(-1)
    step = max(1, CHUNK_BYTES // max(flat.element_size(), entry.dtype.itemsize))
    for start in range(0, flat.numel(), step):
        piece = flat[start : start + step]
        out = piece.to(entry.dtype) if piece.dtype != entry.dtype else piece
        yield out.reshape(-1).view(torch.uint8), piece if entry.mapped and view else None


def _write_shard(path: Path, entries: list[_Entry], bar: Any) -> None:
    """Write one safetensors file tensor by tensor, piece by piece, never holding a whole shard."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for entry in entries:
        header[entry.name] = {
            "dtype": _SAFETENSORS_DTYPES[entry.dtype],
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }
        offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        for entry in entries:
            for data, mapped in _pieces(entry):
                handle.write(memoryview(data.numpy()))
                bar.update(data.numel())
                if mapped is not None and _RELEASE is not None:
                    _RELEASE(mapped.data_ptr(), mapped.numel() * mapped.element_size())
            entry.source = torch.empty(0)  # drop the reference as soon as it is written


def _write_weights(entries: list[_Entry], dst: Path, max_shard_bytes: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    groups = _group(entries, max_shard_bytes)
    names = (
        ["model.safetensors"]
        if len(groups) == 1
        else [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    )
    total = sum(entry.nbytes for entry in entries)
    weight_map = {entry.name: name for name, group in zip(names, groups) for entry in group}
    with tqdm(total=total, unit="B", unit_scale=True, desc="Converting", disable=not progress) as bar:
        for name, group in zip(names, groups):
            _write_shard(dst / name, group, bar)
    if len(groups) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


# ------------------------------------------------------------------------------------ tokenizer


def _load_tokenizer(release: Path, tokenizer: Any, vocab_size: int) -> Any:
    """The release's own tokenizer if it ships one, else ``tokenizer`` (id, folder or object), plus ``<image>``."""
    from transformers import AddedToken, AutoTokenizer, PreTrainedTokenizerBase

    from mllm_nb.honeybee.processing import IMAGE_TOKEN

    if isinstance(tokenizer, PreTrainedTokenizerBase):
        loaded = copy.deepcopy(tokenizer)
    else:
        has_own = any((release / name).is_file() for name in _TOKENIZER_FILES)
        source = str(release) if has_own else os.path.expanduser(str(tokenizer))
        try:
            loaded = AutoTokenizer.from_pretrained(source)
        except Exception as err:  # offline, unknown id, missing files: all mean "no tokenizer from there"
            raise HoneybeeError(
                f"Could not load the tokenizer {source!r} ({_first_line(err)}); connect to the internet once so "
                "it is cached, pass tokenizer='<folder with the Vicuna tokenizer>', or tokenizer=None to skip it."
            ) from err
    if len(loaded) > vocab_size:
        raise HoneybeeError(
            f"The tokenizer has {len(loaded)} tokens but the language model only {vocab_size}; "
            "pass the Vicuna v1.5 (Llama-2) tokenizer, e.g. tokenizer='lmsys/vicuna-7b-v1.5'."
        )
    if IMAGE_TOKEN not in loaded.get_vocab():
        loaded.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    return loaded


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:150] if text else type(err).__name__


# ------------------------------------------------------------------------------------ convert


def _check_destination(dst: Path, release: Path, overwrite: bool) -> None:
    if dst.resolve() == release.resolve():
        raise HoneybeeError("The destination is the release folder itself; pass a new folder as dst.")
    existing = [p.name for p in dst.glob("*") if p.name.startswith(("model", "config.json"))] if dst.is_dir() else []
    if existing and not overwrite:
        raise HoneybeeError(f"'{dst}' already holds a model ({existing[0]}); pick a new folder or pass overwrite=True.")
    blocking = next((p for p in (dst, *dst.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise HoneybeeError(f"'{blocking}' is a file, so '{dst}' cannot be a folder; pass another folder as dst.")


def _check_free_space(dst: Path, need: int) -> None:
    existing = next(p for p in (dst, *dst.parents) if p.exists())
    usage = shutil.disk_usage(existing)
    free = usage.free
    if usage.total and free < need:  # total 0: a pseudo file system (/proc); writing there fails on its own
        raise HoneybeeError(
            f"Not enough disk space for the converted model in '{existing}': it needs about {need / 1e9:.1f} GB "
            f"but {free / 1e9:.1f} GB are free; free some space or pass another dst."
        )


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None:
        return None
    if not isinstance(dtype, (str, torch.dtype)):
        raise HoneybeeError(f"dtype={dtype!r} is not supported; use None (keep), 'float16', 'bfloat16' or 'float32'.")
    resolved = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float16, torch.bfloat16, torch.float32):
        raise HoneybeeError(f"dtype={dtype!r} is not supported; use None (keep), 'float16', 'bfloat16' or 'float32'.")
    return resolved


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    tokenizer: Any = DEFAULT_TOKENIZER,
    *,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int = MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert the release in ``src`` (``<NAME>/`` or ``<NAME>/last/``) into a Hugging Face folder ``dst``.

    ``tokenizer``: the release's own tokenizer files win when present; else a Hub id or local folder
    (default ``lmsys/vicuna-7b-v1.5``, the Llama-2 tokenizer of every release) or a tokenizer object;
    ``None`` skips the tokenizer and processor (weights, config and image processor only).
    ``dtype`` casts floating weights (default: keep the stored dtype). Shards hold at most
    ``max_shard_size`` bytes (2 GB). Returns ``Path(dst)``.

    >>> convert("checkpoints/7B-C-Abs-M144", "honeybee-7b", tokenizer="vicuna-tokenizer/")  # doctest: +SKIP
    PosixPath('honeybee-7b')
    """
    from transformers import GenerationConfig

    from mllm_nb.honeybee.processing import HoneybeeImageProcessor, HoneybeeProcessor

    for value, what in ((src, "src"), (dst, "dst")):
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise HoneybeeError(f"{what}={value!r} is not a folder path; pass a str or pathlib.Path.")
    if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, int) or max_shard_size < 1:
        raise HoneybeeError(
            f"max_shard_size={max_shard_size!r} must be a positive whole number of bytes, e.g. 2_000_000_000."
        )
    release, target = release_folder(src), Path(dst).expanduser()
    out_dtype = _dtype(dtype)
    _check_destination(target, release, overwrite)
    config = convert_config(read_json_object(release / "config.json", "the release config"))
    vocab = int(config.text_config.vocab_size)
    loaded_tokenizer = None if tokenizer is None else _load_tokenizer(release, tokenizer, vocab)
    if loaded_tokenizer is not None:
        config.image_token_id = int(loaded_tokenizer.convert_tokens_to_ids("<image>"))
    if out_dtype is not None:
        config.dtype = out_dtype
    entries = _plan(_load_shards(_shard_files(release)), config, out_dtype)
    generation = _generation_config(release, config, GenerationConfig)
    _check_free_space(target, sum(entry.nbytes for entry in entries))
    try:
        target.mkdir(parents=True, exist_ok=True)
        for stale in [*target.glob("model*.safetensors*"), *(target / name for name in _OUTPUT_FILES)]:
            stale.unlink(missing_ok=True)  # left by an earlier conversion (overwrite=True)
        _write_weights(entries, target, max_shard_size, progress)
        del entries
        config.save_pretrained(target)
        generation.save_pretrained(target)
        side = config.vision_config.image_size
        image_processor = HoneybeeImageProcessor(size={"height": side, "width": side})
        if loaded_tokenizer is None:
            image_processor.save_pretrained(target)
        else:
            processor = HoneybeeProcessor(image_processor, loaded_tokenizer, num_visual_tokens=config.num_visual_tokens)
            processor.save_pretrained(target)
    except OSError as err:
        raise HoneybeeError(
            f"Writing the converted model to '{target}' failed ({type(err).__name__}: {_first_line(err)}); "
            "pass a writable dst with enough free space, then run convert again with overwrite=True."
        ) from err
    return target


def _generation_config(release: Path, config: HoneybeeConfig, cls: type) -> Any:
    """The release's generation config (its sampling defaults), else one from the text config."""
    path = release / "generation_config.json"
    if path.is_file():
        values = read_json_object(path, "the generation config")
        values.pop("transformers_version", None)
        values.pop("max_length", None)  # 512 in the releases: shorter than a prompt with 576 visual tokens
        check_generation_values(values, path)
        try:
            generation = cls(**values)
            generation.validate()
        except (TypeError, ValueError, AttributeError) as err:
            raise HoneybeeError(
                f"'{path}' holds a setting transformers refuses ({_first_line(err)}); delete the file to use "
                "plain defaults or restore it from the release archive."
            ) from err
        return generation
    text = config.text_config
    return cls(bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id)


__all__ = ["DEFAULT_TOKENIZER", "convert", "convert_config", "load_shard", "new_key", "release_folder"]
