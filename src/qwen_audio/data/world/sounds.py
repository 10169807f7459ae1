"""Real instrument and sound recordings: the ``sounds`` stage of the world-like data.

Every source is a Debian package of sampled real instruments or recorded sounds:

- ``fluid-soundfont-gm`` (FluidR3 GM, MIT): single notes per General-MIDI program, rendered by
  fluidsynth → note analysis (NSynth family, pitch, velocity), instrument, sound event, caption. **Train.**
- ``timgm6mb-soundfont`` (TimGM6mb, GPL-2): the same kinds of notes from a different sample library
  → **test** (held out by library: other recordings of each instrument).
- The same two soundfonts' General-MIDI sound effects (programs 121-127: breathing, sea waves, a bird,
  a telephone, a helicopter, applause, a gunshot), recorded sounds played at several keys and levels
  → sound event, caption; FluidR3's **train**, TimGM6mb's **test** (each library its own recording).
- ``hydrogen-drumkits`` (GPL-2 / CC-BY / CC-BY-SA / CC0 per kit): drum hits, labelled from each
  kit's ``drumkit.xml`` instrument names → sound event, caption. Kits whose name's md5 hex digest
  starts with c, d, e or f are **test** (held out by kit: other drums, rooms and microphones).
- ``sound-theme-freedesktop`` (CC-BY-SA-3.0 / GPL-2): desktop sounds (a bell, a phone, a camera
  shutter, spoken channel names, chimes) → sound event, caption. Train only (35 files).
- Speech from the Asterisk and TTS training manifests, labelled ``speech`` so the sound tasks
  also know a voice when they hear one (no new audio: the records point at the existing files).

Captions are short templates that name the source ("a snare drum is hit once"): what the issue
asks of a caption here is that it names what sounds, not prose; a caption record's ``labels`` hold
the source's name, which the suite looks for in the model's caption. A note's or a drum's sound
event is one label (the instrument family, the drum), so accuracy has one right answer.
"""

from __future__ import annotations

import hashlib
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from qwen_audio.data.manifest import ManifestRecord, read_manifest
from qwen_audio.data.synth import music

SAMPLE_RATE = 16_000
TRAIN_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TEST_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
DRUMKITS = Path("/usr/share/hydrogen/data/drumkits")
DESKTOP_SOUNDS = Path("/usr/share/sounds/freedesktop/stereo")
MAX_SECONDS = 5.0
SOUNDFONT_PACKAGES = {TRAIN_SOUNDFONT: "fluid-soundfont-gm", TEST_SOUNDFONT: "timgm6mb-soundfont"}
LICENCES = {
    "fluid-soundfont-gm": "MIT", "timgm6mb-soundfont": "GPL-2",
    "hydrogen-drumkits": "GPL-2 / CC-BY-3.0 / CC-BY-SA-3.0 / CC0 (per kit, see the package's copyright)",
    "sound-theme-freedesktop": "CC-BY-SA-3.0 / GPL-2 (per file, see the package's copyright)",
}

# Drum-kit instrument names → sound label, first match wins (names are free text: "Closed HH",
# "Kick Long", "Snare Rimshot", "Ride Bell"...); names that match nothing are skipped.
DRUM_LABELS: tuple[tuple[str, str], ...] = (
    (r"kick|\bbd\b|bass ?drum", "kick drum"),
    (r"clap", "hand clap"),
    (r"rim|stick|side ?stick", "rimshot"),
    (r"snare|\bsd\b", "snare drum"),
    (r"h\.?h|hat", "hi-hat"),
    (r"crash|ride|cymbal|china|splash", "cymbal"),
    (r"tom", "tom-tom drum"),
    (r"cowbell", "cowbell"),
    (r"tamb", "tambourine"),
    (r"shak|maraca|cabasa", "shaker"),
    (r"conga|bongo|djemb|tabla|darbuk|timbal", "hand drum"),
)
DRUM_CAPTIONS = ("a {label} is hit once", "someone strikes a {label}", "a single {label} hit")

