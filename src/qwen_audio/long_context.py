"""The released Qwen-Audio's long-context inference: dynamic NTK rotary and log-n query scaling.

Released ``modeling_qwen.py`` (spec §Model), inference only (training uses neither):

- Dynamic NTK: at the prefill call each row gets ``alpha = max(2**ceil(log2(len / seq_length) + 1) - 1, 1)``
  and the rotary base becomes ``base * alpha ** (dim / (dim - 2))`` for the *whole* sequence, so a
  prompt over ``seq_length`` changes every logit, not only those past it. Decoding steps reuse the
  prefill's alphas: a prompt under ``seq_length`` that grows past it keeps alpha 1.
- Log-n: the query at 1-based position ``i > seq_length`` is multiplied by ``log(i) / log(seq_length)``.

The released code takes ``len`` from the mask only when the *padded* length passes ``seq_length``
and otherwise from the total length, and indexes rotary and log-n by absolute column (padding
included). Here ``len`` is always the row's real length and positions count real tokens: the same
numbers for a batch of one, and a padded row gets exactly its batch-of-one result (the released
batched path does not: its padded rows are rotated by their padding).

The decoder is transformers' Qwen2 stack, so this module applies the two changes around it:
:func:`long_context` swaps in per-row rotary frequencies and scales the output of every
query projection (rotary is linear, so scaling before it equals scaling after) for one forward call,
through ``llm.py``'s adapter onto the blocks' internals.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.llm import qwen2_parts, rotary_frequencies


def dynamic_ntk_alpha(length: int, seq_length: int) -> int:
    """The released model's NTK factor for a prompt of ``length`` real tokens (1 up to ``seq_length``)."""
    if length <= 0:
        return 1
    # math.log(x, 2) as the release writes it: its rounding decides ceil() at exact powers of two.
    return max(2 ** math.ceil(math.log(length / seq_length, 2) + 1) - 1, 1)


def ntk_inv_freq(base: float, head_dim: int, alphas: list[int]) -> Tensor:
    """Rotary inverse frequencies [len(alphas), head_dim / 2], float32, one row per alpha (release's arithmetic)."""
    exponents = torch.arange(0, head_dim, 2).float() / head_dim
    return torch.stack([1.0 / ((base * alpha ** (head_dim / (head_dim - 2))) ** exponents) for alpha in alphas])


def logn_query_scale(positions: Tensor, seq_length: int) -> Tensor:
    """Per-query factor [same shape as ``positions``, float32]: ``log(i) / log(seq_length)`` past it, else 1.

    ``positions`` are 0-based; the release's table is indexed by 1-based ``i`` (``range(1, 32768)``).
    """
    i = positions.double() + 1
    return torch.where(i > seq_length, i.log() / math.log(seq_length), torch.ones_like(i)).float()


def row_lengths(attention_mask: Tensor | None, batch: int, length: int) -> list[int]:
    """Real tokens of each row at prefill: the mask's sum, or the whole length without a mask."""
    if attention_mask is None or attention_mask.dim() != 2:
        return [length] * batch
    return attention_mask.long().sum(-1).tolist()


def forward_settings(
    config: QwenAudioConfig, stored_alphas: list[int] | None, attention_mask: Tensor | None,
    position_ids: Tensor | None, past: int, batch: int, length: int,
) -> tuple[list[int] | None, Tensor | None]:
    """The alphas and query factors of one inference ``forward`` call, for :func:`long_context`.

    Alphas come from each row's real length at the prefill call and ride on the cache for the
    decoding steps (``stored_alphas``); a cache filled elsewhere, without them, gets them from the
    real lengths so far.
    """
    alphas = None
    if config.use_dynamic_ntk:
        alphas = stored_alphas or [dynamic_ntk_alpha(n, config.seq_length) for n in row_lengths(attention_mask, batch, past + length)]
    query_scale = None
    if config.use_logn_attn:
        positions = position_ids
        if positions is None:
            positions = torch.arange(past, past + length)[None]
        if int(positions.max()) + 1 > config.seq_length:
            query_scale = logn_query_scale(positions, config.seq_length)
    return alphas, query_scale


def decoder_settings(config: QwenAudioConfig, attention_mask: Tensor) -> dict[str, Any]:
    """The KV backends' long-context arguments (``generation/kv.py``) for a prefill under ``attention_mask`` (as ``forward``)."""
    lengths = attention_mask.long().sum(-1).tolist()
    return dict(
        ntk_alphas=[dynamic_ntk_alpha(n, config.seq_length) for n in lengths] if config.use_dynamic_ntk else None,
        logn_seq_length=config.seq_length if config.use_logn_attn else None,
    )


@contextmanager
def long_context(decoder: nn.Module, alphas: list[int] | None, query_scale: Tensor | None) -> Iterator[None]:
    """For one forward of a Qwen2 ``decoder``: per-row NTK rotary (``alphas``, None: unchanged) and
    queries scaled by ``query_scale`` [batch, new] (None: unscaled).

    Not re-entrant and not for two threads on one model at once: it swaps the rotary frequencies and
    hooks the query projections (whatever wraps them, e.g. LoRA) until the block ends.
    """
    parts = qwen2_parts(decoder)
    device = parts.inv_freq.device
    with ExitStack() as stack:
        if alphas is not None and any(alpha != 1 for alpha in alphas):
            head_dim = parts.inv_freq.shape[-1] * 2
            base = float(decoder.config.rope_parameters["rope_theta"])
            stack.enter_context(rotary_frequencies(decoder, ntk_inv_freq(base, head_dim, alphas)[:, None, :]))
        if query_scale is not None:
            factor = query_scale[..., None].to(device)

            def scale(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
                return output * factor.to(output.dtype)

            for layer in parts.layers:
                stack.callback(layer.q.register_forward_hook(scale).remove)
        yield


__all__ = [
    "decoder_settings", "dynamic_ntk_alpha", "forward_settings", "logn_query_scale", "long_context", "ntk_inv_freq",
    "row_lengths",
]
