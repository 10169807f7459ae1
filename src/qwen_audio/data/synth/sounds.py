"""Synthesised sound events and acoustic scenes (background + events), with labels and captions.

A *source* is (event type, source id): the id seeds the timbre (frequencies, rates, resonances),
so a held-out source is a new-sounding instance of a known class. Each rendering then varies
duration, repetitions and level with its own seed. Sources are what the splits keep apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qwen_audio.data.synth import effects

SR = effects.SAMPLE_RATE
EVENT_TYPES = ("beep", "siren", "clicking", "knocking", "hiss", "bird_chirp", "engine", "rain",
               "bell", "alarm")
COUNT_WORDS = ("once", "twice", "three times", "four times", "five times", "six times")


@dataclass(frozen=True)
class RenderedEvent:
    samples: np.ndarray
    event_type: str
    caption: str
    repetitions: int


def _source_rng(event_type: str, source_id: int) -> np.random.Generator:
    return np.random.default_rng([EVENT_TYPES.index(event_type) + 1000, source_id])


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def _bandpass_noise(n: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(max(n, 2)))
    freqs = np.fft.rfftfreq(max(n, 2), 1 / SR)
    spectrum[(freqs < low) | (freqs > high)] = 0
    x = np.fft.irfft(spectrum, max(n, 2))[:n]
    return x / (np.abs(x).max() + 1e-9)


def _repeat(unit: np.ndarray, times: int, gap: float) -> np.ndarray:
    pause = np.zeros(int(gap * SR))
    parts = [p for i in range(times) for p in ((unit,) if i == 0 else (pause, unit))]
    return np.concatenate(parts)


def _pitch_word(freq: float) -> str:
    return "high-pitched" if freq > 1500 else "low" if freq < 600 else "medium-pitched"


def render_event(event_type: str, source_id: int, seed: int) -> RenderedEvent:
    """Render one event of ``event_type`` from source ``source_id``; ``seed`` varies the take."""
    src, rng = _source_rng(event_type, source_id), np.random.default_rng(seed)
    reps = 1
    if event_type == "beep":
        freq, reps = src.uniform(400, 3000), int(rng.integers(1, 5))
        tone = np.sin(2 * np.pi * freq * _t(rng.uniform(0.1, 0.4)))
        x = _repeat(effects.fade(tone.astype(np.float32)), reps, rng.uniform(0.1, 0.3))
        caption = f"a {_pitch_word(freq)} electronic beep sounds {COUNT_WORDS[reps - 1]}"
    elif event_type == "siren":
        centre, depth, rate = src.uniform(600, 1100), src.uniform(150, 400), src.uniform(0.4, 3.0)
        t = _t(rng.uniform(1.5, 3.0))
        phase = 2 * np.pi * np.cumsum(centre + depth * np.sin(2 * np.pi * rate * t)) / SR
        x = np.sin(phase) + 0.3 * np.sin(2 * phase)
        caption = "a siren wails, rising and falling" if rate < 1.5 else "a siren warbles rapidly"
    elif event_type == "clicking":
        rate, bright = src.uniform(3, 14), src.uniform(2000, 6000)
        t = _t(rng.uniform(0.8, 2.0))
        x = np.zeros(len(t))
        width = int(0.004 * SR)
        click = _bandpass_noise(width, bright / 2, bright, src) * np.hanning(width)
        for onset in np.arange(0, t[-1] - 0.01, 1 / rate) + rng.uniform(0, 0.05):
            i = int(onset * SR)
            n = min(len(click), len(x) - i)  # the jittered last onset can fall at or past the end
            if n > 0:
                x[i: i + n] += click[:n]
        caption = "rapid mechanical clicking" if rate > 8 else "slow steady clicking"
    elif event_type == "knocking":
        res, decay, reps = src.uniform(90, 320), src.uniform(20, 60), int(rng.integers(2, 6))
        t = _t(0.15)
        knock = np.sin(2 * np.pi * res * t) * np.exp(-decay * t) + 0.3 * _bandpass_noise(
            len(t), 200, 2000, rng) * np.exp(-80 * t)
        x = _repeat(knock, reps, rng.uniform(0.08, 0.3))
        caption = f"someone knocks on a door {COUNT_WORDS[reps - 1]}"
    elif event_type == "hiss":
        low = src.uniform(1000, 4000)
        n = int(rng.uniform(0.4, 1.5) * SR)
        x = _bandpass_noise(n, low, min(7900, low * 2.5), rng) * np.hanning(n)
        caption = "a short burst of hissing air"
    elif event_type == "bird_chirp":
        f_lo, span = src.uniform(2000, 4000), src.uniform(500, 2500)
        reps = int(rng.integers(2, 7))
        t = _t(src.uniform(0.05, 0.15))
        sweep = np.sin(2 * np.pi * (f_lo * t + span * t**2 / (2 * t[-1])))
        x = _repeat(sweep * np.hanning(len(t)), reps, rng.uniform(0.05, 0.2))
        caption = "a bird chirps" + (" repeatedly" if reps > 3 else " a few times")
    elif event_type == "engine":
        f0, wobble = src.uniform(30, 90), src.uniform(2, 8)
        t = _t(rng.uniform(1.5, 3.0))
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8))
        x = x * (1 + 0.3 * np.sin(2 * np.pi * wobble * t))
        x = x + 0.2 * _bandpass_noise(len(t), 50, 800, rng)
        caption = "an engine hums and idles"
    elif event_type == "rain":
        density, bright = src.uniform(50, 300), src.uniform(2000, 6000)
        n = int(rng.uniform(1.5, 3.0) * SR)
        x = 0.3 * _bandpass_noise(n, 500, bright, rng)
        drop = np.hanning(int(0.003 * SR))
        for i in rng.integers(0, n - len(drop), int(density * n / SR)):
            x[i: i + len(drop)] += rng.uniform(-1, 1) * drop
        caption = "heavy rain pours down" if density > 175 else "light rain patters"
    elif event_type == "bell":
        base, ratios = src.uniform(300, 1200), np.sort(src.uniform(1.0, 4.5, 5))
        t = _t(rng.uniform(1.0, 2.0))
        x = sum(np.sin(2 * np.pi * base * r * t) * np.exp(-t * (1.5 + 2 * r)) / r for r in ratios)
        caption = f"a {_pitch_word(base)} bell rings and fades"
    elif event_type == "alarm":
        f1, f2, reps = src.uniform(500, 1200), src.uniform(1300, 2500), int(rng.integers(2, 5))
        seg = _t(src.uniform(0.1, 0.25))
        unit = np.concatenate([np.sign(np.sin(2 * np.pi * f * seg)) for f in (f1, f2)])
        x = _repeat(0.5 * unit, reps, 0.05)
        caption = "an alarm buzzes with two alternating tones"
    else:
        raise ValueError(f"unknown event type {event_type!r}; known: {', '.join(EVENT_TYPES)}")
    x = effects.fade(np.asarray(x, dtype=np.float32))
    return RenderedEvent(effects.normalise_peak(x, float(rng.uniform(0.3, 0.9))), event_type,
                         caption, reps)


# ---------------------------------------------------------------- scenes

# scene → (background event type, background caption, event types that happen there)
SCENES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "street": ("engine", "traffic rumbles in the street", ("siren", "beep", "hiss")),
    "office": ("", "a quiet office hums", ("clicking", "beep", "knocking")),
    "rainstorm": ("rain", "rain falls outside", ("knocking", "bell", "hiss")),
    "park": ("", "wind blows through a park", ("bird_chirp", "bell", "beep")),
    "factory": ("engine", "machines roar in a factory", ("alarm", "clicking", "knocking")),
    "kitchen": ("", "a fridge hums in a kitchen", ("beep", "bell", "clicking", "hiss")),
}
SCENE_NAMES = tuple(SCENES)


@dataclass(frozen=True)
class SceneEvent:
    event_type: str
    source_id: int
    start: float
    end: float
    caption: str


@dataclass(frozen=True)
class RenderedScene:
    samples: np.ndarray
    scene: str
    events: tuple[SceneEvent, ...]
    caption: str


def _background(scene: str, source_id: int, n: int, rng: np.random.Generator) -> np.ndarray:
    kind = SCENES[scene][0]
    if kind:
        parts, total = [], 0
        while total < n:
            parts.append(render_event(kind, source_id, int(rng.integers(1 << 31))).samples)
            total += len(parts[-1])
        x = np.concatenate(parts)[:n]
    elif scene == "park":
        gusts = 1 + 0.5 * np.sin(2 * np.pi * 0.3 * _t(n / SR))
        x = effects.coloured_noise(n, "brown", rng) * gusts
    else:
        hum = np.sin(2 * np.pi * (50 + source_id % 20) * _t(n / SR))
        x = 0.3 * hum + effects.coloured_noise(n, "pink", rng) * 0.3
    return effects.normalise_peak(np.asarray(x, np.float32), 1.0)


def render_scene(scene: str, event_sources: dict[str, list[int]], seed: int,
                 seconds: float = 6.0) -> RenderedScene:
    """A background of ``scene`` with 1–3 of its events mixed in at 3–15 dB above it.

    ``event_sources`` maps event type → the source ids this split may use (split-disjoint).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    bg_sources = event_sources.get(SCENES[scene][0] or "engine", [0])
    mix = 0.15 * _background(scene, int(rng.choice(bg_sources)), n, rng)
    events: list[SceneEvent] = []
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(SCENES[scene][2]))
        source = int(rng.choice(event_sources[kind]))
        event = render_event(kind, source, int(rng.integers(1 << 31)))
        x = event.samples[: n - SR // 4]
        start = int(rng.integers(0, n - len(x)))
        gain = 10 ** (rng.uniform(3, 15) / 20) * effects.rms(mix) / (effects.rms(x) + 1e-9)
        mix[start: start + len(x)] += gain * x
        events.append(SceneEvent(kind, source, round(start / SR, 2),
                                 round((start + len(x)) / SR, 2), event.caption))
    events.sort(key=lambda e: e.start)
    caption = SCENES[scene][1] + " while " + " and then ".join(e.caption for e in events)
    return RenderedScene(effects.normalise_peak(mix, float(rng.uniform(0.3, 0.9))), scene,
                         tuple(events), caption)
