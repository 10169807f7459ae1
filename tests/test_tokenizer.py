"""Tokenizer: the official id layout, audio spans, NFC, decoding, the transformers round trip."""

from __future__ import annotations

import base64
import itertools
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_audio.audio import audio_span
from qwen_audio.errors import TagFormatError, TokenizerError
from qwen_audio.tokenizer import (
    AUDIO_PAD,
    SPECIAL_TOKENS,
    QwenAudioTokenizer,
    load_tiktoken_ranks,
    special_token_ids,
    time_token_text,
    train_bpe_ranks,
    write_tiktoken_ranks,
)

from .conftest import SMALL_VOCAB, sample_corpus

OFFICIAL_RANKS = 151_643
OFFICIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "[[[AUDIO:modality]]]": 151851,
    "<|startoftranscript|>": 151852,
    "<audio>": 155163,
    "</audio>": 155164,
}

# ---------------------------------------------------------------------------- id layout


def test_special_tokens_are_unique_and_counted_as_in_the_spec() -> None:
    assert len(SPECIAL_TOKENS) == len(set(SPECIAL_TOKENS)) == 3522
    assert SPECIAL_TOKENS[:3] == ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert SPECIAL_TOKENS[3] == "<|extra_0|>" and SPECIAL_TOKENS[207] == "<|extra_204|>"
    assert SPECIAL_TOKENS[-2:] == ("<audio>", "</audio>")
    assert SPECIAL_TOKENS.index("<|30.00|>") - SPECIAL_TOKENS.index("<|0.00|>") == 3000
    assert SPECIAL_TOKENS.index("<|midi_velocity_127|>") + 1 == SPECIAL_TOKENS.index("<|sonic|>")


def test_official_ids_follow_from_151643_ranks() -> None:
    ids = special_token_ids(OFFICIAL_RANKS)
    assert {token: ids[token] for token in OFFICIAL_IDS} == OFFICIAL_IDS
    # The LLM's embedding table (155,947 rows) must hold every id.
    assert max(ids.values()) == 155164 < 155947


def test_time_tokens_match_the_official_float_formatting() -> None:
    for i in range(3001):
        assert time_token_text(i) == f"<|{i * 0.01:.2f}|>" == f"<|{i // 100}.{i % 100:02d}|>"


def test_small_tokenizer_ids_follow_the_same_arithmetic(tokenizer: QwenAudioTokenizer) -> None:
    n = tokenizer.n_ranks
    for token, official in OFFICIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(token) == official - OFFICIAL_RANKS + n
    assert tokenizer.audio_start_id == n + 3520 and tokenizer.audio_pad_id == n + 208
    assert tokenizer.time_token_ids[52] == tokenizer.convert_tokens_to_ids("<|0.52|>")
    assert len(tokenizer) == tokenizer.vocab_size == n + 3522


def _synthetic_ranks(n: int) -> dict[bytes, int]:
    """n distinct byte strings: 256 single bytes, then 2- and 3-byte strings (no BPE meaning)."""
    tokens = itertools.chain(
        (bytes([b]) for b in range(256)),
        (bytes(p) for p in itertools.product(range(256), repeat=2)),
        (bytes(p) for p in itertools.product(range(256), repeat=3)),
    )
    return {token: rank for rank, token in zip(range(n), tokens)}


def test_full_size_file_gives_the_official_ids(tmp_path: Path) -> None:
    path = write_tiktoken_ranks(_synthetic_ranks(OFFICIAL_RANKS), tmp_path / "qwen.tiktoken")
    tok = QwenAudioTokenizer(path)
    assert tok.convert_tokens_to_ids(list(OFFICIAL_IDS)) == list(OFFICIAL_IDS.values())
    assert (tok.eod_id, tok.im_start_id, tok.im_end_id) == (151643, 151644, 151645)
    assert tok.encode_prompt("<audio>a.wav</audio>", [16_000]).ids[0] == 155163


# ---------------------------------------------------------------------------- rank files


def test_rank_file_round_trip(tmp_path: Path) -> None:
    ranks = _synthetic_ranks(300)
    assert load_tiktoken_ranks(write_tiktoken_ranks(ranks, tmp_path / "r.tiktoken")) == ranks


def test_rank_file_lines_are_base64_token_and_rank(tiktoken_file: Path) -> None:
    first = tiktoken_file.read_text().splitlines()[:2]
    assert first == [f"{base64.b64encode(bytes([0])).decode()} 0", f"{base64.b64encode(bytes([1])).decode()} 1"]


