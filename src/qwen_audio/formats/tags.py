"""The hierarchical task-tag format (paper §3.2): a typed task registry, prompt building, parsing.

A base-model prompt is ``<audio>A</audio>`` + transcription tag + audio language + task tag +
text language + timestamps tag + output instruction(s). Every task of the paper maps to one
:class:`TaskSpec`; :func:`build_prompt` renders it and :func:`parse_output` turns the model's
(decoded, special tokens kept) output into a typed result. Specs with ``source`` set reproduce a
prompt of the official evaluation scripts byte for byte (QwenLM/Qwen-Audio, eval_audio/);
the others follow the same hierarchy with the tags the vocabulary reserves for them and are
marked ``verified=False`` until an official prompt is found.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Union

from qwen_audio.errors import TagFormatError
from qwen_audio.formats.languages import AUDIO_LANGUAGES, LANGUAGES, TEXT_LANGUAGES
from qwen_audio.formats.srwt import SrwtResult, Word, parse_srwt, parse_srwt_result  # noqa: F401  (re-exported)
from qwen_audio.formats.timestamps import TAG, parse_time_token, time_token_text
from qwen_audio.formats.tokens import AUDIO_END, AUDIO_START, STARTOFANALYSIS, STARTOFTRANSCRIPT

TRANSCRIPT = STARTOFTRANSCRIPT
ANALYSIS = STARTOFANALYSIS


class Output(enum.Enum):
    """What a task's answer is, which decides how :func:`parse_output` reads it."""

    TEXT = "text"
    WORDS = "words"  # SRWT
    LABEL = "label"
    LABELS = "labels"  # comma-separated multi-label
    NOTE = "note"
    ANSWER = "answer"
    LANGUAGE = "language"
    ENTITIES = "entities"
    INTENT = "intent"
    SEGMENTS = "segments"  # audio grounding: time pairs


class Task(enum.Enum):
    ASR = "asr"
    S2TT = "s2tt"
    SRWT = "srwt"
    CAPTION_CLOTHO = "caption_clotho"
    CAPTION_AUDIOCAPS = "caption_audiocaps"
    CAPTION_PLAIN = "caption_plain"
    ACOUSTIC_SCENE = "acoustic_scene"
    SOUND_EVENT = "sound_event"
    SPEECH_EMOTION = "speech_emotion"
    VOCAL_SOUND = "vocal_sound"
    AUDIO_QA = "audio_qa"
    NOTE_ANALYSIS = "note_analysis"
    NOTE_PITCH = "note_pitch"
    NOTE_VELOCITY = "note_velocity"
    NOTE_INSTRUMENT = "note_instrument"
    NOTE_SONIC = "note_sonic"
    MUSIC_DESCRIPTION = "music_description"
    SPEAKER_META = "speaker_meta"
    SONG_META = "song_meta"
    LANGUAGE_ID = "language_id"
    KEYWORD = "keyword"
    NER = "ner"
    SPEECH_UNDERSTANDING = "speech_understanding"
    AUDIO_GROUNDING = "audio_grounding"


@dataclass(frozen=True)
class TaskSpec:
    """One task's place in the tag hierarchy. ``None`` language defaults mean "the caller must say"."""

    start: str  # transcription tag: <|startoftranscript|> (speech) or <|startofanalysis|>
    task_tag: str  # <|transcribe|>, <|translate|>, <|caption|>, <|keyword|>, <|question|>, …
    instruction: tuple[str, ...]  # output-instruction tags after the timestamps tag
    output: Output
    audio_language: str | None = "unknown"
    text_language: str | None = "en"
    text_language_from_audio: bool = False  # transcription: the text is in the audio's language
    timestamps: bool = False
    source: str = ""  # official eval script whose prompt this reproduces
    question: bool = False  # AQA layout: <|question|>Q<|answer|>

    @property
    def verified(self) -> bool:
        return bool(self.source)


