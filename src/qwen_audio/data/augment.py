"""Speaker and channel augmentation of training audio: speed, room, noise and level on the waveform, a
vocal tract warp on its mel; seeded per example.

Why: the real speech the default model learns from is one professional voice per language in a quiet
studio. Users speak with other voices, through other microphones, in other rooms. Speed perturbation
(Ko et al., 2015: resampling changes tempo *and* pitch and formants, so it imitates other vocal tracts),
a synthetic room and coloured noise make one voice stand for many. SpecAugment (``audio.spec_augment``)
works on the mel afterwards and does not replace this: it masks, it never moves a formant. The vocal
tract warp (``audio.warp_mel``, VTLP) moves formants without pitch or tempo, as other speakers differ.

Every draw comes from the example's key, so a resumed run sees exactly the audio the interrupted one
would have. Speed changes where words are, so it is applied only to examples whose targets carry no
time tokens; room and noise keep the dry signal in place (``synth.effects.reverberate``) and are safe
for every task. torchaudio's ``speed`` effect would pull in another dependency for one ``soxr`` call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import soxr

from qwen_audio.data.synth import effects
from qwen_audio.errors import ConfigError

SAMPLE_RATE = effects.SAMPLE_RATE


@dataclass(frozen=True)
class WaveAugmentConfig:
    """Which sources to augment and how; probabilities are per audio."""

    sources: tuple[str, ...]  # data source names (``DataSource.default_name``); others pass untouched
    speed: tuple[float, float] = (0.9, 1.1)  # playback-rate range, drawn uniformly
    speed_p: float = 0.8
    reverb_p: float = 0.3
    rt60: tuple[float, float] = (0.15, 0.6)  # seconds to -60 dB
    noise_p: float = 0.5
    snr_db: tuple[float, float] = (8.0, 35.0)
    peak: tuple[float, float] = (0.1, 0.95)  # the output's peak level
    warp: tuple[float, float] = (0.9, 1.1)  # vocal tract warp factor range (``audio.warp_mel``), on the mel
    warp_p: float = 0.0  # off unless a recipe asks: the releases so far trained without it

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("wave_augment.sources names at least one data source")
        for name, (low, high) in (("speed", self.speed), ("rt60", self.rt60), ("snr_db", self.snr_db),
                                  ("peak", self.peak), ("warp", self.warp)):
            if not low <= high:
                raise ConfigError(f"wave_augment.{name} is a [low, high] range, got [{low}, {high}]")
        if not (0.5 <= self.speed[0] and self.speed[1] <= 2.0):
            raise ConfigError("wave_augment.speed stays within [0.5, 2.0]")
        if not (0.7 <= self.warp[0] and self.warp[1] <= 1.4):
            raise ConfigError("wave_augment.warp stays within [0.7, 1.4]")
        if self.rt60[0] <= 0 or not 0 < self.peak[0] <= self.peak[1] <= 1.0:
            raise ConfigError("wave_augment.rt60 must be > 0 and peak within (0, 1]")
        for name in ("speed_p", "reverb_p", "noise_p", "warp_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"wave_augment.{name} is a probability in [0, 1]")


def augment_wave(audio: np.ndarray, config: WaveAugmentConfig, seed: int, *, timed: bool) -> np.ndarray:
    """``audio`` (float32, 16 kHz) after this seed's draws; ``timed`` (the target holds times) skips speed."""
    rng, noise_rng = random.Random(seed), np.random.default_rng(seed)
    x = np.asarray(audio, dtype=np.float32)
    if x.size < 2 or not np.any(x):
        return x
    rate = rng.uniform(*config.speed)
    if rng.random() < config.speed_p and not timed and abs(rate - 1.0) > 1e-3:
        # read as if sampled at rate × 16 kHz, written at 16 kHz: rate > 1 is faster, shorter, higher
        x = soxr.resample(x, SAMPLE_RATE * rate, SAMPLE_RATE).astype(np.float32)
    reference = effects.rms(x)
    if rng.random() < config.reverb_p:
        x = effects.reverberate(x, rng.uniform(*config.rt60), rng.uniform(0.1, 0.35), noise_rng)
    if rng.random() < config.noise_p:
        colour = rng.choice(("white", "pink", "brown"))
        x = effects.add_noise(x, rng.uniform(*config.snr_db), colour, noise_rng, reference_rms=reference)
    return effects.normalise_peak(x, rng.uniform(*config.peak))


def warp_factor(config: WaveAugmentConfig, seed: int) -> float | None:
    """This seed's vocal tract warp factor for one audio's mel, or None when it is left as said."""
    rng = random.Random(seed)
    if rng.random() >= config.warp_p:
        return None
    return rng.uniform(*config.warp)
