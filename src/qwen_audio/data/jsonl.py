"""JSONL plumbing shared by task and chat manifests: streaming (``.gz`` too), per-line problems.

Both manifest kinds build on this module and neither on the other, so ``validate_manifest`` can
hand a chat file to the chat checker without an import circle.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from qwen_audio.errors import ManifestError


@dataclass(frozen=True)
class ManifestProblem:
    """One problem of one line: where (line 1-based, field) and what to fix."""

    line: int
    field: str | None
    message: str
    path: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.path else f"line {self.line}"
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


class ManifestValidationError(ManifestError):
    """A manifest has problems; ``.problems`` lists every one of them."""

    def __init__(self, problems: list[ManifestProblem], limit: int = 20) -> None:
        self.problems = list(problems)
        shown = "\n  ".join(str(p) for p in self.problems[:limit])
        more = f"\n  … and {len(self.problems) - limit} more" if len(self.problems) > limit else ""
        super().__init__(
            f"{len(self.problems)} manifest problem(s); fix them and re-run "
            f"`validate_manifest`:\n  {shown}{more}"
        )


def open_text(path: str | Path, mode: str = "r") -> IO[str]:
    """Open a manifest for text I/O; ``.gz`` files are (de)compressed transparently."""
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any | None, str | None]]:
    """Stream (line number, parsed object or None, JSON error or None); blank lines skipped."""
    with open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as e:
                yield number, None, f"not valid JSON: {e.msg} at column {e.colno}"


def validate_lines(
    path: str | Path, problems_of: Callable[[Any], list[tuple[str | None, str]]]
) -> list[ManifestProblem]:
    """Run a per-line checker over a JSONL file, adding duplicate ids; streams the file."""
    problems: list[ManifestProblem] = []
    seen: dict[str, int] = {}
    for number, obj, error in iter_json_lines(path):
        found = [(None, error)] if error else problems_of(obj)
        problems += [ManifestProblem(number, f, m, str(path)) for f, m in found]
        record_id = obj.get("id") if isinstance(obj, Mapping) else None
        if isinstance(record_id, str):
            if record_id in seen:
                problems.append(ManifestProblem(
                    number, "id", f"duplicate id {record_id!r} (first on line {seen[record_id]})",
                    str(path)))
            else:
                seen[record_id] = number
    return problems
