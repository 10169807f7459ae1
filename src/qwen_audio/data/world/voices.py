"""Which synthetic voices read which split: the test voices never read a training sentence.

espeak-ng variants follow the synthetic corpus's fixed partition (`synth.splits.voice_variants`),
so a variant held out there is held out here too. Of flite's built-in voices one speaker is held
out for test, and of festival's voices one per language (English: a diphone voice; Italian: one of its two
diphone voices). All of it is seed-independent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from qwen_audio.data.synth import splits
from qwen_audio.data.synth.speech import ESPEAK_VOICES, Voice

# flite 2.2's built-in voices: name → gender. "kal" (8 kHz) and "awb_time" repeat speakers.
FLITE_VOICES = {"slt": "female", "awb": "male", "kal16": "male", "rms": "male"}
FLITE_TEST_VOICES = ("rms",)
# festival's voices: name → (language, gender). Debian festvox-italp16k, festvox-itapc16k (Italian diphones),
# festvox-us-slt-hts (an HTS voice of CMU ARCTIC's slt), festvox-kallpc16k, festvox-kdlpc16k (US English diphones).
FESTIVAL_VOICES = {"lp_diphone": ("it", "female"), "pc_diphone": ("it", "male"),
                   "cmu_us_slt_arctic_hts": ("en", "female"), "kal_diphone": ("en", "male"),
                   "ked_diphone": ("en", "male")}
FESTIVAL_TEST_VOICES = ("pc_diphone", "ked_diphone")


@dataclass(frozen=True)
class FliteVoice:
    name: str
    gender: str
    duration_stretch: float  # > 1 speaks slower
    f0_mean: int | None  # Hz; None keeps the voice's own


@dataclass(frozen=True)
class FestivalVoice:
    name: str
    gender: str
    duration_stretch: float


def espeak_variants(split: str) -> dict[str, tuple[str, ...]]:
    """gender → espeak-ng variants that read ``split`` ("train" or "test")."""
    return splits.voice_variants(split)


def flite_voices(split: str) -> tuple[str, ...]:
    if split == "test":
        return FLITE_TEST_VOICES
    return tuple(v for v in FLITE_VOICES if v not in FLITE_TEST_VOICES)


def festival_voices(split: str, language: str) -> tuple[str, ...]:
    pool = [v for v, (lang, _) in FESTIVAL_VOICES.items() if lang == language]
    if split == "test":
        return tuple(v for v in pool if v in FESTIVAL_TEST_VOICES)
    return tuple(v for v in pool if v not in FESTIVAL_TEST_VOICES)


def draw_espeak_voice(language: str, split: str, rng: random.Random) -> Voice:
    gender = rng.choice(("female", "male"))
    variant = rng.choice(espeak_variants(split)[gender])
    return Voice(language, rng.choice(ESPEAK_VOICES[language]), variant, gender,
                 rate=rng.randint(130, 200), pitch=rng.randint(35, 65))


def draw_flite_voice(split: str, rng: random.Random) -> FliteVoice:
    name = rng.choice(flite_voices(split))
    gender = FLITE_VOICES[name]
    f0 = None
    if rng.random() < 0.6:
        f0 = rng.randint(165, 240) if gender == "female" else rng.randint(85, 140)
    return FliteVoice(name, gender, round(rng.uniform(0.85, 1.2), 2), f0)


def draw_festival_voice(language: str, split: str, rng: random.Random) -> FestivalVoice:
    names = festival_voices(split, language)
    if not names:
        raise ValueError(f"no festival voice for {language!r}; festival renders only "
                         f"{sorted({lang for lang, _ in FESTIVAL_VOICES.values()})}")
    name = rng.choice(names)
    return FestivalVoice(name, FESTIVAL_VOICES[name][1], round(rng.uniform(0.85, 1.2), 2))
