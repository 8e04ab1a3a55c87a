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
import html
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mllm_nb.errors import ImageLoadError, MllmNbError

#: The value of ``"format"`` in a saved conversation.
JSON_FORMAT = "mllm_nb.conversation"
JSON_VERSION = 1
ROLES = ("user", "assistant")


class ConversationError(MllmNbError, ValueError):
    """A conversation or a turn was built or loaded from bad input."""


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
        self.system = system or None
        self.turns: list[Turn] = []
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
        return self.turns[index]

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
        if data.get("version") != JSON_VERSION:
            raise ConversationError(
                f"Saved conversation version {data.get('version')!r} is not supported (expected {JSON_VERSION}); "
                "upgrade mllm-nb."
            )
        turns = data.get("turns")
        if not isinstance(turns, list):
            raise ConversationError("A saved conversation needs a \"turns\" list; the file is damaged.")
        return cls([_turn_from_record(i, record) for i, record in enumerate(turns)], system=data.get("system"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Conversation:
        """Read a conversation written by :meth:`to_json`.

        >>> Conversation.from_json(Conversation(system="s").to_json()).system
        's'
        """
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise ConversationError(f"The conversation is not valid JSON ({err}); load a file written by to_json.")
        return cls.from_dict(data)

    def to_markdown(self, embed_images: bool = True) -> str:
        """Markdown with a heading per turn; images inline as data URLs (or ``[image N]`` when not embedded).

        Text is HTML-escaped, so a message such as ``<img src=x onerror=...>`` stays text when rendered.

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
        """Write ``.json`` (re-loadable with :meth:`load`) or ``.md`` (Markdown); returns the path.

        >>> import tempfile, os
        >>> Conversation().save(os.path.join(tempfile.mkdtemp(), "chat.json")).name
        'chat.json'
        """
        target = Path(path).expanduser()
        suffix = target.suffix.lower()
        if suffix not in (".json", ".md"):
            raise ConversationError(f"Save a conversation as .json or .md, not {target.name!r}.")
        text = self.to_json() if suffix == ".json" else self.to_markdown()
        target.write_text(text, encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> Conversation:
        """Read a ``.json`` file written by :meth:`save`.

        >>> import tempfile, os
        >>> Conversation.load(Conversation().save(os.path.join(tempfile.mkdtemp(), "c.json")))
        Conversation(0 turns, 0 images)
        """
        source = Path(path).expanduser()
        if not source.is_file():
            raise ConversationError(f"No such file {str(source)!r}; check the path.")
        return cls.from_json(source.read_bytes())


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
    raise ConversationError(
        f"Expected a Conversation, a question string or a list of chat messages; got a {type(chat).__name__}."
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
                texts.append(str(item.get("text", "")))
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
    if isinstance(content, list) and all(isinstance(i, dict) and i.get("type") == "text" for i in content):
        return " ".join(str(i.get("text", "")) for i in content)
    raise ConversationError(f"Message {index} (system) may contain only text.")


def _turn_from_record(index: int, record: Any) -> Turn:
    if not isinstance(record, dict):
        raise ConversationError(f"Turn {index} of the saved conversation is not an object; the file is damaged.")
    images = []
    for number, url in enumerate(record.get("images") or [], start=1):
        if not isinstance(url, str) or not url.startswith("data:image/"):
            raise ConversationError(
                f"Image {number} of turn {index} is not an embedded data:image/ URL; "
                "saved conversations carry their images inside the file."
            )
        images.append(_load_data_url(url, index, number))
    try:
        return Turn(record.get("role"), record.get("text", ""), images, bool(record.get("stopped", False)))
    except ConversationError as err:
        raise ConversationError(f"Turn {index} of the saved conversation: {err}") from None


def _load_data_url(url: str, index: int, number: int) -> Image.Image:
    from mllm_nb.images import load_image

    try:
        return load_image(url)
    except ImageLoadError as err:
        raise ConversationError(f"Image {number} of turn {index} could not be decoded: {err}") from None


def as_images(images: Any) -> list[Image.Image]:
    """A turn's images: None or [] -> none; otherwise anything ``load_images`` accepts -> RGB PIL images in order.

    >>> as_images(None), len(as_images(Image.new("RGB", (2, 2))))
    ([], 1)
    """
    from mllm_nb.images import load_images

    if images is None or (isinstance(images, (list, tuple)) and not images):
        return []
    if isinstance(images, (list, tuple)) and all(isinstance(i, Image.Image) and i.mode == "RGB" for i in images):
        return list(images)
    if isinstance(images, Image.Image) and images.mode == "RGB":
        return [images]
    return load_images(images)


def _md_text(text: str) -> str:
    return html.escape(text, quote=False)
