"""Which sentences, voices and sound sources belong to which split — fixed, seed-independent.

Held-out scores only mean something if the test split is new material: a sentence is assigned
by a hash of its text, voice variants and instrument programs by a fixed shuffle, event sources
by disjoint id ranges. None of this depends on the corpus seed, so corpora of different seeds
keep the same held-out voices and instruments.
"""

from __future__ import annotations

import hashlib
import random

from qwen_audio.data.synth.music import FAMILY_PROGRAMS
from qwen_audio.data.synth.speech import FEMALE_VARIANTS, MALE_VARIANTS

_HELD_OUT_VARIANTS = {"female": 3, "male": 4}  # per held-out split
EVENT_SOURCE_STRIDE = 10_000  # source ids: train [0, 10k), validation [10k, 20k), test [20k, 30k)


def derive_seed(*parts: object) -> int:
    """A stable 32-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def split_of_text(text: str) -> str:
    """80 / 10 / 10 by a hash of the written text, so a sentence lives in exactly one split."""
    bucket = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def _partition(items: tuple, held_out: int, salt: str) -> dict[str, tuple]:
    shuffled = list(items)
    random.Random(salt).shuffle(shuffled)
    return {"test": tuple(shuffled[:held_out]),
            "validation": tuple(shuffled[held_out: 2 * held_out]),
            "train": tuple(shuffled[2 * held_out:])}


def voice_variants(split: str) -> dict[str, tuple[str, ...]]:
    """gender → espeak-ng variants of ``split``."""
    return {
        "female": _partition(FEMALE_VARIANTS, _HELD_OUT_VARIANTS["female"], "female")[split],
        "male": _partition(MALE_VARIANTS, _HELD_OUT_VARIANTS["male"], "male")[split],
    }


def family_programs(split: str) -> dict[str, tuple[int, ...]]:
    """family → General-MIDI programs of ``split`` (one or two per family are held out)."""
    out = {}
    for family, programs in FAMILY_PROGRAMS.items():
        held_out = 1 if len(programs) < 8 else 2 if len(programs) >= 10 else 1
        out[family] = _partition(programs, held_out, family)[split]
    return out


def event_source_ids(split: str, count: int) -> list[int]:
    """``count`` source ids of ``split`` (the same ids for every event type)."""
    base = {"train": 0, "validation": 1, "test": 2}[split] * EVENT_SOURCE_STRIDE
    return list(range(base, base + count))
