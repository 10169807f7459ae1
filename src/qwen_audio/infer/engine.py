"""What front ends (CLI, server, web UI) ask of a model: batched requests in, typed results out.

The server groups concurrent clients into one call of these methods, so every method takes a
*list* of requests. ``qwen_audio.api.QwenAudio`` implements this protocol on the real model;
tests may implement it with a fake to check a front end alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from qwen_audio.formats.chatml import DEFAULT_SYSTEM, ChatTurn
from qwen_audio.formats.srwt import Word


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    num_beams: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be ≥ 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.num_beams < 1:
            raise ValueError("temperature ≥ 0, 0 < top_p ≤ 1 and num_beams ≥ 1 are required")


@dataclass(frozen=True)
class ChatRequest:
    """A conversation to continue. Each ``AudioItem.path`` in ``turns`` is a key of ``audios``."""

    turns: tuple[ChatTurn, ...]
    audios: Mapping[str, np.ndarray] = field(default_factory=dict)  # 16 kHz mono float32
    system: str = DEFAULT_SYSTEM
    options: GenerationOptions = GenerationOptions()


@dataclass(frozen=True)
class ChatReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"] = "stop"


@dataclass(frozen=True)
class TranscriptionRequest:
    audio: np.ndarray  # 16 kHz mono float32, any length (long audio is windowed)
    language: str | None = None  # spoken language; None: detect it
    translate_to: str | None = None  # a text language: speech translation instead of ASR
    word_timestamps: bool = False
    options: GenerationOptions = GenerationOptions()


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    duration: float  # seconds of audio
    words: tuple[Word, ...] = ()


@runtime_checkable
class Engine(Protocol):
    model_id: str

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatReply]: ...

    def stream_chat(self, request: ChatRequest) -> Iterator[str]:
        """Text pieces as they are generated; their concatenation is the reply. A generator may
        ``return`` the final :class:`ChatReply` (token usage, finish reason) for the server's usage."""
        ...

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[Transcript]: ...
