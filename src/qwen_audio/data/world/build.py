"""Build the world-like data from a seed: ``python -m qwen_audio.data.world.build --out DIR``.

Stages (each resumable; rerunning skips what is already on disk):

- ``asterisk``: real prompts → ``DIR/asterisk/<lang>/*.flac``, ``DIR/asterisk/{train,validation}.jsonl``
- ``other_voices``: other speakers' reserved prompts (8 kHz GSM sets, evaluation only) →
  ``DIR/asterisk/other-voices.jsonl``
- ``tuxpaint``: other real voices, Tux Paint's read stamp descriptions (es, fr; evaluation only) →
  ``DIR/tuxpaint/voices.jsonl`` (``world.tuxpaint``)
- ``texts``: cleaned sentences → ``DIR/texts/<lang>/{train,test}.tsv`` and ``DIR/texts/stats.json``
- ``tts``: rendered sentences → ``DIR/tts/audio/...``, ``DIR/tts/{train,test}.jsonl``
- ``sounds``: real instrument notes, drum hits and desktop sounds (+ speech labelled as such) →
  ``DIR/sounds/...``, ``DIR/sounds/{train,test}.jsonl`` (after ``asterisk`` and ``tts``: it labels their speech)
- ``nospeech``: sounds, sequences of them, noise, tones and room tone with the audio language
  ``<|unknown|>`` and an empty transcript → ``DIR/nospeech/...``, ``DIR/nospeech/{train,test}.jsonl``
  (``world.nospeech``; after ``sounds``: each split reads that split's sounds)
- ``chat``: stage-2 conversations over those records → ``DIR/chat/{train,test}.jsonl`` (``world.chat``;
  the test split's from held-out records only)

Everything random is drawn from streams derived from (seed, stage, language, split), so the same
seed rebuilds the same files, and changing one language's count leaves the others alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from qwen_audio.data.chat_manifest import write_chat_manifest
from qwen_audio.data.manifest import ManifestRecord, check_manifest, read_manifest, write_manifest
from qwen_audio.data.synth.splits import derive_seed
from qwen_audio.data.world import asterisk, chat, nospeech, sounds, texts, tuxpaint, voices
from qwen_audio.data.world.render import TtsJob, render_job

STAGES = ("asterisk", "other_voices", "tuxpaint", "texts", "tts", "sounds", "nospeech", "chat")
CHAT_COUNTS = {"train": 6000, "test": 200}
WORKERS = os.cpu_count() or 1  # TTS rendering processes: one per core


@dataclass(frozen=True)
class TtsCounts:
    """Utterances per (language, split): espeak-ng word by word, flite and festival whole."""

    espeak: int
    flite: int = 0
    festival: int = 0

    @property
    def total(self) -> int:
        return self.espeak + self.flite + self.festival


@dataclass(frozen=True)
class BuildConfig:
    out: Path
    seed: int = 0
    stages: tuple[str, ...] = STAGES
    asterisk_languages: tuple[str, ...] = asterisk.LANGUAGES
    sound_splits: tuple[str, ...] = ("train", "test")
    workers: int = WORKERS
    tts: dict[tuple[str, str], TtsCounts] = field(default_factory=lambda: {
        ("en", "train"): TtsCounts(2200, 800, 700), ("en", "test"): TtsCounts(200, 100, 100),
        **{(lang, "train"): TtsCounts(800) for lang in ("de", "es")},
        **{(lang, "test"): TtsCounts(100) for lang in ("de", "es")},
        ("it", "train"): TtsCounts(800, festival=300), ("it", "test"): TtsCounts(100, festival=50),
    })

    def __post_init__(self) -> None:
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; choose from {STAGES}")

    @property
    def tts_languages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(lang for lang, _ in self.tts))


def build_asterisk_stage(config: BuildConfig, log=print) -> dict[str, Counter]:
    folder = config.out / "asterisk"
    by_split = asterisk.build_asterisk(folder, config.asterisk_languages, log=log)
    return _write_splits(folder, by_split, lambda r: r.audio_language, log)


def sentence_sets(config: BuildConfig) -> dict[str, texts.SentenceSet]:
    return {lang: texts.build_sentence_set(lang) for lang in config.tts_languages}


def build_texts_stage(config: BuildConfig, sets: dict[str, texts.SentenceSet], log=print) -> dict:
    stats = {}
    for lang, sset in sets.items():
        folder = config.out / "texts" / lang
        folder.mkdir(parents=True, exist_ok=True)
        for split, items in (("train", sset.train), ("test", sset.test)):
            (folder / f"{split}.tsv").write_text(
                "".join(f"{s}\t{src}\n" for s, src in items), encoding="utf-8")
        token_share, type_share = sset.new_word_rate()
        stats[lang] = {
            "train_sentences": len(sset.train), "test_sentences": len(sset.test),
            "train_sources": sorted({src for _, src in sset.train}),
            "test_sources": sorted({src for _, src in sset.test}),
            "test_new_word_tokens": round(token_share, 4),
            "test_new_word_types": round(type_share, 4),
        }
        log(f"texts {lang}: {len(sset.train)} train / {len(sset.test)} test sentences; "
            f"{token_share:.1%} of test words ({type_share:.1%} of distinct ones) never in train")
    path = config.out / "texts" / "stats.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return stats


def plan_tts(config: BuildConfig, sets: dict[str, texts.SentenceSet]) -> list[TtsJob]:
    """Every TTS job in a fixed order: distinct sentences within a split, split-owned voices."""
    jobs: list[TtsJob] = []
    for (lang, split), counts in config.tts.items():
        pool = sets[lang].train if split == "train" else sets[lang].test
        # Engines take consecutive slices of one shuffle, so raising a later engine's count
        # leaves the earlier jobs (and their voices) as they were.
        chosen = texts.sample(pool, counts.total,
                              derive_seed(config.seed, "world-texts", lang, split))
        rng = random.Random(derive_seed(config.seed, "world-voices", lang, split))
        for i, (sentence, source) in enumerate(chosen):
            if i < counts.espeak:
                engine, voice = "espeak", voices.draw_espeak_voice(lang, split, rng)
            elif i < counts.espeak + counts.flite:
                engine, voice = "flite", voices.draw_flite_voice(split, rng)
            else:
                engine, voice = "festival", voices.draw_festival_voice(lang, split, rng)
            jobs.append(TtsJob(split, f"world-{split}-{lang}-{engine}-{i:05d}", lang, sentence,
                               source, voice, rng.getrandbits(32)))
    return jobs


def build_tts_stage(config: BuildConfig, sets: dict[str, texts.SentenceSet], log=print
                    ) -> dict[str, Counter]:
    folder = config.out / "tts"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = plan_tts(config, sets)
    # Rendered records are appended here as they finish, so an interrupted build resumes.
    progress = folder / f"progress-seed{config.seed}.jsonl"
    done: dict[str, list[ManifestRecord]] = {}
    if progress.exists():
        for line in progress.read_text(encoding="utf-8").splitlines():
            if line.strip():
                obj = json.loads(line)
                done[obj["job"]] = [ManifestRecord.from_dict(r) for r in obj["records"]]
    done = {k: v for k, v in done.items() if v and Path(v[0].audio).exists()}
    pending = [job for job in jobs if job.id not in done]
    started = time.monotonic()
    # Each job is a pure function of itself (render.py), so rendering them in worker processes
    # changes nothing but the time; results come back in plan order and are recorded as they land.
    with open(progress, "a", encoding="utf-8") as f, \
            ProcessPoolExecutor(max(1, min(config.workers, len(pending)))) as pool:
        rendered = pool.map(render_job, pending, [folder] * len(pending), chunksize=4)
        for fresh, (job, records) in enumerate(zip(pending, rendered), start=1):
            done[job.id] = list(records)
            f.write(json.dumps({"job": job.id, "records": [r.to_dict() for r in records]},
                               ensure_ascii=False) + "\n")
            f.flush()
            if fresh % 100 == 0 or fresh == len(pending):
                rate = fresh / max(time.monotonic() - started, 1e-9)
                log(f"tts: {len(jobs) - len(pending) + fresh}/{len(jobs)} jobs ({fresh} rendered now, "
                    f"{rate:.1f}/s, ~{(len(pending) - fresh) / rate / 60:.0f} min left)")
    counts: dict[str, Counter] = {}
    for split in ("train", "test"):
        records = [r for job in jobs if job.split == split for r in done[job.id]]
        path = folder / f"{split}.jsonl"
        write_manifest(records, path)
        check_manifest(path)
        counts[split] = Counter(f"{r.audio_language}/{r.task}/{(r.meta or {}).get('engine')}"
                                for r in records)
        log(f"tts {split}: {len(records)} records → {path}")
        for key, value in sorted(counts[split].items()):
            log(f"  {key}: {value}")
    return counts


def _write_splits(folder: Path, by_split: dict[str, list[ManifestRecord]], kind, log) -> dict[str, Counter]:  # noqa: ANN001
    """Each split's records as ``folder/<split>.jsonl`` (checked), logged and counted by ``kind(record)``."""
    counts: dict[str, Counter] = {}
    for split, records in by_split.items():
        path = folder / f"{split}.jsonl"
        write_manifest(records, path)
        check_manifest(path)
        counts[split] = Counter(kind(r) for r in records)
        log(f"{folder.name} {split}: {len(records)} records {dict(counts[split])} → {path}")
    return counts


