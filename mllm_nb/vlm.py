"""Ask a vision-language model (any image-text-to-text model transformers supports) about images, in one call.

:class:`VLM` keeps the real Hugging Face ``model`` and ``processor`` and adds what a notebook needs:
``ask`` (one or several images and a question -> the answer), ``caption``, ``stream`` (the answer
piece by piece), ``batch_ask`` (many questions, one ``generate`` per batch) and ``caption_folder``
(a resumable JSONL of captions). The prompt is built with the processor's own chat template, so
nothing here is specific to one checkpoint: llava, llava_next and llava_onevision work alike.

Before generating, ``ask``, ``stream`` and ``batch_ask`` check the prompt against the model's context
and the free memory (:mod:`mllm_nb.context_budget`) and raise ``BudgetError`` before any forward pass when it
cannot fit; they warn once (``MultiImageWarning``) when a catalog model that was not trained on several
images per prompt gets several.

Get one with :func:`mllm_nb.loading.load_vlm`::

    vlm = load_vlm("llava-hf/llava-1.5-7b-hf")
    vlm.ask("cat.jpg", "What is the cat doing?")
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mllm_nb.chat import as_images
from mllm_nb.errors import ImageLoadError, MllmNbError
from mllm_nb.settings import check_generation
from mllm_nb.streaming import StopWhenSet, stream_in_thread, streamer_for, trimmed

if TYPE_CHECKING:
    from PIL import Image
    from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

    from mllm_nb.memory.measured import MeasuredMemory

#: Generation keywords that the caller may not pass: ``ask`` builds them from images and question.
_RESERVED_KWARGS = frozenset({"input_ids", "attention_mask", "pixel_values", "image_sizes", "inputs"})


class VLMError(MllmNbError, ValueError):
    """Bad arguments given to ``load_vlm`` or to a :class:`VLM` method."""


class MultiImageWarning(UserWarning):
    """A prompt holds several images but the model was not trained on such prompts (given once per VLM)."""


#: Catalog models trained on several images per prompt, suggested when another model gets several.
MULTI_IMAGE_MODELS = ("llava-hf/llava-interleave-qwen-7b-hf", "llava-hf/llava-onevision-qwen2-7b-ov-hf")


@dataclass(frozen=True)
class FamilyDefaults:
    """Per-family defaults: the caption prompt, how long an answer may be, and the prompt format.

    ``plain_prompt`` families have no chat template as released (PaliGemma): the prompt is the last user
    text, prefixed with ``question_prefix`` unless it already starts with one of ``task_words``, and the
    processor places the image tokens itself.

    >>> FAMILY_DEFAULTS["paligemma"].format_question("What color is the car?")
    'answer en What color is the car?'
    """

    caption_prompt: str = "Describe this image in one sentence."
    max_new_tokens: int = 256
    plain_prompt: bool = False
    question_prefix: str = ""
    task_words: tuple[str, ...] = ()

    def format_question(self, question: str) -> str:
        """The question as the family's prompt expects it (unchanged for chat-template families)."""
        first = question.strip().split(" ", 1)[0].lower()
        return question if first in self.task_words else self.question_prefix + question


_GENERIC = FamilyDefaults()
#: Families whose defaults differ from ``FamilyDefaults()``: PaliGemma's task prompts ("caption en", "answer en ...").
FAMILY_DEFAULTS: dict[str, FamilyDefaults] = {
    "paligemma": FamilyDefaults(
        caption_prompt="caption en",
        max_new_tokens=64,
        plain_prompt=True,
        question_prefix="answer en ",
        task_words=("caption", "describe", "answer", "question", "ocr", "detect", "segment"),
    ),
}


