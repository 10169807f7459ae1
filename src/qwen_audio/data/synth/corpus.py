"""make_corpus: plan every split, render the jobs on N processes, write manifests and corpus.json.

Layout written under ``out_dir``::

    corpus.json                       counts, seed, tool versions, held-out voices/programs
    <split>/speech.jsonl              asr, srwt, language_id, gender, aqa (sentence utterances)
    <split>/numbers.jsonl             asr (+ itn), s2tt (spoken number lists → digits / en / zh)
    <split>/music.jsonl               note_analysis, instrument, pitch, velocity, music_caption
    <split>/sounds.jsonl              sound_event, caption, aqa (single events)
    <split>/scenes.jsonl              scene, caption, aqa (background + events)
    <split>/chat.jsonl                stage-2 conversations (messages)
    <split>/audio/<family>/<id>.wav   16 kHz mono int16

Audio paths in a manifest are relative to its split folder.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import qwen_audio
from qwen_audio.data.chat_manifest import write_chat_manifest
from qwen_audio.data.manifest import write_manifest
from qwen_audio.data.synth import music, sounds, speech, splits
from qwen_audio.data.synth.chat import build_chats
from qwen_audio.data.synth.config import SPLITS, SYSTEM_PACKAGES, CorpusConfig, CorpusSummary
from qwen_audio.data.synth.plan import plan_split
from qwen_audio.data.synth.render import Job, RenderedItem, render_job
from qwen_audio.data.synth.speech import SynthesisError

MANIFESTS = ("speech", "numbers", "music", "sounds", "scenes")


def _job_weight(job: Job) -> int:
    """Rough relative cost, so the progress bar moves evenly."""
    return len(job.ids) if hasattr(job, "ids") else 1


def _render_all(jobs: list[Job], out_dir: Path, workers: int, progress: bool
                ) -> list[list[RenderedItem]]:
    """Render jobs in order (results keep job order whatever the worker count)."""
    task = partial(render_job, out_dir=out_dir)
    columns = (TextColumn("make-corpus"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        handle = bar.add_task("render", total=sum(_job_weight(j) for j in jobs))
        results: list[list[RenderedItem]] = []
        if workers == 1:
            for job in jobs:
                results.append(task(job))
                bar.advance(handle, _job_weight(job))
            return results
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for job, result in zip(jobs, pool.imap(task, jobs, chunksize=2)):
                results.append(result)
                bar.advance(handle, _job_weight(job))
    return results


def _versions() -> dict[str, Any]:
    soundfont = music.find_soundfont()
    return {
        "qwen_audio": qwen_audio.__version__ if hasattr(qwen_audio, "__version__") else "unknown",
        "espeak_ng": speech.espeak_version(),
        "fluidsynth": music.fluidsynth_version(),
        "soundfont": None if soundfont is None else
        {"path": str(soundfont), "bytes": soundfont.stat().st_size},
    }


def held_out_material() -> dict[str, Any]:
    """What each split may use: recorded in corpus.json and checked by the tests."""
    return {split: {"voice_variants": splits.voice_variants(split),
                    "programs": splits.family_programs(split)} for split in SPLITS}


def missing_system_tools() -> list[str]:
    """Debian packages whose programs are absent (empty when the generator can run)."""
    missing = []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng")
    if shutil.which("fluidsynth") is None:
        missing.append("fluidsynth")
    if music.find_soundfont() is None:
        missing.append("timgm6mb-soundfont")
    return missing


def make_corpus(out_dir: Path, config: CorpusConfig, progress: bool = True) -> CorpusSummary:
    """Generate the whole corpus under ``out_dir`` (deterministic for ``config.seed``)."""
    missing = missing_system_tools()
    if missing:
        raise SynthesisError(f"the corpus generator needs {', '.join(missing)}: "
                             f"`apt-get install {' '.join(SYSTEM_PACKAGES)}`")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = {split: plan_split(config, split) for split in config.splits}
    all_jobs = [job for split in config.splits for job in plans[split]]
    rendered = _render_all(all_jobs, out_dir, config.workers, progress)
    by_split: dict[str, list[RenderedItem]] = {split: [] for split in config.splits}
    for job, items in zip(all_jobs, rendered):
        by_split[job.split] += items
    counts: dict[str, dict[str, dict[str, int]]] = {}
    files: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for split, items in by_split.items():
        split_dir = out_dir / split
        counts[split] = {}
        for name in MANIFESTS:
            records = [r for item in items if item.manifest == name for r in item.records]
            write_manifest(records, split_dir / f"{name}.jsonl")
            counts[split][name] = dict(sorted(Counter(r.task for r in records).items()))
        n_chats = config.count(config.preset.chats, split) if "chat" in config.families else 0
        chats = build_chats([item.facts for item in items], n_chats, split,
                            splits.derive_seed(config.seed, split, "chat"))
        write_chat_manifest(chats, split_dir / "chat.jsonl")
        counts[split]["chat"] = {"chat": len(chats)}
        files[split] = len(items)
        seconds[split] = round(sum(item.seconds for item in items), 1)
    info = {
        "seed": config.seed, "size": config.size, "scale": config.scale,
        "families": list(config.families), "languages": list(config.languages),
        "workers": config.workers,
        "augment": config.augment, "sample_rate": 16_000,
        "versions": _versions(), "splits": held_out_material(),
        "event_types": list(sounds.EVENT_TYPES), "scenes": list(sounds.SCENE_NAMES),
        "event_source_ids": {s: f"[{i * splits.EVENT_SOURCE_STRIDE}, "
                                f"{(i + 1) * splits.EVENT_SOURCE_STRIDE})"
                             for i, s in enumerate(SPLITS)},
    }
    summary = CorpusSummary(out_dir, counts, files, seconds,
                            round(time.perf_counter() - started, 1), info)
    (out_dir / "corpus.json").write_text(json.dumps(summary.to_dict(), indent=2,
                                                    ensure_ascii=False) + "\n")
    return summary
