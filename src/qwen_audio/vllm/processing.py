"""vLLM's multimodal processor for Qwen-Audio: audios → log-mels, and each audio's span in the prompt.

The prompt's tokens come from vLLM's renderer: a text prompt is tokenized by
``tokenizer.VllmPromptTokenizer``, which writes every ``<audio>…</audio>`` as the placeholder
``<audio>`` + one pad + ``</audio>``. Here each audio is cut to the encoder's 30 s window, its
log-mel taken (``audio.batch_log_mel``, the same features ``QwenAudio`` computes) and its span
length counted (``formats.spans.audio_span``); the placeholder is then widened to that span, whose
every position (``<audio>``, the pads, ``</audio>``) receives the encoder's output, as
``runtime.splice_audio`` does. A prompt of token ids may also hold full spans already (what this
package's own processor writes): those are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers import BatchFeature
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.inputs import MultiModalDataDict, MultiModalInput
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)
from vllm.multimodal.processing.context import TimingContext
from vllm.multimodal.processing.inputs import ProcessorInputs

from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.errors import QwenAudioError
from qwen_audio.formats.spans import N_SAMPLES, SAMPLE_RATE, audio_span, min_audio_samples, pooled_frames
from qwen_audio.formats.tokens import AUDIO_END, AUDIO_START
from qwen_audio.processing import audio_features


class AudioSpanCountError(QwenAudioError, ValueError):
    """A prompt's audio spans and its audios differ in number (a ValueError: the server answers 400)."""


def check_span_count(prompt_ids: Sequence[int], audios: int, config: QwenAudioConfig) -> None:
    """One audio per ``<audio>…</audio>`` span, else :class:`AudioSpanCountError`."""
    spans = list(prompt_ids).count(config.audio_start_id)
    if spans != audios:
        raise AudioSpanCountError(
            f"the prompt holds {spans} <audio>…</audio> spans but {audios} audios came with it: give one audio per span"
        )


def span_ids(config: QwenAudioConfig, pooled_len: int) -> list[int]:
    """An audio's tokens in the prompt: ``<audio>``, one pad per pooled frame, ``</audio>``."""
    return [config.audio_start_id, *([config.audio_pad_id] * pooled_len), config.audio_end_id]


class QwenAudioProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> QwenAudioConfig:
        return self.ctx.get_hf_config(QwenAudioConfig)

    def get_data_parser(self) -> MultiModalDataParser:
        # soxr at its default (HQ) quality is how qwen_audio.audio resamples a file, so a 44.1 kHz
        # upload reaches the encoder as it does through QwenAudio. Channels are averaged to mono.
        return MultiModalDataParser(
            target_sr=SAMPLE_RATE, target_channels=1, audio_resample_method="soxr",
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"audio": None}

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int] | None = None) -> Mapping[str, int]:
        return {"audio": audio_span(N_SAMPLES).span_tokens}  # a 30 s window: 750 frames + <audio>, </audio>


class QwenAudioDummyInputsBuilder(BaseDummyInputsBuilder[QwenAudioProcessingInfo]):
    """What vLLM profiles memory with: prompts of 30 s audios."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return f"{AUDIO_START}audio{AUDIO_END}" * mm_counts.get("audio", 0)

    def get_dummy_mm_data(
        self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Mapping[str, MultiModalDummyOptions] | None = None,
    ) -> MultiModalDataDict:
        audios = self._get_dummy_audios(length=N_SAMPLES, num_audios=mm_counts.get("audio", 0),
                                        overrides=(mm_options or {}).get("audio"))
        return {"audio": audios}


class QwenAudioMultiModalProcessor(BaseMultiModalProcessor[QwenAudioProcessingInfo]):
    def apply(self, inputs: ProcessorInputs, timing_ctx: TimingContext) -> MultiModalInput:
        # A span left without audio would reach the decoder as plain token embeddings; an audio without
        # a span fails deep in vLLM. (A prompt with spans and no audio at all never comes here: vLLM
        # sends a prompt without multimodal data straight to the decoder and offers a model no hook
        # to check it; qwen-audio serve --engine vllm checks its prompts itself.)
        check_span_count(inputs.prompt, inputs.mm_data_items.get_all_counts().get("audio", 0), self.info.get_hf_config())
        return super().apply(inputs, timing_ctx)

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        waves = [np.asarray(w, dtype=np.float32) for w in hf_data.get("audio", ())]  # type: ignore[union-attr]
        for wave in waves:
            audio_span(wave.shape[-1])  # too short for one frame: InvalidAudioError (a ValueError: the server's 400)
        # One mel per audio, as vLLM caches processed items one by one.
        mels = [audio_features([wave]) for wave in waves]  # the package's one 30 s cut and log-mel
        return BatchFeature({
            "audio_features": torch.cat([m.features for m in mels]),
            "audio_lengths": torch.cat([m.mel_lengths for m in mels]),
        })

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object],
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {
            "audio_features": MultiModalFieldConfig.batched("audio"),
            "audio_lengths": MultiModalFieldConfig.batched("audio", keep_on_cpu=True),
        }

    def _get_prompt_updates(
        self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        config = self.info.get_hf_config()
        mel_lengths = out_mm_kwargs.get_data().get("audio_lengths")
        pooled = [] if mel_lengths is None else [int(n) for n in pooled_frames(mel_lengths)]
        placeholder = span_ids(config, audio_span(min_audio_samples()).pooled_len)

        def full_span(item: int) -> list[int]:
            return span_ids(config, pooled[item])

        return [
            PromptReplacement(modality="audio", target=full_span, replacement=full_span),  # already expanded
            PromptReplacement(modality="audio", target=placeholder, replacement=full_span),
        ]


__all__ = [
    "AudioSpanCountError", "check_span_count", "QwenAudioDummyInputsBuilder", "QwenAudioMultiModalProcessor", "QwenAudioProcessingInfo", "span_ids",
]
