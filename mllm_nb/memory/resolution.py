"""One model resolution for ``fit`` and ``budget``: a ``model`` argument -> its config and checkpoint facts.

``model`` is a catalog id or :class:`~mllm_nb.catalog.CatalogEntry` (nothing downloaded), a local checkpoint
folder or its ``config.json`` (sizes of the weight files on disk), a transformers config, or any other Hub id
(only ``config.json`` and the safetensors index are downloaded).

>>> resolved = resolve_model("llava-hf/llava-1.5-7b-hf")
>>> resolved.source, resolved.context_length
('catalog', 4096)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mllm_nb import catalog
from mllm_nb.memory.architecture import Census, census, config_context_length, quiet_transformers, register_project_models
from mllm_nb.memory.arguments import DTYPE_BYTES, PlanError, parse_dtype
from mllm_nb.memory.sizes import DecoderShape, decoder_shape

if TYPE_CHECKING:
    from transformers import PretrainedConfig

DEFAULT_SHARD_BYTES = 5 * 10**9  # the Hub's usual shard size when a checkpoint's own sizes are unknown
_GENERIC_ERRORS = (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError)


@dataclass(frozen=True)
class ResolvedModel:
    """A resolved ``model`` argument: its config and what is known about its checkpoint files.

    A catalog model's config, census and decoder sizes come from the catalog's stored figures, so
    planning it needs neither torch nor transformers; the config is built only when something asks for it.
    """

    model_id: str
    source: str
    given_config: PretrainedConfig | None
    largest_shard: int | None  # None: unknown
    pickled: bool = False
    entry: catalog.CatalogEntry | None = None
    download_bytes: int | None = None  # the weight files' total size, None: unknown
    prequantized: bool = False  # saved in 4-bit by bitsandbytes (planned in 4-bit only)

    @cached_property
    def config(self) -> PretrainedConfig:
        """The transformers config (built from the catalog entry on first use)."""
        if self.given_config is not None:
            return self.given_config
        assert self.entry is not None
        with quiet_transformers():
            return self.entry.build_config()

    @cached_property
    def census(self) -> Census:
        """What the architecture holds and what bitsandbytes quantizes (stored for catalog models)."""
        stored = self.entry.figures.get("census") if self.entry is not None else None
        return Census(**stored) if stored else census(self.config)

    @cached_property
    def decoder(self) -> DecoderShape:
        """The decoder sizes behind the KV cache and activations (stored for catalog models)."""
        stored = self.entry.figures.get("decoder") if self.entry is not None else None
        return DecoderShape(**stored) if stored else decoder_shape(self.config)

    @property
    def model_type(self) -> str:
        """The config's ``model_type``."""
        if self.entry is not None:
            return str(self.entry.config.get("model_type", ""))
        return str(getattr(self.config, "model_type", ""))

    @property
    def context_length(self) -> int | None:
        """The catalog's context length, else the decoder's ``max_position_embeddings``.

        >>> resolve_model("llava-hf/llava-v1.6-mistral-7b-hf").context_length
        32768
        """
        return self.entry.context_length if self.entry is not None else config_context_length(self.config)


def stored_bytes(config: PretrainedConfig, params: int) -> int:
    """Checkpoint size guessed from the parameter count and the config's stored dtype (float32 if unset).

    >>> from transformers import LlamaConfig
    >>> stored_bytes(LlamaConfig(dtype="bfloat16"), 1000)
    2000
    """
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = parse_dtype(stored) if stored is not None and str(stored) != "auto" else None
    return params * DTYPE_BYTES.get(name or "float32", 4)


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


def _from_folder(folder: Path) -> ResolvedModel:
    """A local checkpoint folder: its config.json and the sizes of its weight files on disk."""
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise PlanError(f"Folder '{folder}' has no config.json: pass a checkpoint folder saved with save_pretrained.")
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(folder)
        files, pickled = _local_weight_files(folder)
    except _GENERIC_ERRORS as exc:
        raise PlanError(f"Could not read the checkpoint in '{folder}' ({_reason(exc)}); check its config.json.") from exc
    sizes = [f.stat().st_size for f in files]
    largest = max(sizes, default=None)
    return ResolvedModel(str(folder), "local config", config, largest, pickled and bool(files),
                         download_bytes=sum(sizes) if sizes else None, prequantized=_saved_quantized(config))


