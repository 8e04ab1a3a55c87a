"""Fine-tuning examples: read them from a folder, a JSONL/CSV file or a list, check every row, keep the good ones.

An example is one or more images, a question and its answer. A folder holds the images and an
``examples.jsonl`` or ``examples.csv`` with the columns ``image``, ``question``, ``answer`` (or
``image`` and ``caption``: the question is then the model family's caption prompt; the JSONL that
:meth:`~mllm_nb.vlm.VLM.caption_folder` writes, with ``file`` and ``caption``, works as is). Image paths
are relative to the folder and may not leave it. A bad row (unreadable image, missing answer, a prompt
longer than the model's context once its image tokens are counted) is reported in one sentence and
skipped; a set with no good row is refused with one :class:`ExampleError` sentence.

>>> data = load_examples([("scene.png", "What shape is red?", "star")], vlm)  # doctest: +SKIP
Examples: 1 kept, 0 skipped; the longest needs 79 tokens (model context 256).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mllm_nb.errors import ImageLoadError, MllmNbError

#: File names a folder of examples may hold, in the order they are looked for.
EXAMPLE_FILES = ("examples.jsonl", "examples.csv", "captions.jsonl")
IMAGE_KEYS = ("image", "images", "file")
DEFAULT_CAPTION_PROMPT = "Describe this image in one sentence."
#: How many skipped rows are listed one by one before the rest are only counted.
SHOWN_SKIPS = 10


class ExampleError(MllmNbError, ValueError):
    """The examples cannot be used at all (no file, no row, every row bad)."""


@dataclass
class Example:
    """One training example: ``images`` (PIL images or paths), ``question`` and ``answer``; ``where`` names its row.

    >>> Example(["a.png"], "What is it?", "a cat", "line 2").answer
    'a cat'
    """

    images: list[Any]
    question: str
    answer: str
    where: str = ""

    def open_images(self) -> list[Any]:
        """The images as RGB PIL images (paths are read each time, so a large set is not kept in memory)."""
        from mllm_nb.images import load_image

        return [image if hasattr(image, "convert") else load_image(image) for image in self.images]


@dataclass
class Skipped:
    """A row that was left out and why, e.g. ``line 3 of examples.jsonl: it has no answer``."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class ExampleSet(Sequence[Example]):
    """The usable examples, the rows left out (``skipped``) and the longest row's token count (``longest``).

    >>> len(ExampleSet([Example(["a.png"], "Q?", "A")]))
    1
    """

    examples: list[Example]
    skipped: list[Skipped] = field(default_factory=list)
    longest: int | None = None
    context: int | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: Any) -> Any:
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def summary(self) -> str:
        """One line of counts, then one line per skipped row (the first :data:`SHOWN_SKIPS`).

        >>> print(ExampleSet([Example(["a.png"], "Q?", "A")], [Skipped("item 1", "it has no answer")]).summary())
        Examples: 1 kept, 1 skipped.
          skipped item 1: it has no answer
        """
        line = f"Examples: {len(self.examples)} kept, {len(self.skipped)} skipped"
        if self.longest is not None:
            context = f" (model context {self.context:,})" if self.context else ""
            line += f"; the longest needs {self.longest:,} tokens{context}"
        lines = [line + "."]
        lines += [f"  skipped {skip}" for skip in self.skipped[:SHOWN_SKIPS]]
        if len(self.skipped) > SHOWN_SKIPS:
            lines.append(f"  ... and {len(self.skipped) - SHOWN_SKIPS} more skipped rows")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- reading


def read_examples(source: Any, caption_prompt: str = DEFAULT_CAPTION_PROMPT) -> ExampleSet:
    """The examples of ``source`` (folder, ``.jsonl``/``.csv`` file, or list), bad rows skipped; no model needed.

    List items are dicts (keys as the file columns), ``(image, question, answer)`` or ``(image, caption)``
    tuples, or objects with ``images``, ``question`` and ``answer`` (``mllm_nb.demo.scene_qa.QA``).
    Every image is opened once to check it can be read.

    >>> read_examples([("a.png", "What is it?", "")]).skipped[0].reason  # doctest: +SKIP
    'it has no answer'
    """
    rows, root, name = _rows(source)
    examples: list[Example] = []
    skipped: list[Skipped] = []
    for where, row in rows:
        try:
            examples.append(_example(row, root, where, caption_prompt))
        except _BadRow as bad:
            skipped.append(Skipped(where, str(bad)))
    data = ExampleSet(examples, skipped)
    if not examples:
        _refuse_empty(data, name)
    return data


def load_examples(source: Any, vlm: Any = None, *, quiet: bool = False) -> ExampleSet:
    """:func:`read_examples`, then (given ``vlm``) each row's token count checked against the model's context.

    The question of caption rows is the family's caption prompt. The count is the processor's, image
    tokens included; a row over the context is skipped. Prints the summary (kept, skipped and why)
    unless ``quiet``.

    >>> data = load_examples("my_images/", vlm)  # doctest: +SKIP
    Examples: 40 kept, 2 skipped; the longest needs 612 tokens (model context 4,096).
      skipped line 7 of examples.jsonl: the image 'cat 2.png' cannot be read ...
    """
    prompt = vlm.family.caption_prompt if vlm is not None else DEFAULT_CAPTION_PROMPT
    data = source if isinstance(source, ExampleSet) else read_examples(source, prompt)
    if vlm is not None:
        data = _fit_context(data, vlm)
    if not quiet:
        print(data.summary())
    return data


