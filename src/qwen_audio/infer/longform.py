"""Long audio: overlapping windows cut at quiet points and stitched (models read 30 s windows), or
pieces split at pauses (models that learned single utterances).

The official release cuts audio at 30 s. Here each window overlaps the next; inside the overlap
the quietest 10 ms (smoothed) becomes the *boundary* both windows agree on, and a word belongs
to the window whose side of the boundary holds its midpoint. Since the boundary sits at least
``margin`` seconds from either window edge, any word crossing it is heard whole by both windows
and kept exactly once: no duplicated or lost words at joins, and timestamps become global by
adding the window's start.

A model trained on single utterances (``QwenAudioConfig.utterance_seconds``: the default model,
whose training clips are one prompt or one sentence each) skips utterances or loops on audio that
holds several: there :func:`split_at_pauses` cuts at every pause instead, into pieces that meet
without overlap (each word belongs to the one piece that holds it), and each piece is transcribed
alone. It is the voice-activity split of faster-whisper's batched pipeline, on frame energy.
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


SILENCE_DBFS = -60.0
"""A piece whose loudest 10 ms frame stays below this (RMS re full scale) holds nothing to transcribe:
a room's noise floor through a quiet microphone sits near -60 dBFS, speech peaks near -20 dBFS."""


def is_silent(samples: np.ndarray, floor_dbfs: float = SILENCE_DBFS) -> bool:
    """Whether no 10 ms frame of ``samples`` reaches ``floor_dbfs``.

    Why: Whisper's log-mel is scaled to each input's own loudest frame (and clamped 8 decades below
    it), so digital silence or a near-silent stretch becomes a full-range picture of its faint noise,
    and a decoder reads words into it (the default model said "g.e.g.e.g.g.e." for 3 s of zeros).
    """
    power = frame_energy(samples, smooth_frames=1)
    return power.size == 0 or float(power.max()) < 10 ** (floor_dbfs / 10)


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


@dataclass(frozen=True)
class PausePlan:
    """How :func:`split_at_pauses` finds pauses: smoothed 10 ms frame power ``quiet_db`` below the
    loud frames' level (their 95th percentile) for at least ``min_pause_seconds``."""

    max_seconds: float = 12.0
    min_pause_seconds: float = 0.3
    quiet_db: float = 30.0
    smooth_seconds: float = 0.05
    min_piece_seconds: float = 0.5  # a shorter piece joins its neighbour

    def __post_init__(self) -> None:
        if not 0 < self.min_piece_seconds < self.max_seconds:
            raise ValueError("pieces need 0 < min_piece_seconds < max_seconds")


def split_at_pauses(samples: np.ndarray, plan: PausePlan = PausePlan()) -> list[Window]:
    """Pieces of at most ``plan.max_seconds`` that meet in the middle of pauses (a piece with no pause
    inside ``max_seconds`` is cut at its quietest frame); silence-only audio is one piece."""
    total = samples.size
    energy = frame_energy(samples, max(1, int(plan.smooth_seconds * SAMPLE_RATE / HOP_LENGTH)))
    if total <= int(plan.min_piece_seconds * SAMPLE_RATE) or energy.size == 0 or energy.max() <= 0:
        return [Window(0, 0, total, 0.0, float("inf"))]
    loud = np.percentile(energy, 95)
    quiet = energy < loud * 10 ** (-plan.quiet_db / 10)
    min_pause = max(1, int(plan.min_pause_seconds * SAMPLE_RATE / HOP_LENGTH))
    cuts, run_start = [], None  # pause middles, in samples
    for i, q in enumerate(np.append(quiet, False)):
        if q and run_start is None:
            run_start = i
        elif not q and run_start is not None:
            if i - run_start >= min_pause and run_start > 0 and i < quiet.size:  # not the leading/trailing silence
                cuts.append((run_start + i) // 2 * HOP_LENGTH)
            run_start = None
    bounds, min_piece = [0], int(plan.min_piece_seconds * SAMPLE_RATE)
    for cut in cuts:
        if cut - bounds[-1] >= min_piece and total - cut >= min_piece:
            bounds.append(cut)
    bounds.append(total)
    longest = int(plan.max_seconds * SAMPLE_RATE)
    pieces: list[int] = [0]
    for start, end in zip(bounds, bounds[1:]):
        while end - start > longest:  # no pause: the quietest frame of the piece's last third
            lo, hi = (start + 2 * longest // 3) // HOP_LENGTH, (start + longest) // HOP_LENGTH
            start = (lo + int(np.argmin(energy[lo:hi]))) * HOP_LENGTH
            pieces.append(start)
        pieces.append(end)
    return [Window(i, a, b, a / SAMPLE_RATE, b / SAMPLE_RATE if b < total else float("inf"))
            for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