def _reason(exc: BaseException) -> str:
    """The first sentence of an upstream error, short enough to sit inside ours."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= 160 else first[:157] + "..."


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


def _from_hub(model_id: str) -> ResolvedModel:
    """Any other Hub id: download only config.json (and the shard index for shard sizes)."""
    from transformers import AutoConfig

    config_path = _download(model_id, "config.json")
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(os.path.dirname(config_path))
    except _GENERIC_ERRORS as exc:
        raise PlanError(f"The config.json of '{model_id}' could not be read ({_reason(exc)}); pass a local folder.") from exc
    largest, total = _hub_shards(model_id, config)
    return ResolvedModel(model_id, "hub config", config, largest, download_bytes=total,
                         prequantized=_saved_quantized(config))


def _saved_quantized(config: PretrainedConfig) -> bool:
    """Whether the checkpoint was saved in 4-bit by bitsandbytes (its config carries the quantization)."""
    stored = getattr(config, "quantization_config", None)
    if stored is None:
        return False
    settings = stored if isinstance(stored, dict) else stored.to_dict()
    return bool(settings.get("load_in_4bit"))


def _hub_shards(model_id: str, config: PretrainedConfig) -> tuple[int, int]:
    """(largest shard, total bytes) from the Hub's safetensors index; without an index, one file of the params."""
    try:
        index = json.loads(Path(_download(model_id, "model.safetensors.index.json")).read_text())
        total = int(index["metadata"]["total_size"])
        return _shards_from_index(total, len(set(index["weight_map"].values()))), total
    except (PlanError, *_GENERIC_ERRORS):
        size = stored_bytes(config, census(config).total_params)
        return size, size


def _from_catalog(entry: catalog.CatalogEntry) -> ResolvedModel:
    """A catalog model: its stored config, figures and shard sizes, nothing downloaded or built."""
    largest = max(entry.shard_bytes, default=None)
    return ResolvedModel(entry.id, "catalog", None, largest, entry=entry, download_bytes=sum(entry.shard_bytes) or None)


def _from_prequantized_copy(model_id: str, entry: catalog.CatalogEntry) -> ResolvedModel:
    """A known pre-quantized 4-bit copy of a catalog model: the original's figures, 4-bit sized files."""
    from mllm_nb.memory.sizes import weight_bytes

    original = _from_catalog(entry)
    stored = entry.stored_dtype if entry.stored_dtype in DTYPE_BYTES else "bfloat16"
    size = weight_bytes(original.census, "4bit", stored)[0]
    source = f"catalog: pre-quantized 4-bit copy of {entry.id}"
    return ResolvedModel(model_id, source, None, min(size, DEFAULT_SHARD_BYTES), entry=entry, download_bytes=size,
                         prequantized=True)


def _looks_like_path(text: str) -> bool:
    """Whether a string that names no existing folder was still meant as a path."""
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1


def resolve_model(model: Any) -> ResolvedModel:
    """Turn the ``model`` argument (id, folder, config, catalog entry) into a :class:`ResolvedModel`.

    >>> resolve_model("no/such/folder")
    Traceback (most recent call last):
    ...
    mllm_nb.memory.arguments.PlanError: Folder 'no/such/folder' does not exist: check the path or pass a catalog id.
    """
    if isinstance(model, catalog.CatalogEntry):
        return _from_catalog(model)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        is_folder = path.is_dir() or path.name == "config.json" and path.is_file()
        entry = None if is_folder else catalog.get(str(model))
        if entry is not None:  # planned from stored figures: no torch, no transformers
            return _from_catalog(entry)
        original = None if is_folder else catalog.original_of(str(model))
        if original is not None:
            return _from_prequantized_copy(str(model), original)
    from transformers import PretrainedConfig

    register_project_models()  # local Honeybee configs need their model type registered
    if isinstance(model, PretrainedConfig):
        name = getattr(model, "_name_or_path", "") or f"<{type(model).__name__}>"
        return ResolvedModel(name, "config", model, None)
    if not isinstance(model, (str, os.PathLike)):
        raise PlanError(f"Cannot plan a {type(model).__name__}: pass a model id, a local folder or a config.")
    if is_folder:
        return _from_folder(path if path.is_dir() else path.parent)
    if isinstance(model, os.PathLike) or _looks_like_path(str(model)):
        raise PlanError(f"Folder '{model}' does not exist: check the path or pass a catalog id.")
    return _from_hub(str(model))