_KW = "<|keyword|>"
TASKS: dict[Task, TaskSpec] = {
    # eval_audio/evaluate_asr.py
    Task.ASR: TaskSpec(TRANSCRIPT, "<|transcribe|>", ("<|wo_itn|>",), Output.TEXT, None, None, True,
                       source="evaluate_asr.py"),
    # eval_audio/evaluate_st.py (CoVoST2): ...<|translate|><|{tgt}|><|notimestamps|><|itn|>
    Task.S2TT: TaskSpec(TRANSCRIPT, "<|translate|>", ("<|itn|>",), Output.TEXT, None, None,
                        source="evaluate_st.py"),
    # eval_audio/evaluate_srwt.py: the prompt ends with the first time token, no instruction tag.
    Task.SRWT: TaskSpec(TRANSCRIPT, "<|transcribe|>", (), Output.WORDS, None, None, True, True,
                        source="evaluate_srwt.py"),
    # eval_audio/evaluate_caption.py: <|caption_{style}|>
    Task.CAPTION_CLOTHO: TaskSpec(ANALYSIS, "<|caption|>", ("<|caption_clotho|>",), Output.TEXT,
                                  source="evaluate_caption.py"),
    Task.CAPTION_AUDIOCAPS: TaskSpec(ANALYSIS, "<|caption|>", ("<|caption_audiocaps|>",), Output.TEXT,
                                     source="evaluate_caption.py"),
    Task.CAPTION_PLAIN: TaskSpec(ANALYSIS, "<|caption|>", ("<|caption_plain|>",), Output.TEXT),
    # eval_audio/evaluate_scene.py
    Task.ACOUSTIC_SCENE: TaskSpec(ANALYSIS, _KW, ("<|scene|>",), Output.LABEL, source="evaluate_scene.py"),
    Task.SOUND_EVENT: TaskSpec(ANALYSIS, _KW, ("<|event|>",), Output.LABELS),
    # eval_audio/evaluate_emotion.py (MELD) and evaluate_vocal_sound.py: audio language <|en|>.
    Task.SPEECH_EMOTION: TaskSpec(ANALYSIS, _KW, ("<|emotion_recognition|>",), Output.LABEL, "en",
                                  source="evaluate_emotion.py"),
    Task.VOCAL_SOUND: TaskSpec(ANALYSIS, _KW, ("<|vocal_classification|>",), Output.LABEL, "en",
                               source="evaluate_vocal_sound.py"),
    # eval_audio/evaluate_aqa.py (Clotho-AQA): <|startofanalysis|><|en|><|question|>{q}<|answer|>;
    # its single language tag is the text language.
    Task.AUDIO_QA: TaskSpec(ANALYSIS, "<|question|>", (), Output.ANSWER, source="evaluate_aqa.py", question=True),
    # eval_audio/evaluate_note_analysis.py (NSynth): the answer holds pitch, velocity, instrument, sonic.
    Task.NOTE_ANALYSIS: TaskSpec(ANALYSIS, _KW, ("<|note_analysis|>",), Output.NOTE,
                                 source="evaluate_note_analysis.py"),
    Task.NOTE_PITCH: TaskSpec(ANALYSIS, _KW, ("<|note_analysis|>", "<|pitch|>"), Output.NOTE),
    Task.NOTE_VELOCITY: TaskSpec(ANALYSIS, _KW, ("<|note_analysis|>", "<|velocity|>"), Output.NOTE),
    Task.NOTE_INSTRUMENT: TaskSpec(ANALYSIS, _KW, ("<|note_analysis|>", "<|instrument|>"), Output.NOTE),
    Task.NOTE_SONIC: TaskSpec(ANALYSIS, _KW, ("<|note_analysis|>", "<|sonic|>"), Output.NOTE),
    Task.MUSIC_DESCRIPTION: TaskSpec(ANALYSIS, "<|caption|>", ("<|music_description|>",), Output.TEXT),
    Task.SPEAKER_META: TaskSpec(ANALYSIS, _KW, ("<|speaker_meta|>",), Output.LABELS, None),
    Task.SONG_META: TaskSpec(ANALYSIS, _KW, ("<|song_meta|>",), Output.LABELS),
    # Whisper-style: the model answers with the audio-language tag right after the start tag.
    Task.LANGUAGE_ID: TaskSpec(TRANSCRIPT, "", (), Output.LANGUAGE),
    Task.KEYWORD: TaskSpec(ANALYSIS, _KW, ("<|audioset_ontology|>",), Output.LABELS),
    Task.NER: TaskSpec(TRANSCRIPT, "<|transcribe|>", ("<|named_entity_recognition|>",), Output.ENTITIES,
                       None, None, True),
    Task.SPEECH_UNDERSTANDING: TaskSpec(TRANSCRIPT, _KW, ("<|speech_understanding|>",), Output.INTENT, None),
    Task.AUDIO_GROUNDING: TaskSpec(ANALYSIS, _KW, ("<|audio_grounding|>",), Output.SEGMENTS, timestamps=True),
}


