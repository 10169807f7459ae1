"""The tokenizer vLLM runs: ``QwenAudioTokenizer`` whose text prompts hold placeholder audio spans.

vLLM tokenizes a prompt before it has looked at the prompt's audios, but an audio's span length
(``formats.spans.audio_span``) depends on the audio. So here every ``<audio>…</audio>`` in text
encodes to the shortest span, ``<audio>`` + one pad + ``</audio>`` (what ``min_audio_samples()``
samples take), whatever is written between the tags; the multimodal processor
(``processing.py``) then widens each placeholder to its audio's span. Everything else, the task
tags and ChatML markers included, encodes exactly as ``QwenAudioTokenizer`` does.

vLLM detokenizes through ``convert_ids_to_tokens``; with ``skip_special_tokens`` that drops every
spec token here (time stamps and task tags too), as ``QwenAudioTokenizer.decode`` does, not only
``<|endoftext|>``, the one transformers counts as special.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from qwen_audio.formats.spans import min_audio_samples
from qwen_audio.tokenizer import AudioLengths, QwenAudioTokenizer


def placeholder_samples(path: str) -> int:
    """The length every audio span of a text prompt is encoded with: one pooled frame's samples."""
    return min_audio_samples()


class VllmPromptTokenizer(QwenAudioTokenizer):
    """Audio spans in text become placeholders; given ``audio_lengths``, the usual full spans."""

    def tokenize(self, text: str, audio_lengths: AudioLengths = None, **kwargs: object) -> list[Union[bytes, str]]:
        return super().tokenize(text, placeholder_samples if audio_lengths is None else audio_lengths, **kwargs)

    def convert_ids_to_tokens(
        self, ids: Union[int, Sequence[int]], skip_special_tokens: bool = False,
    ) -> Union[bytes, str, list[Union[bytes, str]]]:
        if isinstance(ids, int) or not skip_special_tokens:
            return super().convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
        return [self._convert_id_to_token(int(i)) for i in ids if 0 <= int(i) < self.n_ranks]


__all__ = ["VllmPromptTokenizer", "placeholder_samples"]
