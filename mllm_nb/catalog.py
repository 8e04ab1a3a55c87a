"""A curated catalog of multimodal checkpoints: what each one is, how big, and when to use it.

The facts live in ``catalog.json`` next to this module (data, not code): parameter counts, image-token
budgets, context length, licence, shard sizes, known pre-quantized 4-bit copies, the full architecture config
(it builds with transformers 5) and, for the newer families, the processor facts that
:mod:`mllm_nb.memory.twins` builds the real processor class from. ``catalog_figures.json`` holds what the
planner derives from each config (written by ``tools/catalog_figures.py``), so ``mllm_nb.plan.fit`` sizes a
catalog model without downloading, building or even importing transformers.

>>> from mllm_nb import catalog
>>> catalog.get("LLAVA-HF/llava-1.5-7b-hf").family
'llava'
"""

from __future__ import annotations

import copy
import html
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from transformers import PretrainedConfig

CATALOG_FILE = "catalog.json"
FIGURES_FILE = "catalog_figures.json"  # derived by tools/catalog_figures.py: what fit needs without transformers
_COLUMNS = ("id", "family", "params", "image tokens", "context", "licence")


@dataclass(frozen=True)
class ImageTokens:
    """Tokens one image costs in the LLM prompt: ``base`` (smallest image) up to ``max``, and the rule.

    ``multi`` is the cost per image when a prompt holds several images, where that differs (OneVision).

    >>> ImageTokens(576, 2928, "anyres").describe()
    '576-2928'
    """

    base: int
    max: int
    rule: str
    multi: int | None = None

    def per_image(self, n_images: int = 1) -> int:
        """The most tokens each image can cost in a prompt with ``n_images`` images.

        >>> ImageTokens(729, 8765, "anyres_max_9", multi=730).per_image(3)
        730
        """
        return self.multi if n_images > 1 and self.multi is not None else self.max

    def describe(self) -> str:
        """``"576"`` when fixed, ``"576-2928"`` when it depends on the image size.

        >>> ImageTokens(576, 576, "fixed").describe()
        '576'
        """
        return str(self.base) if self.base == self.max else f"{self.base}-{self.max}"


@dataclass(frozen=True)
class MultiImage:
    """Whether a model was trained on prompts with several images: True, False or ``"unknown"``.

    >>> MultiImage(True, "paper").value
    True
    """

    value: bool | str
    note: str


@dataclass(frozen=True)
class CatalogEntry:
    """One curated checkpoint; ``config`` is the architecture config as a read-only mapping.

    >>> entry = get("openai/clip-vit-base-patch32")
    >>> entry.architecture, entry.params_b
    ('CLIPModel', 0.151)
    """

    id: str
    family: str
    architecture: str
    params: int
    image_tokens: ImageTokens
    context_length: int
    license: str
    when_to_use: str
    trained_multi_image: MultiImage
    default_prompt: str
    shard_bytes: tuple[int, ...]
    stored_dtype: str
    config: Mapping[str, Any] = field(hash=False, repr=False)
    estimated: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    processor: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False, repr=False)
    prequantized: tuple[str, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False, repr=False)

    @property
    def params_b(self) -> float:
        """Parameters in billions, rounded to 3 decimals.

        >>> get("llava-hf/llava-1.5-7b-hf").params_b
        7.063
        """
        return round(self.params / 1e9, 3)

    def config_dict(self) -> dict[str, Any]:
        """A fresh, mutable deep copy of the architecture config.

        >>> get("llava-hf/llava-1.5-7b-hf").config_dict()["model_type"]
        'llava'
        """
        return _thaw(self.config)

    def build_config(self) -> PretrainedConfig:
        """The transformers config object (``AutoConfig.for_model(**config)``); downloads nothing.

        >>> type(get("llava-hf/llava-1.5-7b-hf").build_config()).__name__
        'LlavaConfig'
        """
        from transformers import AutoConfig

        if self.config.get("model_type") == "honeybee":
            import mllm_nb.honeybee  # noqa: F401  registers the project's own model type with AutoConfig
        return AutoConfig.for_model(**self.config_dict())

    def row(self) -> tuple[str, ...]:
        """The cells of this entry in ``table()``.

        >>> get("llava-hf/llava-1.5-7b-hf").row()[2:5]
        ('7.06 B', '576', '4096')
        """
        return (
            self.id,
            self.family,
            f"{self.params / 1e9:.2f} B",
            self.image_tokens.describe(),
            str(self.context_length),
            self.license,
        )

    def _repr_html_(self) -> str:
        return _html_table([self])


