"""A tiny byte-level BPE vocabulary for the demo CLIP, built with the ``tokenizers`` library.

The result is a real :class:`transformers.CLIPTokenizer` with CLIP's conventions: NFC + lower-case
normalisation, CLIP's word-splitting regex, a byte-level alphabet in which every byte also exists
with the ``</w>`` end-of-word suffix, and ``<|startoftext|>``/``<|endoftext|>`` as the last two ids.
Any text encodes, so Korean words outside the corpus fall back to bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import CLIPTokenizer

END_OF_WORD = "</w>"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _learn_merges(corpus: Iterable[str], vocab_size: int, min_frequency: int) -> list[tuple[str, str]]:
    """BPE merges learnt on ``corpus`` with the normaliser and pre-tokeniser of CLIPTokenizer."""
    reference = CLIPTokenizer().backend_tokenizer  # an empty CLIP tokenizer: only its text pipeline is used
    learner = Tokenizer(BPE(end_of_word_suffix=END_OF_WORD))
    learner.normalizer = reference.normalizer
    learner.pre_tokenizer = reference.pre_tokenizer
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=END_OF_WORD,
        show_progress=False,
    )
    learner.train_from_iterator(list(corpus), trainer=trainer)
    merges = json.loads(learner.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP-style vocabulary: 256 bytes, the same with ``</w>``, every merge result, then BOS and EOS."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord)
    tokens = alphabet + [ch + END_OF_WORD for ch in alphabet]
    seen = set(tokens)
    for left, right in merges:
        merged = left + right
        if merged not in seen:
            tokens.append(merged)
            seen.add(merged)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


def build_clip_tokenizer(
    corpus: Iterable[str], vocab_size: int = 1200, min_frequency: int = 2, model_max_length: int = 32
) -> CLIPTokenizer:
    """Train a small BPE on ``corpus`` and wrap it in a :class:`transformers.CLIPTokenizer`."""
    merges = _learn_merges(corpus, vocab_size, min_frequency)
    vocab = build_vocab(merges)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
