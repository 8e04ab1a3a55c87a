"""Conversation (mllm_nb.chat): message format, JSON round trip, Markdown, transcript, errors, ask/stream.

No model is needed: the backend here is a small fake that records what it was asked.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from mllm_nb.backends import Backend, ChatSession
from mllm_nb.chat import (
    Conversation,
    ConversationError,
    Turn,
    as_conversation,
    image_to_data_url,
)

RED = Image.new("RGB", (20, 12), (220, 30, 30))
BLUE = Image.new("RGB", (9, 17), (20, 40, 230))
NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (15, 11, 3), dtype=np.uint8))


def three_turns() -> Conversation:
    chat = Conversation(system="Answer briefly.")
    chat.add_user("What colours?", images=[RED, BLUE])
    chat.add_assistant("red and blue")
    chat.add_user("And this one?", images=NOISE)
    return chat


# ---------------------------------------------------------------------------------- messages


def test_to_messages_has_the_chat_template_shape_with_images_first_and_in_order():
    assert three_turns().to_messages() == [
        {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "What colours?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red and blue"}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this one?"}]},
    ]
    images = three_turns().images
    assert [im.size for im in images] == [RED.size, BLUE.size, NOISE.size]


def test_images_from_any_source_are_loaded_in_order(tmp_path):
    RED.save(tmp_path / "red.png")
    chat = Conversation()
    turn = chat.add_user("w1", images=[tmp_path / "red.png", np.asarray(BLUE)])
    assert [im.size for im in turn.images] == [RED.size, BLUE.size]
    assert np.array_equal(np.asarray(turn.images[0]), np.asarray(RED))


def test_a_user_turn_with_only_images_has_no_text_item():
    chat = Conversation()
    chat.add_user("", images=RED)
    assert chat.to_messages() == [{"role": "user", "content": [{"type": "image"}]}]


def test_transcript_is_stable_plain_text_with_images_numbered_across_turns():
    chat = three_turns()
    chat.add_assistant("green", stopped=True)
    assert chat.transcript() == (
        "SYSTEM: Answer briefly.\n"
        "USER: [image 1] [image 2] What colours?\n"
        "ASSISTANT: red and blue\n"
        "USER: [image 3] And this one?\n"
        "ASSISTANT: green [stopped]"
    )


# ------------------------------------------------------------------------------------- JSON


def test_json_round_trip_keeps_text_roles_flags_and_exact_pixels(tmp_path):
    chat = three_turns()
    chat.add_assistant("<partial>", stopped=True)
    text = chat.to_json()
    data = json.loads(text)
    assert data["format"] == "mllm_nb.conversation" and data["version"] == 1
    assert data["turns"][0]["images"][0].startswith("data:image/png;base64,")
    back = Conversation.from_json(text)
    assert back.transcript() == chat.transcript()
    assert back.system == "Answer briefly." and back[-1].stopped and not back[1].stopped
    assert len(back.images) == 3
    for original, restored in zip(chat.images, back.images):
        assert restored.mode == "RGB" and np.array_equal(np.asarray(original), np.asarray(restored))

    path = chat.save(tmp_path / "chat.json")
    loaded = Conversation.load(path)
    assert loaded.transcript() == chat.transcript()
    assert np.array_equal(np.asarray(loaded.images[2]), np.asarray(NOISE))


def test_data_url_is_lossless_png():
    from mllm_nb.images import load_image

    url = image_to_data_url(NOISE)
    assert url.startswith("data:image/png;base64,")
    assert np.array_equal(np.asarray(load_image(url)), np.asarray(NOISE))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not valid JSON"),
        ('{"turns": []}', "not a saved mllm_nb conversation"),
        ('{"format": "mllm_nb.conversation", "version": 9, "turns": []}', "version 9 is not supported"),
        ('{"format": "mllm_nb.conversation", "version": 1, "turns": {}}', 'needs a "turns" list'),
        ('{"format": "mllm_nb.conversation", "version": 1, "turns": [3]}', "Turn 0 of the saved conversation is not"),
        (
            '{"format": "mllm_nb.conversation", "version": 1, "turns": [{"role": "robot", "text": "x"}]}',
            "Turn 0 of the saved conversation: A turn's role must be 'user' or 'assistant'",
        ),
        (
            (
                '{"format": "mllm_nb.conversation", "version": 1, "turns": [{"role": "user", "text": "x", '
                '"images": ["/etc/passwd"]}]}'
            ),
            "Image 1 of turn 0 is not an embedded data:image/ URL",
        ),
        (
            (
                '{"format": "mllm_nb.conversation", "version": 1, "turns": [{"role": "user", "text": "x", '
                '"images": ["data:image/png;base64,AAAA"]}]}'
            ),
            "Image 1 of turn 0 could not be decoded",
        ),
    ],
)
def test_bad_json_fails_with_one_line(text, fragment):
    with pytest.raises(ConversationError) as info:
        Conversation.from_json(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_load_and_save_errors(tmp_path):
    with pytest.raises(ConversationError, match="No such file"):
        Conversation.load(tmp_path / "missing.json")
    with pytest.raises(ConversationError, match=r"as \.json or \.md, not 'chat\.txt'"):
        Conversation().save(tmp_path / "chat.txt")


# --------------------------------------------------------------------------------- Markdown


def test_markdown_export_embeds_images_and_escapes_html(tmp_path):
    chat = Conversation()
    chat.add_user("<img src=x onerror=alert(1)>", images=RED)
    chat.add_assistant("a & b", stopped=True)
    markdown = chat.to_markdown()
    assert "<img src=x" not in markdown and "&lt;img src=x onerror=alert(1)&gt;" in markdown
    assert "![image 1](data:image/png;base64," in markdown
    assert "**Assistant** (stopped)" in markdown and "a &amp; b" in markdown
    plain = chat.to_markdown(embed_images=False)
    assert "[image 1]" in plain and "base64" not in plain
    assert chat.save(tmp_path / "chat.md").read_text(encoding="utf-8") == markdown


# ----------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: Turn("robot", "x"), "role must be 'user' or 'assistant'"),
        (lambda: Turn("user", 3), "text must be a string"),
        (lambda: Turn("user", "  "), "needs some text or at least one image"),
        (lambda: Turn("assistant", "x", images=[RED]), "Only user turns carry images"),
        (lambda: Conversation(system=5), "system must be a string or None"),
        (lambda: Conversation(turns=["hi"]), "turns must be Turn objects"),
        (lambda: Conversation().pop(), "The conversation is empty"),
    ],
)
def test_bad_turns_fail_with_one_line(build, fragment):
    with pytest.raises(ConversationError) as info:
        build()
    assert fragment in str(info.value)


def test_bad_image_raises_image_load_error():
    from mllm_nb.errors import ImageLoadError

    with pytest.raises(ImageLoadError):
        Conversation().add_user("w1", images="/no/such/image.png")


# ----------------------------------------------------------------------- what backends get


def test_as_conversation_from_messages_fills_image_items_in_order():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]},
        {"role": "assistant", "content": "They differ."},
        {"role": "user", "content": [{"type": "image", "image": NOISE}, {"type": "text", "text": "And?"}]},
    ]
    chat = as_conversation(messages, [RED, BLUE])
    assert chat.transcript() == (
        "SYSTEM: Be brief.\nUSER: [image 1] [image 2] Compare.\nASSISTANT: They differ.\nUSER: [image 3] And?"
    )
    assert [im.size for im in chat.images] == [RED.size, BLUE.size, NOISE.size]
    assert as_conversation("Hi", RED).to_messages() == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}
    ]


@pytest.mark.parametrize(
    "chat, images, fragment",
    [
        ([{"role": "user", "content": [{"type": "image"}]}], None, "more image items than the 0 image(s)"),
        ([{"role": "user", "content": "hi"}], [RED], "only 0 {'type': 'image'} item(s)"),
        ([{"role": "tool", "content": "x"}], None, "role 'tool'"),
        ([{"content": "x"}], None, "must be a dict with 'role' and 'content'"),
        ([{"role": "user", "content": [{"type": "video"}]}], None, "unknown type"),
        (42, None, "Expected a Conversation"),
    ],
)
def test_as_conversation_errors(chat, images, fragment):
    with pytest.raises(ConversationError) as info:
        as_conversation(chat, images)
    assert fragment in str(info.value)


def test_a_conversation_with_extra_images_is_refused():
    with pytest.raises(ConversationError, match="carries its own images"):
        as_conversation(three_turns(), [RED])


# ------------------------------------------------------------------------------ ask / stream


class Recorder(Backend):
    """Answers with fixed pieces and records the conversation and settings it got."""

    name = "recorder"

    def __init__(self, pieces=("  red", " and", " blue  "), fail_after: int | None = None) -> None:
        self.pieces, self.fail_after, self.calls = list(pieces), fail_after, []

    def stream(self, chat, images=None, *, stop_event=None, **settings):
        conversation = as_conversation(chat, images)
        self.calls.append((conversation.transcript(), settings))
        for i, piece in enumerate(self.pieces):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("server went away")
            if stop_event is not None and stop_event.is_set():
                return
            yield piece


def test_ask_appends_question_and_stripped_answer_and_passes_settings():
    chat, backend = Conversation(), Recorder()
    assert ChatSession(backend, chat).ask("What colours?", images=RED, max_new_tokens=7) == "red and blue"
    assert chat.transcript() == "USER: [image 1] What colours?\nASSISTANT: red and blue"
    assert backend.calls == [("USER: [image 1] What colours?", {"max_new_tokens": 7})]
    assert backend.ask("Hi") == "red and blue"


def test_stream_marks_a_reply_stopped_by_the_event():
    chat, stop = Conversation(), threading.Event()
    pieces = []
    for piece in ChatSession(Recorder(), chat).stream("w1", stop_event=stop):
        pieces.append(piece)
        stop.set()
    assert pieces == ["  red"]
    assert chat[-1].text == "red" and chat[-1].stopped


def test_a_failing_backend_leaves_the_conversation_as_it_was():
    chat = Conversation()
    with pytest.raises(RuntimeError, match="server went away"):
        ChatSession(Recorder(fail_after=0), chat).ask("w1")
    assert len(chat) == 0
    with pytest.raises(RuntimeError):
        ChatSession(Recorder(fail_after=2), chat).ask("w1")
    assert len(chat) == 0


def test_leaving_the_loop_early_keeps_the_partial_reply_marked_stopped():
    chat = Conversation()
    stream = ChatSession(Recorder(), chat).stream("w1")
    assert next(stream) == "  red" and next(stream) == " and"
    stream.close()
    assert chat.transcript() == "USER: w1\nASSISTANT: red and [stopped]"


def test_copy_and_clear():
    chat = three_turns()
    twin = chat.copy()
    chat.clear()
    assert len(chat) == 0 and chat.system == "Answer briefly." and len(twin) == 3 and len(twin.images) == 3
    assert repr(twin) == "Conversation(3 turns, 3 images)"


def test_stream_again_replaces_the_last_answer_and_restores_it_on_error():
    chat = Conversation()
    session = ChatSession(Recorder(pieces=["first"]), chat)
    session.ask("w1")
    session.backend.pieces = ["second"]
    assert "".join(session.stream_again()) == "second"
    assert chat.transcript() == "USER: w1\nASSISTANT: second"
    session.backend.fail_after = 0
    with pytest.raises(RuntimeError, match="server went away"):
        list(session.stream_again())
    assert chat.transcript() == "USER: w1\nASSISTANT: second"
    with pytest.raises(ConversationError, match="Nothing to regenerate yet"):
        ChatSession(Recorder()).stream_again()


def test_a_backend_is_anything_with_the_protocols_members():
    from mllm_nb.backends import BackendError, as_backend

    class Duck:
        name, tokens_generated = "duck", 0

        def stream(self, chat, images=None, **settings):
            yield "quack"

        def ask(self, chat, images=None, **settings):
            return "quack"

        def describe(self):
            return "a duck"

    class StreamOnly:
        def stream(self, chat, images=None, **settings):
            yield "x"

    duck = Duck()
    assert isinstance(duck, Backend) and as_backend(duck) is duck
    assert ChatSession(duck).ask("w1") == "quack"
    assert isinstance(Recorder(), Backend) and not isinstance(StreamOnly(), Backend)
    with pytest.raises(BackendError, match="subclass mllm_nb.Backend: only stream is needed"):
        as_backend(StreamOnly())


def test_without_oldest_images_leaves_out_the_oldest_and_says_so():
    from PIL import Image

    red, blue, green = (Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0)))
    chat = Conversation()
    chat.add_user("first", [red, blue])
    chat.add_assistant("ok")
    chat.add_user("", [green])
    trimmed = chat.without_oldest_images(2)
    assert trimmed.images == [green] and chat.images == [red, blue, green]  # the original keeps its images
    assert trimmed.turns[0].text == "first [2 images left out to fit the context]"
    everything = chat.without_oldest_images(3)
    assert everything.images == [] and everything.turns[2].text == "[1 image left out to fit the context]"
    assert chat.without_oldest_images(0).to_dict() == chat.to_dict()
