"""``HoneybeeForConditionalGeneration``: CLIP vision tower -> abstractor -> Llama, with ``generate``.

Layout (the transformers 5 LLaVA convention)::

    model.vision_tower     transformers CLIPVisionModel (features: last encoder layer, no post-layernorm)
    model.abstractor       HoneybeeCAbstractor or HoneybeeDAbstractor (mllm_nb.honeybee.abstractors)
    model.language_model   transformers LlamaModel
    lm_head

Image positions in ``input_ids`` are the ``<image>`` token (``config.image_token_id``, what
:class:`~mllm_nb.honeybee.HoneybeeProcessor` emits) or, as in the reference implementation, any
negative id (runs of -1). Each image fills ``config.num_visual_tokens`` positions, images in order.

>>> from mllm_nb.honeybee import HoneybeeConfig
>>> model = HoneybeeForConditionalGeneration(HoneybeeConfig(  # doctest: +SKIP
...     vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
...                    "num_attention_heads": 4, "image_size": 56, "patch_size": 14},
...     text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
...                  "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 300},
...     abstractor_config={"num_queries": 4, "hidden_size": 64, "depth": 1}, image_token_id=300))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from mllm_nb.honeybee.abstractors import (
    HoneybeeCAbstractor,
    HoneybeeDAbstractor,
    build_abstractor,
    grid_reference_points,
)
from mllm_nb.honeybee.configuration import HoneybeeConfig, HoneybeeError
from mllm_nb.upstream import CACHE_ARGUMENT, pop_cache

#: Module prefixes that bitsandbytes leaves in the compute dtype: only the LLM's Linear layers quantize.
QUANTIZATION_SKIP_MODULES: tuple[str, ...] = ("lm_head", "model.vision_tower", "model.abstractor")
#: Keyword arguments of the reference ``forward``/``generate`` that only matter for training; ignored.
_REFERENCE_ONLY_KWARGS = ("num_images", "is_null_image", "seq_length", "image_sizes")


@dataclass
class HoneybeeModelOutputWithPast(BaseModelOutputWithPast):
    """Hidden states of the language model, the cache, and the visual tokens that were merged in.

    The first fields are transformers' ``BaseModelOutputWithPast``, so the cache field has the name of
    the installed release (``past_key_values`` before 5.24, ``cache`` from 5.24 on; see
    :mod:`mllm_nb.upstream`).
    """

    image_hidden_states: torch.FloatTensor | None = None


@dataclass
class HoneybeeCausalLMOutputWithPast(CausalLMOutputWithPast):
    """Logits (and loss when ``labels`` are given), the cache and the merged visual tokens."""

    image_hidden_states: torch.FloatTensor | None = None


class HoneybeePreTrainedModel(PreTrainedModel):
    """Weight initialisation and the loading flags shared by the Honeybee models.

    >>> HoneybeePreTrainedModel.base_model_prefix
    'model'
    """

    config: HoneybeeConfig
    config_class = HoneybeeConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ("HoneybeeCAbstractor", "HoneybeeDAbstractor")
    _skip_keys_device_placement = (CACHE_ARGUMENT,)
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = getattr(self.config, "initializer_range", 0.02) or 0.02
        if isinstance(module, HoneybeeCAbstractor):
            for param in (module.pos_emb, module.eos_tokens):
                if param is not None:
                    init.trunc_normal_(param, mean=0.0, std=std)
        elif isinstance(module, HoneybeeDAbstractor):
            for param in (module.v_pos_emb, module.eos_tokens):
                if param is not None:
                    init.trunc_normal_(param, mean=0.0, std=std)
            side = int(module.v_pos_emb.shape[1] ** 0.5) if module.v_pos_emb is not None else None
            if side and module.reference_points.device.type != "meta":
                grid = grid_reference_points(module.reference_points.shape[1], side)
                init.copy_(module.reference_points, grid.to(module.reference_points.dtype))


class HoneybeeModel(HoneybeePreTrainedModel):
    """Vision tower, abstractor and language model without the LM head (``model.model`` of the full model).

    >>> HoneybeeModel(config)(**inputs).last_hidden_state.shape  # doctest: +SKIP
    torch.Size([1, 214, 4096])
    """

    def __init__(self, config: HoneybeeConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.abstractor = build_abstractor(
            config.abstractor_config,
            vision_hidden_size=config.vision_config.hidden_size,
            text_hidden_size=config.text_config.hidden_size,
            num_patches=config.num_patches,
        )
        self.language_model = AutoModel.from_config(config.text_config)
        if config.projector_type == "d-abs":
            # deformable attention runs in float32, as in the reference: keep its weights there
            self._keep_in_fp32_modules_strict = ["abstractor"]
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP features ``[n_images, 1 + patches, vision_hidden]`` (CLS first) that the abstractor reads.

        >>> model.model.get_vision_features(inputs["pixel_values"]).shape  # doctest: +SKIP
        torch.Size([1, 257, 1024])
        """
        tower_dtype = self.vision_tower.get_input_embeddings().weight.dtype
        pixel_values = pixel_values.to(tower_dtype)
        layer = self.config.vision_feature_layer
        if layer == -1:
            return self.vision_tower(pixel_values).last_hidden_state
        return self.vision_tower(pixel_values, output_hidden_states=True).hidden_states[layer]

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Visual tokens ``[n_images, num_visual_tokens, text_hidden]`` in the language model's dtype.

        >>> model.model.get_image_features(inputs["pixel_values"]).shape  # doctest: +SKIP
        torch.Size([1, 144, 4096])
        """
        features = self.get_vision_features(pixel_values)
        tokens = self.abstractor(features)
        embeddings = self.get_input_embeddings().weight
        return tokens.to(embeddings.device, embeddings.dtype)

    def image_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Where the visual tokens go: the ``<image>`` token id or any negative id (reference convention).

        >>> model.model.image_mask(torch.tensor([[1, -1, -1, 32000, 5]])).tolist()  # doctest: +SKIP
        [[False, True, True, True, False]]
        """
        return (input_ids < 0) | (input_ids == self.config.image_token_id)

    def _embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        """Token embeddings with each image's visual tokens written into its positions, in order."""
        embed = self.get_input_embeddings()
        if pixel_values is None:
            _check_text_only(input_ids, embed.num_embeddings)
            return embed(input_ids), None
        mask = self.image_mask(input_ids)
        embeddings = embed(input_ids.masked_fill(mask, 0))
        visual = self.get_image_features(pixel_values)
        if int(mask.sum()) != visual.shape[0] * visual.shape[1]:
            raise HoneybeeError(
                f"The prompt has {int(mask.sum())} image positions but {visual.shape[0]} image(s) give "
                f"{visual.shape[0] * visual.shape[1]} visual tokens; put one <image> per image in the prompt "
                "and build the inputs with HoneybeeProcessor."
            )
        mask = mask.unsqueeze(-1).expand_as(embeddings).to(embeddings.device)
        merged = embeddings.masked_scatter(mask, visual.to(embeddings.device, embeddings.dtype))
        return merged, visual

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> HoneybeeModelOutputWithPast:
        """Merge the visual tokens into the prompt and run the language model.

        The KV cache comes in ``kwargs`` as ``cache`` or ``past_key_values`` (either name, any release).
        """
        cache = pop_cache(kwargs)
        for key in _REFERENCE_ONLY_KWARGS:
            kwargs.pop(key, None)
        if (input_ids is None) == (inputs_embeds is None):
            raise HoneybeeError("Pass exactly one of input_ids or inputs_embeds.")
        visual = None
        if inputs_embeds is None:
            inputs_embeds, visual = self._embed(input_ids, pixel_values)
        elif pixel_values is not None:
            raise HoneybeeError("pixel_values need input_ids to find the image positions; pass input_ids instead.")
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **{CACHE_ARGUMENT: cache},
            **kwargs,
        )
        return HoneybeeModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            **{CACHE_ARGUMENT: getattr(outputs, CACHE_ARGUMENT)},
            attentions=outputs.attentions,
            image_hidden_states=visual,
        )


