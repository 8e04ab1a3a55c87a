"""Checks on what a Honeybee release folder holds: its JSON files, its config values, the paths they name.

Each check turns a damaged or hand-edited release into one :class:`HoneybeeError` sentence that names
the file and the field, before anything is built or written.

>>> checked_int({"hidden_size": 128}, "hidden_size", "text_config")
128
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from mllm_nb.honeybee.configuration import HoneybeeError

#: Size fields of the CLIP vision config and the Llama text config that must be positive integers.
VISION_INTS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
               "patch_size", "num_channels", "projection_dim")  # fmt: skip
TEXT_INTS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "vocab_size", "max_position_embeddings")  # fmt: skip
_POSITIVE_FLOATS = ("layer_norm_eps", "rms_norm_eps", "rope_theta")
#: Names a release may give its ``torch_dtype`` (with or without ``torch.``).
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64", "float", "half", "double")


def read_json_object(path: Path, what: str = "") -> dict[str, Any]:
    """The JSON object (dict) in ``path``, or a :class:`HoneybeeError` saying why the file is unusable.

    >>> read_json_object(Path("7B-C-Abs-M144/last/config.json"))["model_type"]  # doctest: +SKIP
    'mllm'
    """
    what = what or path.name
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HoneybeeError(
            f"'{path}' is not valid JSON ({type(err).__name__} at {_where(err)}); re-extract the release archive "
            f"or restore {what} from it."
        ) from err
    except OSError as err:
        raise HoneybeeError(
            f"'{path}' could not be read ({type(err).__name__}); check that it is a readable file."
        ) from err
    if not isinstance(value, dict):
        raise HoneybeeError(
            f"'{path}' holds a JSON {type(value).__name__}, not the object {what} needs; "
            "re-extract the release archive."
        )
    return value


def _where(err: ValueError) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"line {err.lineno}, column {err.colno}"
    return f"byte {getattr(err, 'start', '?')}"


def checked_int(section: dict[str, Any], key: str, where: str, minimum: int = 1) -> Any:
    """``section[key]`` if absent/None or an int >= ``minimum`` (not a bool), else a :class:`HoneybeeError`.

    >>> checked_int({"vocab_size": 32000}, "vocab_size", "text_config")
    32000
    """
    value = section.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        return value
    raise HoneybeeError(
        f"config.json has {where}.{key}={value!r}, but it must be a whole number >= {minimum}; "
        "re-extract the release or restore the value from the official config."
    )


def checked_section(old: dict[str, Any], key: str) -> dict[str, Any]:
    """The sub-config ``old[key]`` as a dict (``{}`` when absent), refusing any other JSON type.

    >>> checked_section({"vision_config": {"image_size": 224}}, "vision_config")
    {'image_size': 224}
    """
    value = old.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HoneybeeError(
            f"config.json has {key} as a JSON {type(value).__name__}, not an object; re-extract the release archive."
        )
    return value


def check_release_values(old: dict[str, Any]) -> None:
    """Refuse wrong types and impossible sizes in an old-schema release config before anything is built.

    >>> check_release_values({"text_config": {"vocab_size": 32000}, "torch_dtype": "float16"})
    """
    vision, text = checked_section(old, "vision_config"), checked_section(old, "text_config")
    projector = checked_section(old, "visual_projector_config")
    for section, keys, where in ((vision, VISION_INTS, "vision_config"), (text, TEXT_INTS, "text_config")):
        for key in keys:
            checked_int(section, key, where)
        for key in _POSITIVE_FLOATS:
            value = section.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise HoneybeeError(f"config.json has {where}.{key}={value!r}, but it must be a positive number; "
                                    "re-extract the release or restore the value from the official config.")
    checked_int(old, "num_query_tokens", "config")
    for where, section in (("config", old), ("text_config", text)):
        dtype = section.get("torch_dtype")
        if dtype is not None and (not isinstance(dtype, str) or dtype.removeprefix("torch.") not in DTYPE_NAMES):
            raise HoneybeeError(
                f"config.json has {where}.torch_dtype={dtype!r}, which is not a torch dtype; use one of "
                f"{', '.join(DTYPE_NAMES[:3])} or remove the field."
            )
    layer = projector.get("feature_layer_index", -1)
    if isinstance(layer, (list, tuple)):
        return  # multi-level features: refused by the converter with its own sentence
    depth = vision.get("num_hidden_layers") or 24
    if isinstance(layer, bool) or not isinstance(layer, int) or not -depth - 1 <= layer <= depth:
        raise HoneybeeError(
            f"config.json has visual_projector_config.feature_layer_index={layer!r}, but it must be a whole number "
            f"between {-depth - 1} and {depth} (the vision tower has {depth} layers); releases use -1."
        )


_GENERATION_NUMBERS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "num_beams")
_GENERATION_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def check_generation_values(values: dict[str, Any], path: Path) -> None:
    """Refuse sampling settings and token ids of the wrong type in a release ``generation_config.json``.

    >>> check_generation_values({"top_k": 3, "eos_token_id": [2]}, Path("generation_config.json"))
    """
    for key in (*_GENERATION_NUMBERS, *_GENERATION_IDS):
        value = values.get(key)
        items = value if key in _GENERATION_IDS and isinstance(value, list) else [value]
        numbers_ok = all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0) for v in items
        )
        if not numbers_ok or (key in _GENERATION_IDS and not all(v is None or isinstance(v, int) for v in items)):
            raise HoneybeeError(
                f"'{path}' has {key}={value!r}, which is not a valid number; delete the file to use plain defaults "
                "or restore it from the release archive."
            )


def member_path(folder: Path, name: Any, source: str) -> Path:
    """``folder / name`` for a file name read from ``source``, refusing names that would leave ``folder``.

    >>> member_path(Path("release"), "pytorch_model-00001-of-00002.bin", "the index")
    PosixPath('release/pytorch_model-00001-of-00002.bin')
    """
    if not isinstance(name, str) or not name.strip():
        raise HoneybeeError(f"{source} names the file {name!r}, which is not a file name; re-extract the release.")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
        raise HoneybeeError(
            f"Refusing {source}: it names {name!r}, a path outside the release folder '{folder}'; "
            "only use releases from the official archive."
        )
    path = folder / pure
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise HoneybeeError(
            f"Refusing {source}: {name!r} links to a file outside the release folder '{folder}'; "
            "only use releases from the official archive."
        )
    return path


__all__ = [
    "check_generation_values", "check_release_values", "checked_int", "checked_section", "member_path",
    "read_json_object",
]  # fmt: skip
