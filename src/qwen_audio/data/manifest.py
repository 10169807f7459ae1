"""Task manifests: one training/evaluation example per JSONL line (lhotse-style plain records).

A line names an audio (path relative to the manifest's folder, absolute path, or URL), an optional
slice of it, the task (a name of the task registry), the languages, the target text and the
optional extras some tasks need (word alignments for SRWT, question/choices for AQA, labels for
classification). Example::

    {"id": "1272-128104-0000", "audio": "dev-clean/1272/128104/1272-128104-0000.flac",
     "task": "asr", "audio_language": "en", "text_language": "en", "text": "MISTER QUILTER ...",
     "duration": 5.86}

Keys holding ``None`` are omitted on write; unknown keys are problems (they catch typos such as
``"duraton"``); anything dataset-specific belongs in ``meta``. The validator collects every
problem of every line, so one run fixes a whole file. Chat conversations live in
``qwen_audio.data.chat_manifest``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_audio.data.chat_manifest import chat_problems
from qwen_audio.data.jsonl import (  # noqa: F401  (re-exported)
    ManifestProblem,
    ManifestValidationError,
    iter_json_lines,
    open_text,
    validate_lines,
)
from qwen_audio.errors import ManifestError
from qwen_audio.formats.languages import AUDIO_LANGUAGES, TEXT_LANGUAGES
from qwen_audio.formats.tags import CAPTION_STYLES as CAPTION_TASK_STYLES
from qwen_audio.formats.tags import TASK_ALIASES, TASK_NAMES
from qwen_audio.formats.timestamps import Word  # noqa: F401  (records' word alignments)

# Task names come from the tag registry (`qwen_audio.formats.tags`): its tasks, their dataset-level
# aliases and the tasks without a prompt. Extend with `register_task` for new tasks.
KNOWN_TASKS: set[str] = set(TASK_NAMES)
# Manifest task → the tag registry's task where the names differ; captions pick their style from
# ``meta["caption_style"]`` (see `tag_task`).
TAG_TASKS: dict[str, str] = {name: task.value for name, task in TASK_ALIASES.items()}
CAPTION_STYLES: dict[str, str] = {style: task.value for style, task in CAPTION_TASK_STYLES.items()}
# The tag languages: the eight of the tokenizer, "unknown" (non-speech) and "zh_tr" (traditional
# Chinese, a text language). Extend with `register_language`.
KNOWN_LANGUAGES: set[str] = {*AUDIO_LANGUAGES, *TEXT_LANGUAGES}
URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "hf://", "file://")


def register_task(name: str) -> None:
    """Accept a new task name in manifests (call before reading/validating)."""
    if not name or not name.replace("_", "").isalnum():
        raise ManifestError(f"task name {name!r} must be a non-empty [a-z0-9_] identifier")
    KNOWN_TASKS.add(name)


def tag_task(record: ManifestRecord) -> str:
    """The tag-registry task name that builds this record's prompt."""
    if record.task == "caption":
        style = (record.meta or {}).get("caption_style")
        return CAPTION_STYLES.get(style, "caption_plain")
    return TAG_TASKS.get(record.task, record.task)


def register_language(code: str) -> None:
    """Accept a new language code (e.g. a CoVoST 2 language the tokenizer has no token for)."""
    if not code or not code.replace("_", "").isalpha():
        raise ManifestError(f"language code {code!r} must be letters, e.g. 'ca' or 'zh_tr'")
    KNOWN_LANGUAGES.add(code)


