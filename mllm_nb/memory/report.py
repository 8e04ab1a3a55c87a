"""The report base ``FitReport`` and ``BudgetReport`` render with: a verdict, a (label, value) table, titled lists.

A report subclass provides ``fits``, ``subject()`` (what was judged), ``headline()`` (the first line of its
text), ``table()`` and ``sections()``; the base renders them as text (``str()``) and as an HTML table in a
notebook, and raises its ``error`` class with the one-sentence ``summary()`` when it does not fit.

>>> from mllm_nb.plan import fit
>>> str(fit("llava-hf/llava-1.5-7b-hf", target="t4")).splitlines()[0]
'llava-hf/llava-1.5-7b-hf fits on T4 (4bit)'
"""

from __future__ import annotations

import html
from typing import ClassVar

from mllm_nb.errors import MllmNbError

_FITS_COLOR, _DOES_NOT_FIT_COLOR = "#1a7f37", "#cf222e"


class ReportError(MllmNbError):
    """A report's verdict as an exception; ``.report`` holds the report when one was given.

    >>> ReportError("needs 21 GB but the T4 has 15.8 GB; use 4-bit.").report is None
    True
    """

    def __init__(self, report_or_message: Report | str) -> None:
        self.report = report_or_message if isinstance(report_or_message, Report) else None
        message = report_or_message.summary() if self.report is not None else str(report_or_message)
        super().__init__(message)


class WontFitError(ReportError):
    """A model (or its training) will not fit the target; ``.report`` holds the report when one was given.

    >>> str(WontFitError("llava needs 21 GB of GPU memory but the T4 has 15.8 GB; use 4-bit."))[:6]
    'llava '
    """


class Report:
    """Shared rendering of a memory verdict (see the module docstring)."""

    error: ClassVar[type[ReportError]] = ReportError
    fits: bool

    def subject(self) -> str:
        """What was judged (a model id)."""
        raise NotImplementedError

    def place(self) -> str:
        """Where, appended to the HTML heading (``" on T4"``); empty by default."""
        return ""

    def headline(self) -> str:
        """The first line of ``str()``."""
        raise NotImplementedError

    def summary(self) -> str:
        """One sentence: the verdict with its numbers and what to do."""
        raise NotImplementedError

    def table(self) -> list[tuple[str, str]]:
        """(label, value) rows."""
        raise NotImplementedError

    def sections(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Titled lists shown under the table when not empty (``("Suggestions", (...))``)."""
        return ()

    def verdict(self) -> str:
        """``"fits"`` or ``"does not fit"``."""
        return "fits" if self.fits else "does not fit"

    def raise_unless_fits(self) -> Report:
        """Return self when it fits, else raise ``self.error`` with the one-sentence summary."""
        if not self.fits:
            raise self.error(self)
        return self

    def __str__(self) -> str:
        rows = self.table()
        width = max(len(label) for label, _ in rows)
        lines = [self.headline()] + [f"  {label.ljust(width)}  {value}" for label, value in rows]
        for title, items in self.sections():
            if items:
                lines += [f"{title}:"] + [f"  - {item}" for item in items]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        color = _FITS_COLOR if self.fits else _DOES_NOT_FIT_COLOR
        head = f"<b>{esc(self.subject())}</b> <b style='color:{color}'>{esc(self.verdict())}</b>{esc(self.place())}"
        cells = "".join(
            f"<tr><th style='text-align:left'>{esc(label)}</th><td style='text-align:left'>{esc(value)}</td></tr>"
            for label, value in self.table()
        )
        lists = "".join(
            f"<b>{title}</b><ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"
            for title, items in self.sections()
            if items
        )
        return f"<div>{head}<table>{cells}</table>{lists}</div>"