@dataclass
class VLM:
    """A vision-language chat model with its processor; ``model`` and ``processor`` are the real HF objects.

    >>> vlm = load_vlm("llava-hf/llava-1.5-7b-hf", demo=True)  # doctest: +SKIP
    >>> vlm.ask("scene.png", "What color is the circle?")  # doctest: +SKIP
    'red'
    """

    model: PreTrainedModel
    processor: ProcessorMixin
    name: str = ""
    plan: Any = field(default=None, repr=False)
    quantization: str | None = None
    _multi_image_warned: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The budget check (mllm_nb.context_budget) refuses prompts longer than the context with the numbers and
        # the fix; the tokenizer's own "longer than the specified maximum" log line would only repeat it, vaguely.
        warned = getattr(getattr(self.processor, "tokenizer", None), "deprecation_warnings", None)
        if isinstance(warned, dict):
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True

    # ------------------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        """Where the inputs go: the device of the model's first parameters."""
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype image tensors are cast to (the compute dtype, also for 4-bit models)."""
        return self.model.dtype

    @property
    def family(self) -> FamilyDefaults:
        """Defaults of this model's family (``config.model_type``); generic ones for unknown families."""
        return FAMILY_DEFAULTS.get(getattr(self.model.config, "model_type", ""), _GENERIC)

    def __repr__(self) -> str:
        how = self.quantization or str(self.dtype).removeprefix("torch.")
        return f"VLM({self.name!r}, {type(self.model).__name__}, {how}, {self.device})"

    def memory(self, planned: Any = None) -> MeasuredMemory:
        """What the loaded model uses (weights per device, CUDA allocator counters, process RAM) beside the plan.

        ``planned``: a :class:`~mllm_nb.plan.FitReport` to compare with; by default the one ``load_vlm`` made,
        else a fresh plan from the model's config. Run an answer first to see the KV cache in the GPU peak.

        >>> print(load_vlm("llava-hf/llava-1.5-7b-hf", demo=True).memory())  # doctest: +SKIP
        llava-hf/llava-1.5-7b-hf: memory measured on cpu, planned for cpu (float32)
        ...
        """
        from mllm_nb.memory.measured import measure_memory, replan

        plan = planned if planned is not None else self.plan
        if plan is None:
            plan = replan(self.model, self.quantization)
        return measure_memory(self.model, plan, name=self.name or type(self.model).__name__)

    # ----------------------------------------------------------------------------- questions

    def ask(self, images: Any, question: str, **generation: Any) -> str:
        """Answer ``question`` about ``images`` (one, several in order, or None for text only).

        Greedy decoding by default; pass e.g. ``max_new_tokens=64`` or
        ``do_sample=True, temperature=0.7`` to change it. Returns only the new text. Several images
        are placed in order ("Image 1" first). A prompt longer than the context, or whose KV cache
        would not fit the free memory, raises ``mllm_nb.context_budget.BudgetError`` before any forward pass;
        without ``max_new_tokens`` the default is lowered to what the context leaves.

        >>> vlm.ask(["left.png", "right.png"], "What differs between the two images?")  # doctest: +SKIP
        """
        pil = self._images(images)
        inputs = self._inputs(pil, question)
        generation = self.check_budget(inputs, generation, [pil], [self.question_prompt(0, question)])
        return self._decode(self._generate(inputs, **generation))[0]

    def caption(self, image: Any, prompt: str | None = None, **generation: Any) -> str:
        """A one-sentence description of ``image`` (the prompt defaults to the family's).

        >>> vlm.caption("cat.jpg")  # doctest: +SKIP
        'A cat sleeping on a sofa.'
        """
        return self.ask(image, prompt or self.family.caption_prompt, **generation)

    def stream(self, images: Any, question: str, **generation: Any) -> Iterator[str]:
        """Yield the answer piece by piece as it is generated; the pieces join to what ``ask`` returns.

        Generation runs in a worker thread; its errors are raised here, and leaving the loop early
        stops it at the next token.

        >>> for piece in vlm.stream("cat.jpg", "Describe the cat."):  # doctest: +SKIP
        ...     print(piece, end="")
        """
        pil = self._images(images)
        inputs = self._inputs(pil, question)
        generation = self.check_budget(inputs, generation, [pil], [self.question_prompt(0, question)])
        yield from self.stream_inputs(inputs, **generation)

    def batch_ask(
        self,
        items: Sequence[tuple[Any, str]],
        batch_size: int = 8,
        progress: bool | None = None,
        **generation: Any,
    ) -> list[str]:
        """Answer many ``(images, question)`` pairs, ``batch_size`` at a time; answers keep the order.

        Prompts are padded on the left so that every row continues right after its own prompt;
        with greedy decoding the answers equal one-by-one ``ask``.

        >>> vlm.batch_ask([("a.png", "What shape?"), ("b.png", "What color?")])  # doctest: +SKIP
        ['circle', 'blue']
        """
        pairs = [_check_item(i, item) for i, item in enumerate(items)]
        self.warn_multi_image(max((len(images) for images, _ in pairs), default=0))
        answers: list[str] = []
        for chunk in _progress(_chunks(pairs, _check_batch_size(batch_size)), progress, "Answering"):
            answers += self._answer_batch(chunk, generation)
        return answers

    def caption_folder(
        self,
        folder: str | os.PathLike,
        out_jsonl: str | os.PathLike,
        prompt: str | None = None,
        batch_size: int = 8,
        progress: bool | None = None,
        *,
        retry_failed: bool = False,
    ) -> dict[str, int]:
        """Caption every image of ``folder`` into ``out_jsonl``, one JSON object per line; resumable.

        Each line is ``{"file": ..., "caption": ...}`` (``file`` relative to the folder) and is
        written as soon as it is known. An unreadable file gets ``{"file": ..., "error": ...}`` and
        the run goes on. Files already in the JSONL are skipped, so an interrupted run continues
        where it stopped; failed files are retried only with ``retry_failed=True``.

        >>> vlm.caption_folder("photos/", "captions.jsonl")  # doctest: +SKIP
        {'captioned': 120, 'skipped': 0, 'failed': 1}
        """
        from mllm_nb.images import image_files

        root = Path(folder).expanduser()
        files = image_files(root)
        out = Path(out_jsonl).expanduser()
        done = _recorded_files(out, keep_errors=not retry_failed)
        todo = [f for f in files if _relative(f, root) not in done]
        counts = {"captioned": 0, "skipped": len(files) - len(todo), "failed": 0}
        question = prompt or self.family.caption_prompt
        chunks = _chunks(todo, _check_batch_size(batch_size))
        with _open_jsonl(out) as sink, _bar(len(todo), progress, "Captioning") as bar:
            for chunk in chunks:
                self._caption_chunk(chunk, root, question, sink, counts)
                bar.update(len(chunk))
        return counts

    # ------------------------------------------------------------------------------ building blocks

    def prepare(self, images: Any, question: str) -> Any:
        """The model inputs (a ``BatchFeature`` on the model's device) for one question.

        >>> inputs = vlm.prepare("cat.jpg", "What is this?")  # doctest: +SKIP
        >>> vlm.model.generate(**inputs, max_new_tokens=8)  # doctest: +SKIP
        """
        return self._inputs(as_images(images), question)

    def encode(self, images: list[list[Image.Image]], prompts: list[str]) -> BatchFeature:
        """The processor's output for one image list and one prompt per row (left padded), on the model's device.

        >>> inputs = vlm.encode([[image]], [vlm.chat_prompt(messages)])  # doctest: +SKIP
        """
        inputs = self._process(images, prompts)
        return inputs.to(self.device, dtype=self.dtype) if "pixel_values" in inputs else inputs.to(self.device)

    def encode_conversation(self, conversation: Any) -> tuple[Any, BatchFeature]:
        """The inputs of a whole :class:`~mllm_nb.chat.Conversation`, and the conversation they were built from.

        While the prompt overflows the context, the oldest images of earlier turns are left out (their turns
        say so, and a ``ContextWarning`` tells how many); the images of the last turn always stay.

        >>> conversation, inputs = vlm.encode_conversation(chat)  # doctest: +SKIP
        """
        from mllm_nb.context_budget import ContextWarning
        from mllm_nb.memory.architecture import config_context_length

        def encode(chat: Any) -> BatchFeature:
            return self.encode([chat.images], [self.chat_prompt(chat.to_messages())])

        inputs = encode(conversation)
        context = config_context_length(self.model.config)
        earlier = len(conversation.images) - len(conversation.turns[-1].images) if conversation.turns else 0
        dropped = 0
        while context and inputs["input_ids"].shape[1] >= context and dropped < earlier:
            dropped += 1
            inputs = encode(conversation.without_oldest_images(dropped))
        if not dropped:
            return conversation, inputs
        noun = "image" if dropped == 1 else "images"
        warnings.warn(
            f"{dropped} earlier {noun} left out of the prompt to fit the {context:,}-token context "
            "(press Clear to start over with all of them)",
            ContextWarning,
            stacklevel=3,
        )
        return conversation.without_oldest_images(dropped), inputs

    def chat_prompt(self, messages: list[dict[str, Any]], images: bool = True) -> str:
        """The prompt text for chat-template ``messages`` (``{"type": "image"}`` items where images go).

        ``images=False`` leaves the image items out (the same prompt without images, e.g. to count what
        the images cost). A family without a chat template (PaliGemma) gets its last user text in its
        own prompt format; its processor places the image tokens.

        >>> vlm.chat_prompt([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])  # doctest: +SKIP
        'USER: Hi ASSISTANT:'
        """
        if not images:
            messages = [_without_images(message) for message in messages]
        if self.family.plain_prompt and not getattr(self.processor, "chat_template", None):
            return self.family.format_question(_last_user_text(messages))
        if not getattr(self.processor, "chat_template", None):
            raise VLMError(
                f"The processor of {self.name!r} has no chat template; use a chat checkpoint "
                "(e.g. 'llava-hf/llava-1.5-7b-hf') or set processor.chat_template."
            )
        try:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as err:  # jinja2.TemplateError and its sandbox/syntax subclasses, without importing jinja2
            if type(err).__module__.split(".")[0] != "jinja2":
                raise
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise VLMError(
                f"The chat template of {self.name!r} is broken ({type(err).__name__}: {reason}); "
                "set processor.chat_template to a working template or reload the checkpoint."
            ) from None

    def stream_inputs(
        self, inputs: BatchFeature, *, stop_event: threading.Event | None = None, **generation: Any
    ) -> Iterator[str]:
        """Yield the answer to prepared ``inputs`` piece by piece (one per token where the tokenizer allows).

        Generation runs in a worker thread; its errors are raised here. It ends at the next token once
        ``stop_event`` is set or the loop is left. Extra ``stopping_criteria`` are kept.

        >>> "".join(vlm.stream_inputs(vlm.prepare("cat.jpg", "What is it?"), max_new_tokens=8))  # doctest: +SKIP
        'A cat.'
        """
        from transformers import StoppingCriteriaList

        kwargs = self.generation_kwargs(**generation)  # fail here, before the thread starts
        extra_stops = kwargs.pop("stopping_criteria", None) or []
        streamer = streamer_for(getattr(self.processor, "tokenizer", self.processor))
        events = [stop_event] if stop_event is not None else []

        def work(cancel: threading.Event) -> None:
            stops = StoppingCriteriaList([*extra_stops, StopWhenSet(cancel, *events)])
            self._generate(inputs, streamer=streamer, stopping_criteria=stops, **kwargs)

        yield from trimmed(stream_in_thread(work, streamer))

    def generation_kwargs(self, **generation: Any) -> dict[str, Any]:
        """The keyword arguments ``generate`` gets: the family defaults updated with ``generation``.

        >>> vlm.generation_kwargs(max_new_tokens=8)["do_sample"]  # doctest: +SKIP
        False
        """
        reserved = sorted(_RESERVED_KWARGS & set(generation))
        if reserved:
            raise VLMError(f"{reserved[0]}= is built from the images and the question; pass those instead.")
        check_generation(generation)
        defaults: dict[str, Any] = {"do_sample": False, "max_new_tokens": self.family.max_new_tokens}
        pad = self._pad_token_id()
        if pad is not None:
            defaults["pad_token_id"] = pad
        return {**defaults, **generation}

    def question_prompt(self, n_images: int, question: str) -> str:
        """The chat-template prompt of one user turn: ``n_images`` image entries, then ``question``.

        >>> vlm.question_prompt(1, "What is this?")  # doctest: +SKIP
        'USER: <image>\nWhat is this? ASSISTANT:'
        """
        if not isinstance(question, str) or not question.strip():
            raise VLMError(f"The question must be a non-empty string; got {question!r}.")
        from mllm_nb.memory.twins import question_messages

        return self.chat_prompt(question_messages(n_images, question))

    def _images(self, images: Any) -> list[Any]:
        """``images`` as RGB PIL images in order, with the multi-image warning when there are several."""
        pil = as_images(images)
        self.warn_multi_image(len(pil), stacklevel=4)
        return pil

    def _inputs(self, pil: list[Any], question: str) -> Any:
        return self.encode([pil], [self.question_prompt(len(pil), question)])

    def _process(self, images: list[list[Any]], prompts: list[str]) -> Any:
        """The processor's output on the CPU: one image list and one prompt per row, left padded.

        Every processor gets one list of images per prompt (Gemma 3, SmolVLM and Mllama need it to
        match images with prompts; the others flatten it).
        """
        kwargs: dict[str, Any] = {"padding": True, "padding_side": "left"} if len(prompts) > 1 else {}
        payload = [list(row) for row in images] if any(images) else None
        return self.processor(images=payload, text=prompts, return_tensors="pt", **kwargs)

    def check_budget(
        self,
        inputs: Any,
        generation: dict[str, Any],
        images: list[list[Any]],
        bare_prompts: Sequence[str] = (),
        cap: bool = False,
    ) -> dict[str, Any]:
        """Raise ``BudgetError`` before any forward pass when the prompt can't fit (see ``mllm_nb.context_budget``).

        ``bare_prompts`` are the rows' prompts without their images: what the images cost is the rest.
        Returns ``generation``, with a default ``max_new_tokens`` (or any, with ``cap``) lowered to what the
        context leaves.

        >>> vlm.check_budget(vlm.prepare(image, "What is it?"), {}, [[image]], [vlm.question_prompt(0, "What is it?")])  # doctest: +SKIP
        {}
        """
        from mllm_nb.context_budget import check_inputs

        sizes = [[image.size for image in row] for row in images]
        return check_inputs(self, inputs, generation, sizes, bare_prompts, cap)

    def warn_multi_image(self, n_images: int, stacklevel: int = 3) -> None:
        """Warn once per VLM (``MultiImageWarning``) when ``n_images`` > 1 go to a model not trained on several.

        >>> vlm.warn_multi_image(2)  # doctest: +SKIP
        """
        if n_images < 2 or self._multi_image_warned:
            return
        message = _multi_image_advice(self.name, getattr(self.model.config, "_name_or_path", ""))
        if message:
            self._multi_image_warned = True
            warnings.warn(message, MultiImageWarning, stacklevel=stacklevel)

    def _generate(self, inputs: Any, **generation: Any) -> torch.Tensor:
        """Run ``generate`` on prepared inputs; returns only the new token ids (one row per prompt).

        Extra keywords such as ``streamer`` or ``stopping_criteria`` go straight to ``generate``.
        """
        kwargs = self.generation_kwargs(**generation)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        return output[:, inputs["input_ids"].shape[1] :]

    def _decode(self, new_tokens: torch.Tensor) -> list[str]:
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def _pad_token_id(self) -> int | None:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if getattr(tokenizer, "pad_token_id", None) is not None:
            return int(tokenizer.pad_token_id)
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(tokenizer, "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        return None if eos is None else int(eos)

    def _answer_batch(self, pairs: list[tuple[list[Any], str]], generation: dict[str, Any]) -> list[str]:
        prompts = [self.question_prompt(len(images), question) for images, question in pairs]
        inputs = self.encode([images for images, _ in pairs], prompts)
        bare = [self.question_prompt(0, question) for _, question in pairs]
        generation = self.check_budget(inputs, generation, [images for images, _ in pairs], bare)
        return self._decode(self._generate(inputs, **generation))

    def _caption_chunk(
        self, files: list[Path], root: Path, question: str, sink: Any, counts: dict[str, int]
    ) -> None:
        from mllm_nb.images import load_image

        loaded: list[tuple[Path, Any]] = []
        for file in files:
            try:
                loaded.append((file, load_image(file)))
            except ImageLoadError as err:
                _write_line(sink, {"file": _relative(file, root), "error": str(err)})
                counts["failed"] += 1
        if not loaded:
            return
        captions = self._answer_batch([([image], question) for _, image in loaded], {})
        for (file, _), caption in zip(loaded, captions):
            _write_line(sink, {"file": _relative(file, root), "caption": caption})
            counts["captioned"] += 1


# ------------------------------------------------------------------------------------ helpers


def _multi_image_advice(*names: str) -> str | None:
    """The warning for a catalog model not trained on several images per prompt; None when unknown or trained."""
    from mllm_nb import catalog

    entry = next((e for e in map(catalog.get, filter(None, names)) if e is not None), None)
    if entry is None or entry.trained_multi_image.value is True:
        return None
    others = " or ".join(MULTI_IMAGE_MODELS)
    if entry.trained_multi_image.value is False:
        return (
            f"{entry.id} was not trained on prompts with several images ({entry.trained_multi_image.note}), "
            f"so its answers may mix them up; for multi-image prompts use {others}."
        )
    return (
        f"It is not known whether {entry.id} was trained on prompts with several images "
        f"({entry.trained_multi_image.note}); if its answers mix them up, use {others}."
    )


def _without_images(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message without its image items."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    return {**message, "content": [item for item in content if not (isinstance(item, dict) and item.get("type") == "image")]}


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (plain-prompt families answer one question at a time)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(item.get("text", "") for item in content or [] if isinstance(item, dict) and item.get("type") == "text")
    return ""


def _check_item(index: int, item: Any) -> tuple[list[Any], str]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise VLMError(f"Item {index} of batch_ask must be an (images, question) pair; got {item!r:.80}.")
    images, question = item
    return as_images(images), question


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise VLMError(f"batch_size must be a positive integer; got {batch_size!r}.")
    return batch_size


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _progress(batches: list[Any], progress: bool | None, desc: str) -> Iterable[Any]:
    from tqdm.auto import tqdm

    show = len(batches) > 2 if progress is None else bool(progress)
    return tqdm(batches, desc=desc, unit="batch", disable=not show)


def _bar(total: int, progress: bool | None, desc: str) -> Any:
    from tqdm.auto import tqdm

    show = total > 16 if progress is None else bool(progress)
    return tqdm(total=total, desc=desc, unit="img", disable=not show)


def _relative(file: Path, root: Path) -> str:
    return file.relative_to(root).as_posix()


def _recorded_files(out: Path, keep_errors: bool) -> set[str]:
    """Files already in the JSONL: those with a caption, and those with an error when ``keep_errors``."""
    if not out.is_file():
        return set()
    done: set[str] = set()
    for number, line in enumerate(out.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{out}: line {number} is not valid JSON and is ignored.", stacklevel=3)
            continue
        if isinstance(record, dict) and "file" in record and ("caption" in record or keep_errors):
            done.add(str(record["file"]))
    return done


@contextmanager
def _open_jsonl(path: Path) -> Iterator[Any]:
    """Append to a JSONL file, first ending a last line cut short by an interrupted run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cut_short = path.is_file() and path.stat().st_size > 0 and _last_byte(path) != b"\n"
    with open(path, "a", encoding="utf-8") as handle:
        if cut_short:
            handle.write("\n")
        yield handle


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def _write_line(sink: Any, record: dict[str, str]) -> None:
    sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    sink.flush()
