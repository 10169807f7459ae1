"""Time tokens and timed words: the light pieces shared by the tokenizer, SRWT and manifests.

Kept free of heavy imports (tiktoken, transformers) so manifests and the corpus generator can
use the same ``Word`` as SRWT parsing and the exports.
"""

from __future__ import annotations

from dataclasses import dataclass

N_TIME_TOKENS = 3001  # <|0.00|> … <|30.00|>
TIME_STEP = 0.01


def time_token_text(index: int) -> str:
    """The time token for ``index`` steps of 10 ms, formatted exactly like the official list."""
    return f"<|{index * TIME_STEP:.2f}|>"


@dataclass(frozen=True)
class Word:
    """One word (or the text between two time tokens) with times in seconds from the audio's start."""

    word: str
    start: float
    end: float
