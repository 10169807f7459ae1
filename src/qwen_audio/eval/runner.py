"""Run a benchmark: official prompts, batched greedy decoding, resumable predictions, a report.

Predictions are appended to ``<out>/<benchmark>.predictions.jsonl`` one example at a time, so an
interrupted evaluation resumes where it stopped and the raw outputs stay inspectable.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from qwen_audio.audio import SAMPLE_RATE, load_audio
from qwen_audio.data.examples import record_prompt
from qwen_audio.data.manifest import ManifestRecord, tag_task
from qwen_audio.eval.benchmarks import Benchmark, BenchmarkScore, score_benchmark
from qwen_audio.eval.caption_metrics import CaptionResult
from qwen_audio.eval.scoring import Figure
from qwen_audio.formats.languages import LANGUAGES, word_separator
from qwen_audio.formats.srwt import srwt_reference_text
from qwen_audio.formats.tags import (
    TASKS,
    AnswerResult,
    LabelResult,
    LanguageResult,
    NoteResult,
    Output,
    Task,
    TextResult,
    parse_output,
    strip_tags,
)
from qwen_audio.infer.engine import GenerationOptions

CAPTION_TOKENS = 30  # the official caption evaluation's max_new_tokens
DEFAULT_TOKENS = 256


def prediction_text(task: Task, raw: str) -> str:
    """The model's decoded output → the string the metric compares with the reference."""
    if TASKS[task].output is Output.WORDS:
        return raw  # the SRWT scorer reads the time tokens itself
    result = parse_output(task, raw)
    if isinstance(result, NoteResult):
        if task is Task.NOTE_INSTRUMENT:  # answered as the bare family name, no <|instrument|> tag
            return result.instrument or strip_tags(raw)
        value = {Task.NOTE_PITCH: result.pitch, Task.NOTE_VELOCITY: result.velocity}.get(task, result.instrument)
        return "" if value is None else str(value)
    if isinstance(result, LabelResult):
        return ", ".join(result.labels)
    if isinstance(result, AnswerResult):
        return result.answer
    if isinstance(result, LanguageResult):
        return result.language or ""
    if isinstance(result, TextResult):
        return result.text
    return raw


@dataclass(frozen=True)
class EvalSettings:
    batch_size: int = 8
    limit: int | None = None  # a subset of this many examples spread over the data (spread_sample)
    progress: bool = True
    max_new_tokens: int | None = None  # None: the official limits (30 for captions, 256 otherwise)