@pytest.mark.parametrize("content", ["not-base64!! 0\n", "QQ== 0\nQg== 2\n", "QQ== 0\nQQ== 1\n", "QQ==\n"])
def test_bad_rank_files_raise_tokenizer_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.tiktoken"
    path.write_text(content)
    with pytest.raises(TokenizerError):
        load_tiktoken_ranks(path)


def test_missing_rank_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="qwen.tiktoken"):
        QwenAudioTokenizer(tmp_path / "absent.tiktoken")


def test_trained_ranks_start_with_the_bytes_and_compress_text() -> None:
    started = time.perf_counter()
    ranks = train_bpe_ranks(sample_corpus(), SMALL_VOCAB)
    assert time.perf_counter() - started < 5
    assert [ranks[bytes([b])] for b in range(256)] == list(range(256))
    assert 256 < len(ranks) <= SMALL_VOCAB and sorted(ranks.values()) == list(range(len(ranks)))
    assert b" quick" in ranks or b"quick" in ranks
    with pytest.raises(TokenizerError):
        train_bpe_ranks(["abc"], 100)


def test_trained_tokenizer_compresses(tokenizer: QwenAudioTokenizer) -> None:
    text = "The quick brown fox jumps over the lazy dog"
    assert len(tokenizer.encode_prompt(text).ids) < len(text.encode()) / 2


# ---------------------------------------------------------------------------- audio spans


def test_audio_span_expands_to_pads_of_the_spec_length(tokenizer: QwenAudioTokenizer) -> None:
    samples = 3 * 16_000
    encoded = tokenizer.encode_prompt("<audio>a.wav</audio><|en|>", [samples])
    n = audio_span(samples).span_tokens
    assert n == 77  # 4800 mel → 2400 conv → 1200 … / 2 pooled = 75 frames + bos/eos
    assert encoded.ids[:n] == [tokenizer.audio_start_id] + [tokenizer.audio_pad_id] * (n - 2) + [tokenizer.audio_end_id]
    assert encoded.ids[n:] == [tokenizer.convert_tokens_to_ids("<|en|>")]
    assert encoded.audio_paths == ["a.wav"] and encoded.audios[0].start == 0 and encoded.audios[0].length == n


def test_audio_lengths_as_list_mapping_or_callable(tokenizer: QwenAudioTokenizer) -> None:
    text = "Audio 1:<audio>a.wav</audio>\nAudio 2:<audio>b.wav</audio>\nsame?"
    lengths = {"a.wav": 16_000, "b.wav": 40_000}
    by_list = tokenizer.encode_prompt(text, [16_000, 40_000])
    assert by_list == tokenizer.encode_prompt(text, lengths) == tokenizer.encode_prompt(text, lengths.__getitem__)
    first, second = by_list.audios
    assert (first.length, second.length) == (audio_span(16_000).span_tokens, audio_span(40_000).span_tokens)
    assert by_list.ids[second.start] == tokenizer.audio_start_id
    assert by_list.ids[second.start + second.length - 1] == tokenizer.audio_end_id


def test_missing_audio_length_raises(tokenizer: QwenAudioTokenizer) -> None:
    with pytest.raises(TokenizerError, match="audio_lengths"):
        tokenizer.encode_prompt("<audio>a.wav</audio>")
    with pytest.raises(TokenizerError):
        tokenizer.encode_prompt("<audio>a.wav</audio><audio>b.wav</audio>", [16_000])


@pytest.mark.parametrize("text", ["<audio>a.wav", "a.wav</audio>", f"x{AUDIO_PAD}y"])
def test_unpaired_audio_tags_raise(tokenizer: QwenAudioTokenizer, text: str) -> None:
    with pytest.raises(TagFormatError):
        tokenizer.encode_prompt(text, [16_000])


def test_decode_restores_paths_or_keeps_pads(tokenizer: QwenAudioTokenizer) -> None:
    text = "<audio>dir/a b.wav</audio><|startoftranscript|><|en|>hi <audio>https://x/y.mp3</audio>!"
    encoded = tokenizer.encode_prompt(text, [16_000, 20_000])
    assert tokenizer.decode(encoded.ids, audio_paths=encoded.audio_paths) == text
    raw = tokenizer.decode(encoded.ids)
    assert raw.count(AUDIO_PAD) == sum(a.length - 2 for a in encoded.audios)
    assert tokenizer.encode_prompt(raw).ids == encoded.ids  # pads re-encode without lengths
    assert tokenizer.decode(encoded.ids, skip_special_tokens=True) == "hi !"


def test_startoftranscription_spelling_is_accepted(tokenizer: QwenAudioTokenizer) -> None:
    long_form = tokenizer.encode_prompt("<|startoftranscription|><|en|>").ids
    assert long_form == tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>"])
    assert tokenizer.decode(long_form) == "<|startoftranscript|><|en|>"