def _fit_context(data: ExampleSet, vlm: Any) -> ExampleSet:
    from mllm_nb.finetune_collate import token_count
    from mllm_nb.memory.architecture import config_context_length

    context = config_context_length(vlm.model.config)
    kept: list[Example] = []
    skipped = list(data.skipped)
    longest = 0
    for example in data.examples:
        try:
            tokens = token_count(vlm, example.open_images(), example.question, example.answer)
        except (ImageLoadError, ValueError) as err:  # the processor refuses the image or the text
            skipped.append(Skipped(example.where, f"the processor refused it ({_first_line(err)})"))
            continue
        if context and tokens > context:
            skipped.append(Skipped(
                example.where,
                f"it needs {tokens:,} tokens with its image tokens, over the model's {context:,}-token context "
                "(use fewer or smaller images, or a shorter question or answer)",
            ))
            continue
        longest = max(longest, tokens)
        kept.append(example)
    result = ExampleSet(kept, skipped, longest or None, context)
    if not kept:
        _refuse_empty(result, "the examples")
    return result


def _refuse_empty(data: ExampleSet, name: str) -> None:
    if not data.skipped:
        raise ExampleError(f"{name} holds no examples; add rows with an image, a question and an answer.")
    first = data.skipped[0]
    raise ExampleError(
        f"All {len(data.skipped)} rows of {name} were skipped (the first, {first.where}: {first.reason}); "
        "fix the rows and try again."
    )


class _BadRow(Exception):
    """A row that cannot be used; its message is the reason, in words."""


def _rows(source: Any) -> tuple[list[tuple[str, Any]], Path | None, str]:
    """``(where, row)`` pairs, the folder image paths are relative to (None for a list), and the source's name."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir():
            found = [path / name for name in EXAMPLE_FILES if (path / name).is_file()]
            if not found:
                raise ExampleError(
                    f"The folder {str(path)!r} has no {' or '.join(EXAMPLE_FILES[:2])}; add one with the columns "
                    "image, question, answer (or image, caption)."
                )
            path = found[0]
        if not path.is_file():
            raise ExampleError(f"{str(path)!r} does not exist; pass a folder of images with examples.jsonl, or a list.")
        return _file_rows(path), path.parent.resolve(), path.name
    if isinstance(source, (list, tuple)):
        return [(f"item {i}", row) for i, row in enumerate(source)], None, "the list"
    raise ExampleError(
        f"examples must be a folder, a .jsonl/.csv file or a list of (image, question, answer); got a {type(source).__name__}."
    )


def _file_rows(path: Path) -> list[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ExampleError(f"{path.name} is neither .jsonl nor .csv; write the examples as JSON lines or CSV.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ExampleError(f"{path.name} cannot be read as UTF-8 text ({_first_line(err)}); save it as UTF-8.") from None
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        return [(f"line {reader.line_num} of {path.name}", dict(row)) for row in reader]
    rows: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number} of {path.name}"
        try:
            rows.append((where, json.loads(line)))
        except json.JSONDecodeError as err:
            rows.append((where, _BadRow(f"it is not valid JSON ({err.msg})")))
    return rows


def _example(row: Any, root: Path | None, where: str, caption_prompt: str) -> Example:
    """One checked example from a row (dict, tuple or object), or ``_BadRow`` with the reason."""
    if isinstance(row, _BadRow):
        raise row
    images, question, answer = _fields(row, caption_prompt)
    if not isinstance(answer, str) or not answer.strip():
        raise _BadRow("it has no answer")
    if question is None:
        raise _BadRow("it has an answer but no question (name the column 'caption' for captions)")
    if not isinstance(question, str) or not question.strip():
        raise _BadRow("it has no question")
    if not images:
        raise _BadRow("it has no image")
    resolved = [_resolve(image, root) for image in images]
    for image, original in zip(resolved, images):
        _check_readable(image, original)
    return Example(resolved, question.strip(), answer.strip(), where)


def _fields(row: Any, caption_prompt: str) -> tuple[list[Any], str | None, Any]:
    if isinstance(row, dict):
        images = next((row[key] for key in IMAGE_KEYS if row.get(key) not in (None, "")), None)
        caption = row.get("caption")
        question = row.get("question") or (caption_prompt if caption not in (None, "") else None)
        answer = row.get("answer") if row.get("answer") not in (None, "") else caption
    elif isinstance(row, (tuple, list)) and len(row) in (2, 3):
        images, *rest = row
        question, answer = (caption_prompt, rest[0]) if len(row) == 2 else rest
    elif all(hasattr(row, name) for name in ("images", "question", "answer")):
        images, question, answer = row.images, row.question, row.answer
    else:
        raise _BadRow("it is neither a dict with image, question and answer nor an (image, question, answer) tuple")
    if images is None or isinstance(images, (str, os.PathLike)) or hasattr(images, "convert"):
        images = [] if images in (None, "") else [images]
    return list(images), question, answer


def _resolve(image: Any, root: Path | None) -> Any:
    """A path inside ``root`` (relative paths resolve there and may not leave it); other images unchanged."""
    if not isinstance(image, (str, os.PathLike)) or str(image).startswith(("http://", "https://", "data:")):
        return image
    path = Path(image).expanduser()
    if root is None:
        return path
    full = (root / path).resolve()
    if not full.is_relative_to(root):
        raise _BadRow(f"its image {str(image)!r} is outside the examples' folder, so it was refused")
    return full


def _check_readable(image: Any, original: Any) -> None:
    from mllm_nb.images import load_image

    if hasattr(image, "convert"):
        return
    try:
        load_image(image)
    except ImageLoadError as err:
        raise _BadRow(f"its image {str(original)!r} cannot be read ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = (str(err).splitlines() or [type(err).__name__])[0].rstrip(".")
    return text if len(text) <= 160 else text[:157] + "..."
