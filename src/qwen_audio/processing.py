"""The one processor: prompts + waveforms → the model's inputs (ids, mask, log-mels, mel lengths).

Every path that feeds the model builds its batch here — the API's generation and streaming,
language detection, evaluation (through the API), training's collate and the tests — so the
padding and the encoder's 30 s window are decided once. The window is the official processor's:
the encoder reads the first 30 s of an audio, and an audio's span in the prompt must count the same
samples as its features, or the model refuses the batch (``runtime.AudioSpanError``).

Generation pads on the left, so every prompt ends at the last column, where decoding continues;
training pads on the right, so labels line up with ids from column 0. Positions follow the
attention mask, so a padded row's logits equal its batch-of-one logits (tests/test_processing.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import torch
from torch import Tensor

from qwen_audio.audio import N_FRAMES, N_MELS, N_SAMPLES, MelBatch, batch_log_mel
from qwen_audio.tokenizer import EncodedPrompt, QwenAudioTokenizer

PaddingSide = Literal["left", "right"]
Waveform = Union[np.ndarray, Tensor]  # mono samples at 16 kHz


def cut_to_window(wave: Waveform) -> Waveform:
    """The samples the encoder reads: the first 30 s (the official processor drops the rest)."""
    return wave[:N_SAMPLES]


def audio_features(waves: Sequence[Waveform]) -> MelBatch:
    """Log-mels of the first 30 s of each audio, zero-padded to 30 s, and each one's real mel frames."""
    return batch_log_mel([cut_to_window(w) for w in waves])


def no_audio_features() -> Tensor:
    """The features of an example without audio: no rows, in the shape the encoder reads."""
    return torch.zeros(0, N_MELS, N_FRAMES)


def pad_rows(rows: Sequence[Sequence[int] | Tensor], pad_value: int, side: PaddingSide) -> tuple[Tensor, Tensor]:
    """Rows of ids → a [batch, width] long tensor filled with ``pad_value``, and its attention mask.

    The mask is long (1 on a row's own tokens, 0 on padding), as transformers' masks are.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, cols] = torch.as_tensor(row, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


@dataclass(frozen=True)
class ModelInputs:
    """What ``forward``, ``generate`` and ``fast_generate`` take, for one batch."""

    input_ids: Tensor  # [batch, width] long; padded with the tokenizer's <|endoftext|>
    attention_mask: Tensor  # [batch, width] long; 1 on prompt tokens, 0 on padding
    audio_features: Tensor | None = None  # [n_audio, n_mels, 3000] log-mels, audios in reading order
    audio_lengths: Tensor | None = None  # [n_audio] long: real mel frames of each audio

    @property
    def prompt_lengths(self) -> list[int]:
        """Tokens of each row's own prompt (padding excluded)."""
        return [int(n) for n in self.attention_mask.sum(dim=1)]

    def audio_kwargs(self) -> dict[str, Tensor]:
        """The audio keyword arguments of the model's entry points; none for a text-only batch."""
        if self.audio_features is None or self.audio_lengths is None:
            return {}
        return {"audio_features": self.audio_features, "audio_lengths": self.audio_lengths}

    def as_kwargs(self) -> dict[str, Tensor]:
        """Every input as the model's keyword arguments: ``model(**inputs.as_kwargs())``."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, **self.audio_kwargs()}


class QwenAudioProcessor:
    """Prompts + waveforms → :class:`ModelInputs`; holds the tokenizer (prompt text, pad id)."""

    def __init__(self, tokenizer: QwenAudioTokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(
        self, prompts: Sequence[str | EncodedPrompt], audios: Sequence[Sequence[Waveform]],
        padding_side: PaddingSide = "left",
    ) -> ModelInputs:
        """Batch ``prompts``; ``audios[i]`` are the waveforms of prompt i's ``<audio>`` spans, in order.

        A ``str`` prompt is this package's own (task tags are special tokens) and its spans are sized
        from the waveforms; what users wrote comes already encoded, as plain text
        (:func:`~qwen_audio.formats.chatml.encode_chatml`). Each audio is cut to 30 s here, once, so
        its span and its features count the same samples.
        """
        if len(prompts) != len(audios):
            raise ValueError(f"{len(prompts)} prompts but {len(audios)} lists of waveforms: give one list per prompt")
        windows = [[cut_to_window(w) for w in waves] for waves in audios]
        encoded = [p if isinstance(p, EncodedPrompt) else self.tokenizer.encode_prompt(p, [w.shape[-1] for w in waves])
                   for p, waves in zip(prompts, windows)]
        input_ids, attention_mask = pad_rows([e.ids for e in encoded], self.tokenizer.eod_id, padding_side)
        flat = [w for waves in windows for w in waves]
        if not flat:
            return ModelInputs(input_ids, attention_mask)
        mels = batch_log_mel(flat)
        return ModelInputs(input_ids, attention_mask, mels.features, mels.mel_lengths)
