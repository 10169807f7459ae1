"""Chat manifests: one conversation per JSONL line, in the ecosystem's usual ``messages`` shape.

Example line (audio paths relative to the manifest's folder, absolute, or URLs)::

    {"id": "c1", "messages": [
      {"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": [{"type": "audio", "audio": "a.wav"},
                                   {"type": "text", "text": "what does the speaker say?"}]},
      {"role": "assistant", "content": "Hello."}]}

Rules checked (Qwen-Audio-Chat's stage-2 data, paper §3.3): a system message only first; at
least one user and the last message from the assistant (the training target); audio only in
user turns (the model reads audio, never writes it); text-only conversations are fine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_audio.data.jsonl import (
    ManifestProblem,
    ManifestValidationError,
    iter_json_lines,
    open_text,
    validate_lines,
)
from qwen_audio.formats.chatml import ROLES, AudioItem, ChatTurn, turn_from_dict, turn_to_dict


@dataclass(frozen=True)
class ChatRecord:
    """One conversation of ChatML turns (``AudioItem`` paths as written: relative to the
    manifest's folder, absolute, or URLs). Build with `from_dict` to get validation with every
    problem listed."""

    id: str
    messages: tuple[ChatTurn, ...]
    meta: Mapping[str, Any] | None = field(default=None, hash=False, compare=True)

    @property
    def audios(self) -> tuple[AudioItem, ...]:
        """All audios in conversation order: the `Audio 1:`, `Audio 2:` … numbering of ChatML."""
        return tuple(a for m in self.messages for a in m.audios)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; a message holding one text item is written as a plain string."""
        out: dict[str, Any] = {"id": self.id, "messages": [turn_to_dict(m) for m in self.messages]}
        if self.meta is not None:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ChatRecord:
        problems = [ManifestProblem(0, f, m) for f, m in chat_problems(obj)]
        if problems:
            raise ManifestValidationError(problems)
        return _build(obj)


def _build(obj: Mapping[str, Any]) -> ChatRecord:
    """A validated line → record (``chat_problems`` found nothing)."""
    return ChatRecord(obj["id"], tuple(turn_from_dict(m) for m in obj["messages"]), obj.get("meta"))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _item_problems(where: str, role: str, item: Any) -> list[tuple[str | None, str]]:
    if not isinstance(item, Mapping):
        return [(where, "must be an object with a 'type'")]
    kind = item.get("type")
    if kind == "text":
        extra = set(item) - {"type", "text"}
        out = [(where, f"unknown key(s) {sorted(extra)}")] if extra else []
        if not isinstance(item.get("text"), str):
            out.append((where + ".text", "must be a string"))
        return out
    if kind == "audio":
        out = []
        extra = set(item) - {"type", "audio", "offset", "duration"}
        if extra:
            out.append((where, f"unknown key(s) {sorted(extra)}"))
        if not isinstance(item.get("audio"), str) or not item["audio"].strip():
            out.append((where + ".audio", "must be a non-empty path or URL"))
        if "offset" in item and (not _number(item["offset"]) or item["offset"] < 0):
            out.append((where + ".offset", "must be a number of seconds >= 0"))
        if item.get("duration") is not None and (
            not _number(item["duration"]) or item["duration"] <= 0
        ):
            out.append((where + ".duration", "must be a number of seconds > 0"))
        if role != "user":
            out.append((where, f"audio is only allowed in user messages, not {role!r}"))
        return out
    return [(where + ".type", f"must be 'text' or 'audio', got {kind!r}")]


def chat_problems(obj: Any) -> list[tuple[str | None, str]]:
    """Every (field, message) problem of one parsed conversation line."""
    if not isinstance(obj, Mapping):
        return [(None, f"expected a JSON object, got {type(obj).__name__}")]
    out: list[tuple[str | None, str]] = []
    for key in sorted(set(obj) - {"id", "messages", "meta"}):
        out.append((key, "unknown field (put extra values under 'meta')"))
    if not isinstance(obj.get("id"), str) or not obj["id"].strip():
        out.append(("id", "required, must be a non-empty string"))
    if obj.get("meta") is not None and not isinstance(obj["meta"], Mapping):
        out.append(("meta", "must be a JSON object"))
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return out + [("messages", "required, must be a non-empty list")]
    roles = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            out.append((where, "must be an object with role and content"))
            continue
        role = m.get("role")
        roles.append(role)
        if set(m) - {"role", "content"}:
            out.append((where, f"unknown key(s) {sorted(set(m) - {'role', 'content'})}"))
        if role not in ROLES:
            out.append((where + ".role", f"must be one of {', '.join(ROLES)}, got {role!r}"))
        elif role == "system" and i != 0:
            out.append((where + ".role", "a system message may only come first"))
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not content:
            out.append((where + ".content", "must be a string or a non-empty list of items"))
            continue
        for j, item in enumerate(content):
            out += _item_problems(f"{where}.content[{j}]", str(role), item)
    if "user" not in roles:
        out.append(("messages", "needs at least one user message"))
    if roles and roles[-1] != "assistant":
        out.append(("messages", "the last message must be the assistant's (the training target)"))
    return out


def read_chat_manifest(path: str | Path) -> Iterator[ChatRecord]:
    """Stream conversations; stops at the first bad line with all of that line's problems."""
    for number, obj, error in iter_json_lines(path):
        problems = [(None, error)] if error else chat_problems(obj)
        if problems:
            raise ManifestValidationError(
                [ManifestProblem(number, f, m, str(path)) for f, m in problems]
            )
        yield _build(obj)


def validate_chat_manifest(path: str | Path) -> list[ManifestProblem]:
    """Every problem of every conversation line (and duplicate ids)."""
    return validate_lines(path, chat_problems)


def write_chat_manifest(records: Iterable[ChatRecord], path: str | Path) -> int:
    """Write conversations as JSONL; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open_text(path, "w") as f:
        for record in records:
            f.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count