def build_sounds_stage(config: BuildConfig, log=print) -> dict[str, Counter]:
    folder = config.out / "sounds"
    speech = [config.out / "asterisk" / "train.jsonl", config.out / "tts" / "train.jsonl"]
    by_split = sounds.build_sounds(folder, config.seed, [m for m in speech if m.is_file()],
                                   splits=config.sound_splits, log=log)
    return _write_splits(folder, by_split, lambda r: f"{(r.meta or {}).get('source')}/{r.task}", log)


def build_nospeech_stage(config: BuildConfig, log=print) -> dict[str, Counter]:  # noqa: ANN001
    folder = config.out / "nospeech"
    counts = {split: n for split, n in nospeech.COUNTS.items() if split in config.sound_splits}
    by_split = nospeech.build_nospeech(folder, config.out / "sounds", config.seed, counts, log)
    return _write_splits(folder, by_split, lambda r: f"{r.task}/{r.audio_language}", log)


def build_chat_stage(config: BuildConfig, log=print) -> dict[str, int]:  # noqa: ANN001
    """Conversations over the built records: train from train manifests, test from held-out ones
    (the splits of ``sound_splits``)."""
    sources = {"train": ("asterisk/train.jsonl", "tts/train.jsonl", "sounds/train.jsonl"),
               "test": ("asterisk/validation.jsonl", "tts/test.jsonl", "sounds/test.jsonl")}
    written = {}
    for split in config.sound_splits:
        names = sources[split]
        records = [r for name in names if (config.out / name).is_file() for r in read_manifest(config.out / name)]
        speech = [r for r in records if r.task == "asr" and r.audio_language in chat.LANGUAGE_NAMES]
        heard = [r for r in records if r.task == "caption" and "speech" not in (r.labels or ())]
        chats = chat.build_chats(speech, heard, CHAT_COUNTS[split], split, derive_seed(config.seed, "chat", split))
        path = config.out / "chat" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_chat_manifest(chats, path)
        written[split] = len(chats)
        log(f"chat {split}: {len(chats)} conversations over {len(speech)} speech and {len(heard)} sound records → {path}")
    return written


