"""Backends (mllm_nb.backends): LocalBackend on the tiny random LLaVA, OpenAIBackend on a fake server.

The fake server is a stdlib ``http.server`` on 127.0.0.1 that speaks the OpenAI chat-completions
streaming protocol (server-sent events) and records every request it gets.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from mllm_nb.backends import (
    Backend,
    BackendError,
    LocalBackend,
    OpenAIBackend,
    as_backend,
)
from mllm_nb.chat import Conversation
from mllm_nb.errors import MllmNbError
from mllm_nb.settings import SettingsError

RED = Image.new("RGB", (40, 40), (220, 30, 30))
BLUE = Image.new("RGB", (50, 30), (20, 40, 230))
KEY = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_proxy_no_key(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


# =============================================================================== LocalBackend


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from tiny_llava import save_tiny_llava

    from mllm_nb.loading import load_vlm

    return load_vlm(save_tiny_llava(tmp_path_factory.mktemp("tiny-llava-backend"), seed=3))


@pytest.fixture
def local(vlm) -> LocalBackend:
    return LocalBackend(vlm)


def hand_written(vlm, images, prompt: str, max_new_tokens: int) -> str:
    import torch

    inputs = vlm.processor(images=images, text=prompt, return_tensors="pt").to(vlm.model.device, torch.float32)
    with torch.inference_mode():
        output = vlm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    return vlm.processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_streamed_pieces_join_to_the_greedy_ask_answer(vlm, local):
    pieces = list(local.stream("w1 w2", images=RED, max_new_tokens=12))
    assert len(pieces) > 1
    assert "".join(pieces) == vlm.ask(RED, "w1 w2", max_new_tokens=12) == local.ask("w1 w2", RED, max_new_tokens=12)
    assert local.tokens_generated == 12  # min_new_tokens not set; the random model never says </s> here
    assert not any(t.name == "mllm_nb-stream" for t in threading.enumerate())


class Script:
    """A logits processor that makes generation emit ``ids`` in order (then whatever the model likes)."""

    def __init__(self, ids, before_step=None) -> None:
        self.ids, self.before_step, self.step = list(ids), before_step, 0

    def __call__(self, input_ids, scores):
        self.step += 1
        if self.before_step:
            self.before_step(self.step)
        if self.step <= len(self.ids):
            scores = scores.clone().fill_(float("-inf"))
            scores[:, self.ids[self.step - 1]] = 0.0
        return scores


def scripted(ids, before_step=None) -> dict:
    from transformers import LogitsProcessorList

    return {"logits_processor": LogitsProcessorList([Script(ids, before_step)])}


def test_each_tokens_text_is_handed_over_before_the_next_token_is_generated(vlm, local):
    from tiny_llava import WORDS

    from mllm_nb.streaming import TokenStreamer

    received, first_seen, waited = [], threading.Event(), {}

    def before_step(step):  # runs in generate's thread, before token `step` is chosen
        if step == 2:  # token 1 has been handed to the streamer: the consumer must be able to show it now
            waited["seen"] = first_seen.wait(timeout=3.0)

    words = ["w5", "w6", "w7", "w8"]
    for piece in local.stream("w1", RED, max_new_tokens=4, **scripted([WORDS.index(w) for w in words], before_step)):
        received.append(piece)
        first_seen.set()
    assert waited == {"seen": True}  # a word-level streamer would hold "w5" until token 2 arrives
    assert received == ["w5", " w6", " w7", " w8"]  # one piece per token
    assert isinstance(TokenStreamer, type) and TokenStreamer.__module__ == "mllm_nb.streaming"


def test_multi_turn_goes_through_the_chat_template_with_images_in_order(vlm, local):
    chat = Conversation()
    chat.add_user("w1", images=RED)
    chat.add_assistant("w2 w3")
    chat.add_user("w4", images=BLUE)
    inputs = local.prepare(chat)
    text = vlm.processor.batch_decode(inputs["input_ids"])[0]
    image = " ".join(["<image>"] * 16)
    assert text == f"USER: {image} w1 ASSISTANT: w2 w3 USER: {image} w4 ASSISTANT:"
    alone = vlm.processor.image_processor(images=[BLUE], return_tensors="pt")["pixel_values"][0]
    assert inputs["pixel_values"].shape[0] == 2 and (inputs["pixel_values"][1] == alone).all()

    expected = hand_written(vlm, [RED, BLUE], "USER: <image> w1 ASSISTANT: w2 w3 USER: <image> w4 ASSISTANT:", 8)
    assert local.ask(chat, max_new_tokens=8) == expected
    messages = chat.to_messages()
    assert local.ask(messages, chat.images, max_new_tokens=8) == expected


def test_stop_event_ends_generation_within_one_token(local):
    from transformers import LogitsProcessorList

    stop = threading.Event()
    steps = {"n": 0}

    def stop_at_third_step(input_ids, scores):
        steps["n"] += 1
        if steps["n"] == 3:
            stop.set()
        return scores

    text = local.ask(
        "w1", RED, max_new_tokens=100, min_new_tokens=100, stop_event=stop,
        logits_processor=LogitsProcessorList([stop_at_third_step]),
    )
    assert 3 <= local.tokens_generated <= 4 and steps["n"] == local.tokens_generated
    assert len(text.split()) <= 4


def test_stop_from_the_consumer_lets_at_most_one_more_token_start(local):
    from transformers import LogitsProcessorList

    stop = threading.Event()
    after_stop = {"n": 0}

    def watch(input_ids, scores):
        time.sleep(0.01)  # slow enough that the consumer sets the event mid-stream
        if stop.is_set():
            after_stop["n"] += 1
        return scores

    pieces = []
    for piece in local.stream(
        "w1", RED, max_new_tokens=200, min_new_tokens=200, stop_event=stop,
        logits_processor=LogitsProcessorList([watch]),
    ):
        pieces.append(piece)
        stop.set()
    assert after_stop["n"] <= 1  # the token being generated when Stop came, and no other
    assert local.tokens_generated < 100 and len(pieces) <= local.tokens_generated


def test_sampling_settings_reach_generate(local, monkeypatch):
    seen = {}
    original = local.vlm.model.generate

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(local.vlm.model, "generate", recording)
    assert isinstance(local.ask("w1", RED, do_sample=True, temperature=0.5, top_p=0.8, max_new_tokens=3), str)
    assert (seen["do_sample"], seen["temperature"], seen["top_p"], seen["max_new_tokens"]) == (True, 0.5, 0.8, 3)


def test_local_backend_errors(local, vlm, monkeypatch):
    with pytest.raises(SettingsError, match="add do_sample=True"):
        local.ask("w1", temperature=0.7)
    chat = Conversation()
    chat.add_user("w1")
    chat.add_assistant("w2")
    with pytest.raises(BackendError, match="must end with a user turn"):
        local.ask(chat)
    with pytest.raises(BackendError, match="needs a VLM"):
        LocalBackend("not a model")

    def broken(*args, **kwargs):
        raise RuntimeError("generate exploded")

    monkeypatch.setattr(vlm.model, "generate", broken)
    with pytest.raises(RuntimeError, match="generate exploded"):
        local.ask("w1", RED, max_new_tokens=3)
    assert not any(t.name == "mllm_nb-stream" for t in threading.enumerate())


def test_as_backend_and_description(vlm):
    backend = as_backend(vlm)
    assert isinstance(backend, LocalBackend) and backend.vlm is vlm
    pair = as_backend((vlm.model, vlm.processor))
    assert isinstance(pair, LocalBackend) and pair.vlm.model is vlm.model
    assert "LlavaForConditionalGeneration" in backend.describe() and "float32" in backend.describe()
    assert not backend.demo and not backend.describe().startswith("DEMO MODE")
    assert repr(backend).startswith("LocalBackend(VLM(")
    with pytest.raises(BackendError, match="cannot answer questions"):
        as_backend(42)


def test_a_demo_fixture_says_so_loudly(vlm, monkeypatch):
    from mllm_nb.demo.mode import FIXTURES_DIR

    monkeypatch.setattr(vlm.model, "name_or_path", str(FIXTURES_DIR / "tiny-llava"))
    backend = LocalBackend(vlm)
    assert backend.demo and backend.describe().startswith("DEMO MODE (tiny model trained on synthetic data): ")


# ====================================================================== byte-fallback tokens

HANGUL = "안녕하세요 😀 세계, hi!"


def byte_fallback_tokenizer():
    """A Llama-style tokenizer: BPE with byte fallback (every byte a token), metaspace, no merges.

    "안" is one token; every other non-ASCII character becomes 3 or 4 byte tokens, as in Llama/Vicuna.
    """
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:"]
    pieces = ["\u2581", "안", "w", "1", "2"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)] + pieces)}
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0),
    ])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"}, additional_special_tokens=["USER:", "ASSISTANT:"],
    )


@pytest.fixture(scope="module")
def byte_llava():
    """The tiny LLaVA's architecture and processor settings with the byte-fallback tokenizer (not saved)."""
    torch = pytest.importorskip("torch")
    from tiny_llava import (
        IMAGE_SIZE,
        PATCH_SIZE,
        TINY_CHAT_TEMPLATE,
        TOKENS_PER_IMAGE,
    )
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = byte_fallback_tokenizer()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        ),
        tokenizer=tokenizer, patch_size=PATCH_SIZE, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=TINY_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, vocab_size=len(tokenizer), bos_token_id=2, eos_token_id=3,
                                pad_token_id=0),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        image_seq_length=TOKENS_PER_IMAGE,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=3, pad_token_id=0)
    return as_backend((model, processor))


