"""A conversation of turns with images, as plain data, for any model: the local ``VLM`` or a model server.

A :class:`Conversation` is an ordered list of :class:`Turn` s (user or assistant, each with text
and, for the user, zero or more images). It converts to the chat-template message format that
``processor.apply_chat_template`` expects, saves and loads itself as JSON (images embedded as PNG
data URLs) and exports Markdown::

    >>> from PIL import Image
    >>> chat = Conversation()
    >>> _ = chat.add_user("What colour is the circle?", images=[Image.new("RGB", (8, 8), "red")])
    >>> _ = chat.add_assistant("red")
    >>> print(chat.transcript())
    USER: [image 1] What colour is the circle?
    ASSISTANT: red
    >>> chat.to_messages()[0]["content"][0]
    {'type': 'image'}
    >>> Conversation.from_json(chat.to_json()).transcript() == chat.transcript()
    True

To talk to a model, give the conversation to a :class:`mllm_nb.backends.ChatSession`:
``ChatSession(vlm, chat).ask("And the square?")`` appends the question and the answer.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from mllm_nb.errors import ImageLoadError, MllmNbError

#: The value of ``"format"`` in a saved conversation.
JSON_FORMAT = "mllm_nb.conversation"
JSON_VERSION = 1
ROLES = ("user", "assistant")
#: The largest conversation file :meth:`Conversation.load` / :meth:`Conversation.from_json` read (bytes).
MAX_JSON_BYTES = 256 * 2**20
#: The most pixels one loaded image, and all images of a loaded conversation together, may declare.
MAX_IMAGE_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
MAX_TOTAL_PIXELS = 4 * MAX_IMAGE_PIXELS
_TOP_KEYS = ("format", "version", "system", "turns")
_TURN_KEYS = ("role", "text", "images", "stopped")
_IMAGE_MIMES = ("image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp")


class ConversationError(MllmNbError, ValueError):
    """A conversation or a turn was built or loaded from bad input."""


class _NoSuchTurn(ConversationError, IndexError):
    """``chat[i]`` past the end: still an ``IndexError`` for code that expects one."""


@dataclass
class Turn:
    """One message: ``role`` is ``"user"`` or ``"assistant"``; only user turns carry images.

    ``stopped`` marks an assistant reply that was cut short (Stop button or ``stop_event``).

    >>> Turn("assistant", "red", stopped=True)
    Turn(role='assistant', text='red', images=[], stopped=True)
    """

    role: str
    text: str
    images: list[Image.Image] = field(default_factory=list)
    stopped: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConversationError(f"A turn's role must be 'user' or 'assistant'; got {self.role!r}.")
        if not isinstance(self.text, str):
            raise ConversationError(f"A turn's text must be a string; got a {type(self.text).__name__}.")
        _check_unicode(self.text, "A turn's text")
        self.images = list(self.images) if isinstance(self.images, tuple) else self.images
        if not isinstance(self.images, list) or not all(isinstance(i, Image.Image) for i in self.images):
            raise ConversationError("A turn's images must be a list of PIL images; add_user(text, images) loads any.")
        if self.role == "assistant" and self.images:
            raise ConversationError("Only user turns carry images; attach them to the question instead.")
        if self.role == "user" and not self.text.strip() and not self.images:
            raise ConversationError("A user turn needs some text or at least one image; type a question.")
        if not isinstance(self.stopped, bool):
            raise ConversationError(f"stopped must be True or False; got {self.stopped!r}.")


class Conversation:
    """Ordered user/assistant turns with images, with an optional system prompt.

    >>> chat = Conversation(system="Answer in one word.")
    >>> _ = chat.add_user("Hello")
    >>> [m["role"] for m in chat.to_messages()]
    ['system', 'user']
    """

    def __init__(self, turns: Sequence[Turn] = (), system: str | None = None) -> None:
        if system is not None and not isinstance(system, str):
            raise ConversationError(f"system must be a string or None; got a {type(system).__name__}.")
        _check_unicode(system or "", "The system prompt")
        self.system = system or None
        self.turns: list[Turn] = []
        if isinstance(turns, (str, bytes, Turn)) or not hasattr(turns, "__iter__"):
            raise ConversationError(f"turns must be a list of Turn objects; got a {type(turns).__name__}.")
        for turn in turns:
            if not isinstance(turn, Turn):
                raise ConversationError(f"Conversation turns must be Turn objects; got a {type(turn).__name__}.")
            self.turns.append(turn)

    # ---------------------------------------------------------------------------------- building

    def add_user(self, text: str, images: Any = None) -> Turn:
        """Append a question; ``images`` is anything ``load_images`` accepts (or None), kept in order.

        >>> Conversation().add_user("Hi").role
        'user'
        """
        turn = Turn("user", text, as_images(images))
        self.turns.append(turn)
        return turn

    def add_assistant(self, text: str, stopped: bool = False) -> Turn:
        """Append a reply (``stopped=True`` when it was cut short).

        >>> Conversation().add_assistant("red").text
        'red'
        """
        turn = Turn("assistant", text, stopped=stopped)
        self.turns.append(turn)
        return turn

    def pop(self) -> Turn:
        """Remove and return the last turn.

        >>> chat = Conversation(); _ = chat.add_user("Hi"); chat.pop().text
        'Hi'
        """
        if not self.turns:
            raise ConversationError("The conversation is empty; there is no turn to remove.")
        return self.turns.pop()

    def clear(self) -> None:
        """Remove every turn (the system prompt stays).

        >>> chat = Conversation(); _ = chat.add_user("Hi"); chat.clear(); len(chat)
        0
        """
        self.turns.clear()

    def copy(self) -> Conversation:
        """A new conversation with the same turns (images are shared, not copied).

        >>> Conversation(system="s").copy().system
        's'
        """
        turns = [Turn(t.role, t.text, list(t.images), t.stopped) for t in self.turns]
        return Conversation(turns, system=self.system)

    def without_oldest_images(self, count: int) -> Conversation:
        """A copy whose ``count`` oldest images are left out, each turn that lost some saying so in its text
        (the model is told, and the prompt fits a context the earlier images no longer fit in).

        >>> chat = Conversation(); _ = chat.add_user("What is it?", Image.new("RGB", (8, 8)))
        >>> chat.without_oldest_images(1).turns[0].text
        'What is it? [1 image left out to fit the context]'
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConversationError(f"count must be a whole number of images, 0 or more; got {count!r:.40}.")
        trimmed, left = self.copy(), count
        for turn in trimmed.turns:
            if left <= 0:
                break
            dropped = min(left, len(turn.images))
            if dropped:
                turn.images = turn.images[dropped:]
                noun = "image" if dropped == 1 else "images"
                turn.text = f"{turn.text} [{dropped} {noun} left out to fit the context]".strip()
                left -= dropped
        return trimmed

    @property
    def images(self) -> list[Image.Image]:
        """Every image of the conversation in order (the order of the ``{"type": "image"}`` items).

        >>> Conversation().images
        []
        """
        return [image for turn in self.turns for image in turn.images]

    def __len__(self) -> int:
        return len(self.turns)

    def __iter__(self) -> Iterator[Turn]:
        return iter(self.turns)

    def __getitem__(self, index: int) -> Turn:
        try:
            return self.turns[index]
        except (IndexError, TypeError):
            raise _NoSuchTurn(f"There is no turn {index!r:.40} in a conversation of {len(self)} turns.") from None

    def __repr__(self) -> str:
        return f"Conversation({len(self.turns)} turns, {len(self.images)} images)"

    # ---------------------------------------------------------------------------------- formats

    def to_messages(self) -> list[dict[str, Any]]:
        """The chat-template format: each user turn's images as ``{"type": "image"}`` items, then its text.

        Pass the result to ``processor.apply_chat_template`` and ``self.images`` to the processor.

        >>> chat = Conversation(); _ = chat.add_user("Hi"); chat.to_messages()
        [{'role': 'user', 'content': [{'type': 'text', 'text': 'Hi'}]}]
        """
        messages: list[dict[str, Any]] = []
        if self.system:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system}]})
        for turn in self.turns:
            content: list[dict[str, Any]] = [{"type": "image"} for _ in turn.images]
            if turn.text or not content:
                content.append({"type": "text", "text": turn.text})
            messages.append({"role": turn.role, "content": content})
        return messages

    def transcript(self) -> str:
        """Plain text, one line per turn, images numbered across the conversation.

        >>> chat = Conversation(); _ = chat.add_user("Hi"); _ = chat.add_assistant("Hel", stopped=True)
        >>> print(chat.transcript())
        USER: Hi
        ASSISTANT: Hel [stopped]
        """
        lines, number = [], 0
        if self.system:
            lines.append(f"SYSTEM: {self.system}")
        for turn in self.turns:
            marks = []
            for _ in turn.images:
                number += 1
                marks.append(f"[image {number}]")
            parts = marks + ([turn.text] if turn.text else []) + (["[stopped]"] if turn.stopped else [])
            lines.append(f"{turn.role.upper()}: {' '.join(parts)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; images become PNG data URLs.

        >>> Conversation().to_dict()["format"]
        'mllm_nb.conversation'
        """
        turns = []
        for turn in self.turns:
            record: dict[str, Any] = {"role": turn.role, "text": turn.text}
            if turn.images:
                record["images"] = [image_to_data_url(image) for image in turn.images]
            if turn.stopped:
                record["stopped"] = True
            turns.append(record)
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "system": self.system, "turns": turns}

    def to_json(self, indent: int | None = 1) -> str:
        """The conversation as JSON text (see :meth:`to_dict`); :meth:`from_json` reads it back.

        >>> '"turns": []' in Conversation().to_json()
        True
        """
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any) -> Conversation:
        """Rebuild a conversation from :meth:`to_dict` output; images must be ``data:image/...`` URLs.

        >>> Conversation.from_dict({"format": "mllm_nb.conversation", "version": 1, "turns": []})
        Conversation(0 turns, 0 images)
        """
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
            raise ConversationError(
                f"This is not a saved mllm_nb conversation (no \"format\": {JSON_FORMAT!r}); "
                "load a file written by Conversation.save or to_json."
            )
        version, system, turns = data.get("version"), data.get("system"), data.get("turns")
        if type(version) is int and version > JSON_VERSION:
            raise ConversationError(
                f"Saved conversation version {version} is not supported (this mllm-nb reads {JSON_VERSION}); "
                "upgrade mllm-nb with pip install -U mllm-nb."
            )
        if type(version) is not int or version < 1:
            raise ConversationError(f"The saved \"version\" is {_json_kind(version)}, not 1; the file is damaged.")
        _check_keys(data, _TOP_KEYS, "The saved conversation")
        if system is not None and not isinstance(system, str):
            raise ConversationError(f"The saved \"system\" prompt is {_json_kind(system)}; the file is damaged.")
        if not isinstance(turns, list):
            raise ConversationError("A saved conversation needs a \"turns\" list; the file is damaged.")
        built, pixels_left = [], MAX_TOTAL_PIXELS
        for index, record in enumerate(turns):
            built.append(_turn_from_record(index, record, pixels_left))
            pixels_left -= sum(image.width * image.height for image in built[-1].images)
        return cls(built, system=system)

    @classmethod
    def from_json(cls, text: str | bytes, max_bytes: int = MAX_JSON_BYTES) -> Conversation:
        """Read a conversation written by :meth:`to_json` (at most ``max_bytes``; a UTF-8 BOM is fine).

        >>> Conversation.from_json(Conversation(system="s").to_json()).system
        's'
        """
        if isinstance(text, (str, bytes, bytearray)):
            if len(text) > max_bytes:
                size = f"{len(text):,} bytes, more than max_bytes={max_bytes:,}"
                raise ConversationError(f"The conversation JSON is {size}; pass a larger max_bytes if you trust it.")
            return cls.from_dict(_parse_json(text.removeprefix("\ufeff") if isinstance(text, str) else bytes(text)))
        hint = "use Conversation.load(path)" if isinstance(text, os.PathLike) else "pass the text, or use from_dict"
        raise ConversationError(f"from_json takes JSON text (str or bytes), not a {type(text).__name__}; {hint}.")

    def to_markdown(self, embed_images: bool = True) -> str:
        """Markdown with a heading per turn; images inline as data URLs (or ``[image N]`` when not embedded).

        Text is HTML- and Markdown-escaped: no message makes a link, an image, raw HTML or a turn heading.

        >>> chat = Conversation(); _ = chat.add_user("a < b?"); print(chat.to_markdown())
        **User**
        <BLANKLINE>
        a &lt; b?
        <BLANKLINE>
        """
        blocks, number = [], 0
        if self.system:
            blocks.append(f"**System**\n\n{_md_text(self.system)}\n")
        for turn in self.turns:
            lines = [f"**{turn.role.capitalize()}**" + (" (stopped)" if turn.stopped else ""), ""]
            for image in turn.images:
                number += 1
                lines.append(f"![image {number}]({image_to_data_url(image)})" if embed_images else f"[image {number}]")
                lines.append("")
            if turn.text:
                lines += [_md_text(turn.text), ""]
            blocks.append("\n".join(lines))
        return "\n".join(blocks)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.json`` (re-loadable with :meth:`load`) or ``.md`` (Markdown); missing folders are created.

        >>> import tempfile, os
        >>> Conversation().save(os.path.join(tempfile.mkdtemp(), "new", "chat.json")).name
        'chat.json'
        """
        target = _as_path(path, "save")
        suffix = target.suffix.lower()
        if suffix not in (".json", ".md"):
            raise ConversationError(f"Save a conversation as .json or .md, not {target.name!r}; e.g. 'chat.json'.")
        text = self.to_json() if suffix == ".json" else self.to_markdown()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except OSError as err:
            raise _io_error(err, target, "write") from None
        except UnicodeEncodeError:  # text set after the turn was made
            raise ConversationError("A turn holds a lone surrogate character, not valid text; remove it.") from None
        return target

    @classmethod
    def load(cls, path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> Conversation:
        """Read a ``.json`` file written by :meth:`save` (at most ``max_bytes``).

        >>> import tempfile, os
        >>> Conversation.load(Conversation().save(os.path.join(tempfile.mkdtemp(), "c.json")))
        Conversation(0 turns, 0 images)
        """
        source = _as_path(path, "load")
        if source.suffix.lower() == ".md":
            raise ConversationError(f"'{source.name}' is a Markdown export, which cannot be read back; load the .json.")
        try:
            if source.exists() and not source.is_file() and not source.is_dir():  # a FIFO or a device would hang
                raise ConversationError(f"'{_shown(source)}' is not a regular file; pass a .json file written by save.")
            with source.open("rb") as fh:
                data = fh.read(max_bytes + 1)
        except FileNotFoundError:
            raise ConversationError(f"No such file '{_shown(source)}'; check the path (cwd: '{Path.cwd()}').") from None
        except OSError as err:
            raise _io_error(err, source, "read") from None
        if not data or len(data) > max_bytes:
            size = "empty (0 bytes)" if not data else f"larger than max_bytes={max_bytes:,}"
            raise ConversationError(f"'{_shown(source)}' is {size}; load a .json file from save (or raise max_bytes).")
        return cls.from_json(data, max_bytes)


# ------------------------------------------------------------------------------------ helpers


def image_to_data_url(image: Image.Image) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URL (lossless).

    >>> image_to_data_url(Image.new("RGB", (1, 1)))[:22]
    'data:image/png;base64,'
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def as_conversation(chat: Any, images: Any = None) -> Conversation:
    """Normalise what a backend is given: a ``Conversation``, a question string, or chat-template messages.

    Messages are ``[{"role": ..., "content": str | [{"type": "image"}, {"type": "text", "text": ...}]}]``;
    each ``{"type": "image"}`` item takes the next image of ``images`` (or its own ``"image"`` key).

    >>> as_conversation("Hi").transcript()
    'USER: Hi'
    """
    if isinstance(chat, Conversation):
        if images:
            raise ConversationError("A Conversation carries its own images; attach them with add_user instead.")
        return chat
    if isinstance(chat, str):
        conversation = Conversation()
        conversation.add_user(chat, images)
        return conversation
    if isinstance(chat, (list, tuple)):
        return _from_messages(list(chat), as_images(images))
    hint = " (wrap a single message in a list)" if isinstance(chat, dict) else ""
    raise ConversationError(
        f"Expected a Conversation, a question string or a list of chat messages; got a {type(chat).__name__}{hint}."
    )


def _from_messages(messages: list[Any], images: list[Image.Image]) -> Conversation:
    queue = list(images)
    conversation, used = Conversation(), 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ConversationError(f"Message {index} must be a dict with 'role' and 'content'; got {message!r:.80}.")
        role, content = message["role"], message["content"]
        if role == "system":
            conversation.system = _text_of(index, content)
            continue
        if role not in ROLES:
            raise ConversationError(f"Message {index} has role {role!r}; use 'system', 'user' or 'assistant'.")
        if not isinstance(content, (str, list)):
            raise ConversationError(f"Message {index} content must be a string or a list of items.")
        turn_images, texts = [], []
        for item in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text":
                if not isinstance(item.get("text"), str):
                    raise ConversationError(f"Message {index} has a text item without a string 'text': {item!r:.60}.")
                texts.append(item["text"])
            elif kind == "image" and item.get("image") is not None:
                turn_images += as_images([item["image"]])
            elif kind == "image":
                if not queue:
                    raise ConversationError(
                        f"The messages have more image items than the {len(images)} image(s) given; "
                        "pass one image per {'type': 'image'} item."
                    )
                turn_images.append(queue.pop(0))
                used += 1
            else:
                raise ConversationError(f"Message {index} has a content item of unknown type: {item!r:.80}.")
        conversation.turns.append(Turn(role, " ".join(texts), turn_images))
    if queue:
        raise ConversationError(
            f"{len(images)} image(s) were given but the messages have only {used} {{'type': 'image'}} item(s); "
            "add an image item per image."
        )
    return conversation


def _text_of(index: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    items = content if isinstance(content, list) else [None]
    if all(isinstance(i, dict) and i.get("type") == "text" and isinstance(i.get("text"), str) for i in items):
        return " ".join(i["text"] for i in items)
    raise ConversationError(f"Message {index} (system) may contain only text.")


def _turn_from_record(index: int, record: Any, pixels_left: int) -> Turn:
    where = f"Turn {index} of the saved conversation"
    if not isinstance(record, dict):
        raise ConversationError(f"{where} is not an object; the file is damaged.")
    _check_keys(record, _TURN_KEYS, where)
    text, urls, stopped = record.get("text", ""), record.get("images", []), record.get("stopped", False)
    if not isinstance(text, str):
        raise ConversationError(f"{where} has a \"text\" that is {_json_kind(text)}; the file is damaged.")
    if not isinstance(stopped, bool):
        raise ConversationError(f"{where} has \"stopped\": {_json_kind(stopped)}; write true or false, without quotes.")
    if not isinstance(urls, list):
        raise ConversationError(f"{where} has \"images\" that is {_json_kind(urls)}, not a list; the file is damaged.")
    images = []
    for number, url in enumerate(urls, start=1):
        images.append(_image_from_data_url(url, f"Image {number} of turn {index}", pixels_left))
        pixels_left -= images[-1].width * images[-1].height
    try:
        return Turn(record.get("role"), text, images, stopped)
    except ConversationError as err:
        raise ConversationError(f"{where}: {err}") from None


def _image_from_data_url(url: Any, label: str, pixels_left: int) -> Image.Image:
    """Decode one embedded image after checking its MIME type, its base64 and the pixels it declares."""
    from mllm_nb.images import load_image

    if not isinstance(url, str) or not url.startswith("data:image/"):
        raise ConversationError(f"{label} is not an embedded data:image/ URL; a saved conversation holds its images.")
    header, _, payload = url[5:].partition(",")
    if not header.lower().endswith(";base64") or header.lower().removesuffix(";base64") not in _IMAGE_MIMES:
        raise ConversationError(f"{label} is a {header[:40]!r} data URL; use base64 PNG, JPEG, GIF or WebP data.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ConversationError(f"{label} holds broken base64 data; the file is damaged.") from None
    pixels = _declared_pixels(data)
    if pixels is None:
        raise ConversationError(f"{label} could not be decoded (not a PNG, JPEG, GIF or WebP); the file is damaged.")
    limit = min(MAX_IMAGE_PIXELS, max(pixels_left, 0))
    if pixels > limit:
        why = f"more than the {limit:,} a loaded conversation may still hold (a guard against decompression bombs)"
        raise ConversationError(f"{label} declares {pixels:,} pixels, {why}; remove or shrink that image.")
    try:
        return load_image(data, max_pixels=limit)
    except ImageLoadError:
        raise ConversationError(f"{label} could not be decoded (truncated or corrupt); the file is damaged.") from None


def _declared_pixels(data: bytes) -> int | float | None:
    """Width x height from the header (nothing decoded); inf past Pillow's bomb limit, None if unreadable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.width * image.height
        except Image.DecompressionBombError as err:  # past twice Pillow's limit: its message holds the size
            return int(found[0]) if (found := re.findall(r"\d+", str(err))) else float("inf")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, TypeError):
            return None


def _parse_json(text: str | bytes) -> Any:
    """``json.loads`` with every failure as one sentence (the text itself is never chained: it may be private)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ConversationError("The conversation JSON is nested too deeply; load a file written by save.") from None
    except UnicodeDecodeError as err:
        raise ConversationError(f"The conversation is not UTF-8 (byte {err.start}); re-save it as UTF-8.") from None
    except json.JSONDecodeError as err:
        where = f"{err.msg} at line {err.lineno}, column {err.colno}"
        raise ConversationError(f"The conversation is not valid JSON ({where}); load a file written by save.") from None
    except ValueError:  # e.g. an integer of more than 4,300 digits
        raise ConversationError("The conversation JSON holds a number too long to read; the file is damaged.") from None


def _json_kind(value: Any) -> str:
    """How a JSON value reads in a sentence: ``'a string'``, ``'null'``, ``'the number 3'``..."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"the number {value!r:.20}"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def _check_keys(record: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [key for key in record if key not in known]
    if unknown:
        raise ConversationError(f"{where} has an unknown key {str(unknown[0])[:40]!r}; use {', '.join(known)}.")


def _check_unicode(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConversationError(f"{what} contains {text[err.start]!r}, a lone surrogate; remove it.") from None


def _io_error(err: OSError, path: Path, verb: str) -> ConversationError:
    """One sentence for a failed read or write of ``path``."""
    if isinstance(err, IsADirectoryError):
        why = "it is a folder; name a file, e.g. 'chat.json'"
    elif isinstance(err, (NotADirectoryError, FileExistsError)):
        why = "part of that path is a file, not a folder; choose another path"
    elif isinstance(err, PermissionError):
        why = f"permission denied; choose a file you may {verb}"
    else:
        why = f"{err.strerror or type(err).__name__}; check the path and the free disk space"
    return ConversationError(f"Could not {verb} '{_shown(path)}': {why}.")


def _shown(path: Path) -> str:
    return str(path) if len(str(path)) <= 120 else f"{str(path)[:60]}...{str(path)[-50:]}"


def _as_path(path: Any, verb: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ConversationError(f"Conversation.{verb} takes a path (str or pathlib.Path), not a {type(path).__name__}.")
    try:
        target: Path | None = Path(path).expanduser()
    except (TypeError, RuntimeError):  # __fspath__ gave bytes, or ~user is unknown
        target = None
    if target is None or not str(path).strip() or "\x00" in str(path):
        raise ConversationError(f"{str(path)[:80]!r} is not a usable file path; pass e.g. 'chat.json'.")
    return target


def as_images(images: Any) -> list[Image.Image]:
    """A turn's images: None or [] -> none; otherwise anything ``load_images`` accepts -> RGB PIL images in order.

    >>> as_images(None), len(as_images(Image.new("RGB", (2, 2))))
    ([], 1)
    """
    from mllm_nb.images import load_images

    if images is None or (isinstance(images, (list, tuple)) and not images):
        return []
    if isinstance(images, (list, tuple)) and all(_is_ready(i) for i in images):
        return list(images)
    if _is_ready(images):
        return [images]
    return load_images(images)


def _is_ready(image: Any) -> bool:
    """A loaded RGB image to keep as it is; lazily opened files (``Image.open``) are copied by ``load_images``."""
    return type(image) is Image.Image and image.mode == "RGB"


_MD_ANYWHERE = re.compile(r"([\\`*_\[\]#|~$])")
_MD_LINE_START = re.compile(r"^([ \t]*\d*)([-+=.)])", re.MULTILINE)


def _md_text(text: str) -> str:
    """Text that renders as itself: Markdown punctuation backslash-escaped, HTML escaped, so no message makes
    a link, an image, a heading or a list (and none can forge a turn heading)."""
    text = _MD_ANYWHERE.sub(r"\\\1", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _MD_LINE_START.sub(lambda m: m[1] + "\\" + m[2] if m[2] in "-+=" or m[1].strip() else m[0], text)
    text = html.escape(text, quote=False)  # then leading spaces, which would make a code block, as &nbsp;
    return re.sub(r"^[ \t]+", lambda m: "&nbsp;" * len(m[0].expandtabs(4)), text, flags=re.MULTILINE)
