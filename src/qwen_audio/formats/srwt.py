"""SRWT (speech recognition with word-level timestamps): targets, references and parsing, once.

Format (spec §tag sequence): each word sits between its start and end time token,
``<|0.52|>hello<|0.88|><|0.95|> world<|1.40|>``; the prompt already ends with ``<|0.00|>``.
:func:`build_srwt_target` writes training targets, :func:`srwt_reference_text` the references
the official scorer compares against (a shared token where one word ends as the next starts).
:func:`parse_srwt_result` follows the official scorer's reading (split on time tokens, pair the
times around each text piece) but never raises: generated text can be truncated, unordered or
otherwise broken. :func:`official_segments` is that reading without repairs, which AAS needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qwen_audio.formats.timestamps import (  # noqa: F401  (quantize_time, time_token: re-exported)
    MAX_TIME,
    TAG,
    TIME_TOKEN,
    Word,
    parse_time_token,
    quantize_time,
    time_token,
    time_token_text,
)

from qwen_audio.formats.tokens import ENDOFTEXT, IM_END

# The generation stops here; anything after is not part of the answer.
_STOP_TOKENS = (ENDOFTEXT, IM_END)


@dataclass(frozen=True)
class SrwtResult:
    """A parsed SRWT output: ``malformed`` is True when any repair was needed (see ``warnings``)."""

    text: str
    words: tuple[Word, ...]
    malformed: bool = False
    warnings: tuple[str, ...] = ()


def build_srwt_target(words: Sequence[Word], *, separator: str = " ") -> str:
    """Word alignments → SRWT target text (what follows the prompt's ``<|0.00|>``).

    ``separator`` goes before every word but the first (``""`` for Chinese/Japanese). Times are
    quantised to 10 ms and clipped to 0–30 s; an end before its start is raised to the start.
    """
    pieces = []
    for number, word in enumerate(words):
        start = quantize_time(word.start)
        end = max(quantize_time(word.end), start)
        text = word.word.strip()
        pieces.append(f"{time_token_text(start)}{separator if number else ''}{text}{time_token_text(end)}")
    return "".join(pieces)


def parse_srwt_result(text: str, *, prompt_time: float = 0.0) -> SrwtResult:
    """Parse SRWT text (decoded with special tokens kept) into words; never raises.

    A word's start is the time token just before it, its end the first time token after it, so
    both ``<|a|>w<|b|><|b|>v<|c|>`` and the compact ``<|a|>w<|b|>v<|c|>`` parse. Repairs, each
    noted in ``warnings``: a first word without a start time starts at ``prompt_time`` (the
    prompt's ``<|0.00|>``, so that one is not flagged); a later one at the previous end; a missing
    end becomes the start; times out of 0–30 s are clipped; times running backwards are clamped
    so that words never overlap or invert; text after ``<|endoftext|>`` is dropped.
    """
    warnings: list[str] = []
    for stop in _STOP_TOKENS:
        if stop in text:
            head, _, tail = text.partition(stop)
            if tail.strip():
                warnings.append(f"ignored text after {stop}: {tail[:40]!r}")
            text = head
    items: list[float | str] = []  # times (float) and text pieces (str), in order
    position = 0
    for match in TAG.finditer(text):
        if match.start() > position:
            items.append(text[position : match.start()])
        seconds = parse_time_token(match.group(0))
        if seconds is not None:
            if seconds > MAX_TIME:
                warnings.append(f"time {seconds:g} s beyond {MAX_TIME:g} s clipped")
            items.append(min(seconds, MAX_TIME))
        position = match.end()  # other tags (<|en|>, <|transcribe|>…) carry no word text
    if position < len(text):
        items.append(text[position:])
    items = _merge_text(items)

    words: list[Word] = []
    previous_end = prompt_time
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            continue
        before = items[index - 1] if index > 0 else None
        after = items[index + 1] if index + 1 < len(items) else None
        if isinstance(before, float):
            start = before
        else:
            start = previous_end
            if words:
                warnings.append(f"no start time for {item.strip()!r}")
        if start < previous_end and words:
            warnings.append(f"start of {item.strip()!r} ({start:g} s) before the previous end ({previous_end:g} s)")
            start = previous_end
        if isinstance(after, float):
            end = after
        else:
            warnings.append(f"no end time for {item.strip()!r}")
            end = start
        if end < start:
            warnings.append(f"end of {item.strip()!r} ({end:g} s) before its start ({start:g} s)")
            end = start
        words.append(Word(item.strip(), start, end))
        previous_end = end
    plain = "".join(item for item in items if isinstance(item, str))
    return SrwtResult(" ".join(plain.split()) if plain.strip() else "", tuple(words), bool(warnings), tuple(warnings))


def srwt_reference_text(words: Sequence[Word], *, separator: str = "") -> str:
    """Word alignments in the decoded SRWT format the official scorer reads (times to 0.01 s): a
    leading ``<|0.00|>`` when speech starts later (the prompt's token), one shared token where a
    word ends as the next starts, a pair of tokens around each pause. ``separator`` goes before
    every word but the first, as in decoded output (``" "`` for spaced languages): the official
    scorer compares words with their leading space."""
    parts: list[str] = []
    last: str | None = "0.00" if words and words[0].start > 0.005 else None
    if last:
        parts.append("<|0.00|>")
    for number, w in enumerate(words):
        start, end = f"{w.start:.2f}", f"{w.end:.2f}"
        if start != last:
            parts.append(f"<|{start}|>")
        parts.append(f"{separator if number else ''}{w.word}<|{end}|>")
        last = end
    return "".join(parts)


def official_segments(text: str) -> list[Word] | None:
    """The official scorer's reading (``eval_audio/evaluate_srwt.py``): every piece between two
    consecutive time tokens is a segment, ``""`` (or ``<|sil|>``) for a silence; None when the text
    holds no time token. Unlike :func:`parse_srwt_result` it repairs nothing: AAS is defined on it."""
    times = [float(t) for t in TIME_TOKEN.findall(text)]
    if not times:
        return None
    pieces = TIME_TOKEN.split(text)[2:-1:2]  # split keeps captured times at odd positions
    return [Word(piece.strip(), times[i], times[i + 1]) for i, piece in enumerate(pieces)]


def parse_srwt_ids(ids: Sequence[int], tokenizer: object) -> SrwtResult:
    """Parse generated ids: text between time tokens is decoded as one piece, so words split over
    several BPE tokens (or a UTF-8 character split over two tokens) come out whole."""
    return parse_srwt_result(tokenizer.decode(list(ids), skip_special_tokens=False))  # type: ignore[attr-defined]


def parse_srwt(text: str) -> list[Word]:
    """SRWT text → words with start/end seconds (best effort; see :func:`parse_srwt_result`)."""
    return list(parse_srwt_result(text).words)


def _merge_text(items: list[float | str]) -> list[float | str]:
    """Join text pieces that a non-time tag had separated (``hel<|en|>lo`` → ``hello``)."""
    merged: list[float | str] = []
    for item in items:
        if isinstance(item, str) and merged and isinstance(merged[-1], str):
            merged[-1] += item
        else:
            merged.append(item)
    return merged
