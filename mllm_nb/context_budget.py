"""What a prompt with images costs before it runs: image tokens, text tokens, context and KV-cache memory.

``budget(vlm_or_model_id, images, question, max_new_tokens)`` returns a :class:`BudgetReport`:
tokens per image, text tokens, the total against the context length, and the KV cache against the
memory that is free now. ``VLM.ask`` / ``stream`` / ``batch_ask`` run the same check on the inputs
they built and raise :class:`BudgetError` before any forward pass instead of an out-of-memory crash or
a prompt longer than the model's context.

Two ways of counting image tokens:

* **A loaded VLM** (``mllm_nb.load_vlm``): its real processor builds the prompt, so totals are exactly
  what the model would get (image tokens are counted in ``input_ids``).
* **A model id** (catalog id, local folder or config): no processor, no download; the processor's
  rules (:mod:`mllm_nb.memory.tokens`) are applied to the settings in the config (``vision_config.image_size``
  / ``patch_size``, ``vision_feature_select_strategy``, ``image_grid_pinpoints``, ``vision_aspect_ratio``).
  Text tokens are then estimated (no tokenizer): ``TEMPLATE_TOKENS`` for the chat template plus one
  token per ``CHARS_PER_TOKEN`` characters of the question and ``IMAGE_SEPARATOR_TOKENS`` per image.

>>> report = budget("llava-hf/llava-v1.6-vicuna-7b-hf", [(1000, 800)] * 3, "Compare the images.")
>>> report.image_tokens, report.context_length, report.fits
((2438, 2438, 2438), 4096, False)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mllm_nb.hardware import best_dtype, dtype_name, format_bytes, free_memory
from mllm_nb.memory.architecture import config_context_length
from mllm_nb.memory.report import Report, ReportError
from mllm_nb.memory.resolution import resolve_model
from mllm_nb.memory.sizes import activation_bytes, kv_bytes_per_token
from mllm_nb.memory.tokens import ANYRES_FAMILIES, TokenRules, rules_from_config, rules_from_processor

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

TEMPLATE_TOKENS = 32  # chat-template tokens of one user turn (role markers, system line), an upper estimate
CHARS_PER_TOKEN = 3  # English BPE averages ~4 characters per token; 3 errs on the long side
IMAGE_SEPARATOR_TOKENS = 2  # the newline or space a template writes after each image placeholder
DEFAULT_QUESTION = "Describe the image."
_KV_DTYPES = ("float16", "bfloat16", "float32")  # others (float64) are sized as float16, as before


class BudgetError(ReportError, ValueError):
    """A prompt does not fit the model's context or the free memory; ``.report`` holds the numbers.

    >>> str(BudgetError("3 images need 8,784 tokens but the context is 4,096; use fewer images."))[:8]
    '3 images'
    """


# --------------------------------------------------------------------------- the report


def _gb(num: float) -> str:
    """Bytes the budget's way: two decimals of a GB, MB below 0.01 GB.

    >>> _gb(4_036_701_768), _gb(3_200_000)
    ('4.04 GB', '3.2 MB')
    """
    return format_bytes(num, decimals=2, small_unit="MB")


@dataclass(frozen=True)
class BudgetReport(Report):
    """The token and memory budget of one prompt (or of the longest prompt of a batch).

    ``image_tokens`` has one entry per image in prompt order (empty when the breakdown is unknown);
    ``kv_bytes`` covers ``rows`` prompts of ``prompt_width`` tokens plus ``max_new_tokens``;
    ``problems`` says what does not fit and what to do; ``fits`` is True when there is none.

    >>> r = budget("llava-hf/llava-1.5-7b-hf", [(640, 480)], "What is this?", max_new_tokens=64)
    >>> r.image_tokens, r.context_length, r.fits
    ((576,), 4096, True)
    """

    model: str
    source: str
    image_sizes: tuple[tuple[int, int], ...]
    image_tokens: tuple[int, ...]
    image_tokens_total: int
    text_tokens: int
    text_exact: bool
    max_new_tokens: int
    context_length: int | None
    kv_bytes_per_token: int
    activation_bytes: int
    free_bytes: int | None
    memory: str
    dtype: str
    rows: int = 1
    prompt_width: int = 0
    anyres: bool = False
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    error = BudgetError

    @property
    def n_images(self) -> int:
        """Images in the prompt.

        >>> budget("llava-hf/llava-1.5-7b-hf", [(64, 64)] * 2).n_images
        2
        """
        return max(len(self.image_sizes), len(self.image_tokens))

    @property
    def prompt_tokens(self) -> int:
        """Image tokens + text tokens of the prompt."""
        return self.image_tokens_total + self.text_tokens

    @property
    def total_tokens(self) -> int:
        """The prompt plus ``max_new_tokens``: what must fit the context."""
        return self.prompt_tokens + self.max_new_tokens

    @property
    def kv_bytes(self) -> int:
        """KV cache of the whole generation: ``rows x (prompt width + max_new_tokens) x per-token bytes``."""
        return self.kv_bytes_per_token * self.rows * (max(self.prompt_width, self.prompt_tokens) + self.max_new_tokens)

    @property
    def need_bytes(self) -> int:
        """KV cache + the prefill activations of one decoder layer."""
        return self.kv_bytes + self.activation_bytes

    @property
    def fits(self) -> bool:
        """True when nothing exceeds the context or the free memory."""
        return not self.problems

    def summary(self) -> str:
        """One line: the verdict, or the problems with their fixes.

        >>> budget("llava-hf/llava-1.5-7b-hf", [(64, 64)], "What is it?").summary()[:40]
        'llava-hf/llava-1.5-7b-hf: 1 image(s), 87'
        """
        if self.problems:
            return f"{self.model}: " + "; also ".join(self.problems)
        context = f" of a {self.context_length:,}-token context" if self.context_length else ""
        return (
            f"{self.model}: {self.n_images} image(s), {self.total_tokens:,} tokens{context}, "
            f"{_gb(self.need_bytes)} KV cache and activations ({self.memory}: {self._free_text()}): fits."
        )

    def raise_if_over(self) -> BudgetReport:
        """Return self when it fits, else raise :class:`BudgetError` with the numbers and the fix.

        >>> budget("llava-hf/llava-1.5-7b-hf", [(64, 64)]).raise_if_over().fits
        True
        """
        self.raise_unless_fits()
        return self

    def subject(self) -> str:
        """The model's name."""
        return self.model

    def headline(self) -> str:
        """``Budget of <model>: fits``."""
        return f"Budget of {self.model}: {self.verdict()}"

    def sections(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The problems, then the notes, under the table."""
        return (("Problems", self.problems), ("Notes", self.notes))

    def _free_text(self) -> str:
        return "unknown" if self.free_bytes is None else f"{_gb(self.free_bytes)} free"

    def rows_table(self) -> list[tuple[str, str]]:
        """(label, value) pairs shown by ``str()`` and the HTML table.

        >>> budget("llava-hf/llava-1.5-7b-hf", [(64, 64)]).rows_table()[0][0]
        'images'
        """
        images = f"{self.n_images} image(s): {self.image_tokens_total:,} tokens"
        if self.image_tokens:
            each = [f"{tokens:,}" for tokens in self.image_tokens]
            if len(self.image_sizes) == len(each):
                each = [f"{text} for {w}x{h}" for text, (w, h) in zip(each, self.image_sizes)]
            images += f" ({', '.join(each)})"
        text = f"{self.text_tokens:,}" + ("" if self.text_exact else " (estimated, no tokenizer)")
        context = f"{self.total_tokens:,}" + (f" of {self.context_length:,}" if self.context_length else "")
        batch = f" for {self.rows} prompts" if self.rows > 1 else ""
        return [
            ("images", images),
            ("text", text),
            ("new tokens", f"{self.max_new_tokens:,} (max_new_tokens)"),
            ("context", context + " tokens"),
            ("KV cache", f"{_gb(self.kv_bytes)}{batch} ({self.dtype}, {self.kv_bytes_per_token:,} bytes per token)"),
            ("memory", f"{_gb(self.need_bytes)} with prefill activations; {self.memory}: {self._free_text()}"),
            ("counted by", self.source),
        ]

    table = rows_table


def _fixes(report: BudgetReport, memory: bool, new_tokens: bool = True) -> str:
    """What to do, in the order that helps most."""
    fixes = ["use fewer or smaller images"]
    if report.anyres:
        fixes.append(
            "fewer anyres tiles (a shorter image_grid_pinpoints, set the same on the processor's image_processor "
            "and the model config)"
        )
    if memory and report.rows > 1:
        fixes.append("a smaller batch_size")
    if new_tokens:
        fixes.append("a smaller max_new_tokens")
    return fixes[0] if len(fixes) == 1 else ", ".join(fixes[:-1]) + " or " + fixes[-1]


def _problems(report: BudgetReport) -> tuple[str, ...]:
    """The context and memory problems of ``report``, each with its numbers and its fix."""
    found = []
    images = f"{report.n_images} image(s) = {report.image_tokens_total:,} image tokens + {report.text_tokens:,} text"
    context = report.context_length
    if context and report.prompt_tokens > context:
        found.append(
            f"the prompt needs {report.prompt_tokens:,} tokens ({images}), more than the {context:,}-token context; "
            + _fixes(report, memory=False, new_tokens=False)
        )
    elif context and report.total_tokens > context:
        found.append(
            f"the prompt ({report.prompt_tokens:,} tokens: {images}) plus max_new_tokens={report.max_new_tokens:,} "
            f"exceeds the {context:,}-token context; use max_new_tokens <= {context - report.prompt_tokens:,}, "
            "or " + _fixes(report, memory=False, new_tokens=False)
        )
    if report.free_bytes is not None and report.need_bytes > report.free_bytes:
        per_row = max(report.prompt_width, report.prompt_tokens) + report.max_new_tokens
        found.append(
            f"the KV cache ({_gb(report.kv_bytes)} for {report.rows} x {per_row:,} tokens) and prefill activations "
            f"({_gb(report.activation_bytes)}) need {_gb(report.need_bytes)} but {report.memory} has only "
            f"{_gb(report.free_bytes)} free; " + _fixes(report, memory=True)
        )
    return tuple(found)


def _finish(report: BudgetReport) -> BudgetReport:
    return replace(report, problems=_problems(report))


def _kv_per_token(config: Any, dtype: str) -> int:
    """KV-cache bytes per token in ``dtype`` (float16 for dtypes the planner does not size)."""
    return kv_bytes_per_token(config, dtype if dtype in _KV_DTYPES else "float16")


# --------------------------------------------------------------------------- images and sizes


def _is_size(item: Any) -> bool:
    return (
        isinstance(item, tuple) and len(item) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in item)
    )


def _sizes_and_images(images: Any) -> tuple[list[tuple[int, int]], list[Image.Image | None]]:
    """``(width, height)`` sizes and loaded images (None where only a size was given), in order."""
    from mllm_nb.images import load_image, load_images

    if images is None or isinstance(images, (list, tuple)) and len(images) == 0:
        return [], []
    if _is_size(images):
        return [images], [None]
    if not isinstance(images, (list, tuple)):
        loaded = load_images(images)
        return [im.size for im in loaded], list(loaded)
    sizes, pictures = [], []
    for item in images:
        picture = None if _is_size(item) else load_image(item)
        sizes.append(item if picture is None else picture.size)
        pictures.append(picture)
    return sizes, pictures


# --------------------------------------------------------------------------- a loaded VLM


def _image_token_id(vlm: Any) -> int | None:
    """The id the processor writes for each image token, or None when neither processor nor config says."""
    for owner, name in ((vlm.processor, "image_token_id"), (vlm.model.config, "image_token_id"),
                        (vlm.model.config, "image_token_index")):
        value = getattr(owner, name, None)
        if isinstance(value, int):
            return value
    return None


def _bare_tokens(vlm: Any, prompt: str) -> int:
    """Tokens of a row's prompt without its images, as the processor writes them."""
    from mllm_nb.memory.twins import prompt_length

    return prompt_length(vlm.processor, [], prompt)


def _per_image(vlm: Any, sizes: Sequence[tuple[int, int]], observed: int) -> tuple[tuple[int, ...], str | None]:
    """Tokens of each image, counted by running the loaded processor; kept only when they add up to ``observed``."""
    from mllm_nb.memory.twins import image_token_counts

    if not sizes:
        return (), None
    try:
        counts = image_token_counts(vlm.processor, sizes, lambda n: vlm.question_prompt(n, DEFAULT_QUESTION))
    except (AttributeError, TypeError, ValueError, KeyError) as err:
        return (), f"no per-image breakdown ({type(err).__name__}); the total is the processor's"
    if sum(counts) != observed:
        note = f"images counted one question at a time give {sum(counts):,} tokens, this prompt {observed:,}"
        return (), note + "; the total is the processor's"
    return counts, None


def _image_total(vlm: Any, row_ids: Any, row_length: int, bare_prompt: str | None) -> int:
    """What the images of one row cost: its length minus its prompt without images (or its image-token ids)."""
    if bare_prompt is not None:
        return max(0, row_length - _bare_tokens(vlm, bare_prompt))
    token_id = _image_token_id(vlm)
    return int((row_ids == token_id).sum()) if token_id is not None else 0


def inputs_report(
    vlm: Any,
    inputs: Any,
    max_new_tokens: int,
    image_sizes: Sequence[Sequence[tuple[int, int]]] = (),
    bare_prompts: Sequence[str] = (),
    breakdown: bool = True,
) -> BudgetReport:
    """The budget of prepared ``inputs`` (one row per prompt): counted by the loaded processor, no forward pass.

    ``image_sizes`` holds the ``(width, height)`` of each row's images and ``bare_prompts`` each row's
    prompt without its images: the images cost the row's tokens minus those (begin/end markers and
    separators included); without ``bare_prompts`` only the image-token ids are counted.
    ``breakdown`` runs the processor once per image size for the tokens of each image of the longest row.

    >>> report = inputs_report(vlm, vlm.prepare("cat.jpg", "What is it?"), 64)  # doctest: +SKIP
    """
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    lengths = (mask.sum(dim=1) if mask is not None else ids.new_full((ids.shape[0],), ids.shape[1])).tolist()
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    bare = bare_prompts[longest] if len(bare_prompts) == len(lengths) else None
    image_total = _image_total(vlm, ids[longest], int(lengths[longest]), bare)
    sizes = list(image_sizes[longest]) if longest < len(image_sizes) else []
    per_image, note = _per_image(vlm, sizes, image_total) if breakdown else ((), None)
    dtype = dtype_name(vlm.dtype)
    width = int(ids.shape[1])
    free, where = free_memory(vlm.device)
    report = BudgetReport(
        model=vlm.name or str(getattr(vlm.model, "name_or_path", "") or type(vlm.model).__name__),
        source=f"{type(vlm.processor).__name__} (the loaded processor; its input_ids counted)",
        image_sizes=tuple(tuple(s) for s in sizes),
        image_tokens=per_image,
        image_tokens_total=image_total,
        text_tokens=int(lengths[longest]) - image_total,
        text_exact=True,
        max_new_tokens=int(max_new_tokens),
        context_length=config_context_length(vlm.model.config),
        kv_bytes_per_token=_kv_per_token(vlm.model.config, dtype),
        activation_bytes=activation_bytes(vlm.model.config, len(lengths) * width, dtype),
        free_bytes=free,
        memory=where,
        dtype=dtype,
        rows=len(lengths),
        prompt_width=width,
        anyres=rules_from_config(vlm.model.config).anyres,
        notes=(note,) if note else (),
    )
    return _finish(report)


class ContextWarning(UserWarning):
    """A chat reply was shortened or earlier images were left out so that the prompt fits the context."""


def check_inputs(
    vlm: Any,
    inputs: Any,
    generation: dict[str, Any],
    image_sizes: Sequence[Sequence[tuple[int, int]]] = (),
    bare_prompts: Sequence[str] = (),
    cap: bool = False,
) -> dict[str, Any]:
    """Refuse with :class:`BudgetError` before any forward pass when ``inputs`` cannot fit; return ``generation``.

    A default ``max_new_tokens`` (one the caller did not pass) is lowered to what the context leaves
    after the prompt; one the caller passed is kept, and refused when it does not fit, unless ``cap``
    (a chat panel's slider is an upper bound): then it is lowered too, with a :class:`ContextWarning`.
    A refusal shows the tokens of each image.

    >>> generation = check_inputs(vlm, vlm.prepare("cat.jpg", "What is it?"), {})  # doctest: +SKIP
    """
    import warnings

    wanted = vlm.generation_kwargs(**generation)["max_new_tokens"]
    report = inputs_report(vlm, inputs, wanted, image_sizes, bare_prompts, breakdown=False)
    context = report.context_length
    passed = "max_new_tokens" in generation
    if (cap or not passed) and context and report.prompt_tokens < context < report.total_tokens:
        left = context - report.prompt_tokens
        generation = {**generation, "max_new_tokens": left}
        report = _finish(replace(report, max_new_tokens=left))
        if passed:
            warnings.warn(
                f"max new tokens lowered from {wanted:,} to {left:,}: the prompt takes {report.prompt_tokens:,} of the "
                f"{context:,}-token context",
                ContextWarning,
                stacklevel=2,
            )
    if not report.fits:
        detailed = inputs_report(vlm, inputs, report.max_new_tokens, image_sizes, bare_prompts)
        detailed.raise_if_over()
    report.raise_if_over()
    return generation


def _vlm_budget(vlm: Any, images: Any, question: str, max_new_tokens: int | None) -> BudgetReport:
    from PIL import Image

    sizes, pictures = _sizes_and_images(images)
    pil = [p if p is not None else Image.new("RGB", s) for p, s in zip(pictures, sizes)]
    features = vlm.encode([pil], [vlm.question_prompt(len(pil), question)])
    wanted = vlm.generation_kwargs(**({} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}))
    bare = [vlm.question_prompt(0, question)]
    return inputs_report(vlm, features, wanted["max_new_tokens"], [sizes], bare)


