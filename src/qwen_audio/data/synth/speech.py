"""Speech from espeak-ng, synthesised word by word so every word's start and end is known exactly.

Each word is rendered alone, its silence trimmed, and the words are joined with gaps we choose; the
recorded times are therefore exact (to the sample) on the dry signal. Noise and reverberation are
added afterwards; reverberation keeps the dry path at time zero, so it only adds tails.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from dataclasses import dataclass

import numpy as np
import soxr

from qwen_audio.data.synth import effects
from qwen_audio.data.synth.sentences import Sentence
from qwen_audio.errors import QwenAudioError
from qwen_audio.formats.timestamps import Word

# espeak-ng voice per tag language. Chinese is read from pinyin (Debian's espeak-ng ships only
# a small hanzi dictionary); Japanese lexicon entries are kana, which the ja voice reads.
ESPEAK_VOICES: dict[str, tuple[str, ...]] = {
    "en": ("en-us", "en-gb"), "zh": ("cmn-latn-pinyin",), "de": ("de",), "es": ("es",),
    "ko": ("ko",), "fr": ("fr",), "ja": ("ja",), "it": ("it",),
}

# espeak-ng voice variants (`-v lang+variant`) with the gender espeak-ng declares; checked by
# median f0 (female ≥ 174 Hz, male ≤ 134 Hz at default pitch). "shelby" (declared M, 184 Hz) and
# the novelty variants (whisper, croak, robots) are left out.
FEMALE_VARIANTS = (
    "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda",
    "grandma", "linda", "steph", "steph2", "steph3",
)
MALE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Alex", "Andy", "Denis", "Diogo", "Gene",
    "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Storm", "adam",
    "antonio", "benjamin", "boris", "caleb", "david", "ed", "edward", "iven", "john", "klatt",
    "max", "michel", "miguel", "norbert", "paul", "pedro", "quincy", "rob", "robert", "sandro",
    "travis", "victor",
)


class SynthesisError(QwenAudioError):
    """An external synthesiser (espeak-ng, fluidsynth) is missing or failed."""


@dataclass(frozen=True)
class Voice:
    language: str
    espeak_voice: str  # e.g. "en-us"
    variant: str  # e.g. "f3"
    gender: str  # "female" | "male"
    rate: int  # words per minute
    pitch: int  # espeak-ng pitch, 0..99 (50 is the voice's own)

    @property
    def name(self) -> str:
        return f"{self.espeak_voice}+{self.variant}"


@dataclass(frozen=True)
class SpeechSpec:
    """Everything needed to render one utterance; ``seed`` drives gaps, noise and room."""

    sentence: Sentence
    voice: Voice
    seed: int
    augment: bool = True


@dataclass(frozen=True)
class RenderedSpeech:
    samples: np.ndarray  # float32, 16 kHz mono
    words: tuple[Word, ...]  # what was said, each word with its times in the audio
    noise: str | None  # colour, or None
    snr_db: float | None
    rt60: float | None


def espeak_version() -> str:
    """First line of ``espeak-ng --version`` (recorded in corpus.json)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return "absent"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("Data at")[0].strip()


def espeak_samples(text: str, voice: Voice) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng and return float32 samples at 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SynthesisError("espeak-ng is not installed; run `apt-get install espeak-ng`")
    cmd = [exe, "-v", voice.name, "-s", str(voice.rate), "-p", str(voice.pitch), "--stdout", text]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0 or len(result.stdout) < 44:
        raise SynthesisError(f"espeak-ng failed on {text!r} with {voice.name}: "
                             f"{result.stderr.decode(errors='replace').strip()}")
    return _wav_bytes_to_16k(result.stdout)


def _wav_bytes_to_16k(data: bytes) -> np.ndarray:
    """Parse espeak-ng's streamed WAV (its size fields are placeholders, so read to the end)."""
    rate = struct.unpack("<I", data[24:28])[0]
    start = data.find(b"data") + 8
    pcm = np.frombuffer(data[start: start + (len(data) - start) // 2 * 2], dtype="<i2")
    x = pcm.astype(np.float32) / 32768.0
    return soxr.resample(x, rate, effects.SAMPLE_RATE).astype(np.float32) if rate != 16_000 else x


def render_speech(spec: SpeechSpec) -> RenderedSpeech:
    """Render the sentence word by word and record each word's exact [start, end] in seconds."""
    rng = random.Random(spec.seed)
    sr = effects.SAMPLE_RATE
    pieces: list[np.ndarray] = []
    words: list[Word] = []
    position = int(rng.uniform(0.1, 0.5) * sr)
    pieces.append(np.zeros(position, np.float32))
    for i, word in enumerate(spec.sentence.words):
        x = espeak_samples(word.spoken, spec.voice)
        lo, hi = effects.active_bounds(x)
        if hi <= lo:
            raise SynthesisError(f"espeak-ng produced silence for {word.spoken!r}")
        x = effects.fade(x[lo:hi], 0.003)
        if i:
            gap = int(rng.uniform(0.04, 0.22) * sr)
            pieces.append(np.zeros(gap, np.float32))
            position += gap
        pieces.append(x)
        # Times are quantised to 0.01 s outward, so [start, end] always covers the word.
        words.append(Word(word.text, np.floor(position / sr * 100) / 100,
                               np.ceil((position + len(x)) / sr * 100) / 100))
        position += len(x)
    pieces.append(np.zeros(int(rng.uniform(0.15, 0.5) * sr), np.float32))
    audio = np.concatenate(pieces)
    noise = snr = rt60 = None
    nprng = np.random.default_rng(spec.seed)
    if spec.augment:
        if rng.random() < 0.35:
            rt60 = rng.uniform(0.15, 0.6)
            audio = effects.reverberate(audio, rt60, rng.uniform(0.1, 0.35), nprng)
        if rng.random() < 0.7:
            noise, snr = rng.choice(("white", "pink", "brown")), rng.uniform(8.0, 35.0)
            speech_rms = effects.rms(np.concatenate([p for p in pieces if p.any()]))
            audio = effects.add_noise(audio, snr, noise, nprng, reference_rms=speech_rms)
        audio = effects.normalise_peak(audio, rng.uniform(0.15, 0.95))
    else:
        audio = effects.normalise_peak(audio, 0.8)
    return RenderedSpeech(audio, tuple(words), noise, snr, rt60)
