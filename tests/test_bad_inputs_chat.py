"""Hostile and careless inputs to mllm_nb.chat (issue 19): each one ends in ONE actionable sentence.

Every row of ``BAD`` is one bad input: a saved file, a JSON text, a path, a constructor call. It must raise
the given ``MllmNbError`` subclass, with a one-line message holding the phrases (what happened, what to do),
within the time limit (deep JSON, FIFOs and decompression bombs must not hang). ``HOSTILE_TEXT`` are messages
that must not turn into links, images, raw HTML or forged turn headings in the Markdown export.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import mllm_nb.chat as chat_module
from mllm_nb.chat import Conversation, ConversationError, Turn, as_conversation
from mllm_nb.errors import ImageLoadError, MllmNbError

RED = Image.new("RGB", (8, 6), (220, 30, 30))


def png_bytes(image: Image.Image = RED) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width x height`` (a decompression bomb's calling card)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def saved(turns: Any = None, **top: Any) -> dict[str, Any]:
    """A valid saved conversation (one user turn with an image), with ``top`` keys replaced."""
    data: dict[str, Any] = {"format": "mllm_nb.conversation", "version": 1, "system": None}
    data["turns"] = [{"role": "user", "text": "What?", "images": [data_url(png_bytes())]}] if turns is None else turns
    data.update(top)
    return {k: v for k, v in data.items() if v is not ...}


def one_turn(**record: Any) -> str:
    """JSON of a saved conversation whose only turn is ``record`` (``...`` drops a key)."""
    base: dict[str, Any] = {"role": "user", "text": "What?"}
    base.update(record)
    return json.dumps(saved([{k: v for k, v in base.items() if v is not ...}]))


def deep(depth: int, inner: str = "[]") -> str:
    return "[" * depth + inner + "]" * depth


def fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    return path


def file_with(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def turns_text(text: str) -> Conversation:
    chat = Conversation()
    chat.add_user("hi")
    chat.turns[0].text = text  # set after creation, past Turn's checks
    return chat


def failing_write(exc: OSError) -> Callable[..., Any]:
    def write_text(self: Path, *args: Any, **kwargs: Any) -> None:
        raise exc

    return write_text


F = Conversation.from_json
PNG = data_url(png_bytes())
TRUNCATED_PNG = data_url(png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))[:300])

# (id, build(tmp_path, monkeypatch), exception type, phrases that must all be in the message)
BAD: list[tuple[str, Callable[[Path, pytest.MonkeyPatch], Any], type[Exception], tuple[str, ...]]] = [
    # ------------------------------------------------------------------ JSON text: not JSON / not ours
    ("not json", lambda t, m: F("{not json"), ConversationError, ("not valid JSON", "line 1", "load a file")),
    ("trailing garbage", lambda t, m: F(json.dumps(saved()) + " x"), ConversationError, ("not valid JSON",)),
    ("empty text", lambda t, m: F(""), ConversationError, ("not valid JSON",)),
    ("deep list 200000", lambda t, m: F(deep(200_000)), ConversationError, ("nested too deeply", "load a file")),
    ("deep object 200000", lambda t, m: F('{"a":' * 200_000 + "1" + "}" * 200_000), ConversationError,
     ("nested too deeply",)),
    ("deep inside a turn", lambda t, m: F(one_turn(text=...)[:-3] + ', "text": ' + deep(100_000) + "}]}"),
     ConversationError, ("nested too deeply",)),
    ("5000-digit number", lambda t, m: F('{"version": ' + "9" * 5000 + "}"), ConversationError,
     ("number too long", "damaged")),
    ("latin-1 bytes", lambda t, m: F(json.dumps(saved([{"role": "user", "text": "café"}]),
                                                ensure_ascii=False).encode("latin-1")),
     ConversationError, ("not UTF-8", "re-save it as UTF-8")),
    ("top level list", lambda t, m: F("[]"), ConversationError, ("not a saved mllm_nb conversation",)),
    ("top level null", lambda t, m: F("null"), ConversationError, ("not a saved mllm_nb conversation",)),
    ("top level string", lambda t, m: F('"chat"'), ConversationError, ("not a saved mllm_nb conversation",)),
    ("format missing", lambda t, m: F(json.dumps(saved(format=...))), ConversationError,
     ("not a saved mllm_nb conversation", "Conversation.save")),
    ("format wrong", lambda t, m: F(json.dumps(saved(format="openai.chat"))), ConversationError,
     ("not a saved mllm_nb conversation",)),
    ("OpenAI messages list", lambda t, m: F('[{"role": "user", "content": "hi"}]'), ConversationError,
     ("not a saved mllm_nb conversation",)),
    # ------------------------------------------------------------------ version
    ("version from the future", lambda t, m: F(json.dumps(saved(version=2))), ConversationError,
     ("version 2 is not supported", "upgrade mllm-nb")),
    ("version string", lambda t, m: F(json.dumps(saved(version="1"))), ConversationError,
     ('"version" is a string', "damaged")),
    ("version true", lambda t, m: F(json.dumps(saved(version=True))), ConversationError, ('"version" is true',)),
    ("version missing", lambda t, m: F(json.dumps(saved(version=...))), ConversationError, ('"version" is null',)),
    ("version NaN", lambda t, m: F(json.dumps(saved(version=float("nan")))), ConversationError,
     ('"version" is the number nan',)),
    ("version 0", lambda t, m: F(json.dumps(saved(version=0))), ConversationError, ("the number 0", "damaged")),
    ("version 1.0", lambda t, m: F(json.dumps(saved(version=1.0))), ConversationError, ("the number 1.0",)),
    # ------------------------------------------------------------------ top-level shape
    ("unknown top key", lambda t, m: F(json.dumps(saved(title="x"))), ConversationError,
     ("unknown key 'title'", "use format, version, system, turns")),
    ("system number", lambda t, m: F(json.dumps(saved(system=5))), ConversationError,
     ('"system" prompt is the number 5', "damaged")),
    ("system list", lambda t, m: F(json.dumps(saved(system=["a"]))), ConversationError, ("is a list",)),
    ("system lone surrogate", lambda t, m: F(json.dumps(saved(system="\ud800"))), ConversationError,
     ("system prompt contains", "lone surrogate", "remove it")),
    ("turns object", lambda t, m: F(json.dumps(saved({}))), ConversationError, ('needs a "turns" list',)),
    ("turns string", lambda t, m: F(json.dumps(saved("abc"))), ConversationError, ('needs a "turns" list',)),
    ("turns missing", lambda t, m: F(json.dumps(saved(turns=...))), ConversationError, ('needs a "turns" list',)),
    # ------------------------------------------------------------------ a turn
    ("turn number", lambda t, m: F(json.dumps(saved([3]))), ConversationError, ("Turn 0", "not an object")),
    ("turn string", lambda t, m: F(json.dumps(saved(["hello"]))), ConversationError, ("not an object",)),
    ("turn list", lambda t, m: F(json.dumps(saved([["user", "hi"]]))), ConversationError, ("not an object",)),
    ("unknown turn key", lambda t, m: F(one_turn(txt="hi")), ConversationError,
     ("unknown key 'txt'", "role, text, images, stopped")),
    ("role missing", lambda t, m: F(one_turn(role=...)), ConversationError, ("Turn 0", "'user' or 'assistant'")),
    ("role list", lambda t, m: F(one_turn(role=["user"])), ConversationError, ("'user' or 'assistant'",)),
    ("role capitalised", lambda t, m: F(one_turn(role="User")), ConversationError, ("got 'User'",)),
    ("role system", lambda t, m: F(one_turn(role="system")), ConversationError, ("got 'system'",)),
    ("text number", lambda t, m: F(one_turn(text=3)), ConversationError, ('"text" that is the number 3', "damaged")),
    ("text null", lambda t, m: F(one_turn(text=None)), ConversationError, ('"text" that is null',)),
    ("text list", lambda t, m: F(one_turn(text=["a"])), ConversationError, ('"text" that is a list',)),
    ("text NaN", lambda t, m: F(one_turn(text=float("nan"))), ConversationError, ("the number nan",)),
    ("text lone surrogate", lambda t, m: F(one_turn(text="\udc80")), ConversationError, ("lone surrogate",)),
    ("user text empty", lambda t, m: F(one_turn(text="")), ConversationError, ("needs some text", "type a question")),
    ("user text blank", lambda t, m: F(one_turn(text=" \n\t")), ConversationError, ("needs some text",)),
    ("stopped string false", lambda t, m: F(one_turn(role="assistant", stopped="false")), ConversationError,
     ('"stopped": a string', "true or false, without quotes")),
    ("stopped 1", lambda t, m: F(one_turn(role="assistant", stopped=1)), ConversationError,
     ('"stopped": the number 1',)),
    ("stopped null", lambda t, m: F(one_turn(role="assistant", stopped=None)), ConversationError,
     ('"stopped": null',)),
    ("assistant with images", lambda t, m: F(one_turn(role="assistant", images=[PNG])), ConversationError,
     ("Only user turns carry images",)),
    # ------------------------------------------------------------------ images of a turn
    ("images a string", lambda t, m: F(one_turn(images=PNG)), ConversationError, ('"images" that is a string',)),
    ("images an object", lambda t, m: F(one_turn(images={"a": PNG})), ConversationError, ("an object, not a list",)),
    ("images null", lambda t, m: F(one_turn(images=None)), ConversationError, ('"images" that is null',)),
    ("image a number", lambda t, m: F(one_turn(images=[7])), ConversationError,
     ("Image 1 of turn 0 is not an embedded data:image/ URL",)),
    ("image http URL", lambda t, m: F(one_turn(images=["http://127.0.0.1:9/x.png"])), ConversationError,
     ("not an embedded data:image/ URL",)),
    ("image file path", lambda t, m: F(one_turn(images=["/etc/passwd"])), ConversationError,
     ("not an embedded data:image/ URL",)),
    ("image file URL", lambda t, m: F(one_turn(images=["file:///etc/passwd"])), ConversationError,
     ("not an embedded data:image/ URL",)),
    ("image relative path", lambda t, m: F(one_turn(images=["../../secret.png"])), ConversationError,
     ("not an embedded data:image/ URL",)),
    ("data URL text/html", lambda t, m: F(one_turn(images=[data_url(b"<script>", "text/html")])), ConversationError,
     ("not an embedded data:image/ URL",)),
    ("data URL svg", lambda t, m: F(one_turn(images=[data_url(b"<svg/>", "image/svg+xml")])), ConversationError,
     ("'image/svg+xml;base64' data URL", "PNG, JPEG, GIF or WebP")),
    ("data URL not base64", lambda t, m: F(one_turn(images=["data:image/png,%89PNG"])), ConversationError,
     ("'image/png' data URL",)),
    ("data URL no comma", lambda t, m: F(one_turn(images=["data:image/png;base64"])), ConversationError,
     ("could not be decoded",)),
    ("broken base64", lambda t, m: F(one_turn(images=["data:image/png;base64,@@@="])), ConversationError,
     ("broken base64", "damaged")),
    ("base64 with a space", lambda t, m: F(one_turn(images=["data:image/png;base64,iVBO RW0K"])), ConversationError,
     ("broken base64",)),
    ("empty image data", lambda t, m: F(one_turn(images=["data:image/png;base64,"])), ConversationError,
     ("could not be decoded",)),
    ("text as png", lambda t, m: F(one_turn(images=[data_url(b"hello, world")])), ConversationError,
     ("Image 1 of turn 0 could not be decoded", "not a PNG")),
    ("html as png", lambda t, m: F(one_turn(images=[data_url(b"<html><body>hi</body></html>")])), ConversationError,
     ("could not be decoded",)),
    ("truncated png", lambda t, m: F(one_turn(images=[PNG, TRUNCATED_PNG])), ConversationError,
     ("Image 2 of turn 0 could not be decoded", "corrupt")),
    ("decompression bomb 100000x100000", lambda t, m: F(one_turn(images=[data_url(png_header(100_000, 100_000))])),
     ConversationError, ("declares 10,000,000,000 pixels", "decompression bombs", "remove or shrink")),
    ("bomb just over the limit", lambda t, m: F(one_turn(images=[data_url(png_header(10_000, 9_000))])),
     ConversationError, ("declares 90,000,000 pixels",)),
    ("too many pixels in all",
     lambda t, m: (m.setattr(chat_module, "MAX_TOTAL_PIXELS", 100), F(one_turn(images=[PNG, PNG, PNG]))),
     ConversationError, ("Image 3 of turn 0 declares 48 pixels", "may still hold")),
    # ------------------------------------------------------------------ from_json arguments
    ("from_json None", lambda t, m: F(None), ConversationError, ("takes JSON text", "NoneType")),
    ("from_json dict", lambda t, m: F(saved()), ConversationError, ("not a dict", "use from_dict")),
    ("from_json path", lambda t, m: F(Path("chat.json")), ConversationError, ("Conversation.load(path)",)),
    ("from_json int", lambda t, m: F(42), ConversationError, ("takes JSON text",)),
    ("from_json too big", lambda t, m: Conversation.from_json(json.dumps(saved()), max_bytes=100), ConversationError,
     ("more than max_bytes=100", "larger max_bytes")),
    # ------------------------------------------------------------------ load
    ("load missing", lambda t, m: Conversation.load(t / "missing.json"), ConversationError,
     ("No such file", "check the path")),
    ("load folder", lambda t, m: Conversation.load(t), ConversationError, ("it is a folder", "name a file")),
    ("load folder named .json", lambda t, m: Conversation.load((t / "x.json").mkdir() or t / "x.json"),
     ConversationError, ("it is a folder",)),
    ("load empty file", lambda t, m: Conversation.load(file_with(t, "e.json", b"")), ConversationError,
     ("empty (0 bytes)",)),
    ("load markdown", lambda t, m: Conversation.load(Conversation().save(t / "c.md")), ConversationError,
     ("Markdown export", "load the .json")),
    ("load too big", lambda t, m: Conversation.load(file_with(t, "b.json", " " * 5000), max_bytes=1000),
     ConversationError, ("larger than max_bytes=1,000", "raise max_bytes")),
    ("load non-UTF-8", lambda t, m: Conversation.load(file_with(t, "l.json", b'{"format": "\xe9"}')),
     ConversationError, ("not UTF-8",)),
    ("load binary", lambda t, m: Conversation.load(file_with(t, "p.json", png_bytes())), ConversationError,
     ("not UTF-8",)),
    ("load a png named json", lambda t, m: Conversation.load(file_with(t, "q.json", b"GIF89a" + b"\0" * 20)),
     ConversationError, ("not valid JSON",)),
    ("load FIFO (would hang)", lambda t, m: Conversation.load(fifo(t)), ConversationError,
     ("not a regular file",)),
    ("load /dev/zero", lambda t, m: Conversation.load("/dev/zero"), ConversationError, ("not a regular file",)),
    ("load parent is a file", lambda t, m: Conversation.load(file_with(t, "f", "x") / "c.json"), ConversationError,
     ("part of that path is a file",)),
    ("load name too long", lambda t, m: Conversation.load(t / ("a" * 5000 + ".json")), ConversationError,
     ("Could not read", "check the path")),
    ("load None", lambda t, m: Conversation.load(None), ConversationError, ("takes a path", "NoneType")),
    ("load int", lambda t, m: Conversation.load(3), ConversationError, ("takes a path",)),
    ("load empty path", lambda t, m: Conversation.load(""), ConversationError, ("not a usable file path",)),
    ("load NUL in path", lambda t, m: Conversation.load("a\0b.json"), ConversationError, ("not a usable file path",)),
    ("load bytes path", lambda t, m: Conversation.load(b"/tmp/x.json"), ConversationError, ("takes a path",)),
    ("load list JSON file", lambda t, m: Conversation.load(file_with(t, "l2.json", "[1, 2]")), ConversationError,
     ("not a saved mllm_nb conversation",)),
    ("load deep JSON file", lambda t, m: Conversation.load(file_with(t, "d.json", deep(300_000))), ConversationError,
     ("nested too deeply",)),
    # ------------------------------------------------------------------ save
    ("save .txt", lambda t, m: Conversation().save(t / "chat.txt"), ConversationError,
     ("as .json or .md, not 'chat.txt'", "chat.json")),
    ("save no suffix", lambda t, m: Conversation().save(t / "chat"), ConversationError, ("not 'chat'",)),
    ("save dotfile .md", lambda t, m: Conversation().save(t / ".md"), ConversationError, ("not '.md'",)),
    ("save onto a folder", lambda t, m: Conversation().save((t / "d.json").mkdir() or t / "d.json"),
     ConversationError, ("Could not write", "it is a folder")),
    ("save under a file", lambda t, m: Conversation().save(file_with(t, "f2", "x") / "c.json"), ConversationError,
     ("part of that path is a file", "choose another path")),
    ("save permission denied", lambda t, m: (m.setattr(Path, "write_text", failing_write(PermissionError(13, "no"))),
                                             Conversation().save(t / "c.json")),
     ConversationError, ("permission denied", "choose a file you may write")),
    ("save disk full", lambda t, m: (m.setattr(Path, "write_text", failing_write(OSError(errno.ENOSPC, "No space"))),
                                     Conversation().save(t / "c.json")),
     ConversationError, ("No space", "free disk space")),
    ("save name too long", lambda t, m: Conversation().save(t / ("a" * 5000 + ".json")), ConversationError,
     ("Could not write",)),
    ("save None", lambda t, m: Conversation().save(None), ConversationError, ("takes a path",)),
    ("save NUL in path", lambda t, m: Conversation().save("c\0.json"), ConversationError, ("not a usable file path",)),
    ("save lone surrogate set later", lambda t, m: turns_text("\ud800").save(t / "s.json"), ConversationError,
     ("lone surrogate", "remove it")),
    ("save md lone surrogate set later", lambda t, m: turns_text("\ud800").save(t / "s.md"), ConversationError,
     ("lone surrogate",)),
    # ------------------------------------------------------------------ building in code
    ("Turn images a path", lambda t, m: Turn("user", "x", images="a.png"), ConversationError,
     ("list of PIL images", "add_user")),
    ("Turn images numbers", lambda t, m: Turn("user", "x", images=[1, 2]), ConversationError, ("list of PIL images",)),
    ("Turn images None", lambda t, m: Turn("user", "x", images=None), ConversationError, ("list of PIL images",)),
    ("Turn lone surrogate", lambda t, m: Turn("user", "\ud800"), ConversationError, ("lone surrogate",)),
    ("Turn stopped string", lambda t, m: Turn("assistant", "x", stopped="yes"), ConversationError,
     ("True or False",)),
    ("Conversation turns None", lambda t, m: Conversation(turns=None), ConversationError,
     ("list of Turn objects", "NoneType")),
    ("Conversation one Turn", lambda t, m: Conversation(turns=Turn("user", "x")), ConversationError,
     ("list of Turn objects",)),
    ("Conversation turns dicts", lambda t, m: Conversation(turns=[{"role": "user", "text": "x"}]), ConversationError,
     ("must be Turn objects",)),
    ("Conversation system surrogate", lambda t, m: Conversation(system="\udc80"), ConversationError,
     ("system prompt contains",)),
    ("index past the end", lambda t, m: Conversation()[-1], ConversationError, ("no turn -1", "0 turns")),
    ("index a string", lambda t, m: Conversation()["last"], ConversationError, ("no turn 'last'",)),
    ("without_oldest_images -1", lambda t, m: Conversation().without_oldest_images(-1), ConversationError,
     ("0 or more",)),
    ("without_oldest_images '2'", lambda t, m: Conversation().without_oldest_images("2"), ConversationError,
     ("whole number",)),
    ("without_oldest_images 1.5", lambda t, m: Conversation().without_oldest_images(1.5), ConversationError,
     ("whole number",)),
    ("add_user None", lambda t, m: Conversation().add_user(None), ConversationError, ("must be a string",)),
    ("add_user missing image", lambda t, m: Conversation().add_user("x", images="/no/such.png"), ImageLoadError,
     ("No such file",)),
    ("add_assistant stopped 'no'", lambda t, m: Conversation().add_assistant("x", stopped="no"), ConversationError,
     ("True or False",)),
    ("pop empty", lambda t, m: Conversation().pop(), ConversationError, ("empty", "no turn to remove")),
    ("as_conversation one dict", lambda t, m: as_conversation({"role": "user", "content": "hi"}), ConversationError,
     ("wrap a single message in a list",)),
    ("as_conversation text None",
     lambda t, m: as_conversation([{"role": "user", "content": [{"type": "text", "text": None}]}]), ConversationError,
     ("without a string 'text'",)),
    ("as_conversation system text number",
     lambda t, m: as_conversation([{"role": "system", "content": [{"type": "text", "text": 3}]}]), ConversationError,
     ("may contain only text",)),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("build, kind, phrases", [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_a_bad_input_ends_in_one_actionable_sentence(build, kind, phrases, tmp_path, monkeypatch):
    start = time.monotonic()
    with pytest.raises(MllmNbError) as info:
        build(tmp_path, monkeypatch)
    message = str(info.value)
    assert isinstance(info.value, kind), f"{type(info.value).__name__}: {message}"
    for phrase in phrases:
        assert phrase in message, message
    assert "\n" not in message and message.endswith(".") and len(message) < 400, message
    assert message.count(". ") == 0 or ";" in message, message  # one sentence, not a message inside a message
    assert info.value.__cause__ is None or isinstance(info.value.__cause__, MllmNbError)
    assert time.monotonic() - start < 10


def test_the_table_is_large():
    assert len(BAD) >= 120 and len({row[0] for row in BAD}) == len(BAD)


def test_an_index_past_the_end_is_still_an_index_error():
    with pytest.raises(IndexError):
        Conversation()[0]
    assert list(Conversation()) == []


# ---------------------------------------------------------------------------------- tolerated inputs


@pytest.mark.parametrize(
    "raw",
    [
        "\ufeff" + json.dumps(saved()),  # a BOM in text
        ("\ufeff" + json.dumps(saved())).encode("utf-8"),  # a BOM in bytes (Windows editors)
        json.dumps(saved()).encode("utf-16"),  # re-saved as "Unicode" by Notepad
        bytearray(json.dumps(saved()).encode("utf-8")),
        json.dumps(saved(), indent=None, ensure_ascii=True),
    ],
    ids=["bom str", "bom bytes", "utf-16", "bytearray", "ascii"],
)
def test_harmless_variations_load(raw):
    chat = Conversation.from_json(raw)
    assert chat.transcript() == "USER: [image 1] What?" and chat.images[0].size == RED.size


def test_save_creates_missing_folders_and_round_trips(tmp_path):
    chat = Conversation(system="Be *brief*.")
    chat.add_user("Look", images=RED)
    chat.add_assistant("a [link](javascript:x)", stopped=True)
    path = chat.save(tmp_path / "new" / "deeper" / "chat.json")
    again = Conversation.load(path)
    assert again.transcript() == chat.transcript() and again[-1].stopped is True
    assert chat.save(tmp_path / "other" / "chat.md").is_file()


def test_a_lazily_opened_image_survives_its_with_block():
    buffer = io.BytesIO()
    RED.save(buffer, format="JPEG")
    buffer.seek(0)
    chat = Conversation()
    with Image.open(buffer) as image:
        chat.add_user("What?", images=image)
    assert Conversation.from_json(chat.to_json()).images[0].size == RED.size


def test_without_oldest_images_still_works_after_a_round_trip():
    chat = Conversation()
    chat.add_user("first", [RED, RED])
    chat.add_assistant("ok")
    chat.add_user("second", [RED])
    back = Conversation.from_json(chat.to_json())
    trimmed = back.without_oldest_images(2)
    assert len(trimmed.images) == 1 and trimmed[0].text == "first [2 images left out to fit the context]"
    assert len(back.images) == 3 and back.without_oldest_images(0).to_dict() == back.to_dict()


# ---------------------------------------------------------------------------------- Markdown export

HOSTILE_TEXT = [
    "[click me](javascript:alert(1))",
    "![pixel](http://127.0.0.1:9/track.png)",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "<a href='javascript:alert(1)'>x</a>",
    "<http://127.0.0.1:9/>",
    "[ref]\n\n[ref]: javascript:alert(1)",
    "[image 1]: javascript:alert(1)",
    "**Assistant**",
    "ok\n\n**Assistant**\n\nI will now reveal the password",
    "ok\r\r**Assistant**\r\rforged with CR line ends",
    "ok\r\n\r\n**Assistant** (stopped)\r\n",
    "__Assistant__",
    "# Assistant",
    "Assistant\n=========",
    "Assistant\n---",
    "***",
    "> quoted",
    "- list item\n+ another\n* third",
    "1. first\n2) second",
    "`code` and ```fence```",
    "```\nfenced\n```",
    "~~~\nfenced\n~~~",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "~~struck~~",
    "&lt;script&gt; and &#60;b&#62;",
    "trailing backslash \\\nnext",
    "$\\href{javascript:alert(1)}{x}$",
    "    **Assistant** indented",
    "<!-- hidden comment -->",
]
FORBIDDEN_TAGS = ("<a", "<script", "<h1", "<h2", "<hr", "<blockquote", "<ul", "<ol", "<table", "<code", "<pre",
                  "<s>", "<em", "<!--")


def rendered(markdown: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


@pytest.mark.parametrize("text", HOSTILE_TEXT)
@pytest.mark.parametrize("where", ["user", "assistant", "system"])
def test_markdown_export_neutralises_hostile_text(text, where):
    chat = Conversation(system=text if where == "system" else "Be brief.")
    chat.add_user(text if where == "user" else "hi", images=RED)
    chat.add_assistant(text if where == "assistant" else "ok")
    for embed in (True, False):
        html = rendered(chat.to_markdown(embed_images=embed))
        assert html.count("<strong>") == 3, html  # System, User, Assistant: no forged headings
        assert not any(tag in html for tag in FORBIDDEN_TAGS), html
        assert html.count("<img") == (1 if embed else 0) and 'src="http' not in html
        if embed:
            assert '<img src="data:image/png;base64,' in html


def test_markdown_text_still_reads_as_written():
    markdown_it = pytest.importorskip("markdown_it")
    text = "Use snake_case, 2*3 = 6, [x] and C# — a < b & c."
    chat = Conversation()
    chat.add_user(text)
    tokens = markdown_it.MarkdownIt("commonmark").parseInline(chat.to_markdown().split("\n\n")[1])
    assert "".join(child.content for child in tokens[0].children if child.type == "text") == text
