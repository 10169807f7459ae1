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

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedConfig

from qwen_audio.llm import Decoder, Qwen2Parts, qwen2_parts
from qwen_audio.long_context import logn_query_scale, ntk_inv_freq


class KVBackend(Protocol):
    """What the decoding loop needs of a decoder: the prompt once, then one token per row at a time."""

    def prefill(self, embeds: Tensor, positions: Tensor, key_valid: Tensor) -> Tensor:
        """Run the prompts [batch, length, hidden] at ``positions`` [batch, length] on the empty cache;
        ``key_valid`` [batch, length] marks real tokens (padding: False). Logits [batch, vocab] after
        each row's last real token; steps continue at column ``length``."""
        ...

    def step(self, embeds: Tensor, positions: Tensor) -> Tensor:
        """Run one new token per row [batch, 1, hidden] at ``positions`` [batch, 1]: logits [batch, vocab]."""
        ...

    def select(self, rows: Tensor) -> None:
        """Go on with the cached rows ``rows`` (any count, repeats allowed): a beam search's survivors."""
        ...


@dataclass(frozen=True)
class PromptLayout:
    """Where the real tokens of left-padded prompts sit once packed (padding dropped, row after row)."""

    rows: Tensor  # [tokens] the row of each real token
    columns: Tensor  # [tokens] its column in the cache
    lengths: list[int]  # real tokens of each row
    last: Tensor  # [batch] each row's last real token, as an index into the packed tokens
    padded: bool  # some row is shorter than the prompt width


