"""Instrument notes and short melodies rendered from a General-MIDI soundfont with fluidsynth.

Labels follow NSynth (instrument family, MIDI pitch, velocity; the paper's note-analysis task).
A batch of notes is written as one tiny MIDI file and rendered by one fluidsynth call (loading the
soundfont dominates the cost), then cut at the known note times. Reverb and chorus are off so a
note's tail never leaks into the next slice.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from qwen_audio.data.synth import effects
from qwen_audio.data.synth.speech import SynthesisError

SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
)

# NSynth-style family → General-MIDI programs (0-based) of that family.
FAMILY_PROGRAMS: dict[str, tuple[int, ...]] = {
    "keyboard": (0, 1, 2, 3, 4, 5, 6, 7),
    "mallet": (8, 9, 10, 11, 12, 13, 14, 15),
    "organ": (16, 17, 18, 19, 20),
    "guitar": (24, 25, 26, 27, 28, 29, 30, 31),
    "bass": (32, 33, 34, 35, 36, 37, 38, 39),
    "string": (40, 41, 42, 43, 44, 45, 46, 48, 49, 50, 51, 110),
    "vocal": (52, 53, 54),
    "brass": (56, 57, 58, 59, 60, 61, 62, 63),
    "reed": (21, 22, 23, 64, 65, 66, 67, 68, 69, 70, 71),
    "flute": (72, 73, 74, 75, 76, 77, 79),  # 78 (whistle) is mistuned in TimGM6mb
    "synth_lead": (80, 81, 82, 83, 84, 85, 86, 87),
}
FAMILIES = tuple(FAMILY_PROGRAMS)
# Playable MIDI pitch range per family (kept inside where GM instruments sound natural).
FAMILY_RANGES: dict[str, tuple[int, int]] = {
    "keyboard": (36, 96), "mallet": (60, 96), "organ": (36, 84), "guitar": (40, 76),
    "bass": (28, 55), "string": (43, 84), "vocal": (48, 79), "brass": (45, 77),
    "reed": (48, 81), "flute": (60, 96), "synth_lead": (48, 84),
}
# Programs whose playable range is narrower than their family's (measured on TimGM6mb: the
# bassoon is silent above 72, the glockenspiel and accordion lose a clear pitch outside these).
PROGRAM_RANGES: dict[int, tuple[int, int]] = {9: (72, 96), 21: (48, 76), 67: (34, 72)}
VELOCITIES = (25, 50, 75, 100, 127)  # NSynth's five velocities
NOTE_SECONDS = 2.0  # audio per note (the key is held NOTE_HOLD of it)
NOTE_HOLD = 1.5
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass(frozen=True)
class Note:
    program: int
    pitch: int
    velocity: int
    start: float  # seconds
    duration: float  # seconds the key is held

    @property
    def family(self) -> str:
        return program_family(self.program)


def program_family(program: int) -> str:
    for family, programs in FAMILY_PROGRAMS.items():
        if program in programs:
            return family
    raise ValueError(f"GM program {program} belongs to no family of FAMILY_PROGRAMS")


def pitch_range(program: int) -> tuple[int, int]:
    """Lowest and highest MIDI pitch the corpus plays on ``program``."""
    return PROGRAM_RANGES.get(program, FAMILY_RANGES[program_family(program)])


def note_name(pitch: int) -> str:
    """Scientific pitch name, e.g. 60 → "C4"."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def find_soundfont() -> Path | None:
    for candidate in SOUNDFONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def fluidsynth_version() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        return "absent"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].strip() if out else "unknown"


# ---------------------------------------------------------------- MIDI writing

TICKS_PER_BEAT = 480
TEMPO_US = 500_000  # 120 bpm: one beat = 0.5 s, so one second = 960 ticks


