"""The Qwen decoder: transformers' Qwen2 blocks, which compute exactly Qwen v1 (Qwen-7B).

Qwen v1 and Qwen2 share the block: RMSNorm → attention with a biased QKV projection and rotary
embeddings over the whole head (base 10000, halves rotated as in ``rotate_half``) → residual →
RMSNorm → SwiGLU → residual, and an untied ``lm_head``. Only the storage differs (fused
``c_attn``; ``w1``/``w2`` naming); ``checkpoints.py`` translates it. Reusing the Qwen2 blocks gives
the KV cache, SDPA/flash attention, gradient checkpointing, PEFT target names
(``q_proj``…``down_proj``) and ``generate`` support for free.

Long context: the official model switches on dynamic NTK rotary scaling and log-n attention
scaling (``use_dynamic_ntk``/``use_logn_attn``), both inactive up to ``seq_length`` = 2048 tokens
(the NTK factor is 1 and the log-n factor is 1 there), so logits match the official model on every
sequence up to 2048 tokens. Past that this decoder keeps plain RoPE (the official model's logits
differ there; it warns once). 30 s of audio is 752 tokens, so the released prompts stay far below.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import Qwen2Model

from qwen_audio.configuration import QwenAudioConfig


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


def warn_if_past_official_context(config: QwenAudioConfig, total_length: int) -> None:
    """Say once when logits stop matching the official model (dynamic NTK / log-n past seq_length)."""
    if total_length > config.seq_length and (config.use_dynamic_ntk or config.use_logn_attn):
        warnings.warn(
            f"sequence of {total_length} tokens exceeds seq_length={config.seq_length}: the official model "
            "applies dynamic-NTK/log-n scaling there and this decoder does not, so logits may differ",
            stacklevel=3,
        )


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
    """

    def __init__(self, decoder: Qwen2Model, lm_head: nn.Linear, batch: int, max_length: int) -> None:
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
        freqs = torch.outer(torch.arange(max_length, dtype=torch.float32, device=weight.device), rotary.inv_freq.float())
        table = torch.cat((freqs, freqs), dim=-1)
        self.cos = (table.cos() * rotary.attention_scaling).to(weight.dtype)
        # rotate_half(x) * sin == roll(x, d/2) * (sin with its first half negated), exactly: one op, not five
        sin = table.sin() * rotary.attention_scaling
        self.half = self.head_dim // 2
        self.sin = torch.cat((-sin[:, : self.half], sin[:, self.half :]), dim=-1).to(weight.dtype)
        self.key_mask = torch.zeros((batch, max_length), dtype=weight.dtype, device=weight.device)
        self.length = 0
        self.padded = False

    @torch.no_grad()
    def __call__(self, embeds: Tensor, positions: Tensor, key_valid: Tensor) -> Tensor:
        """Logits [batch, vocab] of the last position; ``key_valid`` [batch, T] marks real new tokens."""
        batch, new, _ = embeds.shape
        start, end = self.length, self.length + new
        if not bool(key_valid.all()):  # the buffer starts at 0.0 (valid): only padding needs writing
            self.key_mask[:, start:end] = torch.where(key_valid, 0.0, float("-inf"))
            self.padded = True
        mask = self.key_mask[:, None, None, :end] if self.padded else None
        if new > 1:  # prefill: causal, and every query may see itself so padded rows stay finite
            queries = torch.arange(new, device=embeds.device)[:, None] + start
            keys = torch.arange(end, device=embeds.device)[None, :]
            causal = torch.zeros(new, end, dtype=embeds.dtype, device=embeds.device).masked_fill(keys > queries, float("-inf"))
            mask = causal if mask is None else (mask + causal).masked_fill(keys == queries, 0.0)
        cos, sin, half = self.cos[positions][:, None], self.sin[positions][:, None], self.half
        x = embeds
        for i, layer in enumerate(self.decoder.layers):
            attn = layer.self_attn
            h = _rms_norm(layer.input_layernorm, x)
            q = attn.q_proj(h).view(batch, new, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            self.values[i][:, :, start:end] = attn.v_proj(h).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            self.keys[i][:, :, start:end] = k * cos + k.roll(half, -1) * sin
            q = q * cos + q.roll(half, -1) * sin
            context = F.scaled_dot_product_attention(
                q, self.keys[i][:, :, :end], self.values[i][:, :, :end], attn_mask=mask,
                enable_gqa=self.kv_heads != self.heads,
            )
            x = x + attn.o_proj(context.transpose(1, 2).reshape(batch, new, -1))
            x = x + layer.mlp(_rms_norm(layer.post_attention_layernorm, x))
        self.length = end
        return self.lm_head(_rms_norm(self.decoder.norm, x[:, -1]))


__all__ = [
    "StaticKVDecoder", "build_decoder", "position_ids_from_attention_mask", "warn_if_past_official_context",
]
