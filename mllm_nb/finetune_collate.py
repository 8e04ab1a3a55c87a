"""Training rows for fine-tuning: the VLM's own prompt, then the answer; the loss only on the answer.

:func:`encode_example` builds one row exactly as :meth:`mllm_nb.vlm.VLM.ask` would see the question
(the processor's chat template, image tokens expanded by the processor), then appends the answer's
tokens and the end-of-turn token. ``labels`` are ``-100`` on every prompt and image token, so only the
answer (and its end) is learnt. :class:`AnswerCollator` pads such rows into a batch for ``Trainer``.

>>> row = encode_example(vlm, [image], "What color is the circle?", "blue")  # doctest: +SKIP
>>> row["labels"][row["labels"] != -100]  # doctest: +SKIP
tensor([ 524,    2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100
"""The label ``Trainer``'s loss (cross-entropy) skips: every position that is not part of an answer."""

#: Per-token keys besides ``input_ids`` and what the appended answer tokens get there.
_TOKEN_FILL = {"attention_mask": 1}


def answer_messages(n_images: int, question: str, answer: str) -> list[dict[str, Any]]:
    """The chat of one user turn (``n_images`` images, then ``question``) and the assistant's ``answer``.

    >>> answer_messages(1, "What is it?", "a cat")[1]
    {'role': 'assistant', 'content': [{'type': 'text', 'text': 'a cat'}]}
    """
    user = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


def stop_tokens(vlm: Any) -> list[str]:
    """The token strings that end an answer: the generation config's EOS ids and the tokenizer's EOS.

    >>> stop_tokens(vlm)  # doctest: +SKIP
    ['</s>']
    """
    tokenizer = getattr(vlm.processor, "tokenizer", vlm.processor)
    ids = getattr(getattr(vlm.model, "generation_config", None), "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    names = [tokenizer.convert_ids_to_tokens(int(i)) for i in ids]
    if getattr(tokenizer, "eos_token", None):
        names.append(tokenizer.eos_token)
    return list(dict.fromkeys(name for name in names if isinstance(name, str) and name))


def completion_text(vlm: Any, n_images: int, question: str, answer: str) -> tuple[str, str]:
    """``(prompt, completion)``: the prompt ``ask`` uses and what the chat template puts after it for ``answer``.

    The completion ends with the first end-of-turn token (added when the template has none), so the
    model learns to stop.

    >>> completion_text(vlm, 1, "What color is the circle?", "blue")  # doctest: +SKIP
    ('USER: <image>\\nWhat color is the circle? ASSISTANT:', ' blue</s>')
    """
    prompt = vlm.question_prompt(n_images, question)
    completion = None
    template = getattr(vlm.processor, "chat_template", None)
    if template and not vlm.family.plain_prompt:
        try:
            full = vlm.processor.apply_chat_template(answer_messages(n_images, question, answer), tokenize=False)
        except Exception:  # noqa: BLE001 - a template without an assistant role: fall back to the plain answer
            full = ""
        if full.startswith(prompt) and answer in full[len(prompt) :]:
            completion = full[len(prompt) :]
    if completion is None:
        completion = (" " if prompt and not prompt[-1].isspace() else "") + answer
    stops = stop_tokens(vlm)
    cut = [completion.find(stop) + len(stop) for stop in stops if stop in completion]
    if cut:
        return prompt, completion[: min(cut)]
    return prompt, completion + (stops[0] if stops else "")


def encode_example(vlm: Any, images: Sequence[Any], question: str, answer: str) -> dict[str, torch.Tensor]:
    """One training row: the processor's output for the prompt, the answer's ids appended, and ``labels``.

    ``labels`` equal ``input_ids`` on the answer's tokens and are ``-100`` everywhere else (prompt,
    image tokens), so the loss is on the answer only. Tensors have a batch dimension of 1.

    >>> row = encode_example(vlm, [image], "What shape is red?", "circle")  # doctest: +SKIP
    """
    prompt, completion = completion_text(vlm, len(images), question, answer)
    payload = [list(images)] if images else None
    inputs = dict(vlm.processor(images=payload, text=[prompt], return_tensors="pt"))
    tokenizer = getattr(vlm.processor, "tokenizer", vlm.processor)
    answer_ids = torch.tensor([tokenizer(completion, add_special_tokens=False)["input_ids"]], dtype=torch.long)
    prompt_ids = inputs["input_ids"]
    length = prompt_ids.shape[1]
    row: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        if key == "input_ids":
            row[key] = torch.cat([prompt_ids, answer_ids], dim=1)
        elif isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (1, length):
            fill = torch.full((1, answer_ids.shape[1]), _TOKEN_FILL.get(key, 0), dtype=value.dtype)
            row[key] = torch.cat([value, fill], dim=1)
        elif isinstance(value, torch.Tensor):
            row[key] = value
    row["labels"] = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), answer_ids], dim=1)
    return row


def token_count(vlm: Any, images: Sequence[Any], question: str, answer: str) -> int:
    """How many tokens the training row of this example has (image tokens included), as the processor counts.

    >>> token_count(vlm, [image], "What shape is red?", "circle")  # doctest: +SKIP
    76
    """
    return int(encode_example(vlm, images, question, answer)["input_ids"].shape[1])


@dataclass
class AnswerCollator:
    """Builds ``Trainer`` batches from examples (objects with ``images``, ``question`` and ``answer``).

    Rows are padded on the right (``labels`` with -100, the attention mask with 0); image tensors are
    stacked in row order and cast to ``dtype`` (the vision tower's), as ``ask`` does.

    >>> batch = AnswerCollator(vlm)(examples[:4])  # doctest: +SKIP
    """

    vlm: Any
    dtype: torch.dtype | None = None

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [encode_example(self.vlm, _images(e), e.question, e.answer) for e in examples]
        return self.pad(rows)

    def pad(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Rows of :func:`encode_example` as one batch."""
        width = max(row["input_ids"].shape[1] for row in rows)
        token_keys = {
            key for key in rows[0] if all(row[key].shape == row["input_ids"].shape for row in rows)
        }
        batch: dict[str, torch.Tensor] = {}
        for key in rows[0]:
            values = [row[key] for row in rows if key in row]
            if key in token_keys:
                fill = {"input_ids": self._pad_id(), "labels": IGNORE_INDEX}.get(key, 0)
                batch[key] = torch.cat(
                    [torch.nn.functional.pad(v, (0, width - v.shape[1]), value=fill) for v in values], dim=0
                )
            else:
                batch[key] = _stack(values)
        if self.dtype is not None:
            for key, value in batch.items():
                if value.is_floating_point():
                    batch[key] = value.to(self.dtype)
        return batch

    def _pad_id(self) -> int:
        tokenizer = getattr(self.vlm.processor, "tokenizer", self.vlm.processor)
        for candidate in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
            if candidate is not None:
                return int(candidate)
        return 0


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """Image tensors of the rows along the first dimension; 5-D tiles (LLaVA-NeXT) zero-padded to one count."""
    if len({v.shape[1:] for v in values}) > 1 and all(v.dim() == 5 for v in values):
        most = max(v.shape[1] for v in values)
        values = [torch.nn.functional.pad(v, (0, 0, 0, 0, 0, 0, 0, most - v.shape[1])) for v in values]
    return torch.cat(values, dim=0)


def _images(example: Any) -> list[Any]:
    """The example's images as PIL images (``Example.open_images`` reads paths), else its ``images`` as given."""
    return example.open_images() if hasattr(example, "open_images") else list(example.images)
