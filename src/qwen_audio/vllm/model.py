"""``QwenAudioForCausalLM`` on vLLM: this package's Whisper encoder before vLLM's Qwen2 decoder.

The network is ``qwen_audio.model``'s, run by vLLM: ``encoder.AudioEncoder`` (unchanged, plain
PyTorch, replicated on every tensor-parallel rank) turns each audio's log-mel into its span
embeddings (``<audio>`` vector, pooled and projected frames, ``</audio>`` vector), which vLLM
scatters over the audio's span in the prompt (``processing.py`` marks the whole span); the
decoder is vLLM's ``Qwen2ForCausalLM`` (Qwen v1 is Qwen2: biased QKV, untied head), so paged
attention, continuous batching and tensor/pipeline parallelism come with it.

Weights load from this package's layout, whose decoder names (``model.*``, ``lm_head.*``) are
already Qwen2's; ``audio.*`` goes to the encoder. An official Qwen-Audio folder's tensors are renamed
into that layout as they stream in (``official.native_weights``).

Long context: the released model's dynamic NTK and log-n attention change logits only past
``seq_length`` (2048) tokens. vLLM's decoder has neither, so the context is capped there.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal, SupportsPP
from vllm.model_executor.models.utils import init_vllm_registered_model, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.encoder import AudioEncoder
from qwen_audio.errors import CheckpointError, ConfigError
from qwen_audio.formats.tokens import AUDIO_END, AUDIO_START
from qwen_audio.vllm.official import native_weights
from qwen_audio.vllm.processing import (
    QwenAudioDummyInputsBuilder,
    QwenAudioMultiModalProcessor,
    QwenAudioProcessingInfo,
)


def check_context_length(config: QwenAudioConfig, max_model_len: int) -> None:
    """Refuse a context past ``seq_length`` where the released model would switch on NTK/log-n."""
    if (config.use_dynamic_ntk or config.use_logn_attn) and max_model_len > config.seq_length:
        raise ConfigError(
            f"max_model_len {max_model_len} exceeds the model's seq_length {config.seq_length}: past it Qwen-Audio "
            "uses dynamic NTK and log-n attention, which vLLM's decoder does not have; pass "
            f"--max-model-len {config.seq_length} (or less), or use QwenAudio for longer prompts"
        )


@MULTIMODAL_REGISTRY.register_processor(
    QwenAudioMultiModalProcessor, info=QwenAudioProcessingInfo, dummy_inputs=QwenAudioDummyInputsBuilder,
)
class QwenAudioForCausalLM(nn.Module, SupportsMultiModal, SupportsPP):
    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        # vLLM joins placeholders and the message's text with "\n": the chat item of formats.chatml.
        if modality.startswith("audio"):
            return f"Audio {i}:{AUDIO_START}{i}{AUDIO_END}"
        raise ValueError(f"Qwen-Audio takes audio only, not {modality}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: QwenAudioConfig = vllm_config.model_config.hf_config
        check_context_length(config, vllm_config.model_config.max_model_len)
        self.config = config
        with self._mark_tower_model(vllm_config, "audio"):
            self.audio = AudioEncoder(config.audio)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=config, prefix=maybe_prefix(prefix, "language_model"),
                architectures=["Qwen2ForCausalLM"],
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        """Each audio's span embeddings [span_tokens, hidden], in the order of the audios."""
        features, lengths = kwargs.get("audio_features"), kwargs.get("audio_lengths")
        if features is None:
            return []
        if isinstance(features, (list, tuple)):
            features = torch.stack(list(features))
        lengths = torch.as_tensor(lengths if not isinstance(lengths, (list, tuple)) else [int(n) for n in lengths])
        weight = self.audio.conv1.weight
        encoded = self.audio(features.to(device=weight.device, dtype=weight.dtype), lengths.to(weight.device))
        return encoded.spans()

    def forward(
        self, input_ids: torch.Tensor | None, positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None, inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """``audio.*`` into the encoder (its stored buffers included); the rest is Qwen2's own layout.

        An official folder's ``transformer.*`` tensors are renamed into this package's names first.
        """
        encoder = self.audio.state_dict(keep_vars=True)
        loaded: set[str] = set()

        def decoder_weights() -> Iterable[tuple[str, torch.Tensor]]:
            for name, tensor in native_weights(self.config, weights):
                if not name.startswith("audio."):
                    yield name, tensor
                    continue
                target = encoder.get(name.removeprefix("audio."))
                if target is None or target.shape != tensor.shape:
                    raise CheckpointError(
                        f"{name} {tuple(tensor.shape)} does not fit the encoder the config describes "
                        f"({None if target is None else tuple(target.shape)}): is config.json this checkpoint's?"
                    )
                with torch.no_grad():
                    target.copy_(tensor)
                loaded.add(name)

        loaded |= {f"language_model.{name}" for name in self.language_model.load_weights(decoder_weights())}
        return loaded


__all__ = ["QwenAudioForCausalLM", "check_context_length"]
