"""Cost of the chat panel's streaming path over a plain ``generate``, and how soon the first token shows.

Model: a randomly initialised ``LlavaForConditionalGeneration`` with the processor of
``tests/test_loading.save_tiny_llava`` (CLIP vision 32 px / 8 px patches, word-level tokenizer) and a
wider Llama text model (``--width`` 512, ``--layers`` 8), so that generation dominates: 64 tokens take
1-2 s on one CPU thread. float32, CPU, ``torch.set_num_threads(1)``.

A (panel): ``ChatPanel(vlm).send(question, images=image)`` on a fresh panel: chat template, processor,
``generate`` in a worker thread with ``LocalBackend``'s streamer and the panel's stopping criteria,
the panel's HTML rendering (throttled to 20 refreshes/s) and status line, until the reply is returned.
B (plain): ``apply_chat_template`` + ``processor(...)`` + ``model.generate(...)`` + ``decode``.
Both greedy with exactly 64 new tokens (``min_new_tokens=max_new_tokens=64``; the panel gets the
minimum through ``model.generation_config``), both under ``torch.inference_mode``; the answers must be
equal. Runs alternate A B, B A, A B, ... after one warm-up each; the medians of wall-clock time are
compared (the median of the paired ratios is printed too).
Process CPU time (all threads) is printed too: other work on a shared machine disturbs it less.

First token: t0 = when ``generate`` hands token 1 to the streamer (its ``put``), t1 = when the
panel's ``view.value`` first shows that token's text (an ipywidgets observer, which runs in the thread
that sets the value). The time from token 1 to token 2 (one decoding step) is printed too.

``--streamer token`` (the default) measures the package as it is: ``LocalBackend`` streams with
``mllm_nb.streaming.TokenStreamer``, which hands over each token's text as soon as it decodes
(decoding the new tokens after each one). ``--streamer word`` swaps in transformers'
``TextIteratorStreamer`` (the package before issue 4), which only emits whole words and so releases
token 1's text when token 2 arrives: t1 - t0 then includes one decoding step.

Bars: median(A) / median(B) <= 1.03; first token shown <= 50 ms after the model yields it.
Run: ``.venv/bin/python benchmarks/stream_overhead.py [--repeats 15] [--streamer token|word]``.
The last line is the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # test_loading.save_tiny_llava

import torch
from PIL import Image, ImageDraw

NEW_TOKENS = 64
QUESTION = "w1 w2 w3 w4 w5 w6 w7 w8"


def build(folder: Path, width: int, layers: int) -> Path:
    """The tiny LLaVA's processor with a wider, deeper random text model (same vocabulary)."""
    from tiny_llava import WORDS, save_tiny_llava
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    save_tiny_llava(folder, seed=0)
    config = LlavaConfig.from_pretrained(folder)
    config.text_config = LlamaConfig(
        hidden_size=width, intermediate_size=width * 8 // 3 // 64 * 64, num_hidden_layers=layers,
        num_attention_heads=width // 64, num_key_value_heads=width // 64, vocab_size=len(WORDS),
        bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=3, pad_token_id=0)
    model.save_pretrained(folder)
    return folder


def picture() -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((10, 10, 54, 54), fill="red")
    return image


class FirstToken:
    """Timestamps: token 1 handed to the streamer, token 2 handed to it, text first emitted, view updated."""

    def __init__(self, streamer: str) -> None:
        self.streamer = streamer
        self.reset()

    def reset(self) -> None:
        self.token: list[float] = []  # when generate handed generated tokens 1, 2 to the streamer
        self.emitted: float | None = None  # when the streamer first queued non-empty text
        self.shown: float | None = None  # when the panel's view first contained that text
        self.first_text = ""

    def install(self) -> None:
        """Wrap the ``put`` and text output of the streamer class ``LocalBackend.stream`` will use."""
        if self.streamer == "token":
            self._install_token()
        else:
            self._install_word()

    def _install_token(self) -> None:
        from mllm_nb.streaming import TokenStreamer

        put, emit, probe = TokenStreamer.put, TokenStreamer._emit, self

        def timed_put(streamer: Any, value: Any) -> None:
            if not streamer._prompt and len(probe.token) < 2:
                probe.token.append(time.perf_counter())
            put(streamer, value)

        def timed_emit(streamer: Any, text: str) -> None:
            if text.strip() and probe.emitted is None:
                probe.emitted, probe.first_text = time.perf_counter(), text.strip()
            emit(streamer, text)

        TokenStreamer.put = timed_put
        TokenStreamer._emit = timed_emit

    def _install_word(self) -> None:
        import transformers

        TextIteratorStreamer = transformers.TextIteratorStreamer  # the class use_word_streamer() puts in
        put, finalized, probe = TextIteratorStreamer.put, TextIteratorStreamer.on_finalized_text, self

        def timed_put(streamer: Any, value: Any) -> None:
            prompt = streamer.skip_prompt and streamer.next_tokens_are_prompt
            if not prompt and len(probe.token) < 2:
                probe.token.append(time.perf_counter())
            put(streamer, value)

        def timed_finalized(streamer: Any, text: str, stream_end: bool = False) -> None:
            if text.strip() and probe.emitted is None:
                probe.emitted, probe.first_text = time.perf_counter(), text.strip()
            finalized(streamer, text, stream_end)

        TextIteratorStreamer.put = timed_put
        TextIteratorStreamer.on_finalized_text = timed_finalized

    def watch(self, panel: Any) -> None:
        def seen(change: dict) -> None:
            if self.shown is None and self.first_text and panel._partial and self.first_text in change["new"]:
                self.shown = time.perf_counter()

        panel.view.observe(seen, names="value")


