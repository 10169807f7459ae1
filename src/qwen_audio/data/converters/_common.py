"""Helpers every converter shares: split aliases, duration probing, missing-audio accounting."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import soundfile

from qwen_audio.errors import ManifestError


def probe_duration(path: Path) -> float | None:
    """Duration in seconds from the file header (cheap), or None when soundfile cannot read it
    (e.g. MELD's .mp4): the manifest field is optional and the loader measures it later."""
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, soundfile.LibsndfileError):
        return None
    return info.frames / info.samplerate if info.samplerate and info.frames > 0 else None


def resolve_split(split: str, aliases: Mapping[str, str], dataset: str) -> str:
    """Map a user-facing split name (``train``/``dev``/``test`` …) to the dataset's own."""
    key = split.lower()
    if key in aliases:
        return aliases[key]
    names = sorted(set(aliases.values()))
    raise ManifestError(f"{dataset} has no split {split!r}; use one of {', '.join(names)}")


def require(path: Path, what: str) -> Path:
    """The path, or a ManifestError saying which part of the layout is missing."""
    if not path.exists():
        raise ManifestError(f"{what} not found at {path}; check the dataset root and split")
    return path


def first_existing(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def read_csv(path: Path, **kwargs: object) -> Iterator[dict[str, str]]:
    """Stream rows of a CSV/TSV as dicts; undecodable bytes are replaced, not fatal (MELD)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        yield from csv.DictReader(f, **kwargs)  # type: ignore[arg-type]


class MissingAudio:
    """Counts rows whose audio is absent (clips removed from YouTube, partial downloads) and
    warns once at the end instead of failing a whole conversion."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.missing: list[str] = []

    def __call__(self, path: Path) -> bool:
        """True when the audio exists; otherwise records it."""
        if path.exists():
            return True
        self.missing.append(str(path))
        return False

    def report(self) -> None:
        if self.missing:
            warnings.warn(
                f"{self.dataset}: skipped {len(self.missing)} row(s) whose audio is missing, "
                f"e.g. {self.missing[0]}",
                stacklevel=3,
            )
