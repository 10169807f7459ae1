"""Task registry: golden prompts (spec + official eval scripts, byte for byte) and output parsing."""

from __future__ import annotations

import re

import pytest

from qwen_audio.errors import TagFormatError
from qwen_audio.formats.srwt import SrwtResult, Word
from qwen_audio.formats.tags import (
    TASKS,
    AnswerResult,
    EntitiesResult,
    Entity,
    IntentResult,
    LabelResult,
    LanguageResult,
    NoteResult,
    SegmentsResult,
    Task,
    TextResult,
    build_prompt,
    parse_output,
    parse_srwt,
)
from qwen_audio.tokenizer import SPECIAL_TOKENS, QwenAudioTokenizer

A = "x.wav"
GOLDEN = [
    # spec §tag sequence
    (dict(task=Task.ASR, audio_language="en"),
     "<audio>x.wav</audio><|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"),
    (dict(task=Task.ASR, audio_language="zh"),
     "<audio>x.wav</audio><|startoftranscript|><|zh|><|transcribe|><|zh|><|notimestamps|><|wo_itn|>"),
    (dict(task=Task.CAPTION_CLOTHO),
     "<audio>x.wav</audio><|startofanalysis|><|unknown|><|caption|><|en|><|notimestamps|><|caption_clotho|>"),
    (dict(task=Task.ACOUSTIC_SCENE),
     "<audio>x.wav</audio><|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>"),
    (dict(task=Task.NOTE_ANALYSIS),
     "<audio>x.wav</audio><|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|note_analysis|>"),
    (dict(task=Task.SRWT, audio_language="en"),
     "<audio>x.wav</audio><|startoftranscript|><|en|><|transcribe|><|en|><|timestamps|><|0.00|>"),
    # QwenLM/Qwen-Audio eval_audio/evaluate_caption.py with style audiocaps
    (dict(task=Task.CAPTION_AUDIOCAPS),
     "<audio>x.wav</audio><|startofanalysis|><|unknown|><|caption|><|en|><|notimestamps|><|caption_audiocaps|>"),
    # eval_audio/evaluate_st.py (CoVoST2), source language en → target de
    (dict(task=Task.S2TT, audio_language="en", text_language="de"),
     "<audio>x.wav</audio><|startoftranscript|><|en|><|translate|><|de|><|notimestamps|><|itn|>"),
    # eval_audio/evaluate_aqa.py (Clotho-AQA)
    (dict(task=Task.AUDIO_QA, question="Is it raining?"),
     "<audio>x.wav</audio><|startofanalysis|><|en|><|question|>Is it raining?<|answer|>"),
    # eval_audio/evaluate_emotion.py (MELD)
    (dict(task=Task.SPEECH_EMOTION),
     "<audio>x.wav</audio><|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|emotion_recognition|>"),
    # eval_audio/evaluate_vocal_sound.py
    (dict(task=Task.VOCAL_SOUND),
     "<audio>x.wav</audio><|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|vocal_classification|>"),
]


@pytest.mark.parametrize(("kwargs", "expected"), GOLDEN, ids=[g[0]["task"].value for g in GOLDEN])
def test_golden_prompts(kwargs: dict, expected: str) -> None:
    assert build_prompt(audio=A, **kwargs) == expected


def test_prompt_without_audio_is_the_tag_prefix() -> None:
    assert build_prompt(Task.ACOUSTIC_SCENE) == GOLDEN[3][1].removeprefix("<audio>x.wav</audio>")
    assert build_prompt("asr", audio_language="<|en|>") == GOLDEN[0][1].removeprefix("<audio>x.wav</audio>")


def test_every_task_has_a_spec_and_only_vocabulary_tags() -> None:
    assert set(TASKS) == set(Task)
    vocabulary = set(SPECIAL_TOKENS)
    for task, spec in TASKS.items():
        kwargs = {"audio_language": "en", "text_language": "en"}
        if spec.question:
            kwargs = {"question": "why?"}
        prompt = build_prompt(task, **kwargs)
        tags = re.findall(r"<\|[^|]*\|>", prompt)
        assert tags and set(tags) <= vocabulary, task
        assert "".join(tags) == prompt.replace("why?", ""), task  # nothing but tags (and the question)


def test_prompts_encode_to_special_tokens_only(tokenizer: QwenAudioTokenizer) -> None:
    for task in Task:
        kwargs = {"question": "?"} if TASKS[task].question else {"audio_language": "en", "text_language": "fr"}
        ids = tokenizer.encode_prompt(build_prompt(task, audio=A, **kwargs), [16_000]).ids
        plain = [i for i in ids if i < tokenizer.n_ranks]
        assert plain == ([] if not TASKS[task].question else tokenizer.encode_prompt("?").ids), task


def test_timestamps_switch_asr_to_the_srwt_prompt() -> None:
    assert build_prompt(Task.ASR, audio_language="en", timestamps=True) == build_prompt(Task.SRWT, audio_language="en")
    assert build_prompt(Task.SRWT, audio_language="en", timestamps=False).endswith("<|notimestamps|>")