# Dataset-level task names (manifests, the API's task arguments) → the registry's task, where they differ.
TASK_ALIASES: dict[str, Task] = {
    "scene": Task.ACOUSTIC_SCENE, "emotion": Task.SPEECH_EMOTION, "aqa": Task.AUDIO_QA,
    "pitch": Task.NOTE_PITCH, "velocity": Task.NOTE_VELOCITY, "instrument": Task.NOTE_INSTRUMENT,
    "music_caption": Task.MUSIC_DESCRIPTION, "gender": Task.SPEAKER_META, "age": Task.SPEAKER_META,
    "slu": Task.SPEECH_UNDERSTANDING,
}
# A caption's style (a manifest's ``meta["caption_style"]``, ``QwenAudio.caption(style=)``) → its task.
CAPTION_STYLES: dict[str, Task] = {
    "plain": Task.CAPTION_PLAIN, "clotho": Task.CAPTION_CLOTHO, "audiocaps": Task.CAPTION_AUDIOCAPS,
    "music": Task.MUSIC_DESCRIPTION,
}
# Dataset tasks without a prompt of their own: "caption" takes its task from the style, "chat" is
# ChatML, the others have no tag prompt in the registry yet.
UNPROMPTED_TASKS: tuple[str, ...] = ("caption", "chat", "sqa", "music_qa", "speaker_verification")
# Every task name a manifest or the API accepts.
TASK_NAMES: frozenset[str] = frozenset({t.value for t in Task} | set(TASK_ALIASES) | set(UNPROMPTED_TASKS))


def task_for(name: str | Task) -> Task:
    """The registry task of a task name or alias (``"scene"`` → ``Task.ACOUSTIC_SCENE``)."""
    if isinstance(name, Task):
        return name
    if name in TASK_ALIASES:
        return TASK_ALIASES[name]
    try:
        return Task(name)
    except ValueError:
        raise TagFormatError(f"unknown task {name!r}: use one of {', '.join(sorted(TASK_NAMES))}") from None


def _tag(language: str, allowed: tuple[str, ...], what: str) -> str:
    code = language.strip("<|>")
    if code not in allowed:
        raise TagFormatError(f"unknown {what} {language!r}: use one of {', '.join(allowed)}")
    return f"<|{code}|>"


def build_prompt(
    task: Task | str,
    *,
    audio: str | None = None,
    audio_language: str | None = None,
    text_language: str | None = None,
    timestamps: bool | None = None,
    instruction: str | tuple[str, ...] | None = None,
    question: str | None = None,
) -> str:
    """The base model's prompt for ``task``: the tag prefix, preceded by ``<audio>audio</audio>``
    when ``audio`` is given. Arguments left ``None`` take the task's defaults; speech tasks need
    ``audio_language``, translation needs ``text_language``, audio QA needs ``question``.
    With timestamps on, the prompt ends with ``<|0.00|>`` (the official SRWT prompt holds the
    first time token) and, unless given, no output instruction follows (none is trained there).
    """
    spec = TASKS[Task(task)]
    name = Task(task).value
    prefix = f"{AUDIO_START}{audio}{AUDIO_END}" if audio is not None else ""
    audio_language = audio_language or spec.audio_language
    if spec.question:
        if question is None:
            raise TagFormatError(f"{name}: pass question='…'")
        language = _tag(text_language or spec.text_language or "en", TEXT_LANGUAGES, "text language")
        return f"{prefix}{spec.start}{language}{spec.task_tag}{question}<|answer|>"
    if question is not None:
        raise TagFormatError(f"{name} takes no question; only {Task.AUDIO_QA.value} does")
    if spec.output is Output.LANGUAGE:
        return f"{prefix}{spec.start}"
    if audio_language is None:
        raise TagFormatError(f"{name}: pass audio_language= one of {', '.join(LANGUAGES)} (the spoken language)")
    audio_tag = _tag(audio_language, AUDIO_LANGUAGES, "audio language")
    if text_language is None:
        text_language = audio_language if spec.text_language_from_audio else spec.text_language
    if text_language is None:
        raise TagFormatError(f"{name}: pass text_language= (the output language), one of {', '.join(TEXT_LANGUAGES)}")
    text_tag = _tag(text_language, TEXT_LANGUAGES, "text language")
    timestamps = spec.timestamps if timestamps is None else timestamps
    if instruction is None:
        instructions = spec.instruction if timestamps == spec.timestamps or not timestamps else ()
    else:
        instructions = (instruction,) if isinstance(instruction, str) else tuple(instruction)
    stamp = "<|timestamps|>" if timestamps else "<|notimestamps|>"
    first_time = time_token_text(0) if timestamps else ""
    return f"{prefix}{spec.start}{audio_tag}{spec.task_tag}{text_tag}{stamp}{''.join(instructions)}{first_time}"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TextResult:
    text: str


