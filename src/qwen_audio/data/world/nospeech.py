"""No speech: sounds, music and noise whose audio language is ``<|unknown|>`` and transcript is empty.

Why: the paper's format gives non-speech the audio language ``<|unknown|>``, but a model that never
saw it answers every audio with words (the default model said "g g g" for a chord and "bass" for
white noise, and put no mass at all on ``<|unknown|>``). These records teach the two answers no
speech has: language ID → ``<|unknown|>``, transcription → nothing (an empty target: the end token).

Clips, seeded per split, each from one split's own sources so nothing held out is trained on:
``single`` (one sound of the split's sounds manifest with a little room tone around it),
``sequence`` (3–10 s of its sounds placed at random times, overlapping: a melody, a beat, ambience),
``noise`` (coloured noise, sometimes swelling like rain or wind), ``tones`` (beeps, chords, sweeps)
and ``quiet`` (room tone alone). The training split reads ``sounds/train.jsonl`` (FluidR3 notes and
effects, the training drum kits, the desktop sounds); the test split reads ``sounds/test.jsonl``
(TimGM6mb and the held-out kits) and draws its noise and tones from another stream.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from qwen_audio.data.manifest import ManifestRecord, read_manifest
from qwen_audio.data.synth import effects
from qwen_audio.data.synth.splits import derive_seed

SAMPLE_RATE = 16_000
KINDS = {"single": 0.25, "sequence": 0.35, "noise": 0.18, "tones": 0.12, "quiet": 0.10}
COUNTS = {"train": 2400, "test": 150}
# Transcription records name a speech language (the prompt has no text-language tag for "unknown"), as
# transcribing with ``--language en``, or a long file's music between its speech, would: no speech is
# still no words. Without a language, ``QwenAudio`` reads no speech off the ``<|unknown|>`` tag alone.
SPOKEN_LANGUAGES = ("en", "es", "fr", "it", "de")


def sound_files(manifest: Path) -> list[str]:
    """The distinct audio files of a sounds manifest that hold no speech."""
    files = {r.audio for r in read_manifest(manifest)
             if r.audio_language in (None, "unknown") and "speech" not in (r.labels or ())}
    return sorted(files)


def _load(path: str, cache: dict[str, np.ndarray]) -> np.ndarray:
    if path not in cache:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: {rate} Hz, the sounds manifest holds {SAMPLE_RATE} Hz audio")
        cache[path] = audio.mean(axis=1)
    return cache[path]


def _room_tone(n: int, rng: np.random.Generator, level_db: tuple[float, float] = (-75.0, -50.0)) -> np.ndarray:
    colour = str(rng.choice(["white", "pink", "brown"]))
    noise = effects.coloured_noise(n, colour, rng)
    return noise / max(effects.rms(noise), 1e-9) * 10 ** (rng.uniform(*level_db) / 20)


def _single(files: Sequence[str], rng: np.random.Generator, cache: dict[str, np.ndarray]) -> np.ndarray:
    sound = _load(str(rng.choice(files)), cache)
    before, after = (int(rng.uniform(0.05, 1.0) * SAMPLE_RATE) for _ in range(2))
    out = _room_tone(before + sound.size + after, rng)
    out[before:before + sound.size] += sound
    return out


def _sequence(files: Sequence[str], rng: np.random.Generator, cache: dict[str, np.ndarray]) -> np.ndarray:
    out = _room_tone(int(rng.uniform(3.0, 10.0) * SAMPLE_RATE), rng)
    palette = [str(f) for f in rng.choice(files, size=int(rng.integers(1, 5)))]  # a few sources, repeated
    at = 0
    while at < out.size:
        sound = _load(str(rng.choice(palette)), cache)[: out.size - at] * rng.uniform(0.3, 1.0)
        out[at:at + sound.size] += sound
        at += int(rng.uniform(0.08, 1.2) * SAMPLE_RATE)
    return out


def _noise(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.uniform(1.0, 10.0) * SAMPLE_RATE)
    noise = effects.coloured_noise(n, str(rng.choice(["white", "pink", "brown"])), rng)
    if rng.random() < 0.5:  # a swell: rain, wind, surf
        t = np.arange(n) / SAMPLE_RATE
        noise *= 1.0 + rng.uniform(0.3, 0.9) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 6.3))
    return noise / max(effects.rms(noise), 1e-9) * 10 ** (rng.uniform(-45.0, -12.0) / 20)


def _tones(rng: np.random.Generator) -> np.ndarray:
    out = _room_tone(int(rng.uniform(0.5, 5.0) * SAMPLE_RATE), rng)
    at = 0
    while at < out.size:
        n = min(int(rng.uniform(0.05, 1.5) * SAMPLE_RATE), out.size - at)
        t = np.arange(n) / SAMPLE_RATE
        base = rng.uniform(150.0, 3000.0)
        if rng.random() < 0.3:  # a sweep
            phase = 2 * np.pi * (base * t + 0.5 * rng.uniform(-base / 2, base) * t ** 2 / max(t[-1], 1e-3))
            tone = np.sin(phase)
        else:  # a beep or a chord
            ratios = [1.0, *rng.choice([1.25, 1.5, 2.0, 1.2, 1.33], size=int(rng.integers(0, 3)), replace=False)]
            tone = sum(np.sin(2 * np.pi * base * r * t) for r in ratios) / len(ratios)
        out[at:at + n] += effects.fade(tone.astype(np.float32), 0.01) * rng.uniform(0.05, 0.7)
        at += n + int(rng.uniform(0.0, 0.8) * SAMPLE_RATE)
    return out


def clip(kind: str, files: Sequence[str], rng: np.random.Generator, cache: dict[str, np.ndarray]) -> np.ndarray:
    """One clip of ``kind``, float32 within [-1, 1]."""
    if kind == "single":
        audio = _single(files, rng, cache)
    elif kind == "sequence":
        audio = _sequence(files, rng, cache)
    elif kind == "noise":
        audio = _noise(rng)
    elif kind == "tones":
        audio = _tones(rng)
    elif kind == "quiet":
        audio = _room_tone(int(rng.uniform(1.0, 8.0) * SAMPLE_RATE), rng, (-80.0, -45.0))
    else:
        raise ValueError(f"unknown clip kind {kind!r}; choose from {sorted(KINDS)}")
    peak = float(np.abs(audio).max(initial=0.0))
    if kind in ("single", "sequence", "tones") and peak > 0:
        audio = audio / peak * rng.uniform(0.05, 0.95)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def clip_records(clip_id: str, path: Path, seconds: float, kind: str, split: str, rng: random.Random) -> list[ManifestRecord]:
    """A clip's language-ID record (``<|unknown|>``) and its transcription record (empty, in a spoken language)."""
    meta = {"kind": kind, "split": split, "source": "nospeech"}
    common = {"audio": str(path.resolve()), "duration": round(seconds, 3)}
    language = rng.choice(SPOKEN_LANGUAGES)
    return [
        ManifestRecord(id=f"{clip_id}-lid", task="language_id", text="", audio_language="unknown", meta=meta, **common),
        ManifestRecord(id=f"{clip_id}-asr", task="asr", text="", audio_language=language,
                       text_language=language, meta=meta, **common),
    ]


