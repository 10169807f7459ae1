"""infer/longform.py: windows cut at pauses; stitched words are global, never doubled or lost."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_audio.audio import SAMPLE_RATE
from qwen_audio.formats.srwt import Word
from qwen_audio.infer.longform import SILENCE_DBFS, Window, WindowPlan, is_silent, plan_windows, stitch_words


def synthetic_speech(seconds: float, seed: int = 0) -> tuple[np.ndarray, list[Word]]:
    """Tone bursts as 'words' (0.2–0.7 s) with pauses (0.08–0.6 s): the truth is known exactly."""
    rng = np.random.default_rng(seed)
    samples = 0.001 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
    words, t, n = [], 0.3, 0
    while True:
        length = round(float(rng.uniform(0.2, 0.7)), 2)
        if t + length > seconds - 0.2:
            return samples, words
        a, b = int(t * SAMPLE_RATE), int((t + length) * SAMPLE_RATE)
        samples[a:b] += 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * np.arange(b - a) / SAMPLE_RATE)
        words.append(Word(f"w{n}", round(t, 2), round(t + length, 2)))
        n += 1
        t = round(t + length + float(rng.uniform(0.08, 0.6)), 2)


def fake_transcribe(window: Window, truth: list[Word]) -> list[Word]:
    """What a model hears in a window: whole words exactly; words cut by an edge come out garbled."""
    lo, hi = window.start / SAMPLE_RATE, window.end / SAMPLE_RATE
    out = []
    for w in truth:
        if w.start >= lo and w.end <= hi:
            out.append(Word(w.word, round(w.start - lo, 2), round(w.end - lo, 2)))
        elif w.end > lo and w.start < hi:  # partially inside: a fragment with clipped times
            out.append(Word(w.word + "~", round(max(w.start, lo) - lo, 2), round(min(w.end, hi) - lo, 2)))
    return out


@pytest.mark.parametrize("seconds", [12.0, 30.0, 61.0, 187.5])
def test_stitching_recovers_every_word_once_with_global_times(seconds: float) -> None:
    samples, truth = synthetic_speech(seconds, seed=int(seconds))
    windows = plan_windows(samples)
    assert windows[0].start == 0 and windows[-1].end == samples.size
    for a, b in zip(windows, windows[1:]):
        assert b.start < a.end  # overlapping
        assert a.keep_until == b.keep_from
        assert a.end - a.start <= 30 * SAMPLE_RATE
    stitched = stitch_words(windows, [fake_transcribe(w, truth) for w in windows])
    assert stitched == truth


def test_boundaries_fall_in_pauses() -> None:
    samples, truth = synthetic_speech(100.0, seed=3)
    windows = plan_windows(samples)
    assert len(windows) >= 4
    for window in windows[:-1]:
        assert not any(w.start < window.keep_until < w.end for w in truth)


def test_short_audio_is_one_window() -> None:
    windows = plan_windows(np.zeros(16_000 * 10, np.float32))
    assert len(windows) == 1 and windows[0].end == 160_000


def test_plan_validation_and_mismatch() -> None:
    with pytest.raises(ValueError):
        WindowPlan(window_seconds=10, overlap_seconds=10)
    with pytest.raises(ValueError):
        WindowPlan(overlap_seconds=2, margin_seconds=1.5)
    with pytest.raises(ValueError):
        stitch_words([Window(0, 0, 10, 0.0, 1.0)], [])


def test_stitched_times_never_pass_the_end_of_their_window() -> None:
    """A time token past the audio (the model emits one now and then) is clamped to the window's end."""
    windows = [Window(0, 0, 10 * SAMPLE_RATE, 0.0, 8.0), Window(1, 6 * SAMPLE_RATE, 12 * SAMPLE_RATE, 8.0, float("inf"))]
    words = [[Word("a", 1.0, 1.5)], [Word("b", 3.0, 5.8), Word("c", 5.9, 6.4)]]
    assert stitch_words(windows, words) == [Word("a", 1.0, 1.5), Word("b", 9.0, 11.8), Word("c", 11.9, 12.0)]


def test_pieces_split_at_every_long_pause_never_inside_a_word() -> None:
    """Utterance pieces (models that learned single utterances): no overlap, cuts only in pauses of
    at least 0.3 s, none longer than the plan allows, and with the pieces' words stitched back every
    word comes out once and whole."""
    from qwen_audio.infer.longform import PausePlan, split_at_pauses

    samples, truth = synthetic_speech(60.0, seed=3)
    plan = PausePlan(max_seconds=8.0)
    pieces = split_at_pauses(samples, plan)
    assert pieces[0].start == 0 and pieces[-1].end == samples.size and pieces[-1].keep_until == float("inf")
    assert all(a.end == b.start and a.keep_until == b.keep_from for a, b in zip(pieces, pieces[1:]))
    assert all(p.end - p.start <= 8.0 * SAMPLE_RATE for p in pieces)
    for cut in (p.start / SAMPLE_RATE for p in pieces[1:]):
        assert not any(w.start <= cut <= w.end for w in truth), cut  # in a pause
    gaps = [(a.end, b.start) for a, b in zip(truth, truth[1:]) if b.start - a.end >= 0.35]
    assert len(pieces) - 1 >= len(gaps) * 0.9  # (nearly) every long pause is a cut
    stitched = stitch_words(pieces, [fake_transcribe(p, truth) for p in pieces])
    assert [w.word for w in stitched] == [w.word for w in truth]


def test_silence_and_a_single_utterance_are_one_piece() -> None:
    from qwen_audio.infer.longform import split_at_pauses

    assert len(split_at_pauses(np.zeros(5 * SAMPLE_RATE, np.float32))) == 1
    samples, _ = synthetic_speech(3.0)
    tone = samples.copy()
    tone[:] = 0.3 * np.sin(2 * np.pi * 200 * np.arange(tone.size) / SAMPLE_RATE)
    assert len(split_at_pauses(tone)) == 1


def test_silence_is_what_never_reaches_the_floor_in_any_10ms_frame() -> None:
    rng = np.random.default_rng(0)
    floor = 10 ** (SILENCE_DBFS / 20)  # the floor as an RMS amplitude
    hiss = rng.standard_normal(3 * SAMPLE_RATE) * floor * 0.3  # a quiet room, ~10 dB under the floor
    assert is_silent(np.zeros(SAMPLE_RATE, np.float32)) and is_silent(hiss) and is_silent(np.zeros(0, np.float32))
    word = np.sin(np.arange(1600) * 0.2) * floor * 4  # 0.1 s just 9 dB over the floor (a very quiet voice)
    assert not is_silent(np.concatenate([hiss, word, hiss]))