def _var_len(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_bytes(notes: list[Note]) -> bytes:
    """A format-0 Standard MIDI File playing ``notes``; each note gets a channel (never 10,
    the drum channel) with its program set just before it."""
    ticks_per_second = TICKS_PER_BEAT * 1_000_000 // TEMPO_US
    events: list[tuple[int, int, bytes]] = []  # (tick, order, bytes): note-offs sort first
    for i, note in enumerate(notes):
        channel = [c for c in range(16) if c != 9][i % 15]
        on = int(round(note.start * ticks_per_second))
        off = int(round((note.start + note.duration) * ticks_per_second))
        events.append((on, 1, bytes([0xC0 | channel, note.program])))
        events.append((on, 2, bytes([0x90 | channel, note.pitch, note.velocity])))
        events.append((off, 0, bytes([0x80 | channel, note.pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray(b"\x00\xff\x51\x03" + TEMPO_US.to_bytes(3, "big"))
    tick = 0
    for at, _, data in events:
        track += _var_len(at - tick) + data
        tick = at
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    header += TICKS_PER_BEAT.to_bytes(2, "big")
    return header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track)


def render_midi(notes: list[Note], seconds: float, gain: float = 0.5, soundfont: Path | None = None) -> np.ndarray:
    """Render ``notes`` with fluidsynth into float32 16 kHz mono of exactly ``seconds``
    (``soundfont``: the first of SOUNDFONT_CANDIDATES present unless given)."""
    exe, soundfont = shutil.which("fluidsynth"), soundfont or find_soundfont()
    if exe is None or soundfont is None:
        raise SynthesisError("fluidsynth and a GM soundfont are needed: "
                             "`apt-get install fluidsynth timgm6mb-soundfont`")
    with tempfile.TemporaryDirectory(prefix="qa-midi-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi_bytes(notes))
        cmd = [exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain),
               "-r", str(effects.SAMPLE_RATE), "-T", "wav", "-O", "s16", "-F", str(wav),
               str(soundfont), str(mid)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wav.is_file():
            raise SynthesisError(f"fluidsynth failed: {result.stderr.strip()[-500:]}")
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    if rate != effects.SAMPLE_RATE:
        raise SynthesisError(f"fluidsynth wrote {rate} Hz, expected {effects.SAMPLE_RATE}")
    mono = audio.mean(axis=1)
    n = int(round(seconds * effects.SAMPLE_RATE))
    return np.pad(mono, (0, max(0, n - len(mono))))[:n].astype(np.float32)


def render_notes(notes: list[tuple[int, int, int]], soundfont: Path | None = None) -> list[np.ndarray]:
    """Render isolated notes (program, pitch, velocity) in one fluidsynth call.

    Notes are spaced NOTE_SECONDS + 1 s apart (the extra second lets releases die out) and each
    returned clip is the NOTE_SECONDS from its onset, faded at the end.
    """
    stride = NOTE_SECONDS + 1.0
    timed = [Note(p, k, v, 0.05 + i * stride, NOTE_HOLD) for i, (p, k, v) in enumerate(notes)]
    audio = render_midi(timed, 0.05 + len(notes) * stride, soundfont=soundfont)
    clip_len = int(NOTE_SECONDS * effects.SAMPLE_RATE)
    clips = []
    for note in timed:
        start = int(round(note.start * effects.SAMPLE_RATE))
        clip = audio[start: start + clip_len].copy()
        tail = int(0.1 * effects.SAMPLE_RATE)
        clip[-tail:] *= np.linspace(1.0, 0.0, tail, dtype=np.float32)
        clips.append(clip)
    return clips


def estimate_f0(x: np.ndarray, low: float = 30.0, high: float = 2000.0) -> float:
    """Fundamental frequency (Hz) by the harmonic-product spectrum of the loudest 0.5 s.

    Used by tests to check that a rendered note has the pitch its label says.
    """
    sr = effects.SAMPLE_RATE
    seg = x[: int(0.8 * sr)].astype(np.float64)
    seg = seg[int(0.1 * sr):] if len(seg) > int(0.3 * sr) else seg
    n = 1 << 17
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    hps = spectrum.copy()
    for h in (2, 3):
        decimated = spectrum[::h]
        hps[: len(decimated)] *= decimated
    band = (freqs >= low) & (freqs <= high)
    return float(freqs[band][np.argmax(hps[band])])
