"""Jobs — one unit of work for a worker process — and their rendering into audio + manifest records.

A job carries every random choice already made (or a seed for the rest), so rendering is a pure
function of the job: any worker count produces the same corpus.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import soundfile as sf

from qwen_audio.data.manifest import ManifestRecord, Word
from qwen_audio.data.synth import effects, music, sounds
from qwen_audio.data.synth.sentences import number_words
from qwen_audio.data.synth.speech import SpeechSpec, render_speech
from qwen_audio.formats.languages import UNSPACED_LANGUAGES

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "de": "German", "es": "Spanish",
                  "ko": "Korean", "fr": "French", "ja": "Japanese", "it": "Italian"}
NOTE_GAIN = 4.0  # fluidsynth at -g 0.5 peaks near 0.15; a fixed gain keeps velocity audible


@dataclass(frozen=True)
class SpeechJob:
    split: str
    id: str
    spec: SpeechSpec
    kind: str  # "sentence" | "numbers"


@dataclass(frozen=True)
class NotesJob:
    split: str
    ids: tuple[str, ...]
    notes: tuple[tuple[int, int, int], ...]  # (program, pitch, velocity)


@dataclass(frozen=True)
class MelodyJob:
    split: str
    id: str
    program: int
    pitches: tuple[int, ...]
    velocity: int
    beat: float  # seconds per note


@dataclass(frozen=True)
class EventJob:
    split: str
    id: str
    event_type: str
    source_id: int
    seed: int


@dataclass(frozen=True)
class SceneJob:
    split: str
    id: str
    scene: str
    sources: tuple[tuple[str, tuple[int, ...]], ...]  # event type → source ids of the split
    seed: int


Job = Union[SpeechJob, NotesJob, MelodyJob, EventJob, SceneJob]


@dataclass(frozen=True)
class RenderedItem:
    """One audio file and its records; ``facts`` feed the chat builder."""

    manifest: str  # which manifest of the split: speech, numbers, music, sounds, scenes
    audio: str  # path relative to the split folder
    seconds: float
    records: tuple[ManifestRecord, ...]
    facts: dict[str, Any]


def _write(out_dir: Path, split: str, family: str, item_id: str, x: np.ndarray
           ) -> tuple[str, float]:
    """Save int16 16 kHz audio; return its path relative to the split folder and its seconds."""
    rel = f"audio/{family}/{item_id}.wav"
    path = out_dir / split / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, effects.to_int16(x), effects.SAMPLE_RATE, subtype="PCM_16")
    return rel, round(len(x) / effects.SAMPLE_RATE, 3)


def _choices(answer: str, pool: tuple[str, ...], rng: random.Random, k: int = 4) -> tuple[str, ...]:
    options = [answer] + rng.sample([p for p in pool if p != answer], min(k - 1, len(pool) - 1))
    rng.shuffle(options)
    return tuple(options)


def render_job(job: Job, out_dir: Path) -> list[RenderedItem]:
    """Render ``job`` under ``out_dir/<split>/audio`` and return its records."""
    if isinstance(job, SpeechJob):
        return [_render_speech(job, out_dir)]
    if isinstance(job, NotesJob):
        return _render_notes(job, out_dir)
    if isinstance(job, MelodyJob):
        return [_render_melody(job, out_dir)]
    if isinstance(job, EventJob):
        return [_render_event(job, out_dir)]
    return [_render_scene(job, out_dir)]


def _render_speech(job: SpeechJob, out_dir: Path) -> RenderedItem:
    spec, sentence = job.spec, job.spec.sentence
    rendered = render_speech(spec)
    rel, seconds = _write(out_dir, job.split, "speech" if job.kind == "sentence" else "numbers",
                          job.id, rendered.samples)
    lang, voice = sentence.language, spec.voice
    words = tuple(Word(w.word, float(w.start), float(min(w.end, seconds))) for w in rendered.words)
    meta = {"voice": voice.name, "variant": voice.variant, "gender": voice.gender,
            "rate": voice.rate, "pitch": voice.pitch, "noise": rendered.noise,
            "snr_db": None if rendered.snr_db is None else round(rendered.snr_db, 1),
            "rt60": None if rendered.rt60 is None else round(rendered.rt60, 2),
            "spoken": [w.spoken for w in sentence.words]}
    common = dict(audio=rel, duration=seconds, audio_language=lang, meta=meta)
    text = sentence.text
    records = [ManifestRecord(id=f"{job.id}-asr", task="asr", text_language=lang, text=text,
                              **common)]
    facts: dict[str, Any] = {"kind": job.kind, "audio": rel, "language": lang, "text": text,
                             "gender": voice.gender, "numbers": list(sentence.numbers)}
    if job.kind == "numbers":
        digits = " ".join(str(n) for n in sentence.numbers)
        records.append(ManifestRecord(id=f"{job.id}-itn", task="asr", text_language=lang,
                                      text=digits, **{**common, "meta": {**meta, "itn": True}}))
        for target in ("en", "zh"):
            if target != lang:
                records.append(ManifestRecord(
                    id=f"{job.id}-s2tt-{target}", task="s2tt", text_language=target,
                    text=number_words(sentence.numbers, target), **common))
        return RenderedItem("numbers", rel, seconds, tuple(records), facts)
    rng = random.Random(spec.seed ^ 0x5EED)
    records += [
        ManifestRecord(id=f"{job.id}-srwt", task="srwt", text_language=lang, text=text,
                       words=words, **common),
        ManifestRecord(id=f"{job.id}-lid", task="language_id", text_language="en", text=lang,
                       labels=(lang,), **common),
        ManifestRecord(id=f"{job.id}-gender", task="gender", text_language="en",
                       text=voice.gender, labels=(voice.gender,), **common),
    ]
    questions = speech_questions(sentence, voice.gender, rng)
    for i, (question, answer, choices) in enumerate(rng.sample(questions, min(2, len(questions)))):
        records.append(ManifestRecord(id=f"{job.id}-aqa{i}", task="aqa", text_language="en",
                                      question=question, text=answer, choices=choices, **common))
    facts.update(colours=list(sentence.colours), nouns=list(sentence.nouns))
    return RenderedItem("speech", rel, seconds, tuple(records), facts)


def speech_questions(sentence: Any, gender: str, rng: random.Random
                     ) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """Templated (question, answer, choices) pairs whose answers follow from the sentence."""
    from qwen_audio.data.synth import lexicon as lx

    lang = sentence.language
    out: list[tuple[str, str, tuple[str, ...] | None]] = [
        ("is the speaker male or female?", gender, ("male", "female")),
        ("what language is spoken?", LANGUAGE_NAMES[lang],
         _choices(LANGUAGE_NAMES[lang], tuple(LANGUAGE_NAMES.values()), rng)),
    ]
    if lang not in UNSPACED_LANGUAGES:
        out.append(("how many words does the speaker say?", str(len(sentence.words)), None))
    if len(set(sentence.colours)) == 1:
        out.append(("what colour is mentioned?", sentence.colours[0],
                    _choices(sentence.colours[0], lx.COLOUR_NAMES, rng)))
    animals = [n for n in sentence.nouns if n in lx.ANIMALS]
    if len(set(animals)) == 1:
        out.append(("which animal is mentioned?", animals[0],
                    _choices(animals[0], tuple(sorted(lx.ANIMALS)), rng)))
    if len(sentence.numbers) == 1:
        out.append(("what number is mentioned?", str(sentence.numbers[0]), None))
    return out


def _note_records(item_id: str, rel: str, seconds: float, program: int, pitch: int,
                  velocity: int) -> tuple[ManifestRecord, ...]:
    family = music.program_family(program)
    meta = {"program": program, "family": family, "pitch": pitch, "velocity": velocity,
            "note": music.note_name(pitch)}
    common = dict(audio=rel, duration=seconds, audio_language="unknown", text_language="en",
                  meta=meta)
    return (
        ManifestRecord(id=f"{item_id}-note", task="note_analysis", text=family,
                       labels=(family,), **common),
        ManifestRecord(id=f"{item_id}-instrument", task="instrument", text=family,
                       labels=(family,), **common),
        ManifestRecord(id=f"{item_id}-pitch", task="pitch", text=str(pitch), labels=(str(pitch),),
                       **common),
        ManifestRecord(id=f"{item_id}-velocity", task="velocity", text=str(velocity),
                       labels=(str(velocity),), **common),
    )


def _render_notes(job: NotesJob, out_dir: Path) -> list[RenderedItem]:
    clips = music.render_notes(list(job.notes))
    items = []
    for item_id, (program, pitch, velocity), clip in zip(job.ids, job.notes, clips):
        clip = np.clip(clip * NOTE_GAIN, -1, 1)
        rel, seconds = _write(out_dir, job.split, "notes", item_id, clip)
        facts = {"kind": "note", "audio": rel, "family": music.program_family(program),
                 "pitch": pitch, "note": music.note_name(pitch), "velocity": velocity}
        items.append(RenderedItem("music", rel, seconds,
                                  _note_records(item_id, rel, seconds, program, pitch, velocity),
                                  facts))
    return items


def melody_caption(family: str, pitches: tuple[int, ...], beat: float) -> str:
    tempo = "fast" if beat < 0.3 else "slow" if beat > 0.45 else "moderate"
    shape = ("rising" if pitches[-1] > pitches[0] else "falling" if pitches[-1] < pitches[0]
             else "returning to its first note")
    player = family.replace("_", " ")
    return f"a {tempo} {shape} melody of {len(pitches)} notes played on a {player} instrument"


def _render_melody(job: MelodyJob, out_dir: Path) -> RenderedItem:
    notes = [music.Note(job.program, p, job.velocity, 0.1 + i * job.beat, job.beat * 0.9)
             for i, p in enumerate(job.pitches)]
    audio = music.render_midi(notes, 0.1 + len(notes) * job.beat + 0.8)
    rel, seconds = _write(out_dir, job.split, "melodies", job.id,
                          effects.fade(np.clip(audio * NOTE_GAIN, -1, 1)))
    family = music.program_family(job.program)
    caption = melody_caption(family, job.pitches, job.beat)
    meta = {"program": job.program, "family": family, "pitches": list(job.pitches),
            "velocity": job.velocity, "beat": job.beat}
    record = ManifestRecord(id=f"{job.id}-caption", task="music_caption", audio=rel,
                            duration=seconds, audio_language="unknown", text_language="en",
                            text=caption, labels=(family,), meta=meta)
    facts = {"kind": "melody", "audio": rel, "family": family, "caption": caption}
    return RenderedItem("music", rel, seconds, (record,), facts)


def _render_event(job: EventJob, out_dir: Path) -> RenderedItem:
    event = sounds.render_event(job.event_type, job.source_id, job.seed)
    rel, seconds = _write(out_dir, job.split, "events", job.id, event.samples)
    label = job.event_type.replace("_", " ")
    meta = {"event_type": job.event_type, "source_id": job.source_id,
            "repetitions": event.repetitions}
    common = dict(audio=rel, duration=seconds, audio_language="unknown", text_language="en",
                  meta=meta)
    rng = random.Random(job.seed)
    pool = tuple(t.replace("_", " ") for t in sounds.EVENT_TYPES)
    records = (
        ManifestRecord(id=f"{job.id}-event", task="sound_event", text=label, labels=(label,),
                       **common),
        ManifestRecord(id=f"{job.id}-caption", task="caption", text=event.caption,
                       labels=(label,), **common),
        ManifestRecord(id=f"{job.id}-aqa", task="aqa", question="what sound do you hear?",
                       text=label, choices=_choices(label, pool, rng), **common),
    )
    facts = {"kind": "event", "audio": rel, "label": label, "caption": event.caption}
    return RenderedItem("sounds", rel, seconds, records, facts)


def _render_scene(job: SceneJob, out_dir: Path) -> RenderedItem:
    scene = sounds.render_scene(job.scene, {k: list(v) for k, v in job.sources}, job.seed)
    rel, seconds = _write(out_dir, job.split, "scenes", job.id, scene.samples)
    events = [{"event_type": e.event_type, "source_id": e.source_id, "start": e.start,
               "end": e.end, "caption": e.caption} for e in scene.events]
    meta = {"scene": job.scene, "events": events}
    common = dict(audio=rel, duration=seconds, audio_language="unknown", text_language="en",
                  meta=meta)
    rng = random.Random(job.seed)
    records = (
        ManifestRecord(id=f"{job.id}-scene", task="scene", text=job.scene, labels=(job.scene,),
                       **common),
        ManifestRecord(id=f"{job.id}-caption", task="caption", text=scene.caption,
                       labels=(job.scene,), **common),
        ManifestRecord(id=f"{job.id}-aqa", task="aqa", question="where was this recorded?",
                       text=job.scene, choices=_choices(job.scene, sounds.SCENE_NAMES, rng),
                       **common),
    )
    facts = {"kind": "scene", "audio": rel, "scene": job.scene, "caption": scene.caption}
    return RenderedItem("scenes", rel, seconds, records, facts)