def use_word_streamer() -> None:
    """Make ``VLM.stream`` (and so the panel) use ``TextIteratorStreamer`` (whole words), for ``--streamer word``."""
    import transformers

    import mllm_nb.vlm

    def word_streamer(tokenizer: Any) -> Any:
        return transformers.TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    mllm_nb.vlm.streamer_for = word_streamer  # VLM.stream_inputs looks it up in its module at call time


def panel_run(vlm: Any, image: Image.Image, probe: FirstToken) -> tuple[float, str, dict[str, float]]:
    from mllm_nb.widgets import ChatPanel

    panel = ChatPanel(vlm, max_new_tokens=NEW_TOKENS)
    probe.reset()
    probe.watch(panel)
    started, cpu = time.perf_counter(), time.process_time()
    reply = panel.send(QUESTION, images=image)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if panel.error or panel.backend.tokens_generated != NEW_TOKENS:
        raise SystemExit(f"panel run failed: {panel.error!r}, {panel.backend.tokens_generated} tokens")
    t1, t2 = probe.token
    times = {
        "yield_to_shown": probe.shown - t1,
        "token2_after_token1": t2 - t1,
        "emitted_to_shown": probe.shown - probe.emitted,
        "cpu": cpu,
    }
    return elapsed, reply, times


def plain_run(vlm: Any, image: Image.Image) -> tuple[float, str, float]:
    model, processor = vlm.model, vlm.processor
    started, cpu = time.perf_counter(), time.process_time()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0
        )
    new = output[0, inputs["input_ids"].shape[1] :]
    reply = processor.decode(new, skip_special_tokens=True).strip()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if len(new) != NEW_TOKENS:
        raise SystemExit(f"plain run generated {len(new)} tokens, not {NEW_TOKENS}")
    return elapsed, reply, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--streamer", choices=("token", "word"), default="token",
                        help="token: the package's TokenStreamer; word: transformers' TextIteratorStreamer")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from mllm_nb.loading import load_vlm

    with tempfile.TemporaryDirectory(prefix="stream-overhead-") as scratch:  # ~100 MB of weights, removed after
        vlm = load_vlm(build(Path(scratch), args.width, args.layers))
    vlm.model.generation_config.min_new_tokens = NEW_TOKENS  # the panel has no min_new_tokens setting
    params = sum(p.numel() for p in vlm.model.parameters()) / 1e6
    print(f"random LLaVA, text model {args.layers} x {args.width} ({params:.0f} M parameters), float32, "
          f"1 thread; {NEW_TOKENS} new tokens per run; {args.repeats} interleaved repeats; streamer {args.streamer}")
    image = picture()
    if args.streamer == "word":
        use_word_streamer()
    probe = FirstToken(args.streamer)
    probe.install()
    panel_run(vlm, image, probe)  # warm-up
    plain_run(vlm, image)
    panel_times, plain_times, firsts, plain_cpu = [], [], [], []
    for i in range(args.repeats):
        if i % 2 == 0:  # A B, then B A: drift on a shared machine falls on both sides
            a, panel_reply, first = panel_run(vlm, image, probe)
            b, plain_reply, b_cpu = plain_run(vlm, image)
        else:
            b, plain_reply, b_cpu = plain_run(vlm, image)
            a, panel_reply, first = panel_run(vlm, image, probe)
        plain_cpu.append(b_cpu)
        if panel_reply != plain_reply:
            raise SystemExit(f"the panel's reply differs from generate's: {panel_reply!r} vs {plain_reply!r}")
        panel_times.append(a)
        plain_times.append(b)
        firsts.append(first)
        print(f"  repeat {i + 1}: panel {a:.3f} s, plain {b:.3f} s, ratio {a / b:.3f}; token 1 yielded -> shown "
              f"{first['yield_to_shown'] * 1e3:.1f} ms (token 2 came {first['token2_after_token1'] * 1e3:.1f} ms "
              f"after token 1; text emitted -> shown {first['emitted_to_shown'] * 1e3:.2f} ms)")
    panel_median, plain_median = statistics.median(panel_times), statistics.median(plain_times)
    shown = [f["yield_to_shown"] * 1e3 for f in firsts]
    step = [f["token2_after_token1"] * 1e3 for f in firsts]
    render = [f["emitted_to_shown"] * 1e3 for f in firsts]
    print(f"panel median {panel_median:.3f} s ({NEW_TOKENS / panel_median:.1f} tokens/s), plain median "
          f"{plain_median:.3f} s ({NEW_TOKENS / plain_median:.1f} tokens/s)")
    print(f"first token shown after the model yielded it: median {statistics.median(shown):.1f} ms, "
          f"max {max(shown):.1f} ms (bar <= 50 ms); one decoding step (token 1 -> token 2, what a word "
          f"streamer waits): median {statistics.median(step):.1f} ms; streamer text -> panel view: median "
          f"{statistics.median(render):.2f} ms")
    paired = statistics.median(a / b for a, b in zip(panel_times, plain_times))
    cpu_ratio = statistics.median(f["cpu"] for f in firsts) / statistics.median(plain_cpu)
    print(f"median of the paired ratios {paired:.3f}; CPU time (all threads) panel/plain {cpu_ratio:.3f}")
    print(f"ratio panel/plain = {panel_median / plain_median:.3f} (bar <= 1.03)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
