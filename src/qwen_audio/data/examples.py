"""Manifest records → the exact text the model trains on, split into prompt and target pieces.

The paper's recipe conditions every target on the tag prefix and trains only on the target
(§3.2); in chat SFT only the assistant replies are targets. So an example is a list of
``(text, trained)`` pieces plus the audios its ``<audio>`` spans refer to, and tokenisation
turns the untrained pieces into ``IGNORE_INDEX`` labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qwen_audio.audio import load_audio
from qwen_audio.data.chat_manifest import ChatRecord
from qwen_audio.data.manifest import ManifestRecord, tag_task
from qwen_audio.errors import ManifestError
from qwen_audio.formats.chatml import AudioItem, ChatTurn, TextItem, render_segments
from qwen_audio.formats.languages import word_separator
from qwen_audio.formats.srwt import build_srwt_target
from qwen_audio.formats.tags import TASKS, Output, Task, build_prompt
from qwen_audio.tokenizer import QwenAudioTokenizer

IGNORE_INDEX = -100  # torch's cross-entropy ignore_index


@dataclass(frozen=True)
class AudioRef:
    """One audio an example needs: a resolved path/URL and the slice of it (seconds)."""

    source: str
    offset: float = 0.0
    duration: float | None = None
    transcript: str | None = None  # what is said in it, when known (target of the encoder's auxiliary CTC)
    label: str | None = None  # for a sound, what makes it (``heard_label``): the token CTC may read that instead

    @property
    def key(self) -> str:
        """Names this audio (slice included) in a prompt and in a ChatRequest's ``audios``."""
        return AudioItem(self.source, self.offset, self.duration).key

    def load(self) -> np.ndarray:
        """The audio at 16 kHz mono, sliced as the manifest says."""
        return load_audio(self.source, offset=self.offset, duration=self.duration)


@dataclass(frozen=True)
class TextExample:
    """Pieces whose concatenation is the full training text; ``trained`` marks the targets."""

    id: str
    pieces: tuple[tuple[str, bool], ...]
    audios: tuple[AudioRef, ...]  # in the order their <audio> spans appear


@dataclass(frozen=True)
class TokenizedExample:
    id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE_INDEX outside the targets
    audio_starts: tuple[int, ...]  # position of each audio's <audio> token


def target_text(record: ManifestRecord) -> str:
    """What the model must produce after the prompt, in the task's output format."""
    task = Task(tag_task(record))
    output = TASKS[task].output
    if output is Output.WORDS:
        if not record.words:
            raise ManifestError(f"{record.id}: an SRWT example needs word alignments")
        separator = word_separator(record.text_language or record.audio_language)
        return build_srwt_target(record.words, separator=separator)
    if output is Output.LANGUAGE:
        return f"<|{record.text or record.audio_language}|>"
    if task is Task.NOTE_PITCH:
        return f"<|midi_pitch_{int(record.text)}|>"
    if task is Task.NOTE_VELOCITY:
        return f"<|midi_velocity_{int(record.text)}|>"
    if task is Task.NOTE_ANALYSIS and record.meta and {"pitch", "velocity"} <= set(record.meta):
        meta = record.meta
        return (f"<|pitch|><|midi_pitch_{int(meta['pitch'])}|><|velocity|><|midi_velocity_{int(meta['velocity'])}|>"
                f"<|instrument|>{record.text}")
    return record.text


def record_prompt(record: ManifestRecord, audio_ref: str) -> str:
    """The tag prefix of the paper's multi-task format for this record, audio span included."""
    task = tag_task(record)
    instruction = "<|itn|>" if (record.meta or {}).get("itn") and Task(task) is Task.ASR else None
    return build_prompt(
        task,
        audio=audio_ref,
        audio_language=record.audio_language,  # None: the task's default (<|unknown|> for sounds)
        text_language=record.text_language,
        instruction=instruction,
        question=record.question if TASKS[Task(task)].question else None,
    )


