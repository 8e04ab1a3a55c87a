"""How many LLM tokens an image becomes: the catalog's counts (for ``fit``) and the processors' rules (for ``budget``).

The rules, from a model config or a loaded processor (the tests compare them with the real processors):

- ``llava`` (LLaVA-1.5, LLaVA-Interleave): ``(image_size // patch_size)**2`` per image, +1 for the CLS
  token of a CLIP tower (the processor's ``num_additional_image_tokens``), -1 with the ``"default"``
  strategy (CLS dropped): 576 for LLaVA-1.5, 729 for Interleave, whatever the image size.
- ``llava_next`` (anyres): the base image, plus the best crop grid from ``image_grid_pinpoints``
  unpadded to the aspect ratio, plus one newline token per feature row (LlavaNextProcessor's rule).
- ``llava_onevision``: the same with the grid pooled to at most ~9 crops (anyres_max_9) for an image
  alone in its prompt; ``(image_size // patch_size)**2 + 1`` per image when a prompt holds several.
- ``honeybee``: ``config.num_visual_tokens`` per image.

>>> from mllm_nb import catalog
>>> rules = rules_from_config(catalog.get("llava-hf/llava-v1.6-vicuna-7b-hf").build_config())
>>> rules.per_image((1000, 800)), rules.per_image((64, 64))
(2438, 1176)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mllm_nb import catalog

if TYPE_CHECKING:
    from transformers import PretrainedConfig

#: Model types whose processors tile images (anyres).
ANYRES_FAMILIES = ("llava_next", "llava_onevision")


@dataclass(frozen=True)
class TokenRules:
    """The settings that decide how many LLM tokens one image becomes (a processor's, or a config's)."""

    family: str  # llava, llava_next, llava_onevision, or "fixed" (Honeybee, unknown models)
    patch_size: int = 14
    processed: tuple[int, int] = (336, 336)  # (height, width) each image or crop is resized to
    extra_tokens: int = 0  # num_additional_image_tokens: the CLS token of a CLIP tower
    strategy: str = "default"  # vision_feature_select_strategy; "default" drops the CLS feature
    pinpoints: tuple[tuple[int, int], ...] = ()
    aspect_ratio: str = "anyres_max_9"
    base_tokens: int = 0  # OneVision's num_image_tokens: features of the base image
    fixed: int = 0  # tokens per image for the "fixed" family
    source: str = "config"

    @property
    def anyres(self) -> bool:
        """Whether the processor tiles images (LLaVA-NeXT, OneVision).

        >>> TokenRules("llava_next").anyres
        True
        """
        return self.family in ANYRES_FAMILIES

    def per_image(self, size: tuple[int, int], n_in_prompt: int = 1) -> int:
        """Tokens of one ``(width, height)`` image in a prompt holding ``n_in_prompt`` images.

        >>> TokenRules("llava", extra_tokens=1).per_image((640, 480))
        576
        """
        drop = 1 if self.strategy == "default" else 0
        height, width = self.processed
        if self.family == "llava":
            return (height // self.patch_size) * (width // self.patch_size) + self.extra_tokens - drop
        if self.family == "llava_next":
            patches = (height // self.patch_size, width // self.patch_size)
            grid = anyres_grid_tokens(size, self.processed, patches, self.pinpoints)
            return patches[0] * patches[1] + self.extra_tokens + grid - drop
        if self.family == "llava_onevision":
            if n_in_prompt > 1:
                return self.base_tokens + 1 - drop  # several images: base features + one newline each
            side = math.isqrt(self.base_tokens)
            max_crops = int(self.aspect_ratio.removeprefix("anyres_max_"))
            grid = anyres_grid_tokens(size, self.processed, (side, side), self.pinpoints, max_crops)
            return self.base_tokens + grid - drop
        return self.fixed


def anyres_grid_tokens(
    size: tuple[int, int],
    processed: tuple[int, int],
    patches: tuple[int, int],
    pinpoints: tuple[tuple[int, int], ...],
    max_crops: int | None = None,
) -> int:
    """Feature tokens of the high-resolution crops of one ``(width, height)`` image, newline tokens included.

    The image is fitted into the best grid resolution (transformers' public ``select_best_resolution``),
    cut into crops of ``processed`` pixels, each giving ``patches`` features; the rows and columns that
    only cover the letterbox padding are dropped, one newline token ends each remaining row, and OneVision
    (``max_crops``) pools the grid down when it holds more than about ``max_crops`` crops of features.

    >>> anyres_grid_tokens((1000, 800), (336, 336), (24, 24), ((672, 672), (336, 672)))
    1862
    """
    from transformers.image_processing_utils import select_best_resolution

    width, height = size
    best_height, best_width = select_best_resolution((height, width), [list(p) for p in pinpoints])
    rows = patches[0] * (best_height // processed[0])
    cols = patches[1] * (best_width // processed[1])
    if width / height > cols / rows:  # wider than the grid: padding above and below
        rows -= 2 * ((rows - int(round(height * cols / width, 7))) // 2)
    else:
        cols -= 2 * ((cols - int(round(width * rows / height, 7))) // 2)
    if max_crops is not None:
        shrink = math.sqrt(rows * cols / (max_crops * patches[0] ** 2))
        if shrink > 1.1:
            rows, cols = int(rows // shrink), int(cols // shrink)
    return rows * cols + rows


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """``obj.key`` or ``obj[key]`` (configs, dicts, SizeDicts)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def rules_from_config(config: Any, fixed_fallback: int = 0) -> TokenRules:
    """The processor rules implied by a model config (see the module docstring).

    >>> from mllm_nb import catalog
    >>> rules_from_config(catalog.get("llava-hf/llava-1.5-7b-hf").build_config()).per_image((64, 64))
    576
    """
    model_type = getattr(config, "model_type", "")
    if model_type == "honeybee":
        return TokenRules("fixed", fixed=int(config.num_visual_tokens))
    vision = getattr(config, "vision_config", None)
    patch, size = _get(vision, "patch_size"), _get(vision, "image_size")
    if model_type not in ("llava", *ANYRES_FAMILIES) or not patch or not size:
        fixed = fixed_fallback or int(getattr(config, "image_seq_length", 0) or 0)
        return TokenRules("fixed", fixed=fixed)
    return TokenRules(
        family=model_type,
        patch_size=int(patch),
        processed=(int(size), int(size)),
        extra_tokens=1 if _get(vision, "model_type") == "clip_vision_model" else 0,
        strategy=str(getattr(config, "vision_feature_select_strategy", "default") or "default"),
        pinpoints=tuple(tuple(int(v) for v in p) for p in (getattr(config, "image_grid_pinpoints", None) or ())),
        aspect_ratio=str(getattr(config, "vision_aspect_ratio", None) or "anyres_max_9"),
        base_tokens=(int(size) // int(patch)) ** 2,
    )


def _processed_size(image_processor: Any) -> tuple[int, int] | None:
    """(height, width) a processor resizes each image or crop to: its crop size, else its size."""
    crop = _get(image_processor, "crop_size")
    if _get(image_processor, "do_center_crop") and _get(crop, "height"):
        return int(_get(crop, "height")), int(_get(crop, "width"))
    size = _get(image_processor, "size")
    if _get(size, "height"):
        return int(_get(size, "height")), int(_get(size, "width"))
    if _get(size, "shortest_edge"):
        return int(_get(size, "shortest_edge")), int(_get(size, "shortest_edge"))
    return None


def rules_from_processor(processor: Any, config: Any) -> TokenRules:
    """The config's rules with every setting the loaded processor states itself taking precedence.

    >>> rules = rules_from_processor(vlm.processor, vlm.model.config)  # doctest: +SKIP
    """
    if getattr(processor, "num_visual_tokens", None):  # Honeybee
        return TokenRules("fixed", fixed=int(processor.num_visual_tokens), source="processor")
    rules = rules_from_config(config)
    if rules.family == "fixed":
        return rules
    image_processor = getattr(processor, "image_processor", None)
    updates: dict[str, Any] = {"source": "processor"}
    for field_name, attr in (("patch_size", "patch_size"), ("extra_tokens", "num_additional_image_tokens"),
                             ("base_tokens", "num_image_tokens")):
        if isinstance(getattr(processor, attr, None), int):
            updates[field_name] = int(getattr(processor, attr))
    for field_name, attr in (("strategy", "vision_feature_select_strategy"), ("aspect_ratio", "vision_aspect_ratio")):
        if isinstance(getattr(processor, attr, None), str):
            updates[field_name] = getattr(processor, attr)
    pinpoints = _get(image_processor, "image_grid_pinpoints")
    if pinpoints and rules.anyres:
        updates["pinpoints"] = tuple(tuple(int(v) for v in p) for p in pinpoints)
    processed = _processed_size(image_processor)
    if processed:
        updates["processed"] = processed
    return replace(rules, **updates)


_VISION_KEYS = ("image_size", "patch_size", "spatial_merge_size", "temporal_patch_size")


def catalog_twin(config: Any) -> catalog.CatalogEntry | None:
    """A catalog entry of the same model type whose vision input settings (image size, patch size, merge size)
    equal the config's: its image-token figures hold for the config (e.g. a fine-tune of a catalog model).

    >>> catalog_twin(catalog.get("llava-hf/llava-1.5-7b-hf").build_config()).id
    'llava-hf/llava-1.5-7b-hf'
    """
    vision = getattr(config, "vision_config", None)
    model_type = getattr(config, "model_type", None)
    if vision is None or model_type is None:
        return None
    for entry in catalog.entries():
        twin = entry.config.get("vision_config") or {}
        if entry.config.get("model_type") != model_type:
            continue
        if all(_plain(twin.get(key)) == _plain(_get(vision, key)) for key in _VISION_KEYS):
            return entry
    return None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _side(value: Any) -> int | None:
    """A square size from an int or an ``[h, w]`` pair with equal sides."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1] and isinstance(value[0], int):
        return value[0]
    return None


def catalog_image_tokens(
    config: PretrainedConfig, entry: catalog.CatalogEntry | None, n_images: int
) -> tuple[int, int]:
    """(base, max) tokens per image for ``n_images`` per prompt: from the catalog (or a catalog twin of the
    config), else from the config's own figures; (0, 0) when the config says nothing usable.

    >>> entry = catalog.get("llava-hf/llava-v1.6-34b-hf")
    >>> catalog_image_tokens(entry.build_config(), entry, 1)
    (576, 2928)
    """
    entry = entry or catalog_twin(config)
    if entry is not None:
        return entry.image_tokens.base, entry.image_tokens.per_image(n_images)
    stated = getattr(config, "image_seq_length", None) or getattr(config, "mm_tokens_per_image", None)
    vision = getattr(config, "vision_config", None)
    side, patch = _side(_get(vision, "image_size")), _side(_get(vision, "patch_size"))
    if not stated and not (side and patch):
        return 0, 0
    base = int(stated or (side // patch) ** 2)
    grids = getattr(config, "image_grid_pinpoints", None) or []
    # anyres: the biggest crop grid plus one newline token per feature row, on top of the base image
    extra = max(((h // patch) * (w // patch + 1) for h, w in grids), default=0) if patch else 0
    return base, base + extra