def test_text_is_nfc_normalised(tokenizer: QwenAudioTokenizer) -> None:
    assert tokenizer.encode_prompt("cafe\u0301").ids == tokenizer.encode_prompt("café").ids


def test_special_strings_can_be_plain_text(tokenizer: QwenAudioTokenizer) -> None:
    ids = tokenizer.encode_prompt("<|en|>", allowed_special=set()).ids
    assert all(i < tokenizer.n_ranks for i in ids) and tokenizer.decode(ids) == "<|en|>"


def test_decode_drops_ids_beyond_the_vocabulary(tokenizer: QwenAudioTokenizer) -> None:
    ids = tokenizer.encode_prompt("hello").ids
    assert tokenizer.decode(ids + [tokenizer.vocab_size + 5, -1]) == "hello"


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).filter(lambda s: "<" not in s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_text)
def test_encode_decode_round_trip(tokenizer: QwenAudioTokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode_prompt(text).ids) == unicodedata.normalize("NFC", text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(st.tuples(_text, st.text("abc/._-é", min_size=1, max_size=12)), max_size=3),
    tail=_text,
    tags=st.lists(st.sampled_from(SPECIAL_TOKENS[:300]), max_size=3),
)
def test_encode_decode_round_trip_with_audio(
    tokenizer: QwenAudioTokenizer, pieces: list[tuple[str, str]], tail: str, tags: list[str]
) -> None:
    text = "".join(f"{t}<audio>{p}</audio>" for t, p in pieces) + "".join(tags) + tail
    if AUDIO_PAD in tags:
        return
    encoded = tokenizer.encode_prompt(text, lambda path: 16_000 + len(path) * 1000)
    expected = "".join(f"{unicodedata.normalize('NFC', t)}<audio>{p}</audio>" for t, p in pieces)
    expected += "".join(tags) + unicodedata.normalize("NFC", tail)
    assert tokenizer.decode(encoded.ids, audio_paths=encoded.audio_paths) == expected


# ---------------------------------------------------------------------------- transformers


def test_transformers_call_and_decode(tokenizer: QwenAudioTokenizer) -> None:
    text = "<audio>a.wav</audio><|startoftranscript|><|en|>"
    batch = tokenizer(text, audio_lengths=[16_000])
    assert batch["input_ids"] == tokenizer.encode_prompt(text, [16_000]).ids
    assert batch["attention_mask"] == [1] * len(batch["input_ids"])
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == tokenizer.eod_id
    assert tokenizer.decode([tokenizer.eod_id, tokenizer.convert_tokens_to_ids("<|en|>")]) == "<|endoftext|><|en|>"
    assert tokenizer.tokenize("hi<|en|>")[-1] == "<|en|>"


def test_save_and_from_pretrained_round_trip(tokenizer: QwenAudioTokenizer, tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "qwen.tiktoken").read_bytes() == Path(tokenizer.vocab_file).read_bytes()
    assert "QwenAudioTokenizer" in (tmp_path / "tokenizer_config.json").read_text()
    loaded = QwenAudioTokenizer.from_pretrained(tmp_path)
    text = "<audio>a.wav</audio><|startoftranscript|><|en|>The quick fox 你好"
    assert loaded.encode_prompt(text, [16_000]) == tokenizer.encode_prompt(text, [16_000])
    assert loaded.eos_token_id == tokenizer.eos_token_id and len(loaded) == len(tokenizer)


def test_batches_pad_left_and_tokenizer_pickles(tiktoken_file: Path) -> None:
    import pickle

    tok = QwenAudioTokenizer(tiktoken_file, padding_side="left")
    texts = ["<audio>a.wav</audio>hi there", "<audio>b.wav</audio>x"]
    batch = tok(texts, audio_lengths={"a.wav": 16_000, "b.wav": 48_000}, padding=True, return_tensors="pt")
    longest = audio_span(48_000).span_tokens + 1
    assert tuple(batch["input_ids"].shape) == (2, longest)
    pad = longest - len(tok.encode_prompt(texts[0], [16_000]).ids)
    assert batch["input_ids"][0, :pad].tolist() == [tok.eod_id] * pad and batch["attention_mask"][0, :pad].sum() == 0
    assert tok.batch_decode(batch["input_ids"].tolist(), skip_special_tokens=True) == ["hi there", "x"]
    assert pickle.loads(pickle.dumps(tok)).encode_prompt(texts[1], [16_000]) == tok.encode_prompt(texts[1], [16_000])
