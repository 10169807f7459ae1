"""Time tokens and timed words: the light pieces shared by the tokenizer, SRWT, tags and manifests.

``<|0.00|>`` … ``<|30.00|>``: 3001 tokens, one per 10 ms of the encoder's 30 s window.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

N_TIME_TOKENS = 3001  # <|0.00|> … <|30.00|>
TIME_STEP = 0.01
MAX_TIME = (N_TIME_TOKENS - 1) * TIME_STEP  # 30.00 s: the last time token
# A time token as text; group 1 is the seconds.
TIME_TOKEN = re.compile(r"<\|(\d+(?:\.\d+)?)\|>")
# Any ``<|…|>`` tag (time tokens, languages, task tags).
TAG = re.compile(r"<\|[^|<>]*\|>")


def time_token_text(index: int) -> str:
    """The time token for ``index`` steps of 10 ms, formatted exactly like the official list."""
    return f"<|{index * TIME_STEP:.2f}|>"


def quantize_time(seconds: float) -> int:
    """Seconds → index of the nearest 10 ms time token, clipped to 0…30 s (NaN → 0)."""
    if not math.isfinite(seconds):
        return 0 if math.isnan(seconds) or seconds < 0 else N_TIME_TOKENS - 1
    return min(max(round(seconds / TIME_STEP), 0), N_TIME_TOKENS - 1)


def time_token(seconds: float) -> str:
    """``1.234`` → ``<|1.23|>``: the time token nearest to ``seconds`` (clipped to 0–30 s)."""
    return time_token_text(quantize_time(seconds))


def parse_time_token(token: str) -> float | None:
    """``<|1.23|>`` → 1.23; None when ``token`` is not a time token."""
    match = TIME_TOKEN.fullmatch(token)
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class Word:
    """One word (or the text between two time tokens) with times in seconds from the audio's start."""

    word: str
    start: float
    end: float