@dataclass(frozen=True)
class ManifestRecord:
    """One example. Construction validates (raises ManifestValidationError listing all problems)."""

    id: str
    audio: str
    task: str
    text: str = ""
    offset: float = 0.0
    duration: float | None = None
    audio_language: str | None = None
    text_language: str | None = None
    words: tuple[Word, ...] | None = None
    question: str | None = None
    choices: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    meta: Mapping[str, Any] | None = field(default=None, hash=False, compare=True)

    def __post_init__(self) -> None:
        problems = [ManifestProblem(0, f, m) for f, m in _record_problems(self.to_dict())]
        if problems:
            raise ManifestValidationError(problems)

    @property
    def is_url(self) -> bool:
        return self.audio.startswith(URL_SCHEMES)

    def resolve_audio(self, manifest_dir: str | Path) -> str:
        """The audio as an absolute path (relative paths are relative to the manifest) or URL."""
        if self.is_url or Path(self.audio).is_absolute():
            return self.audio
        return str((Path(manifest_dir) / self.audio).resolve())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``None`` fields and the default offset are left out."""
        out: dict[str, Any] = {"id": self.id, "audio": self.audio, "task": self.task}
        if self.offset:
            out["offset"] = self.offset
        for name in ("duration", "audio_language", "text_language"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["text"] = self.text
        if self.words is not None:
            out["words"] = [
                {"word": w.word, "start": w.start, "end": w.end} if isinstance(w, Word) else w
                for w in self.words
            ]
        for name in ("question", "choices", "labels", "meta"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ManifestRecord:
        """Build from a parsed JSON line; raises ManifestValidationError with every problem."""
        problems = [ManifestProblem(0, f, m) for f, m in _record_problems(obj)]
        if problems:
            raise ManifestValidationError(problems)
        return cls(**_record_kwargs(obj))


_FIELDS = {
    "id", "audio", "task", "text", "offset", "duration", "audio_language", "text_language",
    "words", "question", "choices", "labels", "meta",
}


def _record_kwargs(obj: Mapping[str, Any]) -> dict[str, Any]:
    kw = dict(obj)
    if kw.get("words") is not None:
        kw["words"] = tuple(
            w if isinstance(w, Word) else Word(w["word"], float(w["start"]), float(w["end"]))
            for w in kw["words"]
        )
    for name in ("choices", "labels"):
        if kw.get(name) is not None:
            kw[name] = tuple(kw[name])
    if "offset" in kw:
        kw["offset"] = float(kw["offset"])
    if kw.get("duration") is not None:
        kw["duration"] = float(kw["duration"])
    return kw


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _record_problems(obj: Any) -> list[tuple[str | None, str]]:
    """Every (field, message) problem of one parsed line; empty when the line is valid."""
    if not isinstance(obj, Mapping):
        return [(None, f"expected a JSON object, got {type(obj).__name__}")]
    out: list[tuple[str | None, str]] = []
    for key in sorted(set(obj) - _FIELDS):
        out.append((key, "unknown field (put dataset-specific values under 'meta')"))
    for name in ("id", "audio", "task"):
        value = obj.get(name)
        if not isinstance(value, str) or not value.strip():
            out.append((name, "required, must be a non-empty string"))
    task = obj.get("task")
    if isinstance(task, str) and task.strip() and task not in KNOWN_TASKS:
        out.append(("task", f"unknown task {task!r}; known: {', '.join(sorted(KNOWN_TASKS))} "
                            "(or call register_task)"))
    if not isinstance(obj.get("text", ""), str):
        out.append(("text", "must be a string"))
    offset = obj.get("offset", 0.0)
    if not _is_number(offset) or offset < 0:
        out.append(("offset", f"must be a number of seconds >= 0, got {offset!r}"))
    duration = obj.get("duration")
    if duration is not None and (not _is_number(duration) or duration <= 0):
        out.append(("duration", f"must be a number of seconds > 0, got {duration!r}"))
    for name in ("audio_language", "text_language"):
        lang = obj.get(name)
        if lang is not None and lang not in KNOWN_LANGUAGES:
            out.append((name, f"unknown language {lang!r}; known: "
                              f"{', '.join(sorted(KNOWN_LANGUAGES))} (or call register_language)"))
    if obj.get("question") is not None and not isinstance(obj["question"], str):
        out.append(("question", "must be a string"))
    for name in ("choices", "labels"):
        value = obj.get(name)
        if value is not None and (
            not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            out.append((name, "must be a non-empty list of non-empty strings"))
    if obj.get("meta") is not None and not isinstance(obj["meta"], Mapping):
        out.append(("meta", "must be a JSON object"))
    out += _words_problems(obj.get("words"), duration if _is_number(duration) else None)
    if task == "srwt" and not obj.get("words"):
        out.append(("words", "task 'srwt' needs word alignments"))
    if task == "aqa" and not obj.get("question"):
        out.append(("question", "task 'aqa' needs a question"))
    return out


def _words_problems(words: Any, duration: float | None) -> list[tuple[str | None, str]]:
    if words is None:
        return []
    if not isinstance(words, (list, tuple)):
        return [("words", "must be a list of {word, start, end} objects")]
    out: list[tuple[str | None, str]] = []
    previous_end = 0.0
    for i, w in enumerate(words):
        where = f"words[{i}]"
        if isinstance(w, Word):
            w = {"word": w.word, "start": w.start, "end": w.end}
        if not isinstance(w, Mapping) or set(w) != {"word", "start", "end"}:
            out.append((where, "must be an object with exactly word, start, end"))
            continue
        start, end = w["start"], w["end"]
        if not isinstance(w["word"], str) or not w["word"].strip():
            out.append((where, "word must be a non-empty string"))
        if not (_is_number(start) and _is_number(end)):
            out.append((where, "start and end must be numbers of seconds"))
            continue
        if start < 0 or end < start:
            out.append((where, f"needs 0 <= start <= end, got start={start} end={end}"))
        elif start < previous_end - 1e-6:
            out.append((where, f"starts at {start} before the previous word ends ({previous_end})"))
        if duration is not None and end > duration + 1e-3:
            out.append((where, f"ends at {end}, after the record's duration {duration}"))
        previous_end = max(previous_end, end)
    return out


# ---------------------------------------------------------------- I/O


def read_manifest(path: str | Path) -> Iterator[ManifestRecord]:
    """Stream the records of a manifest, never holding the file in memory.

    Stops at the first bad line with a ManifestValidationError naming that line's every problem;
    run `validate_manifest` to see all lines' problems at once.
    """
    for number, obj, error in iter_json_lines(path):
        problems = [(None, error)] if error else _record_problems(obj)
        if problems:
            raise ManifestValidationError(
                [ManifestProblem(number, f, m, str(path)) for f, m in problems]
            )
        yield ManifestRecord(**_record_kwargs(obj))


def validate_manifest(path: str | Path) -> list[ManifestProblem]:
    """Every problem of every line (and duplicate ids); an empty list means the file is valid.

    A file whose first object has ``messages`` is checked as a chat manifest.
    """
    first = next((obj for _, obj, _ in iter_json_lines(path) if obj is not None), None)
    if isinstance(first, Mapping) and "messages" in first:
        return validate_lines(path, chat_problems)
    return validate_lines(path, _record_problems)


def check_manifest(path: str | Path) -> None:
    """Raise ManifestValidationError listing every problem of the file, if it has any."""
    problems = validate_manifest(path)
    if problems:
        raise ManifestValidationError(problems)


def write_manifest(
    records: Iterable[ManifestRecord], path: str | Path, *, relative_paths: bool = False
) -> int:
    """Write records as JSONL (streaming; ``.gz`` compresses); returns how many were written.

    ``relative_paths`` rewrites absolute audio paths relative to the manifest's folder, so a
    corpus and its manifest can move together.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    count = 0
    with open_text(path, "w") as f:
        for record in records:
            obj = record.to_dict()
            if relative_paths and not record.is_url and os.path.isabs(record.audio):
                obj["audio"] = os.path.relpath(record.audio, folder)
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            count += 1
    return count
