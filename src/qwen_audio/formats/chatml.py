"""Qwen-Audio-Chat's ChatML: typed turns → prompt text, and back.

Layout (spec §Chat, and Qwen's ``make_context``): blocks ``<|im_start|>ROLE\\nCONTENT<|im_end|>``
joined by ``\\n``, a system block first, and ``\\n<|im_start|>assistant\\n`` to ask for a reply.
An audio item renders as ``Audio k:<audio>PATH</audio>\\n``, k counting audios over the whole
conversation, so the model can refer to "audio 2" three turns later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Union

from qwen_audio.errors import TagFormatError
from qwen_audio.formats.spans import audio_span
from qwen_audio.formats.tokens import AUDIO_END, AUDIO_START, IM_END, IM_START, AudioSpanInfo, EncodedPrompt

DEFAULT_SYSTEM = "You are a helpful assistant."
Role = Literal["system", "user", "assistant"]
ROLES = ("system", "user", "assistant")
_ASSISTANT_PREFIX = f"{IM_START}assistant\n"


@dataclass(frozen=True)
class AudioItem:
    """An audio in a turn: a path or URL, and optionally a slice of it (seconds), as in manifests."""

    path: str
    offset: float = 0.0
    duration: float | None = None

    @property
    def key(self) -> str:
        """Names this audio, slice included: the path itself when the whole file is meant."""
        if self.offset == 0 and self.duration is None:
            return self.path
        return f"{self.path}#{self.offset:g}+{self.duration if self.duration is not None else 'end'}"


@dataclass(frozen=True)
class TextItem:
    text: str


ChatItem = Union[AudioItem, TextItem]


@dataclass(frozen=True)
class ChatTurn:
    """One message: audio and text items in order (a plain string is one text item)."""

    role: Role
    items: tuple[ChatItem, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise TagFormatError(f"unknown ChatML role {self.role!r}: use one of {', '.join(ROLES)}")

    @classmethod
    def user(cls, *items: Union[str, ChatItem]) -> "ChatTurn":
        return cls("user", _items(items))

    @classmethod
    def assistant(cls, *items: Union[str, ChatItem]) -> "ChatTurn":
        return cls("assistant", _items(items))

    @property
    def text(self) -> str:
        return "".join(item.text for item in self.items if isinstance(item, TextItem))

    @property
    def audios(self) -> tuple[AudioItem, ...]:
        return tuple(item for item in self.items if isinstance(item, AudioItem))

    @property
    def audio_paths(self) -> list[str]:
        return [item.path for item in self.audios]


def turn_from_dict(message: Mapping[str, Any]) -> ChatTurn:
    """OpenAI-style ``{"role", "content": str | [{"type": "text"|"audio", …}]}`` → ChatTurn.

    An audio part may carry ``offset``/``duration`` (seconds). The one conversion from dicts:
    the API's chat and the chat manifests (which validate the line first) both use it."""
    content = message.get("content", "")
    if isinstance(content, str):
        return ChatTurn(message["role"], (TextItem(content),))
    items: list[ChatItem] = []
    for part in content:
        if part.get("type") == "audio":
            duration = part.get("duration")
            items.append(AudioItem(str(part["audio"]), float(part.get("offset", 0.0)),
                                   None if duration is None else float(duration)))
        elif part.get("type") == "text":
            items.append(TextItem(part["text"]))
        else:
            raise TagFormatError(f"unknown content part type {part.get('type')!r}: use 'text' or 'audio'")
    return ChatTurn(message["role"], tuple(items))


def turn_to_dict(turn: ChatTurn) -> dict[str, Any]:
    """Inverse of :func:`turn_from_dict`; a turn of one text item is written as a plain string."""
    if len(turn.items) == 1 and isinstance(turn.items[0], TextItem):
        return {"role": turn.role, "content": turn.items[0].text}
    parts: list[dict[str, Any]] = []
    for item in turn.items:
        if isinstance(item, TextItem):
            parts.append({"type": "text", "text": item.text})
            continue
        part: dict[str, Any] = {"type": "audio", "audio": item.path}
        if item.offset:
            part["offset"] = item.offset
        if item.duration is not None:
            part["duration"] = item.duration
        parts.append(part)
    return {"role": turn.role, "content": parts}


