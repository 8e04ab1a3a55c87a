"""Tiny random Honeybee models, their processor and the reference's byte-level tokenizer (shared by the tests)."""

from __future__ import annotations

from pathlib import Path

import torch

import mllm_nb.honeybee as hb

VECTORS = Path(__file__).parent / "data" / "honeybee"


VOCAB = 512


def byte_tokenizer() -> object:
    """The reference's byte-level stand-in as a real tokenizer: byte b -> id 3 + b, ``<s>`` = 1, 512 ids."""
    from tokenizers import Tokenizer, decoders
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab.update({f"<unused{i}>": i for i in range(259, VOCAB)})
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


IMAGE_SIZE, QUERIES = 56, 4


def tiny_config(kind: str = "c-abs") -> hb.HoneybeeConfig:
    abstractor = (
        {"projector_type": "c-abs", "num_queries": QUERIES, "hidden_size": 64, "depth": 1}
        if kind == "c-abs"
        else {"projector_type": "d-abs", "num_queries": QUERIES, "d_model": 64, "decoder_layers": 1,
              "decoder_attention_heads": 4, "decoder_ffn_dim": 128}
    )  # fmt: skip
    return hb.HoneybeeConfig(
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "image_size": IMAGE_SIZE, "patch_size": 14},
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2,
                     "pad_token_id": 0},
        abstractor_config=abstractor,
        image_token_id=VOCAB,
    )  # fmt: skip


def tiny_processor() -> hb.HoneybeeProcessor:
    tokenizer = byte_tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    image_processor = hb.HoneybeeImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return hb.HoneybeeProcessor(image_processor, tokenizer, num_visual_tokens=QUERIES)


def save_tiny_honeybee(folder: Path, kind: str = "c-abs", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    hb.HoneybeeForConditionalGeneration(tiny_config(kind)).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder
