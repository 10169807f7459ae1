"""Word-timestamp results → JSON, SRT and WebVTT, in the shapes Whisper's CLI writes.

SRT: numbered cues, ``00:00:01,230 --> 00:00:02,000`` (hours always, comma). WebVTT: a ``WEBVTT``
header, ``00:01.230 --> 00:02.000`` (hours only past one hour, dot). In both, ``-->`` inside a
cue's text becomes ``->`` so that players do not read it as a timing line. Words are grouped
into readable cues first (:func:`segments_from_words`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Union

from qwen_audio.errors import ConfigError
from qwen_audio.formats.srwt import SrwtResult, Word


@dataclass(frozen=True)
class Segment:
    """A subtitle cue: consecutive words, times in seconds."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


def format_timestamp(seconds: float, *, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """``3723.5`` → ``01:02:03.500``; rounded to the millisecond, negative times clamp to 0."""
    millis = round(max(seconds, 0.0) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    hours_part = f"{hours:02d}:" if always_include_hours or hours else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def segments_from_words(
    words: Sequence[Word],
    *,
    separator: str = " ",
    max_chars: int = 42,
    max_duration: float = 7.0,
    max_gap: float = 1.0,
) -> list[Segment]:
    """Group words into cues: a new cue starts when the text would pass ``max_chars`` (the usual
    subtitle line length), the cue would last past ``max_duration`` s, or silence exceeds ``max_gap``."""
    segments: list[Segment] = []
    current: list[Word] = []

    def flush() -> None:
        if current:
            text = separator.join(w.word for w in current)
            segments.append(Segment(current[0].start, max(w.end for w in current), text, tuple(current)))
            current.clear()

    for word in words:
        if current:
            length = len(separator.join(w.word for w in current)) + len(separator) + len(word.word)
            if (
                length > max_chars
                or word.end - current[0].start > max_duration
                or word.start - current[-1].end > max_gap
            ):
                flush()
        current.append(word)
    flush()
    return segments


Cues = Union[SrwtResult, Sequence[Segment], Sequence[Word]]


def _segments(result: Cues) -> list[Segment]:
    items = list(result.words) if isinstance(result, SrwtResult) else list(result)
    if items and isinstance(items[0], Word):
        return segments_from_words(items)  # type: ignore[arg-type]
    return items  # type: ignore[return-value]


def _cue_text(text: str) -> str:
    return text.strip().replace("-->", "->")


def to_srt(result: Cues) -> str:
    """SubRip text: ``N``, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text, blank line."""
    stamp = lambda t: format_timestamp(t, always_include_hours=True, decimal_marker=",")  # noqa: E731
    return "".join(
        f"{i}\n{stamp(s.start)} --> {stamp(s.end)}\n{_cue_text(s.text)}\n\n"
        for i, s in enumerate(_segments(result), start=1)
    )


def to_vtt(result: Cues) -> str:
    """WebVTT text: ``WEBVTT`` header, then ``MM:SS.mmm --> MM:SS.mmm`` cues."""
    cues = "".join(
        f"{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{_cue_text(s.text)}\n\n"
        for s in _segments(result)
    )
    return "WEBVTT\n\n" + cues


def to_json(result: Cues, *, language: str | None = None, text: str | None = None) -> str:
    """Whisper-like JSON: ``{"text", "segments": [{"id", "start", "end", "text", "words"}], "language"}``."""
    segments = _segments(result)
    if text is None:
        text = result.text if isinstance(result, SrwtResult) else " ".join(s.text for s in segments)
    payload = {
        "text": text,
        "segments": [
            {"id": i, "start": s.start, "end": s.end, "text": s.text, "words": [asdict(w) for w in s.words]}
            for i, s in enumerate(segments)
        ],
        "language": language,
    }
    if isinstance(result, SrwtResult) and result.malformed:
        payload["warnings"] = list(result.warnings)
    return json.dumps(payload, ensure_ascii=False, indent=2)


def write_result(result: Cues, path: str | os.PathLike[str], fmt: Literal["srt", "vtt", "json"] | None = None) -> Path:
    """Write ``result`` in ``fmt`` (default: from the file suffix) as UTF-8."""
    file = Path(path)
    fmt = fmt or file.suffix.lstrip(".").lower()  # type: ignore[assignment]
    writers = {"srt": to_srt, "vtt": to_vtt, "json": to_json}
    if fmt not in writers:
        raise ConfigError(f"unknown subtitle format {fmt!r}: use srt, vtt or json")
    file.write_text(writers[fmt](result), encoding="utf-8")
    return file
