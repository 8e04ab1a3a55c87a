"""Which model should I use? Every catalog chat model planned against one machine, in one table.

``compare_models(target="t4")`` plans each catalog vision-language model (``mllm_nb.fit``, from stored figures:
nothing downloaded, no torch needed) and returns a :class:`ModelChoices` that shows, per model: parameters,
the 4-bit weights in memory, what loading it downloads (and its pre-quantized copy), tokens per image,
context length, licence, and whether it fits.

>>> choices = compare_models("t4")
>>> choices.rows[0].model_id, choices.rows[0].fits
('HuggingFaceTB/SmolVLM2-500M-Video-Instruct', True)
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from mllm_nb import catalog
from mllm_nb.hardware import format_bytes
from mllm_nb.plan import FitReport, Target, fit

#: Families that are not chat models (zero-shot classifiers): left out of the comparison.
_NOT_CHAT = ("clip", "siglip")
_COLUMNS = ("model", "params", "4-bit weights", "download", "image tokens", "context", "licence", "fits")


@dataclass(frozen=True)
class Choice:
    """One row: a catalog model planned on the target."""

    model_id: str
    params: int
    weights_bytes: int
    download_bytes: int | None
    prequantized: str | None
    prequantized_bytes: int | None
    image_tokens: str
    context_length: int
    license: str
    fits: bool
    summary: str

    def cells(self) -> tuple[str, ...]:
        """The row's cells as text."""
        download = "unknown" if self.download_bytes is None else format_bytes(self.download_bytes)
        if self.prequantized_bytes is not None:
            download += f" ({format_bytes(self.prequantized_bytes)} pre-quantized)"
        return (
            self.model_id, f"{self.params / 1e9:.2f} B", format_bytes(self.weights_bytes), download,
            self.image_tokens, f"{self.context_length:,}", self.license, "yes" if self.fits else "no",
        )  # fmt: skip


@dataclass(frozen=True)
class ModelChoices:
    """The comparison: rows smallest first; a text table with ``str()``, an HTML table in a notebook."""

    target: str
    quantization: str | None
    rows: tuple[Choice, ...]

    def __str__(self) -> str:
        table = [_COLUMNS] + [row.cells() for row in self.rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
        return f"Catalog chat models on {self.target} ({self.quantization or 'full precision'}):\n" + "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:left'>{esc(name)}</th>" for name in _COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{esc(cell)}</td>" for cell in row.cells()) + "</tr>"
            for row in self.rows
        )
        title = f"Catalog chat models on {esc(self.target)} ({esc(self.quantization or 'full precision')})"
        return f"<p><b>{title}</b></p><table><tr>{head}</tr>{body}</table>"

    def fitting(self) -> list[str]:
        """The ids of the models that fit, smallest first.

        >>> "google/gemma-3-4b-it" in compare_models("t4").fitting()
        True
        """
        return [row.model_id for row in self.rows if row.fits]


def _choice(entry: catalog.CatalogEntry, report: FitReport) -> Choice:
    return Choice(
        model_id=entry.id,
        params=entry.params,
        weights_bytes=report.weights_bytes,
        download_bytes=report.download_bytes,
        prequantized=entry.prequantized[0] if entry.prequantized else None,
        prequantized_bytes=report.prequantized_download_bytes,
        image_tokens=entry.image_tokens.describe(),
        context_length=entry.context_length,
        license=entry.license,
        fits=report.fits,
        summary=report.summary(),
    )


def compare_models(target: str | Target = "t4", quantization: str | None = "4bit", n_images: int = 1) -> ModelChoices:
    """Plan every catalog chat model on ``target`` with ``quantization``; rows sorted by parameters.

    >>> print(compare_models("t4").rows[-1].model_id)
    llava-hf/llava-v1.6-34b-hf
    """
    entries = [entry for entry in catalog.entries() if entry.family not in _NOT_CHAT]
    reports = [(entry, fit(entry, quantization=quantization, target=target, n_images=n_images)) for entry in entries]
    rows = tuple(sorted((_choice(entry, report) for entry, report in reports), key=lambda row: row.params))
    name = reports[0][1].target.name if reports else str(target)
    return ModelChoices(target=name, quantization=quantization, rows=rows)


__all__ = ["Choice", "ModelChoices", "compare_models"]