# Desktop sound file stem → (labels, caption); stems not listed are skipped.
DESKTOP: dict[str, tuple[tuple[str, ...], str]] = {
    "alarm-clock-elapsed": (("alarm clock", "beep"), "an alarm clock beeps"),
    "bell": (("bell",), "a bell rings"),
    "camera-shutter": (("camera shutter", "click"), "a camera shutter clicks"),
    "screen-capture": (("camera shutter", "click"), "a camera shutter clicks"),
    "phone-incoming-call": (("telephone", "ringing"), "a telephone rings"),
    "phone-outgoing-busy": (("telephone", "busy signal"), "a telephone busy signal beeps"),
    "phone-outgoing-calling": (("telephone", "ringing"), "a telephone line rings"),
    "complete": (("chime",), "a short electronic chime"),
    "message": (("chime",), "a short electronic chime"),
    "message-new-instant": (("chime",), "a short electronic chime"),
    "dialog-information": (("chime",), "a short electronic chime"),
    "dialog-warning": (("beep",), "an electronic warning beep"),
    "dialog-error": (("beep",), "an electronic error beep"),
    "suspend-error": (("beep",), "an electronic error beep"),
    "audio-volume-change": (("beep",), "a short electronic beep"),
    "device-added": (("chime",), "a short electronic chime"),
    "device-removed": (("chime",), "a short electronic chime"),
    "window-attention": (("chime",), "a short electronic chime"),
    "trash-empty": (("rustling", "paper"), "paper rustles and crumples"),
    **{f"audio-channel-{side}": (("speech",), f"a voice says {side.replace('-', ' ')}")
       for side in ("front-left", "front-right", "front-center", "rear-left", "rear-right", "rear-center",
                    "side-left", "side-right")},
}
# General-MIDI sound-effect program → (labels, captions). 120 (guitar fret noise) is left out: a faint
# squeak in both fonts that names nothing a listener would.
SOUND_EFFECTS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {  # captions say the label (names_source)
    121: (("breathing",), ("someone is breathing", "a person breathing out slowly")),
    122: (("ocean waves",), ("ocean waves wash onto a beach", "the ocean waves roll onto the shore")),
    123: (("bird",), ("a bird chirps", "a small bird sings")),
    124: (("telephone",), ("a telephone rings", "an old telephone bell rings")),
    125: (("helicopter",), ("a helicopter flies overhead", "the rotor of a helicopter whirs")),
    126: (("applause",), ("applause from a crowd", "an audience breaks into applause")),
    127: (("gunshot",), ("a gunshot rings out", "a single gunshot")),
}
SOUND_EFFECT_KEYS = (36, 42, 48, 54, 60, 66, 72)  # a key replays the recording at another rate
SOUND_EFFECT_MIN_PEAK = 0.02  # a key or level where a font's effect is all but silent teaches nothing
LANGUAGE_NAMES = {"en": "English", "de": "German", "es": "Spanish", "fr": "French", "it": "Italian",
                  "ja": "Japanese", "ko": "Korean", "zh": "Chinese"}


def is_test_kit(name: str) -> bool:
    """Hydrogen kits held out of training: the md5 hex digest of the kit's name starts with c-f."""
    return hashlib.md5(name.encode()).hexdigest()[0] in "cdef"


def drum_label(instrument: str) -> str | None:
    name = instrument.lower()
    for pattern, label in DRUM_LABELS:
        if re.search(pattern, name):
            return label
    return None