def test_the_streamer_hands_over_a_byte_run_whole_with_the_token_after_it():
    """A run of byte-fallback tokens decodes as a whole (one bad byte turns all of it into U+FFFD), so the
    streamer holds it until the run ends: Korean spelled in bytes comes out word by word, never broken."""
    torch = pytest.importorskip("torch")
    from mllm_nb.streaming import TokenStreamer

    tokenizer = byte_fallback_tokenizer()
    ids = tokenizer(HANGUL, add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[1] == "안" and tokens[2:5] == ["<0xEB>", "<0x85>", "<0x95>"]  # 녕 is three byte tokens
    streamer = TokenStreamer(tokenizer)
    streamer.put(torch.tensor([[2, 5, 9, 9]]))  # the prompt: skipped
    after = []
    for token in ids[:6] + [3] + ids[6:]:  # a special token (</s>) in the middle: skipped
        streamer.put(torch.tensor([token]))
        ready = []
        while not streamer._pieces.empty():
            ready.append(streamer._pieces.get_nowait())
        after.append("".join(ready))
    streamer.end()
    assert list(streamer) == ["!"]  # the last run ("!" spelled as a byte) ends with generation
    assert after[:2] == ["", "안"]  # "▁" alone decodes to nothing (the leading space)
    assert after[2:6] == ["", "", "", ""]  # inside the run 녕하세요: nothing yet
    assert "".join(after) + "!" == HANGUL == tokenizer.decode(ids, skip_special_tokens=True)
    assert "녕하세요 " in after and not any("\ufffd" in piece for piece in after)


def test_broken_byte_runs_stream_exactly_what_decode_writes():
    """Byte tokens that never make a character (a lone continuation byte, a lead byte then a word) give
    U+FFFD in ``decode``; the stream must neither raise nor drop them: it joins to ``decode``, token by token."""
    import random

    torch = pytest.importorskip("torch")
    from mllm_nb.streaming import TokenStreamer

    tokenizer = byte_fallback_tokenizer()
    vocabulary = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids and tokenizer.convert_ids_to_tokens(i)]
    byte_ids = [i for i in vocabulary if tokenizer.convert_ids_to_tokens(i).startswith("<0x")]
    rng = random.Random(0)
    for trial in range(300):
        pool = byte_ids if trial % 2 else vocabulary
        ids = [rng.choice(pool) for _ in range(rng.randint(1, 12))]
        streamer = TokenStreamer(tokenizer)
        streamer.put(torch.tensor([[2]]))
        for token in ids:
            streamer.put(torch.tensor([token]))
        streamer.end()
        assert "".join(streamer) == tokenizer.decode(ids, skip_special_tokens=True), ids


