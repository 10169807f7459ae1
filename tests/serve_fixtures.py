"""A deterministic fake Engine and audio fixtures for the server tests.

The fake's answers encode what it was given (the user's text, how many audios and how long), so a
test can check that each client got the answer to its own request.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import soundfile as sf

from qwen_audio.errors import TagFormatError
from qwen_audio.formats.srwt import Word
from qwen_audio.infer.engine import ChatReply, ChatRequest, Transcript, TranscriptionRequest

SR = 16_000
KNOWN_WORDS = ("hello", "world", "from", "qwen")
CRASH_TEXT = "!crash"
BAD_LANGUAGE = "xx"


def tone(seconds: float, freq: float = 440.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(samples: np.ndarray, fmt: str = "WAV", sr: int = SR) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format=fmt)
    return buffer.getvalue()


def wav_bytes(seconds: float, freq: float = 440.0) -> bytes:
    return encode(tone(seconds, freq))


def reply_text(request: ChatRequest) -> str:
    """What the fake answers: the last user text, then the audios and their durations."""
    durations = ",".join(f"{a.size / SR:.2f}" for a in request.audios.values())
    return f"echo: {request.turns[-1].text} | audios={len(request.audios)} [{durations}] | turns={len(request.turns)}"


class FakeEngine:
    """Implements the Engine protocol without a model, and records the batches it was called with.

    ``delay`` seconds per batched call let concurrent requests pile up; ``gate``, when given, holds
    every call until it is set (to fill the queue on purpose). ``token_delay`` seconds per decoding
    step (one word of every reply in the batch, as a batched model steps all rows at once) give
    streams a realistic pace. A user text ``CRASH_TEXT`` makes the call raise RuntimeError (an
    engine bug); language ``BAD_LANGUAGE`` raises TagFormatError (an input the engine refuses),
    failing the whole batched call as a real engine would.
    """

    model_id = "fake-qwen-audio"

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None, token_delay: float = 0.0) -> None:
        self.delay = delay
        self.token_delay = token_delay
        self.gate = gate
        self.calls: list[tuple[str, int]] = []  # (method, batch size)
        self.chat_requests: list[ChatRequest] = []
        self.transcription_requests: list[TranscriptionRequest] = []
        self._lock = threading.Lock()

    def _enter(self, method: str, size: int) -> None:
        with self._lock:
            self.calls.append((method, size))
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.delay:
            time.sleep(self.delay)

    def batch_sizes(self, method: str) -> list[int]:
        return [size for name, size in self.calls if name == method]

    def chat_batch(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        self._enter("chat", len(requests))
        if any(r.turns[-1].text == CRASH_TEXT for r in requests):
            raise RuntimeError("fake engine crashed")
        self.chat_requests.extend(requests)
        replies = [self._reply(request) for request in requests]
        if self.token_delay:
            time.sleep(self.token_delay * max(r.completion_tokens for r in replies))
        return replies

    @staticmethod
    def _reply(request: ChatRequest) -> ChatReply:
        words = reply_text(request).split(" ")
        limit = request.options.max_new_tokens
        text = " ".join(words[:limit])
        prompt = sum(len(t.text.split()) for t in request.turns) + sum(a.size // 640 for a in request.audios.values())
        return ChatReply(text, prompt, min(len(words), limit), "length" if len(words) > limit else "stop")

    def chat_streamed(self, requests: Sequence[ChatRequest], on_piece: Callable[[int, str], None]) -> list[ChatReply]:
        """``chat``, calling ``on_piece(i, word)`` at each step for every reply still growing."""
        self._enter("chat", len(requests))
        if any(r.turns[-1].text == CRASH_TEXT for r in requests):
            on_piece(0, "partial")
            raise RuntimeError("fake engine crashed mid-stream")
        self.chat_requests.extend(requests)
        replies = [self._reply(request) for request in requests]
        words = [reply.text.split(" ") for reply in replies]
        for step in range(max(len(w) for w in words)):
            if self.token_delay:
                time.sleep(self.token_delay)
            for index, row in enumerate(words):
                if step < len(row):
                    on_piece(index, row[step] if step == 0 else " " + row[step])
        return replies

    def stream_chat(self, request: ChatRequest) -> Iterator[str]:
        """Yields the reply word by word and returns its ChatReply (token counts for usage)."""
        self._enter("stream_chat", 1)
        self.chat_requests.append(request)
        if request.turns[-1].text == CRASH_TEXT:
            yield "partial"
            raise RuntimeError("fake engine crashed mid-stream")
        words = reply_text(request).split(" ")
        for index, word in enumerate(words):
            if self.token_delay:
                time.sleep(self.token_delay)
            yield word if index == 0 else " " + word
        return ChatReply(" ".join(words), len(request.turns), len(words))

    def transcribe_streamed(self, requests: Sequence[TranscriptionRequest],
                            on_text: Callable[[int, str], None]) -> list[Transcript]:
        """``transcribe_batch``, telling each transcript word by word."""
        transcripts = self.transcribe_batch(requests)
        for index, transcript in enumerate(transcripts):
            for k, word in enumerate(transcript.text.split(" ")):
                if self.token_delay:
                    time.sleep(self.token_delay)
                on_text(index, word if k == 0 else " " + word)
        return transcripts

    def transcribe_batch(self, requests: Sequence[TranscriptionRequest]) -> list[Transcript]:
        """KNOWN_WORDS spread evenly over the audio; a translation upper-cases them."""
        self._enter("transcribe", len(requests))
        if any(r.language == BAD_LANGUAGE for r in requests):
            raise TagFormatError(f"unknown language {BAD_LANGUAGE!r}")
        self.transcription_requests.extend(requests)
        results = []
        for request in requests:
            duration = request.audio.size / SR
            step = duration / len(KNOWN_WORDS)
            texts = [w.upper() for w in KNOWN_WORDS] if request.translate_to else list(KNOWN_WORDS)
            words = tuple(Word(w, round(i * step, 2), round((i + 0.8) * step, 2)) for i, w in enumerate(texts))
            results.append(
                Transcript(" ".join(texts), request.language or "en", duration, words if request.word_timestamps else ())
            )
        return results
