"""Render open-vocabulary sentences as speech: espeak-ng word by word (exact word times), flite
(English) and festival (English, Italian) whole sentences (natural prosody, no word times).

A job holds every random choice (voice, speed, pitch, seed), so rendering is a pure function of
the job. Noise and reverberation follow `synth.speech.render_speech`'s recipe.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from qwen_audio.data.manifest import ManifestRecord, Word
from qwen_audio.data.synth import effects
from qwen_audio.data.synth.sentences import Sentence, SpokenWord
from qwen_audio.data.synth.speech import SpeechSpec, SynthesisError, Voice, render_speech
from qwen_audio.data.world.voices import FestivalVoice, FliteVoice

SAMPLE_RATE = effects.SAMPLE_RATE


@dataclass(frozen=True)
class TtsJob:
    split: str  # "train" | "test"
    id: str
    language: str
    text: str
    source: str  # text source name
    voice: Voice | FliteVoice | FestivalVoice
    seed: int

    @property
    def engine(self) -> str:
        if isinstance(self.voice, FliteVoice):
            return "flite"
        return "festival" if isinstance(self.voice, FestivalVoice) else "espeak-ng"


def spoken_form(token: str) -> str:
    """A written token as handed to the synthesiser: outer punctuation removed."""
    return re.sub(r"^[¿¡'\-]+|[.,;:!?¿¡'\-]+$", "", token) or token


def to_sentence(text: str, language: str) -> Sentence:
    return Sentence(language, tuple(SpokenWord(t, spoken_form(t)) for t in text.split()))


def flite_samples(text: str, voice: FliteVoice) -> np.ndarray:
    """Synthesise a whole sentence with flite; float32 at 16 kHz."""
    exe = shutil.which("flite")
    if exe is None:
        raise SynthesisError("flite is not installed; run `apt-get install flite`")
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        cmd = [exe, "-voice", voice.name, "--setf", f"duration_stretch={voice.duration_stretch}"]
        if voice.f0_mean:
            cmd += ["--setf", f"int_f0_target_mean={voice.f0_mean}"]
        result = subprocess.run(cmd + ["-t", text, "-o", tmp.name], capture_output=True,
                                check=False)
        if result.returncode != 0:
            raise SynthesisError(f"flite failed on {text!r} with {voice.name}: "
                                 f"{result.stderr.decode(errors='replace').strip()}")
        x, rate = sf.read(tmp.name, dtype="float32")
    return soxr.resample(x, rate, SAMPLE_RATE).astype(np.float32) if rate != SAMPLE_RATE else x


def festival_samples(text: str, voice: FestivalVoice) -> np.ndarray:
    """Synthesise a whole sentence with festival's text2wave; float32 at 16 kHz.

    festival reads Latin-1 text, which holds every letter the Italian cleaner lets through.
    """
    exe = shutil.which("text2wave")
    if exe is None:
        raise SynthesisError("festival is not installed; run `apt-get install festival "
                             "festvox-italp16k festvox-itapc16k festvox-us-slt-hts festvox-kallpc16k "
                             "festvox-kdlpc16k`")
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "text.txt", Path(tmp) / "speech.wav"
        source.write_bytes(text.encode("latin-1"))
        cmd = [exe, "-eval", f"(voice_{voice.name})", "-eval",
               f"(Parameter.set 'Duration_Stretch {voice.duration_stretch})",
               str(source), "-o", str(target)]
        result = subprocess.run(cmd, capture_output=True, check=False)
        if result.returncode != 0 or not target.exists():
            raise SynthesisError(f"festival failed on {text!r} with {voice.name}: "
                                 f"{result.stderr.decode(errors='replace').strip()}")
        x, rate = sf.read(str(target), dtype="float32")
    return soxr.resample(x, rate, SAMPLE_RATE).astype(np.float32) if rate != SAMPLE_RATE else x


def augment(audio: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    """Room and noise as `render_speech` draws them; returns the audio and what was applied."""
    rng, nprng = random.Random(seed), np.random.default_rng(seed)
    facts: dict = {"noise": None, "snr_db": None, "rt60": None}
    reference = effects.rms(audio[np.abs(audio) > 1e-4]) if np.any(np.abs(audio) > 1e-4) else 0.0
    if rng.random() < 0.35:
        facts["rt60"] = round(rng.uniform(0.15, 0.6), 2)
        audio = effects.reverberate(audio, facts["rt60"], rng.uniform(0.1, 0.35), nprng)
    if rng.random() < 0.7:
        facts["noise"], facts["snr_db"] = rng.choice(("white", "pink", "brown")), round(
            rng.uniform(8.0, 35.0), 1)
        audio = effects.add_noise(audio, facts["snr_db"], facts["noise"], nprng,
                                  reference_rms=reference)
    return effects.normalise_peak(audio, rng.uniform(0.15, 0.95)), facts


def render_sentence(job: TtsJob) -> tuple[np.ndarray, dict]:
    """A whole-sentence synthesiser's take, trimmed, padded with silence and augmented."""
    rng = random.Random(job.seed)
    if isinstance(job.voice, FestivalVoice):
        x = festival_samples(job.text, job.voice)
    else:
        x = flite_samples(job.text, job.voice)
    lo, hi = effects.active_bounds(x)
    x = effects.fade(x[lo:hi], 0.003)
    pad = [np.zeros(int(rng.uniform(a, b) * SAMPLE_RATE), np.float32)
           for a, b in ((0.1, 0.5), (0.15, 0.5))]
    return augment(np.concatenate([pad[0], x, pad[1]]), job.seed ^ 0xA0D10)


def render_job(job: TtsJob, out_dir: Path) -> tuple[ManifestRecord, ...]:
    """Render ``job`` to ``out_dir/audio/<split>/<lang>/<id>.flac``; returns its records."""
    path = (out_dir / "audio" / job.split / job.language / f"{job.id}.flac").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    voice = job.voice
    words: tuple[Word, ...] | None = None
    if isinstance(voice, (FliteVoice, FestivalVoice)):
        audio, facts = render_sentence(job)
        meta = {"engine": job.engine, "voice": voice.name, "gender": voice.gender,
                "duration_stretch": voice.duration_stretch,
                "f0_mean": getattr(voice, "f0_mean", None)}
    else:
        rendered = render_speech(SpeechSpec(to_sentence(job.text, job.language), voice, job.seed))
        audio = rendered.samples
        facts = {"noise": rendered.noise,
                 "snr_db": None if rendered.snr_db is None else round(rendered.snr_db, 1),
                 "rt60": None if rendered.rt60 is None else round(rendered.rt60, 2)}
        meta = {"engine": "espeak-ng", "voice": voice.name, "variant": voice.variant,
                "gender": voice.gender, "rate": voice.rate, "pitch": voice.pitch}
        seconds = len(audio) / SAMPLE_RATE
        words = tuple(Word(w.word, float(w.start), float(min(w.end, seconds)))
                      for w in rendered.words)
    sf.write(str(path), effects.to_int16(audio), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    duration = round(len(audio) / SAMPLE_RATE, 3)
    meta = {**meta, **facts, "text_source": job.source, "split": job.split}
    common = dict(audio=str(path), duration=duration, audio_language=job.language,
                  text_language=job.language, text=job.text, meta=meta)
    records = [ManifestRecord(id=f"{job.id}-asr", task="asr", **common)]
    if words is not None:
        records.append(ManifestRecord(id=f"{job.id}-srwt", task="srwt", words=words, **common))
    return tuple(records)
