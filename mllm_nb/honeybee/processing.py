"""``HoneybeeProcessor``: images and prompts -> ``input_ids``, ``attention_mask``, ``pixel_values``.

It reproduces the reference processor: PIL bicubic resize straight to S x S (no crop), OpenAI CLIP
mean/std; BOS first, the prompt split on ``<image>`` and each text chunk tokenized on its own
(so every chunk gets SentencePiece's prefix space), no EOS; each ``<image>`` becomes a run of
``num_visual_tokens`` image tokens; several prompts are padded on the left with id 0. The chat
template writes the reference prompt format::

    {system}\\nHuman: <image>\\nHuman: {question}\\nAI: {answer}

>>> processor = HoneybeeProcessor.from_pretrained("converted/")  # doctest: +SKIP
>>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
>>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)  # doctest: +SKIP
>>> inputs = processor(images=image, text=prompt, return_tensors="pt")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import BatchFeature, CLIPImageProcessorPil, ProcessorMixin
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from mllm_nb.honeybee.configuration import HoneybeeError

IMAGE_TOKEN = "<image>"
SYSTEM_MESSAGE = (
    "The following is a conversation between a curious human and AI assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

#: The reference prompt: system line, one ``Human: <image>`` line per image, ``Human: {text}``, ``AI: ``.
CHAT_TEMPLATE = (
    "{%- set system = '" + SYSTEM_MESSAGE.replace("'", "\\'") + "' -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set system = messages[0]['content'] -%}"
    "{%- else -%}{%- set system = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join(' ') -%}{%- endif -%}"
    "{%- set messages = messages[1:] -%}{%- endif -%}"
    "{{- system + '\\n' -}}"
    "{%- for message in messages -%}"
    "{%- set speaker = 'AI: ' if message['role'] == 'assistant' else 'Human: ' -%}"
    "{%- if message['content'] is string -%}{{- speaker + message['content'] + '\\n' -}}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{- speaker + '<image>\\n' -}}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}"
    "{{- speaker + part['text'] + '\\n' -}}{%- endfor -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'AI: ' -}}{%- endif -%}"
)


class HoneybeeImageProcessor(CLIPImageProcessorPil):
    """CLIP preprocessing as Honeybee does it: PIL bicubic resize to S x S (aspect not kept), no crop.

    >>> HoneybeeImageProcessor(size={"height": 336, "width": 336}).size["height"]
    336
    """

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 224, "width": 224}  # noqa: RUF012
    default_to_square = True
    crop_size = None
    do_center_crop = False


class HoneybeeProcessor(ProcessorMixin):
    """Image processor + Llama tokenizer + the Honeybee prompt format (see the module docstring).

    ``num_visual_tokens`` is the model's ``config.num_visual_tokens``; ``image_token`` must be a
    token of ``tokenizer`` (the converter adds ``<image>`` to the Vicuna tokenizer as id 32000).

    >>> processor = HoneybeeProcessor(HoneybeeImageProcessor(), tokenizer, num_visual_tokens=144)  # doctest: +SKIP
    >>> processor(images=[img1, img2], text=["Human: <image>\\nHuman: <image>\\nAI: "])  # doctest: +SKIP
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        image_token: str = IMAGE_TOKEN,
        num_visual_tokens: int = 144,
        **kwargs: Any,
    ):
        self.image_token = image_token
        self.num_visual_tokens = int(num_visual_tokens)
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)
        token_id = tokenizer.convert_tokens_to_ids(image_token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise HoneybeeError(
                f"The tokenizer has no {image_token!r} token; add it with "
                f"tokenizer.add_tokens([{image_token!r}], special_tokens=True) (mllm_nb.honeybee.convert does)."
            )
        self.image_token_id = int(token_id)

    @property
    def model_input_names(self) -> list[str]:
        """The keys ``__call__`` returns.

        >>> processor.model_input_names  # doctest: +SKIP
        ['input_ids', 'attention_mask', 'pixel_values']
        """
        return ["input_ids", "attention_mask", "pixel_values"]

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        videos: Any = None,
        audio: Any = None,
        return_tensors: str | None = None,
        padding: bool | str = True,
        padding_side: str | None = None,
        add_special_tokens: bool = True,
        **kwargs: Any,
    ) -> BatchFeature:
        """``input_ids``/``attention_mask`` for ``text`` and ``pixel_values`` for ``images`` (in prompt order).

        Unequal prompts are padded (left by default, as the reference does) with the pad id (0).

        >>> processor(images=image, text=prompt, return_tensors="pt")["input_ids"].shape  # doctest: +SKIP
        """
        if videos is not None or audio is not None:
            raise HoneybeeError("Honeybee reads images and text only; pass images= and text=.")
        flat = _flat_images(images)
        data: dict[str, Any] = {}
        if text is not None:
            prompts = [text] if isinstance(text, str) else list(text)
            self._check_placeholders(prompts, len(flat))
            rows = [self._encode(prompt, add_special_tokens) for prompt in prompts]
            data.update(self._pad(rows, padding_side or "left"))
        if flat:
            data["pixel_values"] = self.image_processor(flat, return_tensors="np")["pixel_values"]
        if not data:
            raise HoneybeeError("Pass images=, text= or both to the Honeybee processor.")
        return BatchFeature(data, tensor_type=return_tensors)

    def _check_placeholders(self, prompts: list[str], n_images: int) -> None:
        if not all(isinstance(p, str) for p in prompts):
            raise HoneybeeError("text must be a string or a list of strings.")
        found = sum(p.count(self.image_token) for p in prompts)
        if found != n_images:
            raise HoneybeeError(
                f"The prompt(s) have {found} {self.image_token} placeholder(s) but {n_images} image(s) were "
                "given; use one placeholder per image (apply_chat_template writes them)."
            )

    def _encode(self, prompt: str, add_special_tokens: bool) -> list[int]:
        """BOS, then each text chunk tokenized on its own, with a run of image tokens per placeholder."""
        ids = [self.tokenizer.bos_token_id] if add_special_tokens and self.tokenizer.bos_token_id is not None else []
        for index, chunk in enumerate(prompt.split(self.image_token)):
            if index:
                ids += [self.image_token_id] * self.num_visual_tokens
            if chunk:
                ids += self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
        return ids

    def _pad(self, rows: list[list[int]], side: str) -> dict[str, list[list[int]]]:
        if side not in ("left", "right"):
            raise HoneybeeError(f"padding_side must be 'left' or 'right'; got {side!r}.")
        width = max(len(row) for row in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, masks = [], []
        for row in rows:
            fill = width - len(row)
            if side == "left":
                ids.append([pad_id] * fill + row)
                masks.append([0] * fill + [1] * len(row))
            else:
                ids.append(row + [pad_id] * fill)
                masks.append([1] * len(row) + [0] * fill)
        return {"input_ids": ids, "attention_mask": masks}


def _flat_images(images: Any) -> list[Any]:
    """None, one image, a list, or a list of per-prompt lists -> a flat list in order."""
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        return [images]
    flat: list[Any] = []
    for item in images:
        flat.extend(_flat_images(item) if isinstance(item, (list, tuple)) else [item])
    return flat


__all__ = ["CHAT_TEMPLATE", "IMAGE_TOKEN", "SYSTEM_MESSAGE", "HoneybeeImageProcessor", "HoneybeeProcessor"]