def _check_text_only(input_ids: torch.Tensor, vocab_size: int) -> None:
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise HoneybeeError(
            "input_ids contain image positions (<image> or -1) but no pixel_values were given; "
            "pass the images too (build the inputs with HoneybeeProcessor)."
        )


class HoneybeeForConditionalGeneration(HoneybeePreTrainedModel, GenerationMixin):
    """Honeybee with its LM head: ``forward`` gives logits, ``generate`` answers (KV cache, device_map, 4-bit).

    With a bitsandbytes ``quantization_config`` that names no ``llm_int8_skip_modules``, only the
    language model's Linear layers are quantized; the vision tower, the abstractor and ``lm_head``
    stay in the compute dtype (see :data:`QUANTIZATION_SKIP_MODULES`).

    >>> model = HoneybeeForConditionalGeneration.from_pretrained("honeybee-7b-c-abs-m144")  # doctest: +SKIP
    >>> model.generate(**processor(images=image, text=prompt, return_tensors="pt"), max_new_tokens=32)  # doctest: +SKIP
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}  # noqa: RUF012
    #: What ``from_pretrained`` keeps out of bitsandbytes (for planners such as ``mllm_nb.plan``).
    quantization_skip_modules = QUANTIZATION_SKIP_MODULES

    def __init__(self, config: HoneybeeConfig):
        super().__init__(config)
        self.model = HoneybeeModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> HoneybeeForConditionalGeneration:
        """``PreTrainedModel.from_pretrained``, keeping the vision tower and abstractor out of bitsandbytes.

        >>> HoneybeeForConditionalGeneration.from_pretrained("converted/", dtype="float16")  # doctest: +SKIP
        """
        quantization_config = kwargs.get("quantization_config")
        if _is_bitsandbytes(quantization_config) and quantization_config.llm_int8_skip_modules is None:
            quantization_config = copy.deepcopy(quantization_config)
            quantization_config.llm_int8_skip_modules = list(QUANTIZATION_SKIP_MODULES)
            kwargs["quantization_config"] = quantization_config
        return super().from_pretrained(*args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Visual tokens ``[n_images, num_visual_tokens, text_hidden]`` of preprocessed images.

        >>> model.get_image_features(inputs["pixel_values"]).shape  # doctest: +SKIP
        torch.Size([1, 144, 4096])
        """
        return self.model.get_image_features(pixel_values)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_images: Any = None,
        is_null_image: Any = None,
        **kwargs: Any,
    ) -> HoneybeeCausalLMOutputWithPast:
        """Logits for every position (or the last ``logits_to_keep``); the loss when ``labels`` are given.

        ``num_images`` and ``is_null_image`` (inputs of the reference implementation) are accepted and ignored.
        The KV cache comes in ``kwargs`` as ``cache`` or ``past_key_values`` (either name, any release).

        >>> model(**processor(images=image, text=prompt, return_tensors="pt")).logits.shape  # doctest: +SKIP
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,  # the cache, under either name: HoneybeeModel.forward takes it out
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size)
        return HoneybeeCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_ARGUMENT: getattr(outputs, CACHE_ARGUMENT)},
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )


def _is_bitsandbytes(quantization_config: Any) -> bool:
    from transformers import BitsAndBytesConfig

    return isinstance(quantization_config, BitsAndBytesConfig)


__all__ = [
    "QUANTIZATION_SKIP_MODULES",
    "HoneybeeForConditionalGeneration",
    "HoneybeeModel",
    "HoneybeePreTrainedModel",
]