def test_explicit_instruction_and_languages() -> None:
    prompt = build_prompt(Task.ASR, audio_language="en", instruction="<|itn|>")
    assert prompt.endswith("<|en|><|notimestamps|><|itn|>")
    assert build_prompt(Task.ASR, audio_language="zh", text_language="zh_tr").endswith("<|zh_tr|><|notimestamps|><|wo_itn|>")
    assert build_prompt(Task.LANGUAGE_ID, audio=A) == "<audio>x.wav</audio><|startoftranscript|>"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(task=Task.ASR),  # spoken language is required
        dict(task=Task.S2TT, audio_language="en"),  # target language is required
        dict(task=Task.ASR, audio_language="xx"),
        dict(task=Task.CAPTION_CLOTHO, text_language="klingon"),
        dict(task=Task.AUDIO_QA),  # question is required
        dict(task=Task.ASR, audio_language="en", question="why?"),
    ],
)
def test_bad_arguments_raise_tag_format_error(kwargs: dict) -> None:
    with pytest.raises(TagFormatError):
        build_prompt(**kwargs)


def test_unknown_task_name_raises() -> None:
    with pytest.raises(ValueError):
        build_prompt("dance", audio_language="en")


def test_registry_marks_what_is_pinned_to_official_scripts() -> None:
    verified = {task for task, spec in TASKS.items() if spec.verified}
    assert {Task.ASR, Task.S2TT, Task.SRWT, Task.AUDIO_QA, Task.NOTE_ANALYSIS, Task.SPEECH_EMOTION} <= verified
    assert Task.AUDIO_GROUNDING not in verified


# ---------------------------------------------------------------------------- parsing


def test_parse_text_tasks() -> None:
    assert parse_output(Task.ASR, " Hello,  world.<|endoftext|>junk") == TextResult("Hello, world.")
    assert parse_output("caption_clotho", "<|caption_clotho|>A dog barks.") == TextResult("A dog barks.")


def test_parse_labels() -> None:
    assert parse_output(Task.ACOUSTIC_SCENE, "airport<|endoftext|>") == LabelResult(("airport",))
    assert parse_output(Task.ACOUSTIC_SCENE, "airport").label == "airport"
    assert parse_output(Task.SOUND_EVENT, "Speech, Dog ,  Bark,") == LabelResult(("Speech", "Dog", "Bark"))
    assert parse_output(Task.VOCAL_SOUND, "<|endoftext|>").label is None


def test_parse_note_analysis() -> None:
    text = "<|pitch|><|midi_pitch_60|><|velocity|><|midi_velocity_100|><|instrument|>keyboard_acoustic<|sonic|>bright, percussive"
    assert parse_output(Task.NOTE_ANALYSIS, text) == NoteResult(60, 100, "keyboard_acoustic", ("bright", "percussive"))
    assert parse_output(Task.NOTE_PITCH, "<|pitch|><|midi_pitch_72|>") == NoteResult(pitch=72)
    assert parse_output(Task.NOTE_ANALYSIS, "<|pitch|><|midi_pitch_200|>garbage") == NoteResult()
    # the instrument prompt ends in <|instrument|>: its answer is the bare family name
    assert parse_output(Task.NOTE_INSTRUMENT, "mallet<|endoftext|>") == NoteResult(instrument="mallet")
    assert parse_output(Task.NOTE_INSTRUMENT, "<|instrument|>organ") == NoteResult(instrument="organ")
    assert parse_output(Task.NOTE_INSTRUMENT, "") == NoteResult()


def test_parse_answer_language_entities_intent_segments() -> None:
    assert parse_output(Task.AUDIO_QA, "yes<|endoftext|>") == AnswerResult("yes")
    assert parse_output(Task.LANGUAGE_ID, "<|de|><|transcribe|>") == LanguageResult("de")
    assert parse_output(Task.LANGUAGE_ID, "nothing") == LanguageResult(None)
    ner = "call <|startofentityvalue|>John<|endofentityvalue|><|startofentitytype|>person<|endofentitytype|> now"
    assert parse_output(Task.NER, ner) == EntitiesResult("call John now", (Entity("John", "person"),))
    slu = "<|scenario|>alarm<|action|>set<|entities|><|startofentityvalue|>7 am<|endofentityvalue|><|startofentitytype|>time<|endofentitytype|>"
    assert parse_output(Task.SPEECH_UNDERSTANDING, slu) == IntentResult("alarm", "set", (Entity("7 am", "time"),))
    grounding = "<|1.00|><|delim|><|2.50|><|4.00|><|delim|><|3.00|><|5.00|>"
    assert parse_output(Task.AUDIO_GROUNDING, grounding) == SegmentsResult(((1.0, 2.5), (4.0, 4.0)))


def test_parse_srwt_through_the_registry() -> None:
    result = parse_output(Task.SRWT, "<|0.52|>hello<|0.88|><|0.95|> world<|1.40|><|endoftext|>")
    assert isinstance(result, SrwtResult) and result.text == "hello world"
    words = parse_srwt("<|0.52|>hello<|0.88|>")
    assert words == [Word("hello", 0.52, 0.88)] and (words[0].word, words[0].start, words[0].end) == ("hello", 0.52, 0.88)
