"""The Qwen decoder: transformers' Qwen2 blocks, which compute exactly Qwen v1 (Qwen-7B).

Qwen v1 and Qwen2 share the block: RMSNorm → attention with a biased QKV projection and rotary
embeddings over the whole head (base 10000, halves rotated as in ``rotate_half``) → residual →
RMSNorm → SwiGLU → residual, and an untied ``lm_head``. Only the storage differs (fused
``c_attn``; ``w1``/``w2`` naming); ``checkpoints.py`` translates it. Reusing the Qwen2 blocks gives
the KV cache, SDPA/flash attention, gradient checkpointing, PEFT target names
(``q_proj``…``down_proj``) and ``generate`` support for free.

Long context: past ``seq_length`` (2048) tokens the released model switches on dynamic NTK rotary
and log-n query scaling; ``long_context.py`` holds both. ``forward``/``generate`` apply them around
these blocks, and ``StaticKVDecoder``/``FoldedKVDecoder`` build them into their rotary tables and
queries (``ntk_alphas``, ``logn_seq_length``), so every decode path gives the released logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import Qwen2Model

from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.long_context import logn_query_scale, ntk_inv_freq


def build_decoder(config: QwenAudioConfig) -> Qwen2Model:
    """The decoder stack (embeddings, blocks, final norm); ``lm_head`` lives in the model."""
    return Qwen2Model(config)


def position_ids_from_attention_mask(attention_mask: Tensor, length: int) -> Tensor:
    """Positions that count only real tokens, for the last ``length`` columns of a [batch, total] mask.

    With left padding this gives every sequence the same positions it has alone, which is what
    makes batched generation identical to batch size 1 (the official code ignores the mask here).
    """
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.clamp_(min=0)
    return positions[:, -length:]


FOLD_MAX_BYTES = 1 << 30
"""Largest decoder that ``fast_generate`` folds (bytes of the weights ``FoldedWeights`` copies: about
270 M fp32 parameters). Past it a step is bandwidth-bound, not op-bound, and the copy costs too much."""


def _rms_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """Qwen2RMSNorm as one fused op where that is bit-identical (fp32); the module itself otherwise."""
    if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)
    return norm(x)


class StaticKVDecoder:
    """A lean decode loop over the *same* Qwen2 modules, for ``QwenAudioForCausalLM.fast_generate``.

    transformers' ``generate`` spends most of a small model's step on bookkeeping (cache objects,
    mask builders, logits processors, kwargs plumbing). This keeps preallocated K/V buffers, a
    rotary table and one additive key mask, and calls the decoder's own projections, norms and
    MLPs, so its logits equal the Qwen2 forward's (tests/test_generation.py checks the tokens).
    ``FoldedKVDecoder`` goes further where the weights allow it.
    """

    def __init__(
        self, decoder: Qwen2Model, lm_head: nn.Linear, batch: int, max_length: int, *,
        ntk_alphas: list[int] | None = None, logn_seq_length: int | None = None,
    ) -> None:
        """``ntk_alphas`` (one per row, from the prefill) and ``logn_seq_length`` switch on the released
        model's long-context inference (``long_context.py``); None leaves plain RoPE / unscaled queries."""
        self.decoder, self.lm_head = decoder, lm_head
        config = decoder.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = config.hidden_size // self.heads
        weight = lm_head.weight
        shape = (batch, self.kv_heads, max_length, self.head_dim)
        self.keys = [torch.empty(shape, dtype=weight.dtype, device=weight.device) for _ in decoder.layers]
        self.values = [torch.empty(shape, dtype=weight.dtype, device=weight.device) for _ in decoder.layers]
        rotary = decoder.rotary_emb
        steps = torch.arange(max_length, dtype=torch.float32, device=weight.device)
        self.per_row = ntk_alphas is not None and any(alpha != 1 for alpha in ntk_alphas)
        if self.per_row:  # [batch, max_length, head_dim / 2]: each row's own rotary base
            inv_freq = ntk_inv_freq(float(config.rope_parameters["rope_theta"]), self.head_dim, ntk_alphas).to(weight.device)
            angles = steps[None, :, None] * inv_freq[:, None, :]
            self.rows = torch.arange(batch, device=weight.device)[:, None]
        else:
            angles = torch.outer(steps, rotary.inv_freq.float())
        self._build_rotary(angles, rotary.attention_scaling, weight.dtype)
        self.logn_seq_length = logn_seq_length
        self.key_mask = torch.zeros((batch, max_length), dtype=weight.dtype, device=weight.device)
        self.length = 0
        self.padded = False

    def _build_rotary(self, angles: Tensor, scale: float, dtype: torch.dtype) -> None:
        """cos/sin tables over ``angles`` [max_length, head_dim / 2], in the layout ``_layers`` applies."""
        table = torch.cat((angles, angles), dim=-1)
        self.cos = (table.cos() * scale).to(dtype)
        # rotate_half(x) * sin == roll(x, d/2) * (sin with its first half negated), exactly: one op, not five
        sin = table.sin() * scale
        self.half = self.head_dim // 2
        self.sin = torch.cat((-sin[..., : self.half], sin[..., self.half :]), dim=-1).to(dtype)

    def _at(self, table: Tensor, positions: Tensor) -> Tensor:
        """Rows of a rotary table at ``positions`` [batch, new]: [batch, new, …] (per-row tables indexed by row)."""
        return table[self.rows, positions] if self.per_row else table[positions]

    def _query_scale(self, positions: Tensor, dtype: torch.dtype) -> Tensor | None:
        """The log-n factor [batch, 1, new, 1] of these queries, None where every factor is 1."""
        if self.logn_seq_length is None or int(positions.max()) + 1 <= self.logn_seq_length:
            return None
        return logn_query_scale(positions, self.logn_seq_length).to(dtype)[:, None, :, None]

    @torch.no_grad()
    def __call__(self, embeds: Tensor, positions: Tensor, key_valid: Tensor | None = None) -> Tensor:
        """Logits [batch, vocab] of the last position; ``key_valid`` [batch, T] marks real new tokens (None: all)."""
        start, end = self.length, self.length + embeds.shape[1]
        mask = self._attention_mask(start, end, key_valid, embeds)
        logits = self._layers(embeds, positions, mask, start, end)
        self.length = end
        return logits

    def _attention_mask(self, start: int, end: int, key_valid: Tensor | None, embeds: Tensor) -> Tensor | None:
        new = end - start
        if key_valid is not None and not bool(key_valid.all()):  # the buffer starts at 0.0 (valid): only padding needs writing
            self.key_mask[:, start:end] = torch.where(key_valid, 0.0, float("-inf"))
            self.padded = True
        mask = self.key_mask[:, None, None, :end] if self.padded else None
        if new > 1:  # prefill: causal, and every query may see itself so padded rows stay finite
            queries = torch.arange(new, device=embeds.device)[:, None] + start
            keys = torch.arange(end, device=embeds.device)[None, :]
            causal = torch.zeros(new, end, dtype=embeds.dtype, device=embeds.device).masked_fill(keys > queries, float("-inf"))
            mask = causal if mask is None else (mask + causal).masked_fill(keys == queries, 0.0)
        return mask

    def _attend(self, i: int, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, start: int, end: int) -> Tensor:
        """Store this step's keys/values ([batch, kv_heads, new, head_dim]) and attend over the cache."""
        self.keys[i][:, :, start:end] = k
        self.values[i][:, :, start:end] = v
        context = F.scaled_dot_product_attention(
            q, self.keys[i][:, :, :end], self.values[i][:, :, :end], attn_mask=mask, enable_gqa=self.kv_heads != self.heads,
        )
        batch, _, new, _ = q.shape
        return context.transpose(1, 2).reshape(batch * new, -1)

    def _layers(self, embeds: Tensor, positions: Tensor, mask: Tensor | None, start: int, end: int) -> Tensor:
        batch, new, _ = embeds.shape
        cos, sin, half = self._at(self.cos, positions)[:, None], self._at(self.sin, positions)[:, None], self.half
        query_scale = self._query_scale(positions, embeds.dtype)
        x = embeds
        for i, layer in enumerate(self.decoder.layers):
            attn = layer.self_attn
            h = _rms_norm(layer.input_layernorm, x)
            q = attn.q_proj(h).view(batch, new, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + q.roll(half, -1) * sin
            if query_scale is not None:
                q = q * query_scale
            context = self._attend(i, q, k * cos + k.roll(half, -1) * sin, v, mask, start, end)
            x = x + attn.o_proj(context.view(batch, new, -1))
            x = x + layer.mlp(_rms_norm(layer.post_attention_layernorm, x))
        return self.lm_head(_rms_norm(self.decoder.norm, x[:, -1]))


@dataclass(frozen=True, eq=False)
class FoldedWeights:
    """The decoder's projections rearranged for decoding: fewer, larger matrix products per step.

    On a CPU a decode step streams every weight through the caches, which evicts the code and data
    of the small ops around them, so each further op in a step runs cold (~10 µs, more than the
    arithmetic of a small model). These copies cut a layer from ~36 ops to ~18: q/k/v and gate/up
    fused into one matrix each, all stored input-major (products up to 2x faster at batch 8); the RMSNorm weight
    that precedes each folded into its columns (the norm's per-row scale is applied after the product,
    which is linear); q/k rows of each head interleaved as (x0, x_d/2, x1, …) so rotary is one complex
    multiply. Attention scores are unchanged by that shared permutation of q and k.
    """

    qkv: tuple[Tensor, ...]  # [hidden, (heads + 2 kv_heads) head_dim] per layer
    qkv_bias: tuple[Tensor, ...]
    o: tuple[Tensor, ...]  # [heads head_dim, hidden] per layer
    gate_up: tuple[Tensor, ...]  # [hidden, 2 intermediate] per layer
    down: tuple[Tensor, ...]  # [intermediate, hidden] per layer
    lm_head: Tensor  # [hidden, vocab], the final norm's weight folded in
    source: tuple[tuple[Tensor, int], ...]  # every weight read (held, so its memory is not reused) and its version


def _interleave_heads(weight: Tensor, heads: int) -> Tensor:
    """Rows of each head from half-split (x0…x_d/2-1, x_d/2…) to pair order (x0, x_d/2, x1, x_d/2+1, …)."""
    head_dim = weight.shape[0] // heads
    return weight.unflatten(0, (heads, 2, head_dim // 2)).transpose(1, 2).reshape(weight.shape)


def _projections(layer: nn.Module) -> tuple[nn.Module, ...]:
    """A decoder layer's seven projections: q, k, v, o, gate, up, down."""
    attn, mlp = layer.self_attn, layer.mlp
    return attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj


def _folded_sources(decoder: Qwen2Model, lm_head: nn.Linear) -> list[Tensor]:
    sources = [decoder.norm.weight, lm_head.weight]
    for layer in decoder.layers:
        projections = _projections(layer)
        sources += [layer.input_layernorm.weight, layer.post_attention_layernorm.weight]
        sources += [m.weight for m in projections] + [m.bias for m in projections[:3]]
    return sources


def can_fold(decoder: Qwen2Model, lm_head: nn.Module, max_bytes: int) -> bool:
    """Folding pays off and is safe: fp32 plain ``nn.Linear`` projections (no LoRA wrappers, whose
    deltas a copy would miss) on CPU or CUDA, biased q/k/v, and copies within ``max_bytes`` (large models are
    bandwidth-bound, where fusing buys little and a copy would double their memory)."""
    projections = [lm_head, *(m for layer in decoder.layers for m in _projections(layer))]
    if any(type(m) is not nn.Linear or m.weight.dtype != torch.float32 for m in projections):
        return False
    if lm_head.weight.device.type not in ("cpu", "cuda"):  # complex rotary is not on every backend
        return False
    if any(layer.self_attn.q_proj.bias is None for layer in decoder.layers):
        return False
    size = sum(t.numel() * t.element_size() for t in _folded_sources(decoder, lm_head))
    return size <= max_bytes


def fold_weights(decoder: Qwen2Model, lm_head: nn.Linear, previous: FoldedWeights | None = None) -> FoldedWeights:
    """``FoldedWeights`` of the decoder as it is now; ``previous`` is returned if its weights have not changed."""
    source = tuple((t.detach(), t._version) for t in _folded_sources(decoder, lm_head))
    if previous is not None and len(previous.source) == len(source) and all(
        old.data_ptr() == new.data_ptr() and old_version == new_version  # in-place updates bump the version
        for (old, old_version), (new, new_version) in zip(previous.source, source)
    ):
        return previous
    heads, kv_heads = decoder.config.num_attention_heads, decoder.config.num_key_value_heads
    qkv, qkv_bias, o, gate_up, down = [], [], [], [], []
    with torch.no_grad():
        for layer in decoder.layers:
            attn, mlp = layer.self_attn, layer.mlp
            w = torch.cat((_interleave_heads(attn.q_proj.weight, heads), _interleave_heads(attn.k_proj.weight, kv_heads),
                           attn.v_proj.weight))
            qkv.append((w * layer.input_layernorm.weight).t().contiguous())
            qkv_bias.append(torch.cat((_interleave_heads(attn.q_proj.bias, heads), _interleave_heads(attn.k_proj.bias, kv_heads),
                                       attn.v_proj.bias)))
            o.append(attn.o_proj.weight.t().contiguous())
            w = torch.cat((mlp.gate_proj.weight, mlp.up_proj.weight))
            gate_up.append((w * layer.post_attention_layernorm.weight).t().contiguous())
            down.append(mlp.down_proj.weight.t().contiguous())
        head = (lm_head.weight * decoder.norm.weight).t().contiguous()
    return FoldedWeights(tuple(qkv), tuple(qkv_bias), tuple(o), tuple(gate_up), tuple(down), head, source)


class FoldedKVDecoder(StaticKVDecoder):
    """``StaticKVDecoder`` over ``FoldedWeights``: the same logits to float rounding (≤ 1e-5 on the
    tests' models, same tokens), in about half the ops per step."""

    def __init__(
        self, decoder: Qwen2Model, lm_head: nn.Linear, batch: int, max_length: int, weights: FoldedWeights, *,
        ntk_alphas: list[int] | None = None, logn_seq_length: int | None = None,
    ) -> None:
        super().__init__(decoder, lm_head, batch, max_length, ntk_alphas=ntk_alphas, logn_seq_length=logn_seq_length)
        self.weights = weights
        self.eps = torch.tensor(decoder.config.rms_norm_eps, dtype=torch.float32, device=lm_head.weight.device)
        self.inverse_width = 1.0 / decoder.config.hidden_size
        self.intermediate = decoder.config.intermediate_size

    def _build_rotary(self, angles: Tensor, scale: float, dtype: torch.dtype) -> None:
        """One complex table, cos + i·sin (the module path's values, to the bit); fp32 only (``can_fold``)."""
        self.rotation = torch.complex(angles.cos() * scale, angles.sin() * scale)

    def _inverse_rms(self, x: Tensor) -> Tensor:
        """1 / sqrt(mean(x²) + eps) of each row of [rows, hidden], as [rows, 1], in two ops."""
        return torch.baddbmm(self.eps, x[:, None], x[:, :, None], alpha=self.inverse_width).view(-1, 1).rsqrt_()

    def _layers(self, embeds: Tensor, positions: Tensor, mask: Tensor | None, start: int, end: int) -> Tensor:
        batch, new, hidden = embeds.shape
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        rotation = self._at(self.rotation, positions)[:, :, None]
        query_scale = self._query_scale(positions, embeds.dtype)
        w = self.weights
        x = embeds.reshape(batch * new, hidden)
        for i, layer in enumerate(self.decoder.layers):
            qkv = torch.addcmul(w.qkv_bias[i], x @ w.qkv[i], self._inverse_rms(x)).view(batch, new, -1)
            split = (heads + kv_heads) * head_dim
            pairs = torch.view_as_complex(qkv[..., :split].unflatten(-1, (heads + kv_heads, head_dim // 2, 2)))
            qk = torch.view_as_real(pairs * rotation).flatten(-2).transpose(1, 2)
            v = qkv[..., split:].unflatten(-1, (kv_heads, head_dim)).transpose(1, 2)
            q = qk[:, :heads] if query_scale is None else qk[:, :heads] * query_scale
            context = self._attend(i, q, qk[:, heads:], v, mask, start, end)
            x = torch.addmm(x, context, w.o[i])
            gate_up = (x @ w.gate_up[i]).mul_(self._inverse_rms(x))
            act = F.silu(gate_up[:, : self.intermediate]).mul_(gate_up[:, self.intermediate :])
            x = torch.addmm(x, act, w.down[i])
        last = x.view(batch, new, hidden)[:, -1]
        return (last @ w.lm_head).mul_(self._inverse_rms(last))


__all__ = [
    "FOLD_MAX_BYTES", "FoldedKVDecoder", "FoldedWeights", "StaticKVDecoder", "build_decoder", "can_fold", "fold_weights",
    "position_ids_from_attention_mask",
]