def spoken_text(record: ManifestRecord) -> str | None:
    """The words said in a record's audio: ``meta["spoken"]`` (the synthetic corpus writes it for
    every speech task, classification included), else the transcript of an ASR/SRWT record."""
    spoken = (record.meta or {}).get("spoken")
    if isinstance(spoken, (list, tuple)) and spoken:
        return " ".join(str(word) for word in spoken)
    if tag_task(record) in ("asr", "srwt") and record.text:
        return record.text
    return None


def heard_label(record: ManifestRecord) -> str | None:
    """What a sound record's audio is the sound of, in words: an instrument note's family
    (``meta["family"]``, whatever the record's task, pitch included), else the first label of a
    record with no language (sound events, captions, drum hits). None for speech: its words are
    ``spoken_text``'s, and "speech" names no source."""
    family = (record.meta or {}).get("family")
    if isinstance(family, str) and family:
        return family
    if record.audio_language in (None, "unknown") and record.labels and record.labels[0] != "speech":
        return record.labels[0]
    return None


def record_example(record: ManifestRecord, manifest_dir: str | Path, *, eos: str = "<|endoftext|>") -> TextExample:
    """A stage-1 (multi-task pre-training) example: prompt untrained, target + eos trained."""
    prompt = record_prompt(record, record.audio)
    audio = AudioRef(record.resolve_audio(manifest_dir), record.offset, record.duration, spoken_text(record),
                     heard_label(record))
    return TextExample(record.id, ((prompt, False), (target_text(record) + eos, True)), (audio,))


def chat_turns(
    messages: Sequence[ChatTurn], manifest_dir: str | Path
) -> tuple[str | None, list[ChatTurn], list[AudioRef]]:
    """A chat manifest's turns ready to render: (system prompt or None, turns, audios in order).

    Each returned ``AudioItem.path`` is its ``AudioRef.key`` (the path resolved against
    ``manifest_dir``, slice included), so a caller can map items to decoded audio."""
    system, turns, audios = None, [], []
    for message in messages:
        if message.role == "system":
            system = message.text
            continue
        items: list[AudioItem | TextItem] = []
        for item in message.items:
            if isinstance(item, AudioItem):
                source = item.path if _is_absolute(item.path) else str((Path(manifest_dir) / item.path).resolve())
                audios.append(AudioRef(source, item.offset, item.duration))
                items.append(AudioItem(audios[-1].key))
            else:
                items.append(item)
        turns.append(ChatTurn(message.role, tuple(items)))
    return system, turns, audios


def chat_example(record: ChatRecord, manifest_dir: str | Path) -> TextExample:
    """A stage-2 (ChatML instruction tuning) example: only assistant replies are trained."""
    system, turns, audios = chat_turns(record.messages, manifest_dir)
    kwargs = {"system": system} if system is not None else {}
    pieces = render_segments(turns, add_generation_prompt=False, **kwargs)
    return TextExample(record.id, tuple(pieces), tuple(audios))


def _is_absolute(audio: str) -> bool:
    return Path(audio).is_absolute() or "://" in audio


def tokenize_example(
    example: TextExample, tokenizer: QwenAudioTokenizer, audio_samples: Sequence[int]
) -> TokenizedExample:
    """Token ids and labels; ``audio_samples`` (16 kHz lengths, one per audio) size the spans."""
    if len(audio_samples) != len(example.audios):
        raise ValueError(f"{example.id}: {len(example.audios)} audios but {len(audio_samples)} lengths")
    ids: list[int] = []
    labels: list[int] = []
    starts: list[int] = []
    used = 0
    for text, trained in example.pieces:
        encoded = tokenizer.encode_prompt(text, list(audio_samples[used:]))
        used += len(encoded.audios)
        starts += [len(ids) + a.start for a in encoded.audios]
        ids += encoded.ids
        labels += encoded.ids if trained else [IGNORE_INDEX] * len(encoded.ids)
    if used != len(example.audios):
        raise ValueError(f"{example.id}: the text has {used} <audio> spans for {len(example.audios)} audios")
    return TokenizedExample(example.id, tuple(ids), tuple(labels), tuple(starts))
