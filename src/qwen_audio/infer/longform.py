"""Audio longer than the encoder's 30 s: overlapping windows cut at quiet points, then stitching.

The official release cuts audio at 30 s. Here each window overlaps the next; inside the overlap
the quietest 10 ms (smoothed) becomes the *boundary* both windows agree on, and a word belongs
to the window whose side of the boundary holds its midpoint. Since the boundary sits at least
``margin`` seconds from either window edge, any word crossing it is heard whole by both windows
and kept exactly once: no duplicated or lost words at joins, and timestamps become global by
adding the window's start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qwen_audio.audio import HOP_LENGTH, SAMPLE_RATE
from qwen_audio.formats.srwt import Word


@dataclass(frozen=True)
class WindowPlan:
    window_seconds: float = 30.0
    overlap_seconds: float = 6.0
    margin_seconds: float = 1.5  # minimum context on each side of a boundary
    smooth_seconds: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.overlap_seconds < self.window_seconds:
            raise ValueError("overlap must be > 0 and shorter than the window")
        if not 0 <= 2 * self.margin_seconds < self.overlap_seconds:
            raise ValueError("2 × margin must be shorter than the overlap")


@dataclass(frozen=True)
class Window:
    """Samples [start, end) of the audio; words with midpoint in [keep_from, keep_until) s are its own."""

    index: int
    start: int
    end: int
    keep_from: float
    keep_until: float

    @property
    def offset_seconds(self) -> float:
        return self.start / SAMPLE_RATE


def frame_energy(samples: np.ndarray, smooth_frames: int = 10) -> np.ndarray:
    """Mean power per 10 ms frame, moving-averaged: low values are pauses between words."""
    frames = samples[: samples.size // HOP_LENGTH * HOP_LENGTH].reshape(-1, HOP_LENGTH)
    power = (frames.astype(np.float64) ** 2).mean(axis=1)
    if smooth_frames > 1 and power.size:
        power = np.convolve(power, np.ones(smooth_frames) / smooth_frames, mode="same")
    return power


def plan_windows(samples: np.ndarray, plan: WindowPlan = WindowPlan()) -> list[Window]:
    """Cover the audio with overlapping windows whose shared boundaries fall in pauses."""
    total = samples.size
    window = int(plan.window_seconds * SAMPLE_RATE)
    if total <= window:
        return [Window(0, 0, total, 0.0, float("inf"))]
    energy = frame_energy(samples, max(1, int(plan.smooth_seconds * SAMPLE_RATE / HOP_LENGTH)))
    overlap, margin = int(plan.overlap_seconds * SAMPLE_RATE), int(plan.margin_seconds * SAMPLE_RATE)
    windows: list[Window] = []
    start, keep_from = 0, 0.0
    while True:
        end = min(start + window, total)
        if end == total:
            windows.append(Window(len(windows), start, end, keep_from, float("inf")))
            return windows
        # The boundary: the quietest frame in the overlap, at least `margin` from both edges.
        lo, hi = (end - overlap + margin) // HOP_LENGTH, (end - margin) // HOP_LENGTH
        boundary_frame = lo + int(np.argmin(energy[lo:hi])) if hi > lo else (lo + hi) // 2
        boundary = boundary_frame * HOP_LENGTH / SAMPLE_RATE
        windows.append(Window(len(windows), start, end, keep_from, boundary))
        start, keep_from = end - overlap, boundary


def stitch_words(windows: Sequence[Window], words_per_window: Sequence[Sequence[Word]]) -> list[Word]:
    """Window-local words → one global, time-ordered list, each word taken from one window only."""
    if len(windows) != len(words_per_window):
        raise ValueError(f"{len(windows)} windows but {len(words_per_window)} word lists")
    stitched: list[Word] = []
    for window, words in zip(windows, words_per_window):
        offset, audio_end = window.offset_seconds, window.end / SAMPLE_RATE
        for word in words:
            start, end = word.start + offset, word.end + offset
            if window.keep_from <= (start + end) / 2 < window.keep_until:
                # a time token may point past the window's audio: never report a time it does not hold
                stitched.append(Word(word.word, round(min(start, audio_end), 2), round(min(end, audio_end), 2)))
    return sorted(stitched, key=lambda w: (w.start, w.end))
