"""How many tokens an image becomes, counted by the model's own processor class (downloads nothing).

A catalog entry may carry its checkpoint's processor facts (``"processor"`` in ``catalog.json``): the
processor and image-processor classes with the settings of the checkpoint's ``preprocessor_config.json``
and ``processor_config.json``, the special tokens the processor writes, and the image placeholders of
its chat template. :func:`processor_twin` builds that real transformers processor with a stand-in
tokenizer that knows only those special tokens, so the image tokens it writes are exactly the ones
the checkpoint's processor writes (the text is not tokenized like the real tokenizer would).

:func:`image_token_counts` counts for any processor, real or twin, by running it: the tokens of a
prompt with the images minus those of the same prompt without them. The begin/end markers, row
breaks and separators an image brings count as its tokens.

>>> from mllm_nb import catalog
>>> twin = processor_twin(catalog.get("Qwen/Qwen2.5-VL-3B-Instruct"))
>>> image_token_counts(twin, [(448, 448)])
(258,)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from mllm_nb.memory.arguments import PlanError

#: Words the stand-in tokenizer knows besides the special tokens (everything else is one ``<unk>``).
_BASE_WORDS = ("<pad>", "<unk>", "<s>", "</s>", "\n", "\n\n")


def _stand_in_tokenizer(tokens: Mapping[str, str]) -> Any:
    """A word-level fast tokenizer whose special tokens are ``tokens`` (attribute name -> token text)."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys([*_BASE_WORDS, *tokens.values()]))
    backend = Tokenizer(WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    # words split at spaces; each run of newlines stays one token, as real tokenizers write "\n" and "\n\n"
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"[^\S\n]+"), "removed"), pre_tokenizers.Split(Regex(r"\n+"), "isolated")]
    )
    named = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
    standard = {key: value for key, value in tokens.items() if key in named}
    extra = {key: value for key, value in tokens.items() if key not in named}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **{**named, **standard}, extra_special_tokens=extra)
    tokenizer.add_special_tokens({"additional_special_tokens": list(extra.values())})
    return tokenizer


def _transformers_class(name: str) -> type:
    import transformers

    found = getattr(transformers, str(name), None)
    if not isinstance(found, type):
        raise PlanError(f"transformers {transformers.__version__} has no class {name!r}; upgrade transformers.")
    return found


def _video_processor(model_type: str) -> Any:
    """The default video processor of ``model_type`` (processors that take videos want one), or None."""
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES

    name = VIDEO_PROCESSOR_MAPPING_NAMES.get(model_type)
    if isinstance(name, Mapping):  # one class per backend
        name = next(iter(name.values()), None)
    return _transformers_class(name)() if name else None


def build_processor(facts: Mapping[str, Any], model_type: str = "") -> Any:
    """The processor described by ``facts`` (see the module docstring) with a stand-in tokenizer.

    >>> from mllm_nb import catalog
    >>> type(build_processor(catalog.get("google/gemma-3-4b-it").processor, "gemma3")).__name__
    'Gemma3Processor'
    """
    import inspect

    settings = {key: _plain(value) for key, value in facts["image_processor"].items() if key != "class"}
    image_processor = _transformers_class(facts["image_processor"]["class"])(**settings)
    processor_class = _transformers_class(facts["class"])
    kwargs: dict[str, Any] = {key: _plain(value) for key, value in (facts.get("kwargs") or {}).items()}
    if "video_processor" in inspect.signature(processor_class.__init__).parameters:
        kwargs["video_processor"] = _video_processor(model_type)
    return processor_class(
        image_processor=image_processor,
        tokenizer=_stand_in_tokenizer(facts.get("tokens") or {}),
        chat_template=facts.get("chat_template"),
        **kwargs,
    )


def _plain(value: Any) -> Any:
    """Read-only catalog values (mappings, tuples) as the dicts and lists transformers expects."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@lru_cache(maxsize=32)
def _twin_of(entry_id: str) -> Any:
    from mllm_nb import catalog

    entry = catalog.get(entry_id)
    if entry is None or not entry.processor:
        raise PlanError(f"The catalog has no processor facts for {entry_id!r}.")
    return build_processor(entry.processor, str(entry.config.get("model_type", "")))


def processor_twin(entry: Any) -> Any:
    """The processor twin of a catalog entry (built once per entry): real class and settings, stand-in tokenizer.

    >>> from mllm_nb import catalog
    >>> type(processor_twin(catalog.get("HuggingFaceTB/SmolVLM2-2.2B-Instruct"))).__name__
    'SmolVLMProcessor'
    """
    return _twin_of(entry.id)


def question_messages(n_images: int, question: str) -> list[dict[str, Any]]:
    """One user turn: ``n_images`` image entries, then the question (the chat-template message format).

    >>> question_messages(1, "Hi")[0]["content"][0]
    {'type': 'image'}
    """
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


def template_prompt(processor: Any, n_images: int, question: str = "Describe the image.") -> str:
    """The processor's chat-template prompt for one question with ``n_images`` images (the bare question
    when it has no template: PaliGemma's processor places the image tokens itself).

    >>> template_prompt(processor, 1, "What is it?")  # doctest: +SKIP
    """
    if not getattr(processor, "chat_template", None):
        return question
    return processor.apply_chat_template(question_messages(n_images, question), add_generation_prompt=True, tokenize=False)


def prompt_length(processor: Any, images: Sequence[Any], prompt: str) -> int:
    """Tokens of one prompt with its images, as the processor writes them (no padding).

    A prompt without images goes through the processor too (PaliGemma's adds its own markers),
    or through its tokenizer when the processor wants images.

    >>> prompt_length(processor, [], "Hi")  # doctest: +SKIP
    """
    if images:
        return int(processor(images=[list(images)], text=[prompt], return_tensors="pt")["input_ids"].shape[1])
    try:
        return int(processor(text=[prompt], return_tensors="pt")["input_ids"].shape[1])
    except (TypeError, ValueError):
        tokenizer = getattr(processor, "tokenizer", processor)
        return int(tokenizer([prompt], return_tensors="pt")["input_ids"].shape[1])


def image_token_counts(
    processor: Any,
    sizes: Sequence[tuple[int, int]],
    prompt: Callable[[int], str] | None = None,
) -> tuple[int, ...]:
    """Tokens each ``(width, height)`` image costs in one prompt holding all of them, counted by ``processor``.

    Image ``i`` costs ``(length with len(sizes) copies of it - length without images) / len(sizes)``, so a
    processor that treats a prompt with several images differently (OneVision) is counted that way.
    ``prompt(n)`` is the prompt text for ``n`` images (by default the processor's chat template).

    >>> from mllm_nb import catalog
    >>> image_token_counts(processor_twin(catalog.get("google/gemma-3-4b-it")), [(640, 480), (64, 64)])
    (260, 260)
    """
    from PIL import Image

    make_prompt = prompt or (lambda n: template_prompt(processor, n))
    n = len(sizes)
    if n == 0:
        return ()
    bare = prompt_length(processor, [], make_prompt(0))
    counts = []
    for size in dict.fromkeys(tuple(s) for s in sizes):
        blank = Image.new("RGB", size)
        counts.append((size, (prompt_length(processor, [blank] * n, make_prompt(n)) - bare) // n))
    by_size = dict(counts)
    return tuple(by_size[tuple(s)] for s in sizes)
