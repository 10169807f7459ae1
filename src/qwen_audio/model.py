"""Qwen-Audio: encoder outputs spliced into the text embeddings of a Qwen decoder, plus generation.

An audio appears in ``input_ids`` as ``<audio>`` + pads + ``</audio>`` (spec, "Audio in the text").
Its span embeddings (bos vector, pooled frames, eos vector) replace the token embeddings of the
whole span, for any number of audios in any row at any position. Audios are matched to spans in
reading order: row by row, left to right, exactly as the official model does.

Audio input: ``audio_features`` [n_audio, n_mels, frames] (log-mels padded to 30 s, see
``audio.batch_log_mel``) and ``audio_lengths`` [n_audio] = real mel frames of each audio
(``samples // 160``, ``MelBatch.mel_lengths``), or a ``MelBatch`` as ``audio_features``.

Decoding: ``generate`` is transformers' (greedy, beams, sampling, streamers, processors);
``fast_generate`` runs this package's one decoding loop (``generation/``: greedy/sampling, stop
tokens, streamer) with the same tokens and less per-step overhead; ``next_token_logits`` is its
prefill alone. Batches are left-padded with an ``attention_mask``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.generation.streamers import BaseStreamer
from transformers.modeling_outputs import CausalLMOutputWithPast

from qwen_audio.audio import MelBatch
from qwen_audio.configuration import QwenAudioConfig, is_official_checkpoint
from qwen_audio.encoder import AudioEncoder, EncodedAudio, ResidualAttentionBlock, sinusoids
from qwen_audio.errors import CheckpointError, QwenAudioError
from qwen_audio.long_context import decoder_settings, forward_settings, long_context
from qwen_audio.generation import (
    CtcPrefixScorer, Hypothesis, KVBackend, KVBackends, LoopGuard, Sampling, TimedText, beam_search, decode, prefill,
)
from qwen_audio.llm import build_decoder, position_ids_from_attention_mask


class AudioSpanError(QwenAudioError, ValueError):
    """The audio spans in ``input_ids`` do not match the audios passed (count, order or length)."""


def find_audio_spans(input_ids: Tensor, audio_start_id: int) -> Tensor:
    """[n_spans, 3] long rows (batch row, index of ``<audio>``, index of ``</audio>``) in reading order."""
    starts = (input_ids == audio_start_id).nonzero()
    ends = (input_ids == audio_start_id + 1).nonzero()
    if starts.shape[0] != ends.shape[0]:
        raise AudioSpanError(
            f"input_ids hold {starts.shape[0]} <audio> but {ends.shape[0]} </audio> tokens; every audio span "
            "must be <audio> + pads + </audio> (was a prompt truncated?)"
        )
    spans = torch.cat([starts, ends[:, 1:]], dim=1)
    if len(spans):
        same_row = spans[:, 0] == ends[:, 0]
        ordered = spans[:, 1] < spans[:, 2]
        following = (spans[1:, 0] != spans[:-1, 0]) | (spans[1:, 1] > spans[:-1, 2])
        if not (same_row.all() and ordered.all() and following.all()):
            raise AudioSpanError("audio tags are unbalanced or nested: each <audio> must be closed by </audio> in the same row")
    return spans


def splice_audio(inputs_embeds: Tensor, input_ids: Tensor, encoded: EncodedAudio, audio_start_id: int) -> Tensor:
    """Replace each audio span's embeddings (``<audio>`` … ``</audio>`` inclusive) with the encoder's."""
    spans = find_audio_spans(input_ids, audio_start_id)
    n_audio = encoded.lengths.shape[0]
    if spans.shape[0] != n_audio:
        raise AudioSpanError(f"input_ids hold {spans.shape[0]} audio spans but {n_audio} audios were passed")
    if n_audio == 0:
        return inputs_embeds
    expected = (encoded.lengths + 2).tolist()
    actual = (spans[:, 2] - spans[:, 1] + 1).tolist()
    if expected != actual:
        raise AudioSpanError(
            f"audio span lengths in input_ids {actual} differ from the audios' {expected} tokens; build the prompt "
            "with the same lengths (audio.audio_span(num_samples).span_tokens) as the features"
        )
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, start, end in spans.tolist():
        mask[row] |= (positions >= start) & (positions <= end)
    flat = torch.cat(encoded.spans()).to(inputs_embeds.dtype)
    return inputs_embeds.masked_scatter(mask[..., None].expand_as(inputs_embeds), flat)


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


class QwenAudioForCausalLM(QwenAudioPreTrainedModel, GenerationMixin):
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

    def encode_audio(
        self, audio_features: Tensor | MelBatch, audio_lengths: Tensor | None = None, *, grouped: bool = False,
    ) -> EncodedAudio:
        """Run the encoder; ``audio_lengths`` are real mel frames (default: all frames are real).

        ``audio_features`` may also be an ``audio.MelBatch``, which carries its own mel lengths.
        ``grouped`` runs audios of similar length together (``AudioEncoder.grouped``): the same
        result, faster for mixed lengths; decoding uses it, training keeps one call per batch.
        """
        if isinstance(audio_features, MelBatch):
            audio_features, audio_lengths = audio_features.features, audio_features.mel_lengths
        encode = self.audio.grouped if grouped else self.audio
        return encode(audio_features.to(self.device), audio_lengths)

    def embed_inputs(
        self, input_ids: Tensor, audio_features: Tensor | MelBatch | EncodedAudio | None = None,
        audio_lengths: Tensor | None = None, *, grouped: bool = False,
    ) -> Tensor:
        """Token embeddings with every audio span replaced by its encoder output (``grouped``: see ``encode_audio``).
        ``audio_features`` may be that output already (an ``EncodedAudio``): a caller that reads the frames
        too (the CTC rescoring) encodes once."""
        embeds = self.model.embed_tokens(input_ids)
        if audio_features is None:
            if (input_ids == self.config.audio_start_id).any():
                raise AudioSpanError(
                    "input_ids contain <audio> spans but no audio_features were passed; pass the mels "
                    "(audio.batch_log_mel) as audio_features= and their mel lengths as audio_lengths="
                )
            return embeds
        encoded = (audio_features if isinstance(audio_features, EncodedAudio)
                   else self.encode_audio(audio_features, audio_lengths, grouped=grouped))
        return splice_audio(embeds, input_ids, encoded, self.config.audio_start_id)

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

    @torch.no_grad()
    def fast_generate(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        audio_features: Tensor | None = None,
        audio_lengths: Tensor | None = None,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        eos_token_id: int | list[int] | None = None,
        streamer: BaseStreamer | None = None,
        generator: torch.Generator | None = None,
        fold: bool = True,
        loop_guard: LoopGuard | None = None,
        constraints: Sequence[TimedText | None] | None = None,
    ) -> Tensor:
        """Greedy or sampled decoding without ``generate``'s per-step overhead (no beams, no processors):
        ``generation.decode`` over the backend ``self.kv_backends`` picks.

        Same contract as ``generate``: left-padded batches with ``attention_mask`` equal batch size 1,
        rows that finished are filled with the pad id, returns prompt + new tokens. ``fold=False``
        runs the decoder's own modules (``generation.StaticKV``) even where ``generation.FoldedKV``
        could be used; tokens are the same, to float rounding of the logits. ``loop_guard`` ends rows
        that fall into a loop (off by default: then the tokens are transformers' ``generate``'s);
        ``constraints`` limit rows to a known text with free word times (``generation.TimedText``).
        """
        stops = self._stop_ids(eos_token_id)
        input_ids = input_ids.to(self.device)
        with torch.inference_mode():
            embeds, mask, backend = self._decoding_inputs(input_ids, attention_mask, audio_features, audio_lengths,
                                                          input_ids.shape[1] + max_new_tokens, fold)
        return decode(
            backend, self.model.embed_tokens, input_ids, embeds, mask, max_new_tokens=max_new_tokens,
            sampling=Sampling(do_sample, temperature, top_k, top_p), stops=stops,
            pad_id=self.generation_config.pad_token_id, streamer=streamer, generator=generator, loop_guard=loop_guard,
            constraints=constraints,
        )

    @torch.no_grad()
    def fast_beam_search(
        self, input_ids: Tensor, *, attention_mask: Tensor | None = None, audio_features: Tensor | EncodedAudio | None = None,
        audio_lengths: Tensor | None = None, num_beams: int = 4, max_new_tokens: int = 256,
        eos_token_id: int | list[int] | None = None, fold: bool = True, loop_guard: LoopGuard | None = None,
        ctc: Sequence[CtcPrefixScorer] | None = None, ctc_weight: float = 0.3,
    ) -> list[list[Hypothesis]]:
        """Each row's ``num_beams`` best continuations, best first (``generation.beam_search``), on the
        backend ``fast_generate`` uses: an N-best list with exact log-probabilities, for rescoring.
        ``audio_features`` may be the encoder's output already (``embed_inputs``); ``ctc`` (a scorer per
        row) steers the beams by a CTC's prefix scores as well."""
        stops = self._stop_ids(eos_token_id)
        input_ids = input_ids.to(self.device)
        with torch.inference_mode():
            embeds, mask, backend = self._decoding_inputs(input_ids, attention_mask, audio_features, audio_lengths,
                                                          input_ids.shape[1] + max_new_tokens, fold)
        return beam_search(backend, self.model.embed_tokens, embeds, mask, beams=num_beams,
                           max_new_tokens=max_new_tokens, stops=stops, loop_guard=loop_guard, ctc=ctc, ctc_weight=ctc_weight)

    @torch.no_grad()
    def next_token_logits(
        self, input_ids: Tensor, *, attention_mask: Tensor | None = None, audio_features: Tensor | None = None,
        audio_lengths: Tensor | None = None,
    ) -> Tensor:
        """Logits [batch, vocab] of each row's next token: the decoding loop's prefill alone (language
        detection reads the language tags' logits). Left-padded rows get their batch-of-one logits."""
        input_ids = input_ids.to(self.device)
        with torch.inference_mode():
            embeds, mask, backend = self._decoding_inputs(input_ids, attention_mask, audio_features, audio_lengths,
                                                          input_ids.shape[1], True)
            logits = prefill(backend, embeds, mask)
        return logits.clone()  # outside inference mode: an ordinary tensor

    def _stop_ids(self, eos_token_id: int | list[int] | None) -> set[int]:
        """The tokens that end a row: ``eos_token_id``, else the generation config's."""
        stops = self.generation_config.eos_token_id if eos_token_id is None else eos_token_id
        return {stops} if isinstance(stops, int) else set(stops or ())

    def _decoding_inputs(
        self, input_ids: Tensor, attention_mask: Tensor | None, audio_features: Tensor | EncodedAudio | None,
        audio_lengths: Tensor | None, max_length: int, fold: bool,
    ) -> tuple[Tensor, Tensor, KVBackend]:
        """The prompts' embeddings (audio spliced), their mask, and a backend with room for ``max_length`` columns."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(self.device)
        embeds = self.embed_inputs(input_ids, audio_features, audio_lengths, grouped=True)
        settings = {} if self.training else decoder_settings(self.config, mask)  # as forward: none in training
        backend = self.kv_backends.open(self.model, self.lm_head, input_ids.shape[0], max_length, fold=fold, **settings)
        return embeds, mask, backend

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