def _items(items: Iterable[Union[str, ChatItem]]) -> tuple[ChatItem, ...]:
    return tuple(TextItem(item) if isinstance(item, str) else item for item in items)


@dataclass(frozen=True)
class Conversation:
    """A whole ChatML transcript; ``generation_prompt`` is the open ``<|im_start|>assistant\\n``."""

    turns: tuple[ChatTurn, ...]
    system: str = DEFAULT_SYSTEM
    generation_prompt: bool = field(default=True)

    def render(self) -> str:
        return render_chatml(self.turns, system=self.system, add_generation_prompt=self.generation_prompt)

    @property
    def audio_paths(self) -> list[str]:
        return [path for turn in self.turns for path in turn.audio_paths]


def render_content(items: Sequence[ChatItem], first_audio: int = 1) -> str:
    """One turn's content; audios numbered from ``first_audio``."""
    parts, number = [], first_audio
    for item in items:
        if isinstance(item, AudioItem):
            parts.append(f"Audio {number}:{AUDIO_START}{item.path}{AUDIO_END}\n")
            number += 1
        else:
            parts.append(item.text)
    return "".join(parts)


def render_segments(
    turns: Sequence[ChatTurn], *, system: str = DEFAULT_SYSTEM, add_generation_prompt: bool = True
) -> list[tuple[str, bool]]:
    """The transcript as (text, is_assistant_reply) pieces, whose concatenation is
    :func:`render_chatml`'s; SFT trains on the reply pieces (each reply's ``<|im_end|>`` included)."""
    pieces: list[tuple[str, bool]] = [(f"{IM_START}system\n{system}{IM_END}", False)]
    number = 1
    for turn in turns:
        content = render_content(turn.items, number)
        number += len(turn.audio_paths)
        if turn.role == "assistant":
            pieces.append((f"\n{_ASSISTANT_PREFIX}", False))
            pieces.append((f"{content}{IM_END}", True))
        else:
            pieces.append((f"\n{IM_START}{turn.role}\n{content}{IM_END}", False))
    if add_generation_prompt:
        pieces.append((f"\n{_ASSISTANT_PREFIX}", False))
    return pieces


def render_chatml(
    turns: Sequence[ChatTurn], *, system: str = DEFAULT_SYSTEM, add_generation_prompt: bool = True
) -> str:
    """Turns → the ChatML prompt text (byte-identical to the official ``make_context``)."""
    return "".join(text for text, _ in render_segments(turns, system=system, add_generation_prompt=add_generation_prompt))


class PlainTextEncoder(Protocol):
    """What :func:`encode_chatml` needs of a tokenizer (``QwenAudioTokenizer`` has it)."""

    special_tokens: Mapping[str, int]

    @property
    def audio_pad_id(self) -> int: ...

    def encode_plain(self, text: str) -> list[int]: ...


