"""The special tokens of the spec, in the official id order, and the shape of an encoded prompt.

The ids must equal the official checkpoint's (its embedding rows are indexed by them), so the
special-token list below is the contract: never reorder it, only the spec may change it.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen_audio.formats.languages import LANGUAGES
from qwen_audio.formats.timestamps import N_TIME_TOKENS, time_token_text

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
AUDIO_PAD = "[[[AUDIO:modality]]]"
AUDIO_START = "<audio>"
AUDIO_END = "</audio>"
STARTOFTRANSCRIPT = "<|startoftranscript|>"
# The official README's spelling; the vocabulary only has the short form.
STARTOFTRANSCRIPT_ALIAS = "<|startoftranscription|>"
STARTOFANALYSIS = "<|startofanalysis|>"
N_EXTRA_TOKENS = 205


def special_tokens() -> tuple[str, ...]:
    """All special tokens, in the id order of the official tokenizer (spec §Tokenizer)."""
    tokens = [ENDOFTEXT, IM_START, IM_END, *(f"<|extra_{i}|>" for i in range(N_EXTRA_TOKENS))]
    tokens += [AUDIO_PAD, STARTOFTRANSCRIPT, STARTOFANALYSIS]
    tokens += ["<|translate|>", "<|transcribe|>", "<|caption|>", "<|keyword|>", "<|unknown|>"]
    tokens += [f"<|{lang}|>" for lang in LANGUAGES] + ["<|zh_tr|>"]
    tokens += ["<|notimestamps|>", "<|sil|>", "<|timestamps|>"]
    tokens += [time_token_text(i) for i in range(N_TIME_TOKENS)]
    tokens += ["<|caption_audiocaps|>", "<|caption_clotho|>", "<|audioset_ontology|>", "<|caption_plain|>"]
    tokens += ["<|itn|>", "<|wo_itn|>"]
    tokens += ["<|startofentityvalue|>", "<|endofentityvalue|>", "<|startofentitytype|>", "<|endofentitytype|>"]
    tokens += ["<|named_entity_recognition|>", "<|audio_grounding|>", "<|startofword|>", "<|endofword|>"]
    tokens += ["<|delim|>", "<|emotion_recognition|>", "<|music_description|>", "<|note_analysis|>"]
    tokens += ["<|pitch|>", *(f"<|midi_pitch_{i}|>" for i in range(128))]
    tokens += ["<|velocity|>", *(f"<|midi_velocity_{i}|>" for i in range(128))]
    tokens += ["<|sonic|>", "<|instrument|>", "<|speaker_meta|>", "<|song_meta|>"]
    tokens += ["<|question|>", "<|answer|>", "<|choice|>", "<|scene|>", "<|event|>", "<|vocal_classification|>"]
    tokens += ["<|speech_understanding|>", "<|scenario|>", "<|action|>", "<|entities|>", "<|speech_edit|>"]
    tokens += [AUDIO_START, AUDIO_END]
    return tuple(tokens)


SPECIAL_TOKENS: tuple[str, ...] = special_tokens()


def special_token_ids(n_ranks: int) -> dict[str, int]:
    """Special token → id: they follow the ``n_ranks`` mergeable ranks, consecutively."""
    return {token: n_ranks + i for i, token in enumerate(SPECIAL_TOKENS)}


@dataclass(frozen=True)
class AudioSpanInfo:
    """Where one audio sits in the ids: ``ids[start]`` is ``<audio>``, ``ids[start+length-1]`` ``</audio>``."""

    path: str
    start: int
    length: int  # N: the span's tokens, bos/eos included


@dataclass(frozen=True)
class EncodedPrompt:
    ids: list[int]
    audios: tuple[AudioSpanInfo, ...]

    @property
    def audio_paths(self) -> list[str]:
        return [audio.path for audio in self.audios]