def build(config: BuildConfig, log=print) -> dict:
    summary: dict = {}
    if "asterisk" in config.stages:
        summary["asterisk"] = build_asterisk_stage(config, log)
    if "other_voices" in config.stages:
        records = asterisk.build_other_voices(config.out / "asterisk", log=log)
        write_manifest(records, config.out / "asterisk" / "other-voices.jsonl")
        summary["other_voices"] = dict(Counter(r.audio_language for r in records))
    if "tuxpaint" in config.stages:
        records = tuxpaint.build_tuxpaint_voices(config.out / "tuxpaint", log=log)
        write_manifest(records, config.out / "tuxpaint" / "voices.jsonl")
        summary["tuxpaint"] = dict(Counter(r.audio_language for r in records))
    if "texts" in config.stages or "tts" in config.stages:
        sets = sentence_sets(config)
        summary["texts"] = build_texts_stage(config, sets, log)
        if "tts" in config.stages:
            summary["tts"] = build_tts_stage(config, sets, log)
    if "sounds" in config.stages:
        summary["sounds"] = build_sounds_stage(config, log)
    if "nospeech" in config.stages:
        summary["nospeech"] = build_nospeech_stage(config, log)
    if "chat" in config.stages:
        summary["chat"] = build_chat_stage(config, log)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (outside git)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every TTS count (e.g. 0.01 for a smoke run)")
    parser.add_argument("--workers", type=int, default=WORKERS, help="TTS rendering processes")
    args = parser.parse_args(argv)
    default = BuildConfig(args.out)
    tts = {key: TtsCounts(round(c.espeak * args.scale), round(c.flite * args.scale),
                          round(c.festival * args.scale))
           for key, c in default.tts.items()}
    config = BuildConfig(args.out.resolve(), args.seed, tuple(args.stages.split(",")), tts=tts,
                         workers=args.workers)
    build(config, log=lambda message: print(message, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
