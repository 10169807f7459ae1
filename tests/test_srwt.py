"""SRWT: time quantisation, target construction, and parsing of well-formed and broken output."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_audio.formats.srwt import (
    SrwtResult,
    Word,
    build_srwt_target,
    parse_srwt,
    parse_srwt_ids,
    parse_srwt_result,
    parse_time_token,
    quantize_time,
    time_token,
)
from qwen_audio.tokenizer import QwenAudioTokenizer

SPEC_OUTPUT = "<|0.00|><|0.52|>hello<|0.88|><|0.95|> world<|1.40|>"
SPEC_WORDS = [Word("hello", 0.52, 0.88), Word("world", 0.95, 1.40)]


@pytest.mark.parametrize(
    ("seconds", "index"),
    [(0.0, 0), (0.52, 52), (1.234, 123), (1.236, 124), (29.999, 3000), (30.0, 3000), (45.0, 3000), (-1.0, 0),
     (math.nan, 0), (math.inf, 3000), (-math.inf, 0)],
)
def test_quantize_time(seconds: float, index: int) -> None:
    assert quantize_time(seconds) == index


def test_time_token_text() -> None:
    assert [time_token(0), time_token(0.52), time_token(12.3456), time_token(99)] == [
        "<|0.00|>", "<|0.52|>", "<|12.35|>", "<|30.00|>"
    ]
    assert parse_time_token("<|12.35|>") == 12.35 and parse_time_token("<|en|>") is None


def test_build_target_reproduces_the_spec_example() -> None:
    target = build_srwt_target(SPEC_WORDS)
    assert target == "<|0.52|>hello<|0.88|><|0.95|> world<|1.40|>"
    assert "<|0.00|>" + target == SPEC_OUTPUT  # the prompt holds the leading <|0.00|>


def test_build_target_quantises_clips_and_separates() -> None:
    words = [Word("你好", -0.5, 0.304), Word(" 世界 ", 29.996, 31.0), Word("x", 2.0, 1.0)]
    assert build_srwt_target(words, separator="") == "<|0.00|>你好<|0.30|><|30.00|>世界<|30.00|><|2.00|>x<|2.00|>"


def test_parse_the_spec_example() -> None:
    result = parse_srwt_result(SPEC_OUTPUT)
    assert list(result.words) == SPEC_WORDS == parse_srwt(SPEC_OUTPUT)
    assert result.text == "hello world" and not result.malformed


def test_parse_shared_boundaries_as_the_official_scorer_pairs_them() -> None:
    assert parse_srwt("<|0.10|>a<|0.50|> b<|0.90|>") == [Word("a", 0.1, 0.5), Word("b", 0.5, 0.9)]


def test_first_word_without_start_uses_the_prompt_time() -> None:
    result = parse_srwt_result("hello<|0.40|>")
    assert result.words == (Word("hello", 0.0, 0.4),) and not result.malformed


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # truncated generation: the last word has no end
        ("<|0.10|>a<|0.50|><|0.60|> b", [Word("a", 0.1, 0.5), Word("b", 0.6, 0.6)]),
        # a word with no start after another word
        ("<|0.10|>a<|0.50|> b<|0.90|><|1.00|> c", [Word("a", 0.1, 0.5), Word("b", 0.5, 0.9), Word("c", 1.0, 1.0)]),
        # times running backwards are clamped (no overlap, no inversion)
        ("<|1.00|>a<|2.00|><|1.50|> b<|1.20|>", [Word("a", 1.0, 2.0), Word("b", 2.0, 2.0)]),
        ("<|1.00|>a<|0.50|>", [Word("a", 1.0, 1.0)]),
        # time beyond 30 s, garbage after end of text
        ("<|29.00|>a<|31.50|><|endoftext|> junk<|3.00|>", [Word("a", 29.0, 30.0)]),
    ],
)
def test_malformed_output_is_repaired_and_flagged(text: str, words: list[Word]) -> None:
    result = parse_srwt_result(text)
    assert list(result.words) == words
    assert result.malformed and result.warnings


@pytest.mark.parametrize("text", ["", "<|0.00|>", "<|0.10|><|0.20|>", "   ", "<|en|><|transcribe|>"])
def test_outputs_without_words(text: str) -> None:
    assert parse_srwt_result(text) == SrwtResult("", ())


def test_non_time_tags_are_ignored_inside_words() -> None:
    assert parse_srwt("<|en|><|0.10|>hel<|zh|>lo<|0.50|>") == [Word("hello", 0.1, 0.5)]


def test_parse_ids_joins_words_split_over_bpe_tokens(tokenizer: QwenAudioTokenizer) -> None:
    words = [Word("extraordinary", 0.1, 0.9), Word("你好世界", 1.0, 1.6), Word("café", 1.7, 2.0)]
    ids = tokenizer.encode_prompt(build_srwt_target(words)).ids
    between = ids[1 : ids.index(tokenizer.convert_tokens_to_ids("<|0.90|>"))]
    assert len(between) > 1  # the word really is several BPE tokens
    result = parse_srwt_ids(ids + [tokenizer.eod_id], tokenizer)
    assert list(result.words) == words and not result.malformed


_word_text = st.text(st.sampled_from("abcxyzé你好ß'0"), min_size=1, max_size=8)


@st.composite
def alignments(draw: st.DrawFn) -> list[Word]:
    """Ordered, non-overlapping words on the 10 ms grid (what a forced aligner yields)."""
    ticks = sorted(draw(st.lists(st.integers(0, 3000), min_size=0, max_size=24)))
    ticks = ticks[: len(ticks) // 2 * 2]
    return [Word(draw(_word_text), a / 100, b / 100) for a, b in zip(ticks[::2], ticks[1::2])]


@given(words=alignments(), separator=st.sampled_from([" ", ""]))
def test_build_parse_round_trip(words: list[Word], separator: str) -> None:
    result = parse_srwt_result("<|0.00|>" + build_srwt_target(words, separator=separator))
    assert list(result.words) == words and not result.malformed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=alignments())
def test_build_encode_decode_parse_round_trip(tokenizer: QwenAudioTokenizer, words: list[Word]) -> None:
    ids = tokenizer.encode_prompt(build_srwt_target(words)).ids
    assert parse_srwt_ids(ids, tokenizer).words == tuple(words)


_junk = st.one_of(
    st.sampled_from(["<|0.00|>", "<|1.50|>", "<|0.70|>", "<|31.00|>", "<|en|>", "<|endoftext|>", "<|", "|>", " "]),
    st.text(max_size=6),
)


@settings(max_examples=50, deadline=None)
@given(pieces=st.lists(_junk, max_size=20))
def test_parser_never_crashes_and_keeps_words_ordered(pieces: list[str]) -> None:
    result = parse_srwt_result("".join(pieces))
    previous_end = 0.0
    for word in result.words:
        assert word.word and word.word == word.word.strip()
        assert previous_end <= word.start <= word.end <= 30.0
        previous_end = word.end