def load_mono(path: Path, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """A file as float32 16 kHz mono, cut to ``max_seconds``."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
    return mono[: int(max_seconds * SAMPLE_RATE)]


def _write(target: Path, audio: np.ndarray) -> float:
    target.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.99:  # some samples are normalised to full scale; keep FLAC's 16 bits from clipping
        audio = audio * (0.99 / peak)
    tmp = target.with_suffix(".tmp.flac")
    sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16")
    tmp.replace(target)
    return round(len(audio) / SAMPLE_RATE, 3)


def _loudness(velocity: int) -> str:
    return "soft" if velocity <= 40 else "loud" if velocity >= 100 else "medium"


def note_records(item_id: str, audio: Path, seconds: float, program: int, pitch: int, velocity: int,
                 meta: dict, rng: random.Random) -> list[ManifestRecord]:
    family = music.program_family(program)
    player = family.replace("_", " ")
    meta = {**meta, "program": program, "family": family, "pitch": pitch, "velocity": velocity,
            "note": music.note_name(pitch)}
    common = dict(audio=str(audio), duration=seconds, audio_language="unknown", text_language="en", meta=meta)
    style = rng.choice(("plain", "plain", "clotho", "audiocaps"))
    caption = f"a single {_loudness(velocity)} note played on a {player} instrument"
    return [
        ManifestRecord(id=f"{item_id}-note", task="note_analysis", text=family, labels=(family,), **common),
        ManifestRecord(id=f"{item_id}-instrument", task="instrument", text=family, labels=(family,), **common),
        ManifestRecord(id=f"{item_id}-pitch", task="pitch", text=str(pitch), labels=(str(pitch),), **common),
        ManifestRecord(id=f"{item_id}-event", task="sound_event", text=player,
                       labels=(player,), **common),
        ManifestRecord(id=f"{item_id}-caption", task="caption", text=caption, labels=(player,),
                       **{**common, "meta": {**meta, "caption_style": style}}),
    ]


def _render_missing(targets: list[Path], notes: list[tuple[int, int, int]], soundfont: Path) -> None:
    """Render (program, pitch, velocity) ``notes`` to ``targets`` in one fluidsynth call, unless all exist."""
    if not all(t.exists() for t in targets):
        for target, clip in zip(targets, music.render_notes(notes, soundfont=soundfont)):
            _write(target, clip)


def build_notes(out_dir: Path, soundfont: Path, split: str, per_family: int, seed: int,
                log: Callable[[str], None] = print) -> list[ManifestRecord]:
    """``per_family`` notes of every NSynth family: random program, pitch in range, NSynth velocity."""
    rng = random.Random(f"{seed}-notes-{split}")
    package = SOUNDFONT_PACKAGES[soundfont]
    plan = []
    for family, programs in music.FAMILY_PROGRAMS.items():
        for i in range(per_family):
            program = rng.choice(programs)
            low, high = music.pitch_range(program)
            plan.append((f"{split}-{family}-{i:04d}", program, rng.randint(low, high), rng.choice(music.VELOCITIES)))
    records: list[ManifestRecord] = []
    for start in range(0, len(plan), 100):  # one fluidsynth call per 100 notes (loading the font dominates)
        chunk = plan[start: start + 100]
        targets = [out_dir / "notes" / split / f"{item_id}.flac" for item_id, *_ in chunk]
        _render_missing(targets, [(p, k, v) for _, p, k, v in chunk], soundfont)
        for target, (item_id, program, pitch, velocity) in zip(targets, chunk):
            seconds = round(sf.info(str(target)).frames / SAMPLE_RATE, 3)
            meta = {"source": package, "license": LICENCES[package], "split": split}
            records += note_records(f"note-{item_id}", target.resolve(), seconds, program, pitch, velocity, meta, rng)
        log(f"sounds: {split} notes {min(start + 100, len(plan))}/{len(plan)} ({soundfont.name})")
    return records


def build_sound_effects(out_dir: Path, soundfont: Path, split: str, per_effect: int, seed: int,
                        log: Callable[[str], None] = print) -> list[ManifestRecord]:
    """``per_effect`` takes of each GM sound effect (``SOUND_EFFECTS``) at a random key and level."""
    rng = random.Random(f"{seed}-effects-{split}")
    package = SOUNDFONT_PACKAGES[soundfont]
    plan = [(f"{split}-{program}-{i:03d}", program, rng.choice(SOUND_EFFECT_KEYS), rng.choice(music.VELOCITIES))
            for program in SOUND_EFFECTS for i in range(per_effect)]
    targets = [out_dir / "effects" / split / f"{item_id}.flac" for item_id, *_ in plan]
    _render_missing(targets, [(p, k, v) for _, p, k, v in plan], soundfont)
    records = []
    for target, (item_id, program, key, velocity) in zip(targets, plan):
        audio, _ = sf.read(str(target), dtype="float32")
        if float(np.abs(audio).max(initial=0.0)) < SOUND_EFFECT_MIN_PEAK:
            continue
        labels, captions = SOUND_EFFECTS[program]
        meta = {"source": package, "license": LICENCES[package], "split": split, "program": program,
                "key": key, "velocity": velocity}
        common = dict(audio=str(target.resolve()), duration=round(len(audio) / SAMPLE_RATE, 3),
                      audio_language="unknown", text_language="en")
        records += [
            ManifestRecord(id=f"effect-{item_id}-event", task="sound_event", text=", ".join(labels),
                           labels=labels, meta=meta, **common),
            ManifestRecord(id=f"effect-{item_id}-caption", task="caption", text=rng.choice(captions), labels=labels[:1],
                           meta={**meta, "caption_style": rng.choice(("plain", "clotho", "audiocaps"))}, **common),
        ]
    log(f"sounds: {split} effects {len(records) // 2} of {len(plan)} ({soundfont.name}; silent takes skipped)")
    return records


def drum_hits(root: Path = DRUMKITS) -> list[tuple[str, str, str, Path]]:
    """(kit, instrument name, label, sample file) for every sample (every velocity layer) of every
    labelled instrument of every kit."""
    hits = []
    for xml in sorted(root.glob("*/drumkit.xml")):
        tree = ET.parse(xml).getroot()
        strip = lambda tag: tag.rsplit("}", 1)[-1]  # noqa: E731  (kits with and without a namespace)
        kit = next((e.text for e in tree if strip(e.tag) == "name"), xml.parent.name) or xml.parent.name
        for instrument in (e for e in tree.iter() if strip(e.tag) == "instrument"):
            name = next((e.text or "" for e in instrument if strip(e.tag) == "name"), "")
            files = [e.text for e in instrument.iter() if strip(e.tag) == "filename" and e.text]
            label = drum_label(name)
            for file in dict.fromkeys(files) if label else ():
                if (xml.parent / file).is_file():
                    hits.append((kit, name, label, xml.parent / file))
    return hits


def build_drums(out_dir: Path, seed: int, log: Callable[[str], None] = print) -> dict[str, list[ManifestRecord]]:
    rng = random.Random(f"{seed}-drums")
    by_split: dict[str, list[ManifestRecord]] = {"train": [], "test": []}
    for kit, name, label, source in drum_hits():
        split = "test" if is_test_kit(kit) else "train"
        slug = re.sub(r"[^a-z0-9]+", "-", f"{kit}-{name}-{source.stem}".lower()).strip("-")
        target = out_dir / "drums" / split / f"{slug}.flac"
        if target.exists():
            seconds = round(sf.info(str(target)).frames / SAMPLE_RATE, 3)
        else:
            seconds = _write(target, load_mono(source))
        if seconds < 0.05:
            continue
        meta = {"source": "hydrogen-drumkits", "kit": kit, "instrument": name, "file": source.name,
                "license": LICENCES["hydrogen-drumkits"], "split": split}
        common = dict(audio=str(target.resolve()), duration=seconds, audio_language="unknown", text_language="en")
        style = rng.choice(("plain", "plain", "clotho", "audiocaps"))
        by_split[split] += [
            ManifestRecord(id=f"drum-{slug}-event", task="sound_event", text=label,
                           labels=(label,), meta=meta, **common),
            ManifestRecord(id=f"drum-{slug}-caption", task="caption", text=rng.choice(DRUM_CAPTIONS).format(label=label),
                           labels=(label,), meta={**meta, "caption_style": style}, **common),
        ]
    log(f"sounds: drums train {len(by_split['train']) // 2} hits, test {len(by_split['test']) // 2} hits")
    return by_split


def build_desktop(out_dir: Path, seed: int, log: Callable[[str], None] = print) -> list[ManifestRecord]:
    rng = random.Random(f"{seed}-desktop")
    records = []
    for path in sorted(DESKTOP_SOUNDS.glob("*.oga")):
        if path.stem not in DESKTOP:
            continue
        labels, caption = DESKTOP[path.stem]
        target = out_dir / "desktop" / f"{path.stem}.flac"
        seconds = round(sf.info(str(target)).frames / SAMPLE_RATE, 3) if target.exists() else _write(target, load_mono(path))
        meta = {"source": "sound-theme-freedesktop", "file": path.name,
                "license": LICENCES["sound-theme-freedesktop"], "split": "train"}
        common = dict(audio=str(target.resolve()), duration=seconds, audio_language="unknown", text_language="en")
        records += [
            ManifestRecord(id=f"desktop-{path.stem}-event", task="sound_event", text=", ".join(labels),
                           labels=labels, meta=meta, **common),
            ManifestRecord(id=f"desktop-{path.stem}-caption", task="caption", text=caption, labels=labels[:1],
                           meta={**meta, "caption_style": rng.choice(("plain", "clotho", "audiocaps"))}, **common),
        ]
    log(f"sounds: desktop {len(records) // 2} sounds")
    return records


def speech_records(manifests: list[Path], per_manifest: int, seed: int) -> list[ManifestRecord]:
    """Sound-event and caption records for existing training speech: ``speech`` and its language."""
    rng = random.Random(f"{seed}-speech")
    records = []
    for manifest in manifests:
        rows = [r for r in read_manifest(manifest) if r.task == "asr" and r.audio_language in LANGUAGE_NAMES]
        for row in rng.sample(rows, min(per_manifest, len(rows))):
            language = LANGUAGE_NAMES[row.audio_language]
            meta = {**(row.meta or {}), "split": "train"}
            common = dict(audio=row.resolve_audio(manifest.parent), offset=row.offset, duration=row.duration,
                          audio_language="unknown", text_language="en")
            records += [
                ManifestRecord(id=f"{row.id}-event", task="sound_event", text="speech", labels=("speech",),
                               meta=meta, **common),
                ManifestRecord(id=f"{row.id}-caption", task="caption", text=f"a person speaks in {language}",
                               labels=("speech",), meta={**meta, "caption_style": rng.choice(("plain", "clotho", "audiocaps"))}, **common),
            ]
    return records


def build_sounds(out_dir: Path, seed: int, speech_manifests: list[Path], notes_per_family: tuple[int, int] = (200, 30),
                 effects_per_program: tuple[int, int] = (60, 12),
                 splits: tuple[str, ...] = ("train", "test"), log: Callable[[str], None] = print
                 ) -> dict[str, list[ManifestRecord]]:
    """Render/convert every source of ``splits`` under ``out_dir`` and return split → records."""
    for path in (TRAIN_SOUNDFONT, TEST_SOUNDFONT, DRUMKITS, DESKTOP_SOUNDS):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: apt-get install fluidsynth fluid-soundfont-gm "
                                    "timgm6mb-soundfont hydrogen-drumkits sound-theme-freedesktop")
    drums = build_drums(out_dir, seed, log)
    out = {}
    if "train" in splits:
        out["train"] = [*build_notes(out_dir, TRAIN_SOUNDFONT, "train", notes_per_family[0], seed, log),
                        *build_sound_effects(out_dir, TRAIN_SOUNDFONT, "train", effects_per_program[0], seed, log),
                        *drums["train"], *build_desktop(out_dir, seed, log), *speech_records(speech_manifests, 300, seed)]
    if "test" in splits:
        out["test"] = [*build_notes(out_dir, TEST_SOUNDFONT, "test", notes_per_family[1], seed, log),
                       *build_sound_effects(out_dir, TEST_SOUNDFONT, "test", effects_per_program[1], seed, log),
                       *drums["test"]]
    return out
