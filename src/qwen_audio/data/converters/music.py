"""Music corpora → manifests: NSynth (note analysis: pitch, velocity, instrument, qualities)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from qwen_audio.data.converters._common import MissingAudio, first_existing, probe_duration
from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.errors import ManifestError

NSYNTH_TARGETS = ("note_analysis", "pitch", "velocity", "instrument")


def convert_nsynth(
    root: Path, split: str, *, target: str = "note_analysis", probe: bool = False
) -> Iterator[ManifestRecord]:
    """NSynth (Engel et al. 2017): ``nsynth-<split>/examples.json`` (``{note_str: {pitch,
    velocity, instrument_family_str, instrument_source_str, qualities_str, …}}``) and
    ``nsynth-<split>/audio/<note_str>.wav``; splits train/valid/test. ``root`` is the
    ``nsynth-<split>`` folder or its parent.

    ``target`` picks the task: ``note_analysis`` (the paper's single task; the tag layer renders
    ``meta`` into pitch/velocity/instrument/sonic tokens; ``text`` holds the instrument family),
    or one attribute alone: ``pitch`` / ``velocity`` (MIDI number as text) or ``instrument``
    (family, e.g. ``keyboard``). Assumption: the official instrument target is the family
    string; the source (acoustic/electronic/synthetic) stays in ``meta``. Every note lasts 4 s,
    hence ``probe`` defaults off."""
    if target not in NSYNTH_TARGETS:
        raise ManifestError(f"NSynth target {target!r} unknown; use one of {NSYNTH_TARGETS}")
    root = Path(root).resolve()
    split = {"validation": "valid", "val": "valid", "dev": "valid"}.get(split, split)
    folder = first_existing(root / f"nsynth-{split}", root)
    examples_path = folder / "examples.json" if folder else None
    if examples_path is None or not examples_path.exists():
        raise ManifestError(f"NSynth examples.json not found in {root} or {root}/nsynth-{split}")
    examples = json.loads(examples_path.read_text(encoding="utf-8"))
    missing = MissingAudio("NSynth")
    for note_str, note in examples.items():
        audio = examples_path.parent / "audio" / f"{note_str}.wav"
        if not missing(audio):
            continue
        family = note["instrument_family_str"]
        text = {"note_analysis": family, "instrument": family,
                "pitch": str(note["pitch"]), "velocity": str(note["velocity"])}[target]
        yield ManifestRecord(
            id=f"nsynth-{note_str}" if target == "note_analysis" else f"nsynth-{note_str}.{target}",
            audio=str(audio), task=target, text=text, labels=(text,),
            duration=probe_duration(audio) if probe else 4.0,
            audio_language="unknown", text_language="en",
            meta={"dataset": "nsynth", "split": split, "pitch": int(note["pitch"]),
                  "velocity": int(note["velocity"]), "instrument_family": family,
                  "instrument_source": note["instrument_source_str"],
                  "qualities": list(note.get("qualities_str", []))},
        )
    missing.report()