def _freeze(value: Any) -> Any:
    """Dicts become read-only mappings and lists become tuples, recursively."""
    if isinstance(value, dict):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """The inverse of ``_freeze``: plain dicts and lists again."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return copy.copy(value)


def _entry(raw: dict[str, Any], figures: Mapping[str, Any]) -> CatalogEntry:
    """Build one ``CatalogEntry`` from its JSON object."""
    return CatalogEntry(
        id=raw["id"],
        family=raw["family"],
        architecture=raw["architecture"],
        params=int(raw["params"]),
        image_tokens=ImageTokens(**raw["image_tokens"]),
        context_length=int(raw["context_length"]),
        license=raw["license"],
        when_to_use=raw["when_to_use"],
        trained_multi_image=MultiImage(**raw["trained_multi_image"]),
        default_prompt=raw["default_prompt"],
        shard_bytes=tuple(int(size) for size in raw["shard_bytes"]),
        stored_dtype=raw["stored_dtype"],
        config=_freeze(raw["config"]),
        estimated=_freeze(raw.get("estimated", {})),
        processor=_freeze(raw.get("processor", {})),
        prequantized=tuple(raw.get("prequantized", ())),
        figures=_freeze(figures.get(raw["id"], {})),
    )


@cache
def _load() -> tuple[CatalogEntry, ...]:
    """Read ``catalog.json`` from the installed package, once."""
    package = resources.files("mllm_nb")
    text = package.joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    derived = package.joinpath(FIGURES_FILE)
    figures = json.loads(derived.read_text(encoding="utf-8"))["figures"] if derived.is_file() else {}
    return tuple(_entry(raw, figures) for raw in json.loads(text)["entries"])


@cache
def _by_id() -> dict[str, CatalogEntry]:
    """Lower-cased id -> entry."""
    return {entry.id.lower(): entry for entry in _load()}


def get(model_id: str) -> CatalogEntry | None:
    """The catalog entry of a Hub id (case-insensitive, exact id with its org), or None.

    >>> get("llava-hf/LLaVA-1.5-7b-hf").id
    'llava-hf/llava-1.5-7b-hf'
    >>> get("llava-1.5-7b-hf") is None
    True
    """
    return _by_id().get(str(model_id).strip().lower())


@cache
def _by_prequantized_id() -> dict[str, CatalogEntry]:
    """Lower-cased id of a pre-quantized copy -> the entry of its original."""
    return {copy_id.lower(): entry for entry in _load() for copy_id in entry.prequantized}


def original_of(model_id: str) -> CatalogEntry | None:
    """The catalog entry whose pre-quantized 4-bit copy ``model_id`` is (e.g. an unsloth ``-bnb-4bit`` repo), or None.

    >>> original_of("unsloth/Qwen2.5-VL-7B-Instruct-bnb-4bit").id
    'Qwen/Qwen2.5-VL-7B-Instruct'
    """
    return _by_prequantized_id().get(str(model_id).strip().lower())


def entries(family: str | None = None) -> list[CatalogEntry]:
    """Every entry in catalog order, or only those of one ``family`` (e.g. ``"llava_next"``).

    >>> [e.id for e in entries("siglip")]
    ['google/siglip-base-patch16-224']
    """
    return [entry for entry in _load() if family is None or entry.family == family]


def families() -> list[str]:
    """The families in catalog order, each once.

    >>> families()[:2]
    ['llava', 'llava_next']
    """
    return list(dict.fromkeys(entry.family for entry in _load()))


def table(family: str | None = None) -> str:
    """A plain-text table of the catalog: id, family, params, image tokens, context, licence.

    >>> print(table("siglip"))  # doctest: +NORMALIZE_WHITESPACE
    id                              family  params   image tokens  context  licence
    google/siglip-base-patch16-224  siglip  0.20 B   196           64       apache-2.0
    """
    rows = [_COLUMNS] + [entry.row() for entry in entries(family)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _html_table(items: list[CatalogEntry]) -> str:
    """An escaped HTML table of ``items`` with a "when to use" column."""
    esc = html.escape
    head = "".join(f"<th style='text-align:left'>{esc(name)}</th>" for name in (*_COLUMNS, "when to use"))
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{esc(cell)}</td>" for cell in (*e.row(), e.when_to_use)) + "</tr>"
        for e in items
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_table(family: str | None = None) -> str:
    """The catalog as an escaped HTML table (what ``show()`` displays in a notebook).

    >>> html_table("siglip").startswith("<table>")
    True
    """
    return _html_table(entries(family))


class CatalogView:
    """The catalog for notebooks: an HTML table in Jupyter, the text table elsewhere.

    >>> "llava-hf/llava-1.5-7b-hf" in str(CatalogView())
    True
    """

    def __init__(self, family: str | None = None) -> None:
        self.family = family

    def __str__(self) -> str:
        return table(self.family)

    def __repr__(self) -> str:
        return table(self.family)

    def _repr_html_(self) -> str:
        return html_table(self.family)


def show(family: str | None = None) -> CatalogView:
    """The catalog as a notebook-friendly object (put it last in a cell).

    >>> isinstance(show(), CatalogView)
    True
    """
    return CatalogView(family)
