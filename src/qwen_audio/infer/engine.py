"""What front ends (CLI, server, web UI) ask of a model: batched requests in, typed results out.

The server groups concurrent clients into one call of these methods, so every method takes a
*list* of requests. ``qwen_audio.api.QwenAudio`` implements this protocol on the real model;
tests may implement it with a fake to check a front end alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from qwen_audio.errors import ConfigError
from qwen_audio.formats.chatml import DEFAULT_SYSTEM, ChatTurn
from qwen_audio.formats.srwt import Word


# What torch.manual_seed accepts (an int64 or a uint64); a seed outside it raised inside the
# batched engine call, failing every request of the batch before each was retried alone.
SEED_RANGE = (-(2**63), 2**64 - 1)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode; validated here, so no caller (server, CLI, a script) can hand the engine
    options that fail only once a batch is running."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    num_beams: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be an integer ≥ 1, got {self.max_new_tokens!r}")
        if not _is_int(self.num_beams) or self.num_beams < 1:
            raise ConfigError(f"num_beams must be an integer ≥ 1, got {self.num_beams!r}")
        # Written so that NaN fails too: every comparison with NaN is False.
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature must be a finite number ≥ 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        low, high = SEED_RANGE
        if self.seed is not None and not (_is_int(self.seed) and low <= self.seed <= high):
            raise ConfigError(f"seed must be an integer from -2**63 to 2**64 - 1, got {self.seed!r}")


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

    def chat_batch(self, requests: Sequence[ChatRequest]) -> list[ChatReply]: ...

    def stream_chat(self, request: ChatRequest) -> Iterator[str]:
        """Text pieces as they are generated; their concatenation is the reply. A generator may
        ``return`` the final :class:`ChatReply` (token usage, finish reason) for the server's usage."""
        ...

    def transcribe_batch(self, requests: Sequence[TranscriptionRequest]) -> list[Transcript]: ...


@runtime_checkable
class TranscriptStreamingEngine(Protocol):
    """An engine that tells a transcript as it grows (long audio piece by piece). Optional: without
    it the server streams a transcription as one piece, once it is done."""

    def transcribe_streamed(self, requests: Sequence[TranscriptionRequest],
                            on_text: Callable[[int, str], None]) -> list[Transcript]:
        """``transcribe_batch``, calling ``on_text(i, text)`` as transcript ``i`` grows; its pieces
        concatenate to its text. Called on the engine's thread; ``on_text`` may raise to stop (its
        client is gone): let that exception propagate."""
        ...


@runtime_checkable
class BatchStreamingEngine(Protocol):
    """An engine that streams a whole batch: the server's streamed chats then run in the same
    batched calls as the others (one decoding step serves every row) instead of each stream
    stepping the model alone. Optional: without it the server answers a streamed chat from a
    batched ``chat`` call, in one piece."""

    def chat_streamed(self, requests: Sequence[ChatRequest], on_piece: Callable[[int, str], None]) -> list[ChatReply]:
        """``chat``, calling ``on_piece(i, text)`` as reply ``i`` grows; the pieces of reply i
        concatenate to its text. Called on the engine's thread: ``on_piece`` does not block, and
        may raise to stop the batch (its clients are gone): let that exception propagate."""
        ...