class KVCache:
    """Each layer's keys and values [batch, kv_heads, max_length, head_dim], filled left to right, and
    an additive key mask (−inf on padding) that attention reads only once a padded prompt wrote it.

    The prompts are attended packed: each row over its own real tokens only. Padded to one width,
    a batch of prompts of mixed lengths spends its prefill on padding (projections and MLP on every
    padded column, attention on the square of the width): at 32 rows of 1–9 s audio, 44% of the
    columns were padding and the prefill cost more than all 64 decoding steps."""

    def __init__(self, layers: int, batch: int, heads: int, kv_heads: int, head_dim: int, max_length: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (batch, kv_heads, max_length, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.key_mask = torch.zeros((batch, max_length), dtype=dtype, device=device)
        self.gqa = kv_heads != heads
        self.length = 0
        self.padded = False

    def start(self, key_valid: Tensor) -> PromptLayout:
        """Claim the prompts' columns (``key_valid`` [batch, width], True on real tokens) on the empty cache."""
        if self.length:
            raise RuntimeError("a KV cache is prefilled once, before any step")
        lengths = key_valid.sum(-1).tolist()
        if min(lengths) == 0:
            raise ValueError("every prompt needs at least one real token (a row of the attention mask is all zeros)")
        width = key_valid.shape[1]
        self.padded = min(lengths) < width
        if self.padded:  # the mask starts at 0.0 (valid): only padding needs writing
            self.key_mask[:, :width] = torch.where(key_valid, 0.0, float("-inf"))
            for buffer in self.keys + self.values:  # padding is never written: no stray NaN there (0 × NaN is NaN)
                buffer[:, :, :width].zero_()
        rows, columns = key_valid.nonzero(as_tuple=True)
        last = torch.tensor(lengths, device=key_valid.device).cumsum(0) - 1
        self.length = width
        return PromptLayout(rows, columns, lengths, last, self.padded)

    def attend_prompt(self, layer: int, prompt: PromptLayout, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store the prompts' keys/values ([tokens, kv_heads, head_dim], packed) and attend each row over
        its own, causally: [tokens, heads * head_dim]."""
        batch = len(prompt.lengths)
        if not prompt.padded:  # rows of one length: one batched call
            width = prompt.lengths[0]

            def rows(t: Tensor) -> Tensor:
                return t.view(batch, width, *t.shape[1:]).transpose(1, 2)

            self.keys[layer][:, :, :width] = rows(k)
            self.values[layer][:, :, :width] = rows(v)
            context = F.scaled_dot_product_attention(rows(q), rows(k), rows(v), is_causal=True, enable_gqa=self.gqa)
            return context.transpose(1, 2).reshape(batch * width, -1)
        self.keys[layer][prompt.rows, :, prompt.columns] = k
        self.values[layer][prompt.rows, :, prompt.columns] = v
        pieces, start = [], 0
        for n in prompt.lengths:
            row = slice(start, start + n)
            context = F.scaled_dot_product_attention(
                q[row].transpose(0, 1)[None], k[row].transpose(0, 1)[None], v[row].transpose(0, 1)[None],
                is_causal=True, enable_gqa=self.gqa,
            )
            pieces.append(context[0].transpose(0, 1).reshape(n, -1))
            start += n
        return torch.cat(pieces)

    def select(self, rows: Tensor) -> None:
        """Keep the rows ``rows`` of every buffer, in that order (repeats allowed): a beam search's survivors."""
        # Buffer by buffer, the written columns only: the old buffer goes as its successor comes, so a
        # step's reorder holds one layer twice rather than the whole cache (a long transcription's
        # 16 pieces × 4 beams peaked at twice a 1.2 GB cache here), and copies no empty columns.
        end = self.length
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                new = old.new_empty((rows.numel(), *old.shape[1:]))
                torch.index_select(old[:, :, :end], 0, rows, out=new[:, :, :end])
                buffers[i] = new
        self.key_mask = self.key_mask.index_select(0, rows)

    def extend(self) -> tuple[int, Tensor | None]:
        """Claim the next column (a decoding step): its index and the additive key mask of its query."""
        end = self.length + 1
        self.length = end
        return end - 1, self.key_mask[:, None, None, :end] if self.padded else None

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, column: int) -> Tensor:
        """Store one step's keys/values ([batch, kv_heads, 1, head_dim]) and attend over the cache:
        [batch, heads * head_dim]."""
        end = column + 1
        self.keys[layer][:, :, column:end] = k
        self.values[layer][:, :, column:end] = v
        context = F.scaled_dot_product_attention(
            q, self.keys[layer][:, :, :end], self.values[layer][:, :, :end], attn_mask=mask, enable_gqa=self.gqa,
        )
        return context.reshape(q.shape[0], -1)  # [batch, heads, 1, head_dim]: heads then dims, as transpose(1, 2) gives


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

    def at(self, table: Tensor, positions: Tensor, rows: Tensor | None = None) -> Tensor:
        """Entries of a table built from ``angles`` at ``positions`` (any shape): [*positions.shape, …].
        Per-row tables need the ``rows`` of the positions (default: [batch, 1], one row per batch row)."""
        if not self.per_row:
            return table[positions]
        return table[self.rows if rows is None else rows, positions]

    def select(self, rows: Tensor, table: Tensor) -> Tensor:
        """A backend's ``table`` for the batch rows ``rows`` (KVCache.select); the tables follow their rows
        only where each row has its own (dynamic NTK), else ``table`` is returned as it is."""
        if not self.per_row:
            return table
        self.rows = torch.arange(rows.numel(), device=rows.device)[:, None]
        return table.index_select(0, rows)

    def query_scale(self, positions: Tensor, dtype: torch.dtype) -> Tensor | None:
        """The log-n factor of the queries at ``positions`` (same shape), None where every factor is 1."""
        if self.logn_seq_length is None or int(positions.max()) + 1 <= self.logn_seq_length:
            return None
        return logn_query_scale(positions, self.logn_seq_length).to(dtype)


def rms_norm(norm: nn.Module, eps: float, x: Tensor) -> Tensor:
    """Qwen2's RMSNorm as one fused op where that is bit-identical (fp32); the module itself otherwise."""
    if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return F.rms_norm(x, norm.weight.shape, norm.weight, eps)
    return norm(x)


class StaticKV:
    """A ``KVBackend`` over the decoder's own modules: its projections, norms and MLPs, so any dtype and
    any wrapper (LoRA) decode as the forward does; rotary as one roll and two products."""

    def __init__(
        self, decoder: Decoder, lm_head: nn.Module, batch: int, max_length: int, *,
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

    def _rotate(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        return x * cos + x.roll(self.half, -1) * sin

    @torch.no_grad()
    def prefill(self, embeds: Tensor, positions: Tensor, key_valid: Tensor) -> Tensor:
        prompt = self.cache.start(key_valid)
        x = embeds[key_valid]  # [tokens, hidden]: the real tokens, packed
        tokens = x.shape[0]
        at = positions[key_valid]
        cos, sin = self.rotary.at(self.cos, at, prompt.rows)[:, None], self.rotary.at(self.sin, at, prompt.rows)[:, None]
        query_scale = self.rotary.query_scale(at, embeds.dtype)
        eps = self.parts.rms_norm_eps
        for i, layer in enumerate(self.parts.layers):
            h = rms_norm(layer.input_norm, eps, x)
            q = self._rotate(layer.q(h).view(tokens, self.heads, self.head_dim), cos, sin)
            if query_scale is not None:
                q = q * query_scale[:, None, None]
            k = self._rotate(layer.k(h).view(tokens, self.kv_heads, self.head_dim), cos, sin)
            context = self.cache.attend_prompt(i, prompt, q, k, layer.v(h).view(tokens, self.kv_heads, self.head_dim))
            x = x + layer.o(context)
            x = x + layer.mlp(rms_norm(layer.post_attention_norm, eps, x))
        return self.lm_head(rms_norm(self.parts.final_norm, eps, x[prompt.last]))

    def select(self, rows: Tensor) -> None:
        self.cache.select(rows)
        self.cos, self.sin = self.rotary.select(rows, self.cos), self.rotary.select(rows, self.sin)

    @torch.no_grad()
    def step(self, embeds: Tensor, positions: Tensor) -> Tensor:
        batch = embeds.shape[0]
        column, mask = self.cache.extend()
        cos, sin = self.rotary.at(self.cos, positions)[:, None], self.rotary.at(self.sin, positions)[:, None]
        query_scale = self.rotary.query_scale(positions, embeds.dtype)
        eps = self.parts.rms_norm_eps
        x = embeds
        for i, layer in enumerate(self.parts.layers):
            h = rms_norm(layer.input_norm, eps, x)
            q = self._rotate(layer.q(h).view(batch, 1, self.heads, self.head_dim).transpose(1, 2), cos, sin)
            if query_scale is not None:
                q = q * query_scale[:, None, :, None]
            k = self._rotate(layer.k(h).view(batch, 1, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
            v = layer.v(h).view(batch, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            context = self.cache.attend(i, q, k, v, mask, column)
            x = x + layer.o(context.view(batch, 1, -1))
            x = x + layer.mlp(rms_norm(layer.post_attention_norm, eps, x))
        return self.lm_head(rms_norm(self.parts.final_norm, eps, x[:, -1]))


__all__ = ["KVBackend", "KVCache", "PromptLayout", "RotaryTables", "StaticKV", "rms_norm"]
