"""The text formats: standard library only, and each definition the one the rest of the code uses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qwen_audio.formats.chatml import AudioItem, ChatTurn, TextItem, turn_from_dict, turn_to_dict
from qwen_audio.formats.languages import LANGUAGES, UNSPACED_LANGUAGES, word_separator
from qwen_audio.formats.spans import audio_span, conv_frames, mel_frames, min_audio_samples, pooled_frames
from qwen_audio.formats.srwt import build_srwt_target, official_segments, parse_srwt, srwt_reference_text
from qwen_audio.formats.tags import CAPTION_STYLES, TASK_ALIASES, TASK_NAMES, Task, build_prompt, task_for
from qwen_audio.formats.timestamps import Word
from qwen_audio.formats.tokens import SPECIAL_TOKENS

HEAVY = ("torch", "transformers", "av", "soxr", "numpy", "tiktoken")


@pytest.mark.parametrize("module", ["tags", "chatml", "srwt", "timestamps", "spans", "tokens", "languages"])
def test_formats_import_no_heavy_library(module: str) -> None:
    code = (
        f"import sys, json; import qwen_audio.formats.{module}; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_special_token_list_keeps_the_official_id_order() -> None:
    # The ids are the official checkpoint's rows: spot-check positions of the contract.
    assert SPECIAL_TOKENS[:3] == ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert SPECIAL_TOKENS[208:211] == ("[[[AUDIO:modality]]]", "<|startoftranscript|>", "<|startofanalysis|>")
    first_language = SPECIAL_TOKENS.index("<|en|>")
    assert SPECIAL_TOKENS[first_language : first_language + 9] == (*(f"<|{c}|>" for c in LANGUAGES), "<|zh_tr|>")
    assert SPECIAL_TOKENS[-2:] == ("<audio>", "</audio>")
    assert len(SPECIAL_TOKENS) == len(set(SPECIAL_TOKENS))


def test_tokenizer_uses_the_formats_token_list() -> None:
    from qwen_audio import tokenizer

    assert tokenizer.SPECIAL_TOKENS is SPECIAL_TOKENS


def test_unspaced_languages_include_traditional_chinese() -> None:
    assert UNSPACED_LANGUAGES == {"zh", "ja", "zh_tr"}
    assert [word_separator(c) for c in ("zh", "zh_tr", "ja", "en", None)] == ["", "", "", " ", " "]


@pytest.mark.parametrize("samples", [480, 481, 639, 640, 799, 800, 16_000, 160_321, 480_000, 500_000])
def test_span_stages_compose_into_audio_span(samples: int) -> None:
    span = audio_span(samples)
    mel = mel_frames(min(samples, 480_000))
    assert (span.mel_len, span.conv_len, span.pooled_len) == (mel, conv_frames(mel), pooled_frames(mel))
    assert span.span_tokens == span.pooled_len + 2


def test_thirty_seconds_is_750_audio_frames() -> None:
    # Spec: 30 s → 3000 mel frames → 1500 conv frames → 750 pooled frames (40 ms each).
    span = audio_span(480_000)
    assert (span.mel_len, span.conv_len, span.pooled_len, span.span_tokens) == (3000, 1500, 750, 752)
    assert audio_span(min_audio_samples()).pooled_len == 1


def test_encoder_tensor_lengths_agree_with_the_span_arithmetic() -> None:
    torch = pytest.importorskip("torch")
    from qwen_audio.encoder import conv_lengths, pooled_lengths

    mel = torch.arange(3, 3001)
    assert conv_lengths(mel).tolist() == [conv_frames(m) for m in range(3, 3001)]
    assert pooled_lengths(mel).tolist() == [pooled_frames(m) for m in range(3, 3001)]
    assert pooled_frames(mel).tolist() == pooled_lengths(mel).tolist()


def test_task_aliases_resolve_to_the_registry() -> None:
    assert task_for("scene") is Task.ACOUSTIC_SCENE and task_for("asr") is Task.ASR
    assert task_for(Task.NER) is Task.NER
    assert set(TASK_ALIASES.values()) | set(CAPTION_STYLES.values()) <= set(Task)
    assert build_prompt(task_for("emotion"), audio="a.wav") == build_prompt(Task.SPEECH_EMOTION, audio="a.wav")


def test_task_names_are_those_manifests_always_accepted() -> None:
    before = {  # data/manifest.py's hand-written list before it was derived from the registry
        "asr", "srwt", "s2tt", "caption", "scene", "sound_event", "emotion", "vocal_sound", "aqa",
        "sqa", "note_analysis", "pitch", "velocity", "instrument", "language_id", "gender", "age",
        "music_caption", "music_qa", "ner", "slu", "audio_grounding", "speaker_verification", "chat",
        "acoustic_scene", "speech_emotion", "audio_qa", "note_pitch", "note_velocity", "note_instrument",
        "music_description", "speaker_meta", "speech_understanding", "caption_clotho", "caption_audiocaps",
        "caption_plain", "note_sonic", "song_meta", "keyword",
    }
    assert TASK_NAMES == before


def test_unknown_task_name_says_which_are_known() -> None:
    from qwen_audio.errors import TagFormatError

    with pytest.raises(TagFormatError, match="unknown task 'birdsong'.*asr"):
        task_for("birdsong")


def test_turn_from_dict_reads_openai_style_messages() -> None:
    assert turn_from_dict({"role": "user", "content": "hi"}) == ChatTurn("user", (TextItem("hi"),))
    message = {"role": "user", "content": [{"type": "audio", "audio": "a.wav"}, {"type": "text", "text": "what?"}]}
    assert turn_from_dict(message) == ChatTurn("user", (AudioItem("a.wav"), TextItem("what?")))


def test_turn_dicts_carry_an_audio_slice_both_ways() -> None:
    message = {"role": "user", "content": [{"type": "audio", "audio": "a.wav", "offset": 1.5, "duration": 2.0},
                                           {"type": "audio", "audio": "a.wav"}]}
    turn = turn_from_dict(message)
    assert turn.audios == (AudioItem("a.wav", 1.5, 2.0), AudioItem("a.wav"))
    assert [a.key for a in turn.audios] == ["a.wav#1.5+2.0", "a.wav"]
    assert turn_to_dict(turn) == message
    assert turn_to_dict(ChatTurn.assistant("hi")) == {"role": "assistant", "content": "hi"}


def test_srwt_reference_shares_a_token_where_words_touch_and_reads_back() -> None:
    words = [Word("hi", 0.2, 0.5), Word("there", 0.5, 0.9), Word("you", 1.0, 1.2)]
    text = srwt_reference_text(words)
    assert text == "<|0.00|><|0.20|>hi<|0.50|>there<|0.90|><|1.00|>you<|1.20|>"
    segments = official_segments(text)
    assert segments is not None and [s for s in segments if s.word] == words
    # A separator goes before every word but the first, as in decoded output.
    assert srwt_reference_text(words, separator=" ") == "<|0.00|><|0.20|>hi<|0.50|> there<|0.90|><|1.00|> you<|1.20|>"
    assert parse_srwt(build_srwt_target(words)) == words