# --------------------------------------------------------------------------- a model id


def _estimated_text_tokens(question: str, n_images: int) -> int:
    return TEMPLATE_TOKENS + math.ceil(len(question) / CHARS_PER_TOKEN) + IMAGE_SEPARATOR_TOKENS * n_images


def _folder_processor(resolved: Any) -> Any:
    """The processor saved in a local checkpoint folder, or None (no processor files, or it cannot be built)."""
    from pathlib import Path

    folder = Path(resolved.model_id)
    if resolved.source != "local config" or not any(
        (folder / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")
    ):
        return None
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError, ImportError):
        return None


def _id_image_tokens(resolved: Any, sizes: list[tuple[int, int]]) -> tuple[tuple[int, ...], str, list[str], bool]:
    """(tokens per image, how they were counted, notes, anyres) for a model id: its processor twin when the
    catalog (or a catalog twin of its config) has one, else the processor rules applied to the config."""
    from mllm_nb.memory.tokens import catalog_twin
    from mllm_nb.memory.twins import image_token_counts, processor_twin

    own = _folder_processor(resolved)
    if own is not None:  # a local checkpoint: its own processor counts
        anyres = getattr(resolved.config, "model_type", "") in ANYRES_FAMILIES
        return image_token_counts(own, sizes), f"{type(own).__name__} (the checkpoint's own processor, run)", [], anyres
    entry = resolved.entry or catalog_twin(resolved.config)
    if entry is not None and entry.processor:
        counts = image_token_counts(processor_twin(entry), sizes)
        twin = "" if entry is resolved.entry else f" (the catalog's {entry.id}, same vision settings)"
        described = f"{entry.processor['class']} run with the checkpoint's image settings{twin}"
        anyres = entry.config.get("model_type") in ANYRES_FAMILIES
        return counts, described, [], anyres
    config = resolved.config
    rules = rules_from_config(config, entry.image_tokens.max if entry is not None else 0)
    notes = []
    if rules.family == "fixed" and getattr(config, "model_type", "") != "honeybee":
        notes.append("no processor rule is known for this model: the catalog's most tokens per image are used")
    described = {"fixed": "fixed tokens per image"}.get(rules.family, f"the {rules.family} processor rules")
    described += f" applied to the {resolved.source.replace('catalog', 'catalog config')}"
    return tuple(rules.per_image(size, len(sizes)) for size in sizes), described, notes, rules.anyres