def encode_chatml(
    tokenizer: PlainTextEncoder,
    turns: Sequence[ChatTurn],
    audio_lengths: Sequence[int],
    *,
    system: str = DEFAULT_SYSTEM,
    add_generation_prompt: bool = True,
) -> EncodedPrompt:
    """The ids of :func:`render_chatml`'s prompt, built from the turns rather than parsed back out
    of the text: the ChatML markers and each :class:`AudioItem`'s span are the only special tokens,
    and everything a user, an assistant or a system prompt wrote is plain text (the official
    ``make_context`` encodes role and content with ``allowed_special=set()`` and adds the
    ``<|im_start|>``/``<|im_end|>`` ids itself). So a typed ``<|im_end|>`` cannot forge a turn and
    a typed ``<audio>PATH</audio>`` names no file. ``audio_lengths``: samples at 16 kHz of each
    audio item, in order. For text without such strings the ids equal encoding the rendered text.
    """
    ids: list[int] = []
    audios: list[AudioSpanInfo] = []
    text: list[str] = []  # plain text waiting to be encoded in one piece, as the rendered text is

    def special(token: str) -> None:
        ids.extend(tokenizer.encode_plain("".join(text)))
        text.clear()
        ids.append(tokenizer.special_tokens[token])

    special(IM_START)
    text.append(f"system\n{system}")
    special(IM_END)
    for turn in turns:
        text.append("\n")
        special(IM_START)
        text.append(f"{turn.role}\n")
        for item in turn.items:
            if isinstance(item, TextItem):
                text.append(item.text)
                continue
            if len(audios) == len(audio_lengths):
                raise TagFormatError(f"{len(audio_lengths)} audio lengths for more audio items: pass one per item")
            text.append(f"Audio {len(audios) + 1}:")
            special(AUDIO_START)
            length = audio_span(audio_lengths[len(audios)]).span_tokens
            audios.append(AudioSpanInfo(item.path, len(ids) - 1, length))
            ids.extend([tokenizer.audio_pad_id] * (length - 2))
            special(AUDIO_END)
            text.append("\n")
        special(IM_END)
    if add_generation_prompt:
        text.append("\n")
        special(IM_START)
        text.append("assistant\n")
    ids.extend(tokenizer.encode_plain("".join(text)))
    if len(audios) != len(audio_lengths):
        raise TagFormatError(f"{len(audio_lengths)} audio lengths for {len(audios)} audio items: pass one per item")
    return EncodedPrompt(ids, tuple(audios))


_BLOCK = re.compile(re.escape(IM_START) + r"(\w+)\n(.*?)" + re.escape(IM_END), re.DOTALL)
_AUDIO_ITEM = re.compile(r"Audio (\d+):" + re.escape(AUDIO_START) + "(.*?)" + re.escape(AUDIO_END) + r"\n?", re.DOTALL)


def parse_content(content: str) -> tuple[ChatItem, ...]:
    """Inverse of :func:`render_content`: ``Audio k:<audio>P</audio>\\n`` items and the text between."""
    items: list[ChatItem] = []
    position = 0
    for match in _AUDIO_ITEM.finditer(content):
        if match.start() > position:
            items.append(TextItem(content[position : match.start()]))
        items.append(AudioItem(match.group(2)))
        position = match.end()
    if position < len(content):
        items.append(TextItem(content[position:]))
    return tuple(items)


def parse_chatml(text: str) -> Conversation:
    """ChatML text → :class:`Conversation`. The first system block becomes ``system``; a trailing
    open ``<|im_start|>assistant\\n`` sets ``generation_prompt``. Raises TagFormatError on text
    that is not ChatML (unknown role, stray characters between blocks)."""
    system, turns, position = DEFAULT_SYSTEM, [], 0
    saw_system = False
    for match in _BLOCK.finditer(text):
        gap = text[position : match.start()]
        if gap not in ("", "\n"):
            raise TagFormatError(f"unexpected text between ChatML blocks: {gap[:60]!r}")
        role, content = match.group(1), match.group(2)
        if role == "system" and not saw_system and not turns:
            system, saw_system = content, True
        else:
            turns.append(ChatTurn(role, parse_content(content)))  # type: ignore[arg-type]
        position = match.end()
    rest = text[position:]
    generation_prompt = rest in (f"\n{_ASSISTANT_PREFIX}", _ASSISTANT_PREFIX)
    if rest and not generation_prompt and rest != "\n":
        raise TagFormatError(f"unexpected text after the last ChatML block: {rest[:60]!r}")
    return Conversation(tuple(turns), system, generation_prompt)
