"""Plan a split: draw every sentence, voice, note, event and scene as jobs, from the seed alone.

Planning is cheap and runs in the parent process; only rendering is parallel. Each draw uses a
random stream derived from (seed, split, family), so adding items to one family does not shift
another.
"""

from __future__ import annotations

import random

from qwen_audio.data.synth import lexicon as lx
from qwen_audio.data.synth import music, sounds, splits
from qwen_audio.data.synth.config import CorpusConfig
from qwen_audio.data.synth.render import EventJob, Job, MelodyJob, NotesJob, SceneJob, SpeechJob
from qwen_audio.data.synth.sentences import Sentence, number_sequence, sample_sentence
from qwen_audio.data.synth.speech import ESPEAK_VOICES, SpeechSpec, Voice

NOTES_PER_JOB = 16  # notes rendered by one fluidsynth call
PENTATONIC = (0, 2, 4, 7, 9)


def _draw_in_split(draw, split: str, seen: set[str], tries: int = 400) -> Sentence:
    """Draw until the sentence's text hashes into ``split`` (new text preferred)."""
    fallback = None
    for _ in range(tries):
        sentence = draw()
        if splits.split_of_text(sentence.text) != split:
            continue
        if sentence.text not in seen:
            seen.add(sentence.text)
            return sentence
        fallback = fallback or sentence
    if fallback is None:
        raise RuntimeError(f"could not draw a sentence for split {split!r}")
    return fallback


def _voice(language: str, split: str, rng: random.Random) -> Voice:
    gender = rng.choice(("female", "male"))
    variant = rng.choice(splits.voice_variants(split)[gender])
    return Voice(language, rng.choice(ESPEAK_VOICES[language]), variant, gender,
                 rate=rng.randint(135, 195), pitch=rng.randint(38, 62))


def speech_jobs(config: CorpusConfig, split: str) -> list[Job]:
    preset, jobs = config.preset, []
    for language in lx.LANGUAGES:
        if language not in config.languages:
            continue
        rng = random.Random(splits.derive_seed(config.seed, split, "speech", language))
        factor = preset.english_factor if language == "en" else 1
        seen: set[str] = set()
        for i in range(config.count(preset.speech_per_language * factor, split)):
            sentence = _draw_in_split(lambda: sample_sentence(language, rng), split, seen)
            spec = SpeechSpec(sentence, _voice(language, split, rng), rng.getrandbits(32),
                              config.augment)
            jobs.append(SpeechJob(split, f"{split}-speech-{language}-{i:05d}", spec, "sentence"))
        for i in range(config.count(preset.numbers_per_language, split)):
            def draw() -> Sentence:
                numbers = [rng.randint(1, 20) for _ in range(rng.randint(1, 3))]
                return number_sequence(language, numbers)
            sentence = _draw_in_split(draw, split, seen)
            spec = SpeechSpec(sentence, _voice(language, split, rng), rng.getrandbits(32),
                              config.augment)
            jobs.append(SpeechJob(split, f"{split}-numbers-{language}-{i:05d}", spec, "numbers"))
    return jobs


def music_jobs(config: CorpusConfig, split: str) -> list[Job]:
    preset = config.preset
    rng = random.Random(splits.derive_seed(config.seed, split, "music"))
    programs = splits.family_programs(split)
    notes: list[tuple[int, int, int]] = []
    for family in music.FAMILIES:
        for _ in range(config.count(preset.notes_per_family, split)):
            program = rng.choice(programs[family])
            notes.append((program, rng.randint(*music.pitch_range(program)),
                          rng.choice(music.VELOCITIES)))
    jobs: list[Job] = []
    for start in range(0, len(notes), NOTES_PER_JOB):
        batch = tuple(notes[start: start + NOTES_PER_JOB])
        ids = tuple(f"{split}-note-{start + k:05d}" for k in range(len(batch)))
        jobs.append(NotesJob(split, ids, batch))
    for i in range(config.count(preset.melodies, split)):
        family = music.FAMILIES[i % len(music.FAMILIES)]
        program = rng.choice(programs[family])
        low, high = music.pitch_range(program)
        scale = [p for p in range(low, high + 1) if (p - low) % 12 in PENTATONIC]
        k = rng.randrange(len(scale) - 4)
        pitches = [scale[k]]
        for _ in range(rng.randint(3, 7)):
            k = min(len(scale) - 1, max(0, k + rng.choice((-2, -1, 1, 1, 2))))
            pitches.append(scale[k])
        jobs.append(MelodyJob(split, f"{split}-melody-{i:05d}", program,
                              tuple(pitches), rng.choice(music.VELOCITIES[1:]),
                              round(rng.uniform(0.18, 0.6), 2)))
    return jobs


def sound_jobs(config: CorpusConfig, split: str) -> list[Job]:
    preset = config.preset
    rng = random.Random(splits.derive_seed(config.seed, split, "sounds"))
    n_sources = (preset.event_sources_per_type if split == "train" else
                 max(1, round(preset.event_sources_per_type * preset.held_out_fraction)))
    sources = splits.event_source_ids(split, n_sources)
    jobs: list[Job] = []
    for event_type in sounds.EVENT_TYPES:
        for i in range(config.count(preset.events_per_type, split)):
            jobs.append(EventJob(split, f"{split}-event-{event_type}-{i:05d}", event_type,
                                 rng.choice(sources), rng.getrandbits(32)))
    table = tuple((t, tuple(sources)) for t in sounds.EVENT_TYPES)
    for scene in sounds.SCENE_NAMES:
        for i in range(config.count(preset.scenes_per_class, split)):
            jobs.append(SceneJob(split, f"{split}-scene-{scene}-{i:05d}", scene, table,
                                 rng.getrandbits(32)))
    return jobs


def plan_split(config: CorpusConfig, split: str) -> list[Job]:
    """Every job of ``split`` for the asked families, in a fixed order."""
    planners = (("speech", speech_jobs), ("music", music_jobs), ("sounds", sound_jobs))
    return [job for family, plan in planners if family in config.families
            for job in plan(config, split)]
