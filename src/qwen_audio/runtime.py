"""What every Qwen-Audio model does at inference, and the inference model that does only that.

:class:`AudioTextDecoding` is the inference half of a Qwen-Audio model: audio spans spliced into
the text embeddings (``<audio>`` + pads + ``</audio>``, spec "Audio in the text"; audios matched to
spans in reading order, row by row, as the official model does) and this package's decoding loop
(``generation/``). ``model.QwenAudioForCausalLM`` (transformers' ``PreTrainedModel``: training,
``generate``, ``save_pretrained``, PEFT) and :class:`QwenAudioRuntime` both have it.

:class:`QwenAudioRuntime` holds the same tensors under the same names, in plain torch modules
(``llm.DecoderLayout``), and is what ``QwenAudio.from_pretrained`` loads. transformers' modelling
code imports ``torch._dynamo`` and ``torch.distributed.tensor``: ~1.5 s of a 4.6 s cold
``qwen-audio transcribe`` on 2 cores, and several seconds on slower machines. For beam sampling,
the one thing only transformers' ``generate`` does, ``QwenAudioForCausalLM.sharing`` builds a
transformers model over these very tensors.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers.generation.streamers import BaseStreamer

from qwen_audio.audio import MelBatch
from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.encoder import AudioEncoder, EncodedAudio
from qwen_audio.errors import CheckpointError, QwenAudioError
from qwen_audio.generation import (
    CtcPrefixScorer, Hypothesis, KVBackend, KVBackends, LoopGuard, Sampling, TimedText, beam_search, decode_steps,
    prefill, streamed,
)
from qwen_audio.llm import DecoderLayout, has_plain_layout
from qwen_audio.long_context import decoder_settings


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


class AudioTextDecoding:
    """Encoding, splicing and decoding over ``self.audio`` (the encoder), ``self.model`` (the decoder:
    ``embed_tokens`` and Qwen2's layers), ``self.lm_head``, ``self.config``, ``self.generation_config``
    (its ``eos_token_id`` and ``pad_token_id``) and ``self.kv_backends``.

    Decoding: ``fast_generate`` runs this package's one decoding loop (``generation/``: greedy/sampling,
    stop tokens, streamer) with transformers' ``generate``'s tokens and less per-step overhead;
    ``fast_beam_search`` its beam search; ``next_token_logits`` its prefill alone. Batches are
    left-padded with an ``attention_mask``.
    """

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
        ``generation.decode_steps`` run to the end (``generation.streamed``) over the backend ``self.kv_backends`` picks.

        Same contract as ``generate``: left-padded batches with ``attention_mask`` equal batch size 1,
        rows that finished are filled with the pad id, returns prompt + new tokens. ``fold=False``
        runs the decoder's own modules (``generation.StaticKV``) even where ``generation.FoldedKV``
        could be used; tokens are the same, to float rounding of the logits. ``loop_guard`` ends rows
        that fall into a loop (off by default: then the tokens are transformers' ``generate``'s);
        ``constraints`` limit rows to a known text with free word times (``generation.TimedText``).
        """
        input_ids = input_ids.to(self.device)
        steps = self.fast_generate_steps(
            input_ids, attention_mask=attention_mask, audio_features=audio_features, audio_lengths=audio_lengths,
            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            eos_token_id=eos_token_id, generator=generator, fold=fold, loop_guard=loop_guard, constraints=constraints)
        return streamed(steps, input_ids, streamer)

    def fast_generate_steps(
        self, input_ids: Tensor, *, attention_mask: Tensor | None = None, audio_features: Tensor | None = None,
        audio_lengths: Tensor | None = None, max_new_tokens: int = 256, do_sample: bool = False,
        temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_token_id: int | list[int] | None = None,
        generator: torch.Generator | None = None, fold: bool = True, loop_guard: LoopGuard | None = None,
        constraints: Sequence[TimedText | None] | None = None,
    ) -> Generator[Tensor, None, Tensor]:
        """``fast_generate`` one step at a time (``generation.decode_steps``): yields each step's tokens
        [batch], returns prompt + new tokens; the prompts are prefilled at the first step."""
        stops = self._stop_ids(eos_token_id)
        input_ids = input_ids.to(self.device)
        with torch.inference_mode():
            embeds, mask, backend = self._decoding_inputs(input_ids, attention_mask, audio_features, audio_lengths,
                                                          input_ids.shape[1] + max_new_tokens, fold)
        return decode_steps(
            backend, self.model.embed_tokens, input_ids, embeds, mask, max_new_tokens=max_new_tokens,
            sampling=Sampling(do_sample, temperature, top_k, top_p), stops=stops,
            pad_id=self.generation_config.pad_token_id, generator=generator, loop_guard=loop_guard,
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


@dataclass
class DecodingDefaults:
    """The two fields of a generation config that decoding reads: the stop tokens and the pad id."""

    eos_token_id: list[int]
    pad_token_id: int


WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


class QwenAudioRuntime(AudioTextDecoding, nn.Module):
    """Whisper encoder (``audio``) + Qwen2-layout decoder weights (``model``) + ``lm_head``, for inference:
    the parameters and names of ``QwenAudioForCausalLM``, without transformers' modelling code."""

    def __init__(self, config: QwenAudioConfig, defaults: DecodingDefaults | None = None) -> None:
        super().__init__()
        self.config = config
        self.audio = AudioEncoder(config.audio)
        self.model = DecoderLayout(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.generation_config = defaults or DecodingDefaults(list(config.eos_token_ids), config.endoftext_id)
        self.kv_backends = KVBackends()

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head


_INIT_FILLS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
               "xavier_normal_", "ones_", "zeros_", "constant_")


@contextmanager
def _empty_modules() -> Iterator[None]:
    """Modules built here have meta tensors and skip ``nn.init``'s fills: they only receive a file's
    tensors. A fill on a meta tensor runs a decomposition that imports ``torch._dynamo`` (~0.5 s).
    Patches ``torch.nn.init`` for the block, as transformers' ``no_init_weights`` does: not for two threads."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FILLS}
    for name in _INIT_FILLS:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        with torch.device("meta"):
            yield
    finally:
        for name, fill in saved.items():
            setattr(nn.init, name, fill)


def can_load_runtime(location: Path) -> bool:
    """A folder in this package's layout that :func:`load_runtime` reads: safetensors weights and a
    decoder ``DecoderLayout`` holds (anything else opens as ``QwenAudioForCausalLM``)."""
    if not ((location / WEIGHTS).is_file() or (location / WEIGHTS_INDEX).is_file()):
        return False
    return has_plain_layout(QwenAudioConfig.from_pretrained(str(location)))


def load_runtime(location: str | Path, *, dtype: torch.dtype | None = None) -> QwenAudioRuntime:
    """The inference model of a folder in this package's layout (``model.safetensors`` or its index).

    Built on the meta device and given the file's tensors (no random init, no copy); the rotary
    table, which no checkpoint stores, is computed on the CPU. Every parameter must be in the file.
    """
    location = Path(location)
    config = QwenAudioConfig.from_pretrained(str(location))
    defaults = None
    generation = location / "generation_config.json"
    if generation.is_file():
        stored = json.loads(generation.read_text())
        stops = stored.get("eos_token_id", list(config.eos_token_ids))
        defaults = DecodingDefaults([stops] if isinstance(stops, int) else list(stops),
                                    stored.get("pad_token_id", config.endoftext_id))
    if (location / WEIGHTS).is_file():
        state = load_file(str(location / WEIGHTS))
    else:
        index = json.loads((location / WEIGHTS_INDEX).read_text())
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(str(location / shard)))
    if config.tie_word_embeddings and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    with _empty_modules():
        model = QwenAudioRuntime(config, defaults)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{location}: the weights do not fit the config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    if dtype is not None:
        model.to(dtype)
    return model.eval()


__all__ = [
    "AudioSpanError", "AudioTextDecoding", "DecodingDefaults", "QwenAudioRuntime", "can_load_runtime",
    "find_audio_spans", "load_runtime", "splice_audio",
]