def spread_sample(items: list[Any], limit: int | None, seed: int = 0) -> list[Any]:
    """At most ``limit`` items spread over the whole list, in their order: one random item from
    each of ``limit`` equal strata. Datasets are often sorted (by language, speaker, class), so the
    first N would be biased; and many are periodic (a generator cycling through kinds), which a
    fixed stride aliases to a few kinds. Seeded, so every run scores the same items."""
    if not limit or len(items) <= limit:
        return items
    rng = random.Random(seed)
    bounds = [i * len(items) // limit for i in range(limit + 1)]
    return [items[rng.randrange(lo, hi)] for lo, hi in zip(bounds, bounds[1:])]


def _load_done(path: Path) -> dict[str, str]:
    done: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that example is simply run again
            done[row["id"]] = row["prediction"]
    return done


def run_benchmark(
    api: Any,
    benchmark: Benchmark,
    records: Sequence[ManifestRecord],
    out_dir: Path,
    settings: EvalSettings = EvalSettings(),
    *,
    root: Path = Path("."),
) -> BenchmarkScore:
    """Decode every record (skipping those already in the predictions file) and score them.

    ``root`` resolves relative audio paths (a manifest's folder)."""
    records = spread_sample(list(records), settings.limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = out_dir / f"{benchmark.name}.predictions.jsonl"
    done = _load_done(predictions_path)
    pending = [r for r in records if r.id not in done]
    columns = (TextColumn(benchmark.name), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not settings.progress, transient=True) as progress, open(
        predictions_path, "a", encoding="utf-8"
    ) as sink:
        bar = progress.add_task(benchmark.name, total=len(records), completed=len(records) - len(pending))
        for start in range(0, len(pending), settings.batch_size):
            batch = pending[start : start + settings.batch_size]
            tasks = [Task(tag_task(r)) for r in batch]
            tokens = settings.max_new_tokens or (CAPTION_TOKENS if benchmark.metric == "cider_d" else DEFAULT_TOKENS)
            waves = _load(batch, root)
            options = GenerationOptions(max_new_tokens=tokens)
            as_users = _as_transcribed(api, batch, tasks)  # transcribed as `qwen-audio transcribe` does
            detected = _as_detected(api, tasks)  # the language as `transcribe` picks it
            whole = [i for i in range(len(batch)) if i not in as_users and i not in detected]
            raws = dict(zip(whole, (o.text for o in api.generate([record_prompt(batch[i], "audio") for i in whole],
                                                                 [[waves[i]] for i in whole], options)))) if whole else {}
            if detected:
                codes = api.detect_language([(waves[i], SAMPLE_RATE) for i in detected])
                raws.update((i, f"<|{code}|>") for i, code in zip(detected, codes))
            for language, timed in dict.fromkeys((batch[i].audio_language, tasks[i] is Task.SRWT) for i in as_users):
                members = [i for i in as_users if (batch[i].audio_language, tasks[i] is Task.SRWT) == (language, timed)]
                results = api.transcribe_waves([waves[i] for i in members], language, timed,
                                               replace(options, num_beams=api.speech_beams))
                for i, result in zip(members, results):  # word times in the decoded SRWT format the scorer reads
                    raws[i] = srwt_reference_text(result.words, separator=word_separator(language)) if timed else result.text
            for record, task, raw in zip(batch, tasks, (raws[i] for i in range(len(batch)))):
                done[record.id] = prediction_text(task, raw)
                sink.write(json.dumps({"id": record.id, "raw": raw, "prediction": done[record.id]},
                                      ensure_ascii=False) + "\n")
            sink.flush()
            progress.advance(bar, len(batch))
    return score_benchmark(benchmark, records, [done[r.id] for r in records])


def _as_transcribed(api: Any, batch: Sequence[ManifestRecord], tasks: Sequence[Task]) -> list[int]:
    """The speech-recognition records (with or without word times) to score through the API's
    ``transcribe``: those of a model that learned single utterances (its ``utterance_seconds``), whose
    users get long audio in pieces, short audio under a length-bound budget, a loop decoded again and
    word times placed on that transcript. Scored as users get them; other models keep the benchmark's
    one decode with its official prompt."""
    if not _learned_utterances(api):
        return []
    return [i for i, (record, task) in enumerate(zip(batch, tasks))
            if task in (Task.ASR, Task.SRWT) and record.audio_language in LANGUAGES]


def _as_detected(api: Any, tasks: Sequence[Task]) -> list[int]:
    """The language-ID records to score through the API's ``detect_language`` (what ``transcribe``
    without a language uses), for the same models as :func:`_as_transcribed`: the default model
    checks an unsure language tag by decoding the audio in each likely language, which the benchmark's
    one decode of the LID prompt would not show."""
    if not _learned_utterances(api):
        return []
    return [i for i, task in enumerate(tasks) if task is Task.LANGUAGE_ID]


def _learned_utterances(api: Any) -> bool:
    """A model that learned single utterances (its ``utterance_seconds``): users reach it only through the
    API's own speech path, so the suite scores it there."""
    return getattr(api, "utterance_plan", None) is not None


def _load(records: Sequence[ManifestRecord], root: Path) -> list[np.ndarray]:
    """Decode a batch's audios in parallel threads (each with its own offset/duration)."""
    def one(record: ManifestRecord) -> np.ndarray:
        return load_audio(record.resolve_audio(root), offset=record.offset, duration=record.duration)

    with ThreadPoolExecutor(max_workers=min(4, len(records))) as pool:
        return list(pool.map(one, records))


def _figure_row(figure: Figure | None) -> dict[str, Any] | None:
    if figure is None:
        return None
    value = None if figure.value is None else round(figure.value, 4)
    return {"value": value, "method": figure.method, "unavailable": figure.unavailable}


def figure_text(figure: Figure | None) -> str:
    """A figure for a table cell: its value, or why it is unavailable."""
    if figure is None:
        return "—"
    return f"{figure.value:.4f}" if figure.value is not None else "unavailable"


def report_rows(scores: Sequence[BenchmarkScore]) -> list[dict[str, Any]]:
    """One row per benchmark: both figures with their methods; ``ours`` is the headline one."""
    rows = []
    for s in scores:
        row = {"benchmark": s.benchmark, "metric": s.metric, "scorer": s.scorer,
               "ours": None if s.value is None else round(s.value, 4),
               "official": _figure_row(s.official), "lenient": _figure_row(s.lenient),
               "paper": s.paper_value, "examples": s.num_examples}
        if s.metric == "cider_d":  # the paper's SPICE and SPIDEr come with the official CIDEr-D
            caption = s.official.details
            if isinstance(caption, CaptionResult) and caption.spice is not None:
                row["spice_spider"] = f"SPICE {caption.spice:.4f}, SPIDEr {caption.spider:.4f}"
            else:
                reason = caption.note if isinstance(caption, CaptionResult) else s.official.unavailable
                row["spice_spider"] = f"unavailable: {reason}"
        rows.append(row)
    return rows


def write_report(scores: Sequence[BenchmarkScore], out_dir: Path, title: str = "qwen-audio evaluation") -> Path:
    """``report.json`` and ``report.md`` in ``out_dir``: the official figure beside the paper's,
    the lenient one in a column of its own, and which scorer computed what."""
    rows = report_rows(scores)
    (out_dir / "report.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"# {title}", "",
             "| benchmark | metric | official | lenient (not comparable with the paper) | paper | examples |",
             "|---|---|---|---|---|---|"]
    for s, row in zip(scores, rows):
        paper = "—" if row["paper"] is None else f"{row['paper']}"
        official, lenient = figure_text(s.official), figure_text(s.lenient)
        if s.scorer == "lenient":
            lenient += " (headline)"
        lines.append(f"| {row['benchmark']} | {row['metric']} | {official} | {lenient} | {paper} | {row['examples']} |")
    lines += ["", "## Scorers", ""]
    for s, row in zip(scores, rows):
        for figure in (s.official, s.lenient):
            if figure is not None:
                why = f" — unavailable: {figure.unavailable}" if figure.unavailable else ""
                lines.append(f"- {s.benchmark}, {figure.scorer}: {figure.method}{why}")
        if "spice_spider" in row:
            lines.append(f"- {s.benchmark}, SPICE/SPIDEr: {row['spice_spider']}")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
