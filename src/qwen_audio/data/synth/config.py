"""Corpus sizes, the generator's configuration and its summary, and the system packages it needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_audio.data.synth.lexicon import LANGUAGES
from qwen_audio.errors import ConfigError

# Debian packages the generator runs (the lead installs them in .ci/run and documents them).
# timgm6mb-soundfont is the small (6 MB) General-MIDI soundfont; fluid-soundfont-gm also works.
SYSTEM_PACKAGES: tuple[str, ...] = ("espeak-ng", "fluidsynth", "timgm6mb-soundfont")

SPLITS: tuple[str, ...] = ("train", "validation", "test")
# What the generator can render; a config may ask for a subset (e.g. more English speech alone).
FAMILIES: tuple[str, ...] = ("speech", "music", "sounds", "chat")


@dataclass(frozen=True)
class SizePreset:
    """Items of the *train* split; validation and test get ``held_out_fraction`` of each."""

    speech_per_language: int  # sentence utterances per language (English gets english_factor ×)
    numbers_per_language: int  # spoken number lists (number translation / ITN)
    notes_per_family: int
    melodies: int
    events_per_type: int
    scenes_per_class: int
    chats: int
    event_sources_per_type: int  # distinct sources (timbres) of each event type in train
    english_factor: int = 3
    held_out_fraction: float = 0.1


SIZES: dict[str, SizePreset] = {
    "tiny": SizePreset(2, 1, 1, 2, 1, 1, 6, 2, english_factor=2),
    "small": SizePreset(40, 10, 16, 20, 16, 8, 200, 12),
    "default": SizePreset(600, 150, 200, 300, 150, 80, 3000, 60),
}


@dataclass(frozen=True)
class CorpusConfig:
    """What to generate. Everything in the corpus is a pure function of (size, seed)."""

    size: str = "small"
    seed: int = 0
    workers: int = 1
    augment: bool = True  # noise, reverberation and level changes on speech
    scale: float = 1.0  # multiplies every item count of the preset (not the source counts)
    splits: tuple[str, ...] = SPLITS  # e.g. ("test",) for the evaluation suite alone
    families: tuple[str, ...] = FAMILIES  # e.g. ("speech",) to add speech to a corpus
    languages: tuple[str, ...] = LANGUAGES  # speech languages rendered

    def __post_init__(self) -> None:
        for name, value, allowed in (("splits", self.splits, SPLITS),
                                     ("families", self.families, FAMILIES),
                                     ("languages", self.languages, LANGUAGES)):
            if set(value) - set(allowed) or not value:
                raise ConfigError(f"{name} must be a non-empty subset of {allowed}, got {value}")
        if self.size not in SIZES:
            raise ConfigError(f"unknown corpus size {self.size!r}; use one of {', '.join(SIZES)}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if not self.scale > 0:
            raise ConfigError(f"scale must be > 0, got {self.scale}")

    @property
    def preset(self) -> SizePreset:
        return SIZES[self.size]

    def count(self, train_count: int, split: str) -> int:
        """Items of a split: the (scaled) train count, or its held-out fraction (at least one)."""
        scaled = max(1, round(train_count * self.scale))
        if split == "train":
            return scaled
        return max(1, round(scaled * self.preset.held_out_fraction))


@dataclass(frozen=True)
class CorpusSummary:
    """What ``make_corpus`` wrote (also saved as ``corpus.json``)."""

    out_dir: Path
    counts: dict[str, dict[str, dict[str, int]]]  # split → manifest → task → records
    audio_files: dict[str, int]  # split → files
    audio_seconds: dict[str, float]
    elapsed_seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "audio_files": self.audio_files,
                "audio_seconds": self.audio_seconds, "elapsed_seconds": self.elapsed_seconds,
                **self.info}