@dataclass(frozen=True)
class LabelResult:
    labels: tuple[str, ...]

    @property
    def label(self) -> str | None:
        return self.labels[0] if self.labels else None


@dataclass(frozen=True)
class NoteResult:
    """Music note analysis; None (or empty) where the output lacks the field."""

    pitch: int | None = None  # MIDI 0–127
    velocity: int | None = None  # MIDI 0–127
    instrument: str | None = None
    sonic: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnswerResult:
    answer: str


@dataclass(frozen=True)
class LanguageResult:
    language: str | None


@dataclass(frozen=True)
class Entity:
    value: str
    type: str


@dataclass(frozen=True)
class EntitiesResult:
    text: str  # the transcript, entity markup removed
    entities: tuple[Entity, ...]


@dataclass(frozen=True)
class IntentResult:
    scenario: str | None
    action: str | None
    entities: tuple[Entity, ...]


@dataclass(frozen=True)
class SegmentsResult:
    segments: tuple[tuple[float, float], ...]  # (start, end) seconds


TaskResult = Union[
    TextResult, SrwtResult, LabelResult, NoteResult, AnswerResult, LanguageResult, EntitiesResult, IntentResult,
    SegmentsResult,
]

def strip_tags(text: str) -> str:
    """Remove special tokens and fold whitespace, as the official ASR scorer does before WER."""
    return " ".join(TAG.sub(" ", text).split())


def _field(text: str, tag: str) -> str | None:
    """Text after ``tag`` up to the next tag (the official note-analysis scorer's reading)."""
    start = text.find(tag)
    if start < 0:
        return None
    rest = text[start + len(tag) :]
    return rest.split("<")[0].strip()


def _midi(text: str, kind: str) -> int | None:
    match = re.search(rf"<\|{kind}\|>\s*<\|midi_{kind}_(\d+)\|>", text) or re.search(rf"<\|midi_{kind}_(\d+)\|>", text)
    value = int(match.group(1)) if match else None
    return value if value is not None and 0 <= value <= 127 else None


def _entities(text: str) -> tuple[Entity, ...]:
    pairs = re.findall(
        r"<\|startofentityvalue\|>(.*?)<\|endofentityvalue\|>\s*<\|startofentitytype\|>(.*?)<\|endofentitytype\|>", text
    )
    return tuple(Entity(value.strip(), kind.strip()) for value, kind in pairs)


def parse_output(task: Task | str, text: str) -> TaskResult:
    """Model output (decoded with special tokens kept) → the task's typed result. Never raises on
    malformed text: missing fields come back as None/empty (SRWT also flags repairs)."""
    output = TASKS[Task(task)].output
    text = text.split("<|endoftext|>")[0].split("<|im_end|>")[0]
    if output is Output.WORDS:
        return parse_srwt_result(text)
    if output is Output.NOTE:
        sonic = _field(text, "<|sonic|>")
        instrument = _field(text, "<|instrument|>")
        if Task(task) is Task.NOTE_INSTRUMENT and "<|instrument|>" not in text:
            instrument = strip_tags(text)  # its prompt ends in <|instrument|>: the answer is the bare family
        return NoteResult(
            _midi(text, "pitch"), _midi(text, "velocity"), instrument or None,
            tuple(s.strip() for s in sonic.split(",") if s.strip()) if sonic else (),
        )
    if output is Output.LANGUAGE:
        codes = [code for code in re.findall(r"<\|(\w+)\|>", text) if code in AUDIO_LANGUAGES]
        return LanguageResult(codes[0] if codes else None)
    if output is Output.ENTITIES:
        plain = re.sub(r"<\|startofentitytype\|>.*?<\|endofentitytype\|>", " ", text)
        return EntitiesResult(strip_tags(plain), _entities(text))
    if output is Output.INTENT:
        return IntentResult(_field(text, "<|scenario|>") or None, _field(text, "<|action|>") or None, _entities(text))
    if output is Output.SEGMENTS:
        times = [t for t in (parse_time_token(m) for m in TAG.findall(text)) if t is not None]
        return SegmentsResult(tuple((a, max(a, b)) for a, b in zip(times[::2], times[1::2])))
    plain = strip_tags(text)
    if output is Output.LABEL:
        return LabelResult((plain,) if plain else ())
    if output is Output.LABELS:
        return LabelResult(tuple(label.strip() for label in plain.split(",") if label.strip()))
    if output is Output.ANSWER:
        return AnswerResult(plain)
    return TextResult(plain)
