"""KV backends: the decoder's prefill and decoding steps over preallocated keys and values.

transformers' ``generate`` spends most of a small model's step on bookkeeping (cache objects, mask
builders, logits processors, kwargs plumbing). A backend keeps preallocated K/V buffers, a rotary
table and one additive key mask, and computes each layer from the decoder's own weights, so its
logits are the Qwen2 forward's (tests/test_generation.py checks the logits and the tokens).

Two implementations of :class:`KVBackend` share :class:`KVCache` (buffers, key mask, attention) and
:class:`RotaryTables` (angles per position, per row under dynamic NTK; log-n query factors):
:class:`StaticKV` here calls the decoder's modules (any dtype, LoRA wrappers included);
``folded.FoldedKV`` runs rearranged copies of the weights in about half the ops per step.
Both reach the Qwen2 blocks through ``llm.qwen2_parts`` only.

Long context: ``ntk_alphas`` (one per row, from the prefill) and ``logn_seq_length`` build the
released model's dynamic NTK and log-n scaling (``long_context.py``) into the rotary tables and the
queries, so every decode path gives the released logits.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedConfig, Qwen2Model

from qwen_audio.llm import Qwen2Parts, qwen2_parts
from qwen_audio.long_context import logn_query_scale, ntk_inv_freq


class KVBackend(Protocol):
    """What the decoding loop needs of a decoder: the prompt once, then one token per row at a time."""

    def prefill(self, embeds: Tensor, positions: Tensor, key_valid: Tensor) -> Tensor:
        """Run the prompts [batch, length, hidden] at ``positions`` [batch, length]; ``key_valid``
        [batch, length] marks real tokens (left padding: False). Logits [batch, vocab] of the last column."""
        ...

    def step(self, embeds: Tensor, positions: Tensor) -> Tensor:
        """Run one new token per row [batch, 1, hidden] at ``positions`` [batch, 1]: logits [batch, vocab]."""
        ...


class KVCache:
    """Each layer's keys and values [batch, kv_heads, max_length, head_dim], filled left to right, and
    an additive key mask (−inf on padding) that attention reads only once a padded prompt wrote it."""

    def __init__(self, layers: int, batch: int, heads: int, kv_heads: int, head_dim: int, max_length: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (batch, kv_heads, max_length, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.key_mask = torch.zeros((batch, max_length), dtype=dtype, device=device)
        self.gqa = kv_heads != heads
        self.length = 0
        self.padded = False

    def extend(self, embeds: Tensor, key_valid: Tensor | None) -> tuple[int, int, Tensor | None]:
        """Claim the columns of ``embeds`` [batch, new, hidden]: (start, end, the additive mask of their queries)."""
        start, end = self.length, self.length + embeds.shape[1]
        if key_valid is not None and not bool(key_valid.all()):  # the buffer starts at 0.0 (valid): only padding needs writing
            self.key_mask[:, start:end] = torch.where(key_valid, 0.0, float("-inf"))
            self.padded = True
        mask = self.key_mask[:, None, None, :end] if self.padded else None
        new = end - start
        if new > 1:  # prefill: causal, and every query may see itself so padded rows stay finite
            queries = torch.arange(new, device=embeds.device)[:, None] + start
            keys = torch.arange(end, device=embeds.device)[None, :]
            causal = torch.zeros(new, end, dtype=embeds.dtype, device=embeds.device).masked_fill(keys > queries, float("-inf"))
            mask = causal if mask is None else (mask + causal).masked_fill(keys == queries, 0.0)
        self.length = end
        return start, end, mask

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, start: int, end: int) -> Tensor:
        """Store these keys/values ([batch, kv_heads, new, head_dim]) and attend over the cache: [batch * new, heads * head_dim]."""
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        context = F.scaled_dot_product_attention(
            q, self.keys[layer][:, :, :end], self.values[layer][:, :, :end], attn_mask=mask, enable_gqa=self.gqa,
        )
        batch, _, new, _ = q.shape
        return context.transpose(1, 2).reshape(batch * new, -1)


class RotaryTables:
    """Rotary angles of every position, [max_length, head_dim / 2] (per row under dynamic NTK:
    [batch, max_length, head_dim / 2]), the rotary module's cos/sin scale, and log-n query factors."""

    def __init__(self, config: PreTrainedConfig, parts: Qwen2Parts, batch: int, max_length: int, device: torch.device, *,
                 ntk_alphas: list[int] | None, logn_seq_length: int | None) -> None:
        head_dim = config.hidden_size // config.num_attention_heads
        steps = torch.arange(max_length, dtype=torch.float32, device=device)
        self.per_row = ntk_alphas is not None and any(alpha != 1 for alpha in ntk_alphas)
        if self.per_row:  # each row's own rotary base
            inv_freq = ntk_inv_freq(float(config.rope_parameters["rope_theta"]), head_dim, ntk_alphas).to(device)
            self.angles = steps[None, :, None] * inv_freq[:, None, :]
            self.rows = torch.arange(batch, device=device)[:, None]
        else:
            self.angles = torch.outer(steps, parts.inv_freq.float())
        self.scale = parts.attention_scaling
        self.logn_seq_length = logn_seq_length

    def at(self, table: Tensor, positions: Tensor) -> Tensor:
        """Rows of a table built from ``angles`` at ``positions`` [batch, new]: [batch, new, …]."""
        return table[self.rows, positions] if self.per_row else table[positions]

    def query_scale(self, positions: Tensor, dtype: torch.dtype) -> Tensor | None:
        """The log-n factor [batch, 1, new, 1] of these queries, None where every factor is 1."""
        if self.logn_seq_length is None or int(positions.max()) + 1 <= self.logn_seq_length:
            return None
        return logn_query_scale(positions, self.logn_seq_length).to(dtype)[:, None, :, None]