def build_nospeech(out_dir: Path, sounds_dir: Path, seed: int, counts: dict[str, int] = COUNTS,
                   log: Callable[[str], None] = print) -> dict[str, list[ManifestRecord]]:
    """Render every split's clips under ``out_dir/<split>/`` (once) and return split → records."""
    by_split = {}
    for split, count in counts.items():
        files = sound_files(sounds_dir / f"{split}.jsonl")
        if not files:
            raise FileNotFoundError(f"{sounds_dir / f'{split}.jsonl'} holds no sounds: build the sounds stage first")
        rng = np.random.default_rng(derive_seed(seed, "nospeech-audio", split))
        pick = random.Random(f"{seed}-nospeech-{split}")
        kinds = pick.choices(list(KINDS), weights=list(KINDS.values()), k=count)
        cache: dict[str, np.ndarray] = {}
        records: list[ManifestRecord] = []
        for i, kind in enumerate(kinds):
            target = out_dir / split / f"{split}-{kind}-{i:05d}.flac"
            audio = clip(kind, files, rng, cache)  # drawn even when on disk: the stream stays the same
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(target), audio, SAMPLE_RATE)
            records += clip_records(f"nospeech-{split}-{i:05d}", target, audio.size / SAMPLE_RATE, kind, split, pick)
            if (i + 1) % 500 == 0:
                log(f"nospeech: {split} {i + 1}/{count} clips")
        by_split[split] = records
        log(f"nospeech {split}: {count} clips from {len(files)} sounds")
    return by_split
