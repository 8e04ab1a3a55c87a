"""Read the text in images with a vision-language model (Honeybee, LLaVA, ...).

A thin layer over :class:`mllm_nb.vlm.VLM`: the reference Honeybee OCR prompt, one image or a
list of images (one reading each), and a folder into a resumable JSONL. Score the readings with
:func:`mllm_nb.metrics.cer` / :func:`mllm_nb.metrics.wer`.

>>> vlm = mllm_nb.load_vlm("honeybee-7b-c-abs-m144", quantization="4bit")  # doctest: +SKIP
>>> ocr(vlm, "receipt.jpg")  # doctest: +SKIP
'TOTAL 12.50'
"""

from __future__ import annotations

import os
from typing import Any

from mllm_nb.errors import MllmNbError

OCR_PROMPT = "Please read all texts in image"
"""The OCR question used in the Honeybee paper's examples (and what the demo Honeybee was trained on)."""


class OcrError(MllmNbError, ValueError):
    """``ocr`` was called with something it cannot read."""


def ocr(vlm: Any, image: Any, prompt: str | None = None, batch_size: int = 8, **generation: Any) -> str | list[str]:
    """The text ``vlm`` reads in ``image``; a list of images gives a list of readings, in order.

    ``image`` is anything :func:`mllm_nb.load_image` accepts. ``prompt`` defaults to
    :data:`OCR_PROMPT`; ``generation`` goes to ``generate`` (greedy by default), e.g.
    ``max_new_tokens=64``. Lists are answered ``batch_size`` images per ``generate`` call.

    >>> ocr(vlm, "sign.png")  # doctest: +SKIP
    'STOP'
    >>> ocr(vlm, ["a.png", "b.png"])  # doctest: +SKIP
    ['EXIT', 'OPEN']
    """
    _check_vlm(vlm)
    question = OCR_PROMPT if prompt is None else prompt
    if isinstance(image, (list, tuple)):
        if not image:
            raise OcrError("ocr() got an empty list of images; pass at least one image.")
        return vlm.batch_ask([(item, question) for item in image], batch_size=batch_size, **generation)
    if image is None:
        raise OcrError("ocr() needs an image (a path, URL, PIL image or array); got None.")
    return vlm.ask(image, question, **generation)


def ocr_folder(
    vlm: Any, folder: str | os.PathLike, out_jsonl: str | os.PathLike, prompt: str | None = None, **options: Any
) -> dict[str, int]:
    """Read every image of ``folder`` into ``out_jsonl`` (resumable; see ``VLM.caption_folder``).

    Each line is ``{"file": ..., "caption": <the text read>}``; unreadable files get an ``"error"``.

    >>> ocr_folder(vlm, "scans/", "scans.jsonl")  # doctest: +SKIP
    {'captioned': 12, 'skipped': 0, 'failed': 0}
    """
    _check_vlm(vlm)
    return vlm.caption_folder(folder, out_jsonl, prompt=OCR_PROMPT if prompt is None else prompt, **options)


def _check_vlm(vlm: Any) -> None:
    if not (hasattr(vlm, "ask") and hasattr(vlm, "batch_ask")):
        raise OcrError(f"ocr() needs a model loaded with mllm_nb.load_vlm(...); got {type(vlm).__name__}.")


__all__ = ["OCR_PROMPT", "OcrError", "ocr", "ocr_folder"]