def rms_norm(norm: nn.Module, eps: float, x: Tensor) -> Tensor:
    """Qwen2's RMSNorm as one fused op where that is bit-identical (fp32); the module itself otherwise."""
    if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return F.rms_norm(x, norm.weight.shape, norm.weight, eps)
    return norm(x)


class StaticKV:
    """A ``KVBackend`` over the decoder's own modules: its projections, norms and MLPs, so any dtype and
    any wrapper (LoRA) decode as the forward does; rotary as one roll and two products."""

    def __init__(
        self, decoder: Qwen2Model, lm_head: nn.Module, batch: int, max_length: int, *,
        ntk_alphas: list[int] | None = None, logn_seq_length: int | None = None,
    ) -> None:
        config, weight = decoder.config, lm_head.weight
        self.parts, self.lm_head = qwen2_parts(decoder), lm_head
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.hidden_size // self.heads
        self.cache = KVCache(len(self.parts.layers), batch, self.heads, self.kv_heads, self.head_dim, max_length,
                             weight.dtype, weight.device)
        self.rotary = RotaryTables(config, self.parts, batch, max_length, weight.device, ntk_alphas=ntk_alphas,
                                   logn_seq_length=logn_seq_length)
        table = torch.cat((self.rotary.angles, self.rotary.angles), dim=-1)
        scale = self.rotary.scale
        self.cos = (table.cos() * scale).to(weight.dtype)
        # rotate_half(x) * sin == roll(x, d/2) * (sin with its first half negated), exactly: one op, not five
        sin = table.sin() * scale
        self.half = self.head_dim // 2
        self.sin = torch.cat((-sin[..., : self.half], sin[..., self.half :]), dim=-1).to(weight.dtype)

    @torch.no_grad()
    def prefill(self, embeds: Tensor, positions: Tensor, key_valid: Tensor) -> Tensor:
        return self._forward(embeds, positions, key_valid)

    @torch.no_grad()
    def step(self, embeds: Tensor, positions: Tensor) -> Tensor:
        return self._forward(embeds, positions, None)

    def _forward(self, embeds: Tensor, positions: Tensor, key_valid: Tensor | None) -> Tensor:
        batch, new, _ = embeds.shape
        start, end, mask = self.cache.extend(embeds, key_valid)
        cos, sin, half = self.rotary.at(self.cos, positions)[:, None], self.rotary.at(self.sin, positions)[:, None], self.half
        query_scale = self.rotary.query_scale(positions, embeds.dtype)
        eps = self.parts.rms_norm_eps
        x = embeds
        for i, layer in enumerate(self.parts.layers):
            h = rms_norm(layer.input_norm, eps, x)
            q = layer.q(h).view(batch, new, self.heads, self.head_dim).transpose(1, 2)
            k = layer.k(h).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            v = layer.v(h).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + q.roll(half, -1) * sin
            if query_scale is not None:
                q = q * query_scale
            context = self.cache.attend(i, q, k * cos + k.roll(half, -1) * sin, v, mask, start, end)
            x = x + layer.o(context.view(batch, new, -1))
            x = x + layer.mlp(rms_norm(layer.post_attention_norm, eps, x))
        return self.lm_head(rms_norm(self.parts.final_norm, eps, x[:, -1]))


__all__ = ["KVBackend", "KVCache", "RotaryTables", "StaticKV", "rms_norm"]
