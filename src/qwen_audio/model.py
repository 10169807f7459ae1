"""Qwen-Audio as a transformers model: encoder outputs spliced into the text embeddings of a Qwen
decoder (transformers' Qwen2 blocks), for training, ``generate``, ``save_pretrained`` and PEFT.

An audio appears in ``input_ids`` as ``<audio>`` + pads + ``</audio>`` (spec, "Audio in the text").
Its span embeddings (bos vector, pooled frames, eos vector) replace the token embeddings of the
whole span, for any number of audios in any row at any position (``runtime.splice_audio``).

Audio input: ``audio_features`` [n_audio, n_mels, frames] (log-mels padded to 30 s, see
``audio.batch_log_mel``) and ``audio_lengths`` [n_audio] = real mel frames of each audio
(``samples // 160``, ``MelBatch.mel_lengths``), or a ``MelBatch`` as ``audio_features``.

Decoding: ``generate`` is transformers' (greedy, beams, sampling, streamers, processors);
``fast_generate``, ``fast_beam_search`` and ``next_token_logits`` are ``runtime.AudioTextDecoding``'s,
shared with the inference model ``runtime.QwenAudioRuntime`` (same tensors, no transformers
modelling code), which is what ``QwenAudio.from_pretrained`` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from qwen_audio.configuration import QwenAudioConfig, is_official_checkpoint
from qwen_audio.encoder import AudioEncoder, ResidualAttentionBlock, sinusoids
from qwen_audio.errors import CheckpointError
from qwen_audio.generation import KVBackends
from qwen_audio.llm import build_decoder, position_ids_from_attention_mask
from qwen_audio.long_context import forward_settings, long_context
from qwen_audio.runtime import AudioSpanError, AudioTextDecoding, QwenAudioRuntime, find_audio_spans, splice_audio


class QwenAudioPreTrainedModel(PreTrainedModel):
    config: QwenAudioConfig
    config_class = QwenAudioConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen2DecoderLayer", "ResidualAttentionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, AudioEncoder):
            init.copy_(module.positional_embedding, sinusoids(*module.positional_embedding.shape))


class QwenAudioForCausalLM(QwenAudioPreTrainedModel, AudioTextDecoding, GenerationMixin):
    """Whisper encoder (``audio``) + Qwen decoder (``model``) + ``lm_head``.

    ``forward``/``generate`` take ``audio_features`` and ``audio_lengths`` beside ``input_ids``;
    with ``labels`` (−100 = ignored) ``forward`` returns the shifted next-token loss.

    ``loss_per_example`` (set by a training recipe): in training, each row's target tokens are
    averaged first, then the rows, so a one-token answer (a sound's label, a language) weighs as
    much as a 40-token transcript; averaging all tokens of a batch at once lets the long targets
    drown the short ones.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: QwenAudioConfig) -> None:
        super().__init__(config)
        self.audio = AudioEncoder(config.audio)
        self.model = build_decoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        self.kv_backends = KVBackends()  # fast_generate's backend choice and the folded weights it keeps
        self.loss_per_example = False
        self.generation_config.eos_token_id = list(config.eos_token_ids)
        self.generation_config.pad_token_id = config.endoftext_id

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        audio_features: Tensor | None = None,
        audio_lengths: Tensor | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        cache = kwargs.pop("past_key_values", cache)
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (or inputs_embeds)")
            prefill = cache is None or cache.get_seq_length() == 0
            if prefill or audio_features is not None:
                inputs_embeds = self.embed_inputs(input_ids, audio_features, audio_lengths)
            else:  # decoding: new tokens are text, even an (unlikely) generated <audio>
                inputs_embeds = self.model.embed_tokens(input_ids)
        length = inputs_embeds.shape[1]
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            position_ids = position_ids_from_attention_mask(attention_mask, length)
        past = cache.get_seq_length() if cache is not None else 0
        alphas, query_scale = (None, None) if self.training else forward_settings(
            self.config, getattr(cache, "qwen_audio_ntk_alphas", None) if past > 0 else None,
            attention_mask, position_ids, past, inputs_embeds.shape[0], length,
        )
        with long_context(self.model, alphas, query_scale):
            outputs = self.model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )
        if alphas is not None and outputs.cache is not None:
            outputs.cache.qwen_audio_ntk_alphas = alphas  # decoding steps reuse the prefill's alphas
        hidden = outputs.last_hidden_state
        if labels is not None and self.training:
            # Training needs logits only where a target follows: the lm_head over every audio frame
            # and prompt token was most of a small model's step. Eval mode keeps full logits.
            targets = labels[:, 1:] != -100
            logits = self.lm_head(hidden[:, :-1][targets])
            if not targets.any():
                loss = hidden.sum() * 0.0
            elif self.loss_per_example:
                per_token = F.cross_entropy(logits.float(), labels[:, 1:][targets], reduction="none")
                counts = targets.sum(dim=1, keepdim=True)
                weights = (targets / counts.clamp(min=1))[targets]  # 1 / (the row's target count), per target
                loss = (per_token * weights).sum() / (counts > 0).sum()
            else:
                loss = F.cross_entropy(logits.float(), labels[:, 1:][targets])
            return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: Tensor | None = None,
        *,
        audio_features: Tensor | None = None,
        audio_lengths: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """transformers' ``generate`` (greedy, beam, sampling, streamers…) with audio.

        The audio is encoded and spliced once, into ``inputs_embeds`` for the prefill step only;
        ``input_ids`` still lead the returned sequences. For batches, left-pad and pass
        ``attention_mask``: positions follow the mask, so each row matches its batch-of-one result.
        """
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        if audio_features is not None or (
            input_ids is not None and (input_ids == self.config.audio_start_id).any()
        ):
            if input_ids is None:
                raise ValueError("generate with audio needs input_ids holding the audio spans")
            ids = input_ids.to(self.device)
            kwargs["inputs_embeds"] = self.embed_inputs(ids, audio_features, audio_lengths, grouped=True)
        return super().generate(input_ids, **kwargs)

    @classmethod
    def sharing(cls, runtime: QwenAudioRuntime) -> QwenAudioForCausalLM:
        """A model over the inference model's very tensors (no copy), for transformers' ``generate``.
        Its throwaway random init runs on a forked generator: a seeded sampler after it draws as if it
        had not been built."""
        with torch.random.fork_rng(devices=[]):
            model = cls(runtime.config)
        model.load_state_dict(runtime.state_dict(), strict=True, assign=True)
        model.generation_config.eos_token_id = list(runtime.generation_config.eos_token_id)
        model.generation_config.pad_token_id = runtime.generation_config.pad_token_id
        return model.to(runtime.device).eval()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any) -> QwenAudioForCausalLM:
        """This package's layout. An official Qwen-Audio folder is refused with the loader to use
        (``qwen_audio.checkpoints.load_model`` opens every layout)."""
        if is_official_checkpoint(pretrained_model_name_or_path):
            raise CheckpointError(
                f"{pretrained_model_name_or_path} is an official Qwen-Audio folder: open it with "
                "qwen_audio.checkpoints.load_model(path) or QwenAudio.from_pretrained(path), which convert it on load"
            )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


AutoConfig.register(QwenAudioConfig.model_type, QwenAudioConfig, exist_ok=True)
AutoModelForCausalLM.register(QwenAudioConfig, QwenAudioForCausalLM, exist_ok=True)

__all__ = [
    "AudioSpanError",
    "QwenAudioForCausalLM",
    "QwenAudioPreTrainedModel",
    "ResidualAttentionBlock",
    "find_audio_spans",
    "splice_audio",
]
