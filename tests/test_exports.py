"""Exports: SRT / WebVTT / JSON in the shapes Whisper's CLI writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen_audio.formats.srwt import Word, parse_srwt_result
from qwen_audio.infer import Segment, format_timestamp, segments_from_words, to_json, to_srt, to_vtt, write_result

WORDS = [Word("hello", 0.52, 0.88), Word("world", 0.95, 1.4), Word("again", 4.0, 4.5)]


@pytest.mark.parametrize(
    ("seconds", "kwargs", "expected"),
    [
        (0.0, {}, "00:00.000"),
        (1.23, {}, "00:01.230"),
        (3723.5, {}, "01:02:03.500"),
        (1.23, {"always_include_hours": True, "decimal_marker": ","}, "00:00:01,230"),
        (59.9996, {}, "01:00.000"),
        (-0.2, {}, "00:00.000"),
    ],
)
def test_format_timestamp(seconds: float, kwargs: dict, expected: str) -> None:
    assert format_timestamp(seconds, **kwargs) == expected


def test_words_group_into_cues_at_gaps_and_length() -> None:
    segments = segments_from_words(WORDS)
    assert [(s.start, s.end, s.text) for s in segments] == [(0.52, 1.4, "hello world"), (4.0, 4.5, "again")]
    long = [Word("abcdefghij", i, i + 0.5) for i in range(6)]
    assert [len(s.words) for s in segments_from_words(long, max_chars=25, max_gap=10)] == [2, 2, 2]
    assert [len(s.words) for s in segments_from_words(long, max_duration=2.0, max_gap=10)] == [2, 2, 2]


def test_srt_golden() -> None:
    assert to_srt(WORDS) == (
        "1\n00:00:00,520 --> 00:00:01,400\nhello world\n\n"
        "2\n00:00:04,000 --> 00:00:04,500\nagain\n\n"
    )


def test_vtt_golden() -> None:
    assert to_vtt(WORDS) == "WEBVTT\n\n00:00.520 --> 00:01.400\nhello world\n\n00:04.000 --> 00:04.500\nagain\n\n"


def test_arrows_in_text_do_not_break_cues() -> None:
    cue = [Segment(0, 1, "a --> b")]
    assert "a -> b" in to_srt(cue) and "a -> b" in to_vtt(cue)


def test_json_carries_segments_words_and_warnings() -> None:
    result = parse_srwt_result("<|0.52|>hello<|0.88|><|0.95|> world")
    payload = json.loads(to_json(result, language="en"))
    assert payload["text"] == "hello world" and payload["language"] == "en"
    assert payload["segments"][0]["words"][0] == {"word": "hello", "start": 0.52, "end": 0.88}
    assert payload["warnings"] and "world" in payload["warnings"][0]


def test_write_result_by_suffix(tmp_path: Path) -> None:
    assert write_result(WORDS, tmp_path / "out.vtt").read_text(encoding="utf-8").startswith("WEBVTT\n\n")
    assert write_result(WORDS, tmp_path / "out.srt").read_text(encoding="utf-8").startswith("1\n00:00:00,520")
    assert json.loads(write_result(WORDS, tmp_path / "o.txt", "json").read_text())["segments"]
    with pytest.raises(ValueError):
        write_result(WORDS, tmp_path / "out.doc")