def test_korean_and_emoji_stream_whole_and_join_to_the_greedy_ask_answer(byte_llava):
    tokenizer = byte_llava.vlm.processor.tokenizer
    ids = tokenizer(HANGUL, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    pieces = list(byte_llava.stream("hi", images=RED, max_new_tokens=50, **scripted(ids)))
    assert "".join(pieces) == HANGUL == byte_llava.vlm.ask(RED, "hi", max_new_tokens=50, **scripted(ids))
    assert byte_llava.tokens_generated == len(ids)
    assert not any("\ufffd" in piece for piece in pieces)
    assert len(pieces) >= 6  # piece by piece: each word or token as soon as it is whole

    # a character cut short by max_new_tokens: the pieces still join to what ask returns
    cut = 4  # "▁", "안", and two of 녕's three bytes
    short = list(byte_llava.stream("hi", images=RED, max_new_tokens=cut, **scripted(ids)))
    expected = byte_llava.vlm.ask(RED, "hi", max_new_tokens=cut, **scripted(ids))
    assert expected.startswith("안\ufffd") and "".join(short) == expected


def test_tokenizers_that_clean_up_after_decoding_keep_the_word_streamer(vlm):
    from transformers import TextIteratorStreamer

    from mllm_nb.streaming import TokenStreamer, streamer_for

    tokenizer = vlm.processor.tokenizer  # word-level: transformers' clean-up would apply to it
    assert isinstance(streamer_for(tokenizer), TokenStreamer)
    tokenizer.clean_up_tokenization_spaces = True
    try:
        assert isinstance(streamer_for(tokenizer), TextIteratorStreamer)
    finally:
        tokenizer.clean_up_tokenization_spaces = False
    bpe = byte_fallback_tokenizer()
    bpe.clean_up_tokenization_spaces = True  # ignored by transformers for BPE models
    assert isinstance(streamer_for(bpe), TokenStreamer)
    assert isinstance(streamer_for(types.SimpleNamespace(decode=str)), TextIteratorStreamer)  # no fast backend


# ============================================================================== fake server


def sse(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def chunk(content: str | None, model: str, finish: str | None = None) -> dict:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class FakeOpenAI:
    """An OpenAI-compatible server in a thread: records requests, streams ``pieces``.

    ``break_after=n``: stream with chunked transfer encoding and hang up after ``n`` pieces, without
    the closing chunk (what a server that dies mid-answer looks like to the client).
    """

    def __init__(self, pieces=("Hello", " world"), delay: float = 0.0, first_delay: float = 0.0,
                 status: int = 200, error: str = "", break_after: int | None = None) -> None:
        self.pieces, self.delay, self.first_delay = list(pieces), delay, first_delay
        self.status, self.error, self.break_after = status, error, break_after
        self.requests: list[dict] = []
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                body = json.dumps({"object": "list", "data": [{"id": "tiny-llava", "object": "model",
                                                               "created": 0, "owned_by": "me"}]}).encode()
                self._reply(200, body, "application/json")

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = json.loads(self.rfile.read(length))
                outer.requests.append({"path": self.path, "headers": headers, "body": body})
                time.sleep(outer.first_delay)
                try:
                    if outer.status != 200:
                        error = {"error": {"message": outer.error, "type": "invalid_request_error", "code": None}}
                        self._reply(outer.status, json.dumps(error).encode(), "application/json")
                        return
                    self._stream(outer.requests[-1]["body"]["model"])
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self, model):
                chunked = outer.break_after is not None
                if chunked:
                    self.protocol_version = "HTTP/1.1"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                write = self._write_chunk if chunked else self.wfile.write
                write(sse(chunk(None, model)))
                for piece in outer.pieces:
                    if outer.sent == outer.break_after:
                        self.close_connection = True  # hang up: no closing chunk
                        return
                    write(sse(chunk(piece, model)))
                    self.wfile.flush()
                    outer.sent += 1
                    time.sleep(outer.delay)
                write(sse(chunk(None, model, "stop")) + b"data: [DONE]\n\n")
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")

            def _write_chunk(self, data):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

            def _reply(self, status, body, kind):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def decode_data_url(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def test_request_has_model_stream_and_image_as_data_url_and_text_streams_back():
    with FakeOpenAI() as server:
        backend = OpenAIBackend(server.url, model="tiny-llava", api_key=KEY, max_retries=0)
        pieces = list(backend.stream("What colour?", images=RED, max_new_tokens=9))
    assert pieces == ["Hello", " world"] and backend.tokens_generated == 2
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "tiny-llava" and body["stream"] is True
    assert body["max_tokens"] == 9 and body["temperature"] == 0.0 and "top_p" not in body
    [message] = body["messages"]
    assert message["role"] == "user"
    image_item, text_item = message["content"]
    assert image_item["type"] == "image_url" and text_item == {"type": "text", "text": "What colour?"}
    assert np.array_equal(np.asarray(decode_data_url(image_item["image_url"]["url"])), np.asarray(RED))


def test_multi_turn_sampling_and_extra_settings_reach_the_server():
    chat = Conversation(system="Be brief.")
    chat.add_user("w1", images=[RED, BLUE])
    chat.add_assistant("two squares")
    chat.add_user("Which is larger?")
    with FakeOpenAI(pieces=["the", " blue", " one"]) as server:
        backend = OpenAIBackend(server.url, model="m", max_retries=0)
        answer = backend.ask(chat, do_sample=True, temperature=0.5, top_p=0.9, top_k=20)
    assert answer == "the blue one"
    body = server.requests[0]["body"]
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.5, 0.9, 20)
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == "Be brief." and messages[2]["content"] == "two squares"
    assert messages[3]["content"] == "Which is larger?"
    urls = [item["image_url"]["url"] for item in messages[1]["content"] if item["type"] == "image_url"]
    assert [decode_data_url(u).size for u in urls] == [RED.size, BLUE.size]


def test_stop_event_ends_the_stream_promptly():
    stop = threading.Event()
    with FakeOpenAI(pieces=[f" t{i}" for i in range(200)], delay=0.02) as server:
        backend = OpenAIBackend(server.url, model="m", max_retries=0)
        backend.client()
        started, pieces = time.monotonic(), []
        for piece in backend.stream("go", stop_event=stop):
            pieces.append(piece)
            if len(pieces) == 3:
                stop.set()
        elapsed = time.monotonic() - started
    assert len(pieces) == 3 and elapsed < 3.0 and server.sent < 200


def test_timeout_becomes_one_clear_error():
    with FakeOpenAI(first_delay=5.0) as server:
        backend = OpenAIBackend(server.url, model="m", timeout=0.3, max_retries=0)
        backend.client()
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            backend.ask("w1")
    assert time.monotonic() - started < 4.0  # the server would have answered after 5 s
    message = str(info.value)
    assert "did not answer within 0.3 s" in message and server.url in message and "\n" not in message
    assert isinstance(info.value, MllmNbError)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(url, model="m", api_key=KEY, max_retries=0)
    with pytest.raises(BackendError) as info:
        backend.ask("w1")
    message = str(info.value)
    assert message.startswith(f"Could not connect to the server at {url} (connection refused)")
    assert "transformers serve" in message and KEY not in message
    with pytest.raises(BackendError, match="Could not connect"):
        backend.models()


def test_the_connection_breaking_mid_answer_says_so_rather_than_could_not_connect():
    with FakeOpenAI(pieces=["The", " red", " one", " is"], break_after=2) as server:
        backend = OpenAIBackend(server.url, model="m", api_key=KEY, max_retries=0)
        stream = backend.stream("w1")
        assert [next(stream), next(stream)] == ["The", " red"]
        with pytest.raises(BackendError) as info:
            next(stream)
    assert backend.tokens_generated == 2
    message = str(info.value)
    assert message.startswith(f"The connection to the server at {server.url} broke mid-answer (")
    assert "incomplete chunked read" in message  # the transport's own reason
    assert message.endswith("); the server may have stopped or restarted: check it, then send again.")
    assert "Could not connect" not in message and "\n" not in message and KEY not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__

    with FakeOpenAI(pieces=["The", " red"], break_after=2) as server:  # a complete answer must still work
        assert OpenAIBackend(server.url, model="m", max_retries=0).ask("w1") == "The red"


def test_http_500_points_at_the_servers_log():
    broken = FakeOpenAI(status=500, error="cannot identify image file <_io.BytesIO object>")
    with broken as server, pytest.raises(BackendError) as info:
        OpenAIBackend(server.url, model="m", max_retries=0).ask("w1", images=RED)
    assert str(info.value) == (
        f"The server at {server.url} answered HTTP 500: cannot identify image file <_io.BytesIO object>; "
        "the server failed on this request (its log has the reason): check the images and settings."
    )


def test_http_errors_are_one_sentence_and_never_show_the_key():
    with FakeOpenAI(status=401, error=f"Incorrect API key provided: {KEY}") as server:
        backend = OpenAIBackend(server.url, model="m", api_key=KEY, max_retries=0)
        with pytest.raises(BackendError) as info:
            backend.ask("w1")
    assert "refused the API key (HTTP 401)" in str(info.value) and KEY not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__

    with FakeOpenAI(status=404, error=f"model nope not found for key {KEY}") as server:
        backend = OpenAIBackend(server.url, model="nope", api_key=KEY, max_retries=0)
        with pytest.raises(BackendError) as info:
            backend.ask("w1")
    message = str(info.value)
    assert "does not know model 'nope'" in message and "***" in message and KEY not in message

    with FakeOpenAI(status=400, error=f"bad image {KEY}") as server, pytest.raises(BackendError) as info:
        OpenAIBackend(server.url, model="m", api_key=KEY, max_retries=0).ask("w1")
    assert "answered HTTP 400: bad image ***" in str(info.value)


def test_api_key_from_argument_environment_or_colab_is_never_shown(monkeypatch):
    given = OpenAIBackend("http://127.0.0.1:9/v1", model="m", api_key=KEY)
    for text in (repr(given), str(given), given.describe(), given.name, f"{given}"):
        assert KEY not in text
    assert repr(given) == "OpenAIBackend('http://127.0.0.1:9/v1', model='m', api_key='***')"

    monkeypatch.setenv("OPENAI_API_KEY", KEY + "-env")
    from_env = OpenAIBackend("http://127.0.0.1:9/v1", model="m")
    assert "api_key='***'" in repr(from_env) and "$OPENAI_API_KEY" in from_env.describe()
    assert KEY not in repr(from_env) + from_env.describe()
    monkeypatch.delenv("OPENAI_API_KEY")

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=lambda name: KEY + "-colab" if name == "OPENAI_API_KEY" else None)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    with FakeOpenAI() as server:
        from_colab = OpenAIBackend(server.url, model="m", max_retries=0)
        assert from_colab.ask("w1") == "Hello world"
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}-colab"
    assert "Colab secret" in from_colab.describe() and KEY not in repr(from_colab)