def _model_budget(model: Any, images: Any, question: str, max_new_tokens: int | None, dtype: Any) -> BudgetReport:
    resolved = resolve_model(model)
    sizes, _ = _sizes_and_images(images)
    per_image, described, notes, anyres = _id_image_tokens(resolved, sizes)
    dtype_used = dtype_name(dtype if dtype is not None else best_dtype())
    new = 256 if max_new_tokens is None else int(max_new_tokens)
    text = _estimated_text_tokens(question, len(sizes))
    free, where = free_memory()
    notes = ["the weights are not counted (the model is not loaded); mllm_nb.fit() plans those", *notes]
    report = BudgetReport(
        model=resolved.model_id,
        source=f"{described} (the model's processor not loaded)",
        image_sizes=tuple(sizes),
        image_tokens=per_image,
        image_tokens_total=sum(per_image),
        text_tokens=text,
        text_exact=False,
        max_new_tokens=new,
        context_length=resolved.context_length,
        kv_bytes_per_token=_kv_per_token(resolved.decoder, dtype_used),
        activation_bytes=activation_bytes(resolved.decoder, sum(per_image) + text, dtype_used),
        free_bytes=free,
        memory=where,
        dtype=dtype_used,
        anyres=anyres,
        notes=tuple(notes),
    )
    return _finish(report)


