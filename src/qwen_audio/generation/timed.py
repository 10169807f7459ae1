"""Word times for a known text: the text's tokens are forced, the model chooses only the time tokens.

Why: a small model's free word-timed decode (SRWT) of real speech can fall into a loop
("say your temporaryitory Irvine Irvine message Irvine …") while its plain transcription of the same
audio is right; the tokens that carry words and the tokens that carry times compete in one decode.
So word times are a second, constrained decode of the plain transcript: each step either forces the
template's next text token or lets the model pick a time token, never earlier than the last time it
chose (words do not run backwards) nor later than the audio's end; after the template, the stop.
The same rule serves this package's decoding loop (:func:`~qwen_audio.generation.decode_steps`) and vLLM's
per-request logits processors (``qwen_audio.vllm.timed``): both call :meth:`TimedText.restrict`.

transformers' ``PrefixConstrainedLogitsProcessor`` keeps the same kind of rule, but works on whole
batches of ``input_ids`` inside ``generate``; our loop and vLLM both hand one row's new tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from qwen_audio.formats.timestamps import N_TIME_TOKENS


@dataclass(frozen=True)
class TimedText:
    """The constraint for one row: ``template`` is the SRWT target's ids with any time id in each time
    slot; ``first_time`` is the id of ``<|0.00|>`` (ids count up in 10 ms steps); ``last_time`` the id
    of the latest time the audio holds; ``stop`` ends the row once the template is said."""

    template: tuple[int, ...]
    first_time: int
    last_time: int
    stop: int

    def __post_init__(self) -> None:
        if self.last_time < self.first_time:
            raise ValueError("last_time must not come before first_time")

    @property
    def max_new_tokens(self) -> int:
        return len(self.template) + 1

    def is_time(self, token: int) -> bool:
        return self.first_time <= token < self.first_time + N_TIME_TOKENS

    def allowed(self, said: Sequence[int]) -> tuple[int, int]:
        """The ids the next token may take, as an inclusive range (a forced token: both ends equal)."""
        position = len(said)
        if position >= len(self.template):
            return self.stop, self.stop
        if not self.is_time(self.template[position]):
            return self.template[position], self.template[position]
        earliest = max((t for t in said if self.is_time(t)), default=self.first_time)
        return min(earliest, self.last_time), self.last_time

    def restrict(self, said: Sequence[int], logits: Tensor) -> Tensor:
        """``logits`` [vocab] of the next token, everything outside :meth:`allowed` set to -inf (in place)."""
        low, high = self.allowed(said)
        kept = logits[low : high + 1].clone()
        logits.fill_(float("-inf"))
        logits[low : high + 1] = kept
        return logits


def restrict_rows(logits: Tensor, said: Sequence[Sequence[int]], constraints: Sequence[TimedText | None]) -> Tensor:
    """Apply each row's constraint (None: free) to ``logits`` [batch, vocab]."""
    for row, constraint in enumerate(constraints):
        if constraint is not None:
            constraint.restrict(said[row], logits[row])
    return logits


__all__ = ["TimedText", "restrict_rows"]
