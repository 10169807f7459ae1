"""How long an audio is at each stage of the encoder, and so how many tokens it takes in the text.

samples (16 kHz) → mel frames (10 ms, hop 160) → conv frames (stride-2 conv2, 20 ms) → pooled
frames (stride-2 average pooling, 40 ms) → span tokens (pooled + ``<audio>``/``</audio>``).
The frame functions are plain integer arithmetic, so they apply to ints and, unchanged, to
integer tensors: the encoder's ``conv_lengths``/``pooled_lengths`` are these very functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from qwen_audio.errors import InvalidAudioError

SAMPLE_RATE = 16_000
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480,000: one encoder window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3,000 mel frames

Length = TypeVar("Length")  # an int, or an integer tensor of lengths


def mel_frames(num_samples: Length) -> Length:
    """Mel frames (10 ms each) of ``num_samples`` samples at 16 kHz."""
    return num_samples // HOP_LENGTH  # type: ignore[operator,no-any-return]


def conv_frames(mel_len: Length) -> Length:
    """Frames after the stride-2 conv2 (20 ms each) for a real mel length."""
    return (mel_len - 1) // 2 + 1  # type: ignore[operator,no-any-return]


def pooled_frames(mel_len: Length) -> Length:
    """Frames after stride-2 average pooling (40 ms each): the audio tokens between bos and eos."""
    return pooled_frames_of_conv(conv_frames(mel_len))


def pooled_frames_of_conv(conv_len: Length) -> Length:
    """Frames after average pooling (kernel 2, stride 2) of ``conv_len`` conv frames (an odd last one is dropped)."""
    return (conv_len - 2) // 2 + 1  # type: ignore[operator,no-any-return]


@dataclass(frozen=True)
class AudioSpan:
    """Lengths of one audio at each stage of the encoder (spec: "Audio in the text")."""

    num_samples: int  # after the 30 s cap
    mel_len: int  # mel frames (10 ms each)
    conv_len: int  # after the stride-2 conv2 (20 ms each)
    pooled_len: int  # after stride-2 average pooling (40 ms each): real audio frames
    span_tokens: int  # pooled_len + audio begin/end: tokens the audio occupies in the text


def audio_span(num_samples: int, max_samples: int = N_SAMPLES) -> AudioSpan:
    """Token arithmetic of one audio, exactly as the official processor computes it.

    ``max_samples`` defaults to the official 30 s cut; long-audio windowing calls this per window.
    """
    if num_samples <= 0:
        raise InvalidAudioError(f"an audio must have at least one sample, got {num_samples}")
    samples = min(num_samples, max_samples)
    mel_len = mel_frames(samples)
    conv_len = conv_frames(mel_len)
    pooled_len = pooled_frames(mel_len)
    if pooled_len < 1:
        raise InvalidAudioError(
            f"audio of {samples} samples ({samples / SAMPLE_RATE * 1000:.0f} ms) is too short: "
            f"at least {min_audio_samples()} samples are needed for one encoder frame"
        )
    return AudioSpan(samples, mel_len, conv_len, pooled_len, pooled_len + 2)


def min_audio_samples() -> int:
    """Smallest input that yields one pooled frame: 3 mel frames → 2 conv frames → 1 pooled."""
    return 3 * HOP_LENGTH
