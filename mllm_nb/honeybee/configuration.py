"""``HoneybeeConfig``: a CLIP vision tower, a C- or D-Abstractor and a Llama (Vicuna) language model.

The abstractor settings live in one plain dict, ``abstractor_config``, whose keys depend on
``projector_type`` (``"c-abs"`` or ``"d-abs"``); missing keys get the released models' defaults.
The default config is the shape of Honeybee 7B-C-Abs-M144 (CLIP ViT-L/14 at 224 px, Vicuna-7B).

>>> config = HoneybeeConfig(abstractor_config={"projector_type": "c-abs", "num_queries": 256})
>>> config.num_visual_tokens, config.abstractor_config["depth"]
(256, 3)
"""

from __future__ import annotations

import math
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from mllm_nb.errors import MllmNbError


class HoneybeeError(MllmNbError, ValueError):
    """A Honeybee config, checkpoint, prompt or archive could not be used as given."""


#: CLIP ViT-L/14 at 224 px, the vision tower of the released 7B/13B models.
VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}

C_ABS_DEFAULTS: dict[str, Any] = {
    "projector_type": "c-abs",
    "num_queries": 144,
    "num_eos_tokens": 0,
    "pos_emb": True,
    "hidden_size": 1024,  # channels of the two RegStages
    "depth": 3,  # bottleneck blocks per RegStage
    "mlp_depth": 2,  # Linear layers of the readout
    "prenorm": False,
    "norm_eps": 1e-5,  # LayerNorm2d inside the RegStages
    "prenorm_eps": 1e-6,
}

D_ABS_DEFAULTS: dict[str, Any] = {
    "projector_type": "d-abs",
    "num_queries": 144,
    "num_eos_tokens": 0,
    "pos_emb": True,
    "d_model": 1024,
    "decoder_layers": 6,
    "decoder_attention_heads": 8,
    "decoder_n_points": 4,
    "decoder_ffn_dim": 1024,
    "activation_function": "relu",
    "num_feature_levels": 1,
    "pooled_v_target": "query",  # what the pooled visual map becomes: "query" (positions), "tgt" or "none"
    "except_cls": True,
    "layer_norm_eps": 1e-5,
}

_DEFAULTS = {"c-abs": C_ABS_DEFAULTS, "d-abs": D_ABS_DEFAULTS}
#: Abstractor settings that are counts or sizes, with their smallest allowed value.
_COUNTS = {"num_eos_tokens": 0, "hidden_size": 1, "depth": 1, "mlp_depth": 1, "d_model": 1, "decoder_layers": 1,
           "decoder_attention_heads": 1, "decoder_n_points": 1, "decoder_ffn_dim": 1}  # fmt: skip


def abstractor_defaults(projector_type: str) -> dict[str, Any]:
    """A copy of the default settings of one abstractor type (``"c-abs"`` or ``"d-abs"``).

    >>> abstractor_defaults("d-abs")["decoder_n_points"]
    4
    """
    if not isinstance(projector_type, str) or projector_type not in _DEFAULTS:
        raise HoneybeeError(f"projector_type {projector_type!r} is not supported; use 'c-abs' or 'd-abs'.")
    return dict(_DEFAULTS[projector_type])


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def checked_abstractor(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Fill the defaults of ``settings`` and refuse what the abstractors cannot build.

    >>> checked_abstractor({"num_queries": 64})["projector_type"]
    'c-abs'
    """
    settings = dict(settings or {})
    merged = {**abstractor_defaults(settings.get("projector_type", "c-abs")), **settings}
    queries = merged["num_queries"]
    if isinstance(queries, bool) or not isinstance(queries, int) or not _is_square(queries):
        raise HoneybeeError(f"abstractor num_queries must be a square number (e.g. 144 = 12x12); got {queries!r}.")
    for key, least in _COUNTS.items():
        value = merged.get(key, least)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise HoneybeeError(f"abstractor {key} must be a whole number >= {least}; got {value!r}.")
    if merged["projector_type"] == "d-abs":
        if merged["num_feature_levels"] != 1:
            raise HoneybeeError("Only single-level D-Abstractors (num_feature_levels=1) are supported, as released.")
        if not merged["except_cls"]:
            raise HoneybeeError("The D-Abstractor needs except_cls=True (the CLS token is dropped), as released.")
        if merged["pooled_v_target"] not in ("query", "tgt", "none"):
            raise HoneybeeError(f"pooled_v_target must be 'query', 'tgt' or 'none'; got {merged['pooled_v_target']!r}.")
        if merged["d_model"] % merged["decoder_attention_heads"]:
            raise HoneybeeError("The D-Abstractor d_model must be divisible by decoder_attention_heads.")
    return merged


class HoneybeeConfig(PreTrainedConfig):
    """Configuration of :class:`~mllm_nb.honeybee.HoneybeeForConditionalGeneration`.

    ``vision_config`` is a CLIP vision config (dict or config), ``text_config`` a Llama config,
    ``abstractor_config`` the abstractor settings (see :data:`C_ABS_DEFAULTS`, :data:`D_ABS_DEFAULTS`),
    ``image_token_id`` the id of ``<image>`` in the tokenizer (32000 for Vicuna), and
    ``vision_feature_layer`` which CLIP hidden state feeds the abstractor (-1: the last encoder layer,
    before the post-layernorm).

    >>> HoneybeeConfig().num_visual_tokens
    144
    """

    model_type = "honeybee"
    sub_configs_defaults = {  # noqa: RUF012
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="clip_vision_model", init_kwargs=VISION_DEFAULTS
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    abstractor_config: dict | None = None
    image_token_id: int = 32000
    vision_feature_layer: int = -1
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.abstractor_config = checked_abstractor(self.abstractor_config)
        sizes = (self.vision_config.image_size, self.vision_config.patch_size)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise HoneybeeError(f"vision_config image_size and patch_size must be positive whole numbers; got {sizes}.")
        side = self.vision_config.image_size // self.vision_config.patch_size
        if not _is_square(side * side) or side * side < self.abstractor_config["num_queries"]:
            raise HoneybeeError(
                f"The vision tower gives {side}x{side} patches, fewer than the {self.abstractor_config['num_queries']} "
                "queries of the abstractor; use a larger image_size or fewer num_queries."
            )

    @property
    def num_visual_tokens(self) -> int:
        """Tokens one image becomes in the language model (queries + learned eos tokens).

        >>> HoneybeeConfig(abstractor_config={"num_queries": 256}).num_visual_tokens
        256
        """
        return int(self.abstractor_config["num_queries"] + self.abstractor_config["num_eos_tokens"])

    @property
    def image_seq_length(self) -> int:
        """Alias of :attr:`num_visual_tokens` (the name LLaVA configs and ``mllm_nb.plan`` use).

        >>> HoneybeeConfig().image_seq_length
        144
        """
        return self.num_visual_tokens

    @property
    def num_patches(self) -> int:
        """Patch tokens of the vision tower (the CLS token not counted).

        >>> HoneybeeConfig().num_patches
        256
        """
        side = self.vision_config.image_size // self.vision_config.patch_size
        return side * side

    @property
    def projector_type(self) -> str:
        """``"c-abs"`` or ``"d-abs"``.

        >>> HoneybeeConfig().projector_type
        'c-abs'
        """
        return str(self.abstractor_config["projector_type"])


__all__ = ["C_ABS_DEFAULTS", "D_ABS_DEFAULTS", "HoneybeeConfig", "HoneybeeError", "abstractor_defaults"]