def _is_vlm(model: Any) -> bool:
    return hasattr(model, "model") and hasattr(model, "processor") and hasattr(model, "question_prompt")


def budget(
    model: Any,
    images: Any = None,
    question: str = DEFAULT_QUESTION,
    max_new_tokens: int | None = None,
    *,
    dtype: Any = None,
) -> BudgetReport:
    """What ``question`` about ``images`` costs on ``model``: tokens per image, context and KV-cache memory.

    ``model`` is a loaded :class:`~mllm_nb.vlm.VLM` (its processor counts, exactly) or a catalog id,
    local checkpoint folder or config (the processor's rules applied to the config; see the module
    docstring). ``images`` are anything ``load_image`` accepts, or ``(width, height)`` sizes.
    ``max_new_tokens`` defaults to what ``VLM.ask`` uses (256). ``dtype`` (model ids only) sizes the
    KV cache; by default the dtype this machine would compute in.

    >>> r = budget("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", [(768, 768)])
    >>> r.image_tokens
    (3699,)
    >>> budget("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", [(768, 768)] * 2).image_tokens
    (730, 730)
    """
    if not isinstance(question, str):
        raise BudgetError(f"question must be a string; got a {type(question).__name__}.")
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                                       or max_new_tokens < 0):
        raise BudgetError(f"max_new_tokens must be a non-negative integer; got {max_new_tokens!r}.")
    if _is_vlm(model):
        return _vlm_budget(model, images, question, max_new_tokens)
    return _model_budget(model, images, question, max_new_tokens, dtype)