def test_no_key_sends_a_placeholder(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", None)  # not on Colab
    with FakeOpenAI() as server:
        backend = OpenAIBackend(server.url, model="m", max_retries=0)
        assert backend.ask("w1") == "Hello world"
        assert backend.models() == ["tiny-llava"]
    assert server.requests[0]["headers"]["authorization"] == "Bearer EMPTY"
    assert repr(backend).endswith("api_key=None)") and "API key: none" in backend.describe()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"base_url": "localhost:8000"}, "is not an http(s) URL"),
        ({"base_url": 8000}, "must be a URL string"),
        ({"model": ""}, "model must be the model name"),
        ({"timeout": 0}, "timeout must be a positive number"),
    ],
)
def test_bad_construction(kwargs, fragment):
    arguments = {"base_url": "http://127.0.0.1:8000/v1", "model": "m", **kwargs}
    with pytest.raises(BackendError) as info:
        OpenAIBackend(**arguments)
    assert fragment in str(info.value)


def test_bad_settings_fail_before_any_request():
    backend = OpenAIBackend("http://127.0.0.1:9/v1", model="m")
    with pytest.raises(SettingsError, match="add do_sample=True"):
        backend.ask("w1", temperature=0.5)
    with pytest.raises(SettingsError, match="max_new_tokens must be an integer >= 1"):
        backend.ask("w1", max_new_tokens=0)


def test_base_url_gets_v1_when_it_has_no_path():
    assert OpenAIBackend("http://localhost:11434", model="llava").base_url == "http://localhost:11434/v1"
    assert OpenAIBackend("http://h:8000/v1/", model="m").base_url == "http://h:8000/v1"
    assert as_backend(OpenAIBackend("http://h:1", model="m")).name == "m @ http://h:1/v1"


def test_a_custom_backend_needs_only_stream():
    class Fixed(Backend):
        def stream(self, chat, images=None, *, stop_event=None, **settings):
            yield " fixed "

    assert Fixed().ask("anything") == "fixed" and Fixed().describe() == "backend"