# --------------------------------------------------------------------------- the plot


def _default_models() -> list[str]:
    """One catalog model per distinct image-token rule (LLaVA-1.5, NeXT, OneVision, Interleave, Honeybee)."""
    from mllm_nb import catalog

    seen, chosen = set(), []
    for entry in catalog.entries():
        config = entry.config
        if config.get("model_type") not in ("llava", *ANYRES_FAMILIES, "honeybee"):
            continue
        tokens = entry.image_tokens
        key = (config.get("model_type"), tokens.base, tokens.max, tokens.multi)
        if key not in seen:
            seen.add(key)
            chosen.append(entry.id)
    return chosen


def plot_image_tokens(
    model_ids: Sequence[Any] | None = None,
    image_size: tuple[int, int] = (1024, 768),
) -> Figure:
    """Bars of the LLM tokens one ``image_size`` image costs on each model, alone and among several images.

    ``model_ids`` are catalog ids, folders, configs or loaded VLMs; by default one catalog model per
    family rule (LLaVA-1.5, LLaVA-NeXT, OneVision, Interleave, and Honeybee when the catalog has it).
    Returns a matplotlib Figure not registered with pyplot (put it last in a cell to show it).

    >>> fig = plot_image_tokens(["llava-hf/llava-1.5-7b-hf", "llava-hf/llava-v1.6-mistral-7b-hf"], (800, 600))
    """
    import numpy as np

    from mllm_nb.display import DisplayError, new_figure

    if not _is_size(tuple(image_size)):
        raise DisplayError(f"image_size must be (width, height) in pixels; got {image_size!r}.")
    size = tuple(image_size)
    ids = list(model_ids) if model_ids is not None else _default_models()
    if not ids:
        raise DisplayError("No models to plot: pass catalog ids such as 'llava-hf/llava-1.5-7b-hf'.")
    names = [m if isinstance(m, str) else getattr(m, "name", "") or type(m).__name__ for m in ids]
    alone = [budget(m, [size], max_new_tokens=0).image_tokens[0] for m in ids]
    among = [budget(m, [size, size], max_new_tokens=0).image_tokens[0] for m in ids]
    fig = new_figure(8.0, 0.7 * len(ids) + 1.4, names)
    ax = fig.add_subplot()
    y = np.arange(len(ids))
    for offset, values, label, color in ((-0.2, alone, "alone in the prompt", "#4C72B0"),
                                         (0.2, among, "each of several images", "#DD8452")):
        bars = ax.barh(y + offset, values, height=0.4, label=label, color=color)
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=3, fontsize=9)
    ax.set_yticks(y, [n.rpartition("/")[2] for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("LLM tokens per image")
    ax.set_xlim(0, max(alone + among) * 1.18 or 1)
    ax.set_title(f"Tokens per {size[0]}x{size[1]} image")
    ax.legend(loc="lower right", fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


__all__ = [
    "BudgetError", "BudgetReport", "ContextWarning", "budget", "check_inputs", "free_memory", "inputs_report",
    "plot_image_tokens",
]
