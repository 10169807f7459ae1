"""``FoldedKV``: a KV backend over the decoder's projections rearranged for decoding, and the choice
between it and ``StaticKV`` (``KVBackends``, which keeps the folded copies while the weights stay).

On a CPU a decode step streams every weight through the caches, which evicts the code and data of
the small ops around them, so each further op in a step runs cold (~10 µs, more than the arithmetic
of a small model). The folded copies cut a layer from ~36 ops to ~18; the logits are the module
path's to float rounding (≤ 1e-5 on the tests' models, same tokens).

On a CPU with oneDNN each copy is pre-packed for it (``Matrix``), as PyTorch's inductor pre-packs
fp32 linear weights: MKL's sgemm multiplies a few rows (a batch of decoding rows) by a wide matrix
far below either the memory or the arithmetic bound on some CPUs. Measured on the 2-core AMD EPYC
this project runs on, the 576 x 52,695 output projection: 5.6 ms for 1 row, 27.8 ms for 8 rows
with MKL, 9.2 ms with oneDNN; so a batch of 8 decoded barely 2x the tokens of a batch of 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qwen_audio.generation.kv import KVBackend, KVCache, RotaryTables, StaticKV
from qwen_audio.llm import Decoder, Qwen2Parts, qwen2_parts

FOLD_MAX_BYTES = 1 << 30
"""Largest decoder that is folded (bytes of the weights ``FoldedWeights`` copies: about 270 M fp32
parameters). Past it a step is bandwidth-bound, not op-bound, and the copy costs too much."""


PACK = torch.backends.mkldnn.is_available()
"""Whether CPU copies are packed for oneDNN (``Matrix``); False keeps them input-major for MKL."""
PACK_MIN_ELEMENTS = 1 << 19
"""Smaller matrices stay input-major: oneDNN's call costs more than it saves on them (a 576 x 576
product: 0.06 ms packed vs 0.04 ms at one row; a 0.3 M-parameter toy model decodes 2.5x slower packed)."""


@dataclass(frozen=True, eq=False)
class Matrix:
    """One product of the decoding step, ``x @ W`` for ``x`` [rows, in]: ``W`` packed for oneDNN's
    fp32 linear (``torch.ops.mkldnn``: CPU, where ``PACK``) or stored input-major [in, out]."""

    weight: Tensor
    packed: bool

    @classmethod
    def of(cls, weight: Tensor) -> Matrix:
        """From a weight stored as ``nn.Linear`` stores it, [out, in]."""
        if PACK and weight.device.type == "cpu" and weight.numel() >= PACK_MIN_ELEMENTS:
            return cls(torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 8), True)
        return cls(weight.t().contiguous(), False)

    def mm(self, x: Tensor) -> Tensor:
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, None, "none", [], "")
        return x @ self.weight

    def add_mm(self, base: Tensor, x: Tensor) -> Tensor:
        """``base + x @ W`` in one op."""
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise.binary(x, base, self.weight, None, "add")
        return torch.addmm(base, x, self.weight)


@dataclass(frozen=True, eq=False)
class FoldedWeights:
    """The decoder's projections rearranged for decoding: fewer, larger matrix products per step.

    q/k/v and gate/up fused into one matrix each, each a ``Matrix`` (packed for oneDNN, or
    input-major: products up to 2x faster at batch 8 than nn.Linear's layout); the RMSNorm weight that precedes each folded into its columns (the norm's per-row
    scale is applied after the product, which is linear); q/k rows of each head interleaved as
    (x0, x_d/2, x1, …) so rotary is one complex multiply. Attention scores are unchanged by that
    shared permutation of q and k.
    """

    qkv: tuple[Matrix, ...]  # hidden → (heads + 2 kv_heads) head_dim, per layer
    qkv_bias: tuple[Tensor, ...]
    o: tuple[Matrix, ...]  # heads head_dim → hidden
    gate_up: tuple[Matrix, ...]  # hidden → 2 intermediate
    down: tuple[Matrix, ...]  # intermediate → hidden
    lm_head: Matrix  # hidden → vocab, the final norm's weight folded in
    source: tuple[tuple[Tensor, int], ...]  # every weight read (held, so its memory is not reused) and its version


def _interleave_heads(weight: Tensor, heads: int) -> Tensor:
    """Rows of each head from half-split (x0…x_d/2-1, x_d/2…) to pair order (x0, x_d/2, x1, x_d/2+1, …)."""
    head_dim = weight.shape[0] // heads
    return weight.unflatten(0, (heads, 2, head_dim // 2)).transpose(1, 2).reshape(weight.shape)


def _folded_sources(parts: Qwen2Parts, lm_head: nn.Module) -> list[Tensor]:
    sources = [parts.final_norm.weight, lm_head.weight]
    for layer in parts.layers:
        sources += [layer.input_norm.weight, layer.post_attention_norm.weight]
        sources += [m.weight for m in layer.projections] + [m.bias for m in (layer.q, layer.k, layer.v)]
    return sources


def can_fold(decoder: Decoder, lm_head: nn.Module, max_bytes: int) -> bool:
    """Folding pays off and is safe: fp32 plain ``nn.Linear`` projections (no LoRA wrappers, whose
    deltas a copy would miss) on CPU or CUDA, biased q/k/v, and copies within ``max_bytes`` (large models are
    bandwidth-bound, where fusing buys little and a copy would double their memory)."""
    parts = qwen2_parts(decoder)
    projections = [lm_head, *(m for layer in parts.layers for m in layer.projections)]
    if any(type(m) is not nn.Linear or m.weight.dtype != torch.float32 for m in projections):
        return False
    if lm_head.weight.device.type not in ("cpu", "cuda"):  # complex rotary is not on every backend
        return False
    if any(layer.q.bias is None for layer in parts.layers):
        return False
    size = sum(t.numel() * t.element_size() for t in _folded_sources(parts, lm_head))
    return size <= max_bytes


def fold_weights(decoder: Decoder, lm_head: nn.Module, previous: FoldedWeights | None = None) -> FoldedWeights:
    """``FoldedWeights`` of the decoder as it is now; ``previous`` is returned if its weights have not changed."""
    parts = qwen2_parts(decoder)
    source = tuple((t.detach(), t._version) for t in _folded_sources(parts, lm_head))
    if previous is not None and len(previous.source) == len(source) and all(
        old.data_ptr() == new.data_ptr() and old_version == new_version  # in-place updates bump the version
        for (old, old_version), (new, new_version) in zip(previous.source, source)
    ):
        return previous
    heads, kv_heads = decoder.config.num_attention_heads, decoder.config.num_key_value_heads
    qkv, qkv_bias, o, gate_up, down = [], [], [], [], []
    with torch.no_grad():
        for layer in parts.layers:
            q, k = _interleave_heads(layer.q.weight, heads), _interleave_heads(layer.k.weight, kv_heads)
            w = torch.cat((q, k, layer.v.weight))
            qkv.append(Matrix.of(w * layer.input_norm.weight))
            qkv_bias.append(torch.cat((_interleave_heads(layer.q.bias, heads), _interleave_heads(layer.k.bias, kv_heads),
                                       layer.v.bias)))
            o.append(Matrix.of(layer.o.weight))
            w = torch.cat((layer.gate.weight, layer.up.weight))
            gate_up.append(Matrix.of(w * layer.post_attention_norm.weight))
            down.append(Matrix.of(layer.down.weight))
        head = Matrix.of(lm_head.weight * parts.final_norm.weight)
    return FoldedWeights(tuple(qkv), tuple(qkv_bias), tuple(o), tuple(gate_up), tuple(down), head, source)


class FoldedKV:
    """A ``KVBackend`` over ``FoldedWeights``: fused products, norms folded into them, rotary as one
    complex multiply. fp32 only (``can_fold``)."""

    def __init__(
        self, decoder: Decoder, lm_head: nn.Module, batch: int, max_length: int, weights: FoldedWeights, *,
        ntk_alphas: list[int] | None = None, logn_seq_length: int | None = None,
    ) -> None:
        config, device = decoder.config, lm_head.weight.device
        self.weights = weights
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.hidden_size // self.heads
        self.intermediate = config.intermediate_size
        parts = qwen2_parts(decoder)
        self.cache = KVCache(len(parts.layers), batch, self.heads, self.kv_heads, self.head_dim, max_length,
                             lm_head.weight.dtype, device)
        self.rotary = RotaryTables(config, parts, batch, max_length, device, ntk_alphas=ntk_alphas,
                                   logn_seq_length=logn_seq_length)
        # one complex table, cos + i·sin (the module path's values, to the bit)
        angles, scale = self.rotary.angles, self.rotary.scale
        self.rotation = torch.complex(angles.cos() * scale, angles.sin() * scale)
        self.eps = torch.tensor(parts.rms_norm_eps, dtype=torch.float32, device=device)
        self.inverse_width = 1.0 / config.hidden_size

    def _inverse_rms(self, x: Tensor) -> Tensor:
        """1 / sqrt(mean(x²) + eps) of each row of [rows, hidden], as [rows, 1], in two ops."""
        return torch.baddbmm(self.eps, x[:, None], x[:, :, None], alpha=self.inverse_width).view(-1, 1).rsqrt_()

    def _qkv(self, i: int, x: Tensor, rotation: Tensor) -> tuple[Tensor, Tensor]:
        """Layer ``i``'s rotated queries and keys [*, heads + kv_heads, head_dim] and its values
        [*, kv_heads, head_dim] for ``x`` [rows, hidden]; ``rotation`` is [*, 1, head_dim / 2]."""
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        split = (heads + kv_heads) * head_dim
        qkv = torch.addcmul(self.weights.qkv_bias[i], self.weights.qkv[i].mm(x), self._inverse_rms(x))
        qkv = qkv.view(*rotation.shape[:-2], -1)
        pairs = torch.view_as_complex(qkv[..., :split].unflatten(-1, (heads + kv_heads, head_dim // 2, 2)))
        return torch.view_as_real(pairs * rotation).flatten(-2), qkv[..., split:].unflatten(-1, (kv_heads, head_dim))

    def _rest_of_layer(self, i: int, x: Tensor, context: Tensor) -> Tensor:
        """Layer ``i`` after attention: output projection, residual, SwiGLU, residual."""
        w = self.weights
        x = w.o[i].add_mm(x, context)
        gate_up = w.gate_up[i].mm(x).mul_(self._inverse_rms(x))
        act = F.silu(gate_up[:, : self.intermediate]).mul_(gate_up[:, self.intermediate :])
        return w.down[i].add_mm(x, act)

    def _logits(self, last: Tensor) -> Tensor:
        return self.weights.lm_head.mm(last).mul_(self._inverse_rms(last))

    @torch.no_grad()
    def prefill(self, embeds: Tensor, positions: Tensor, key_valid: Tensor) -> Tensor:
        prompt = self.cache.start(key_valid)
        x = embeds[key_valid]  # [tokens, hidden]: the real tokens, packed
        at = positions[key_valid]
        rotation = self.rotary.at(self.rotation, at, prompt.rows)[:, None]
        query_scale = self.rotary.query_scale(at, embeds.dtype)
        for i in range(len(self.weights.qkv)):
            qk, v = self._qkv(i, x, rotation)
            q = qk[:, : self.heads] if query_scale is None else qk[:, : self.heads] * query_scale[:, None, None]
            x = self._rest_of_layer(i, x, self.cache.attend_prompt(i, prompt, q, qk[:, self.heads :], v))
        return self._logits(x[prompt.last])

    def select(self, rows: Tensor) -> None:
        self.cache.select(rows)
        self.rotation = self.rotary.select(rows, self.rotation)

    @torch.no_grad()
    def step(self, embeds: Tensor, positions: Tensor) -> Tensor:
        batch, _, hidden = embeds.shape
        column, mask = self.cache.extend()
        rotation = self.rotary.at(self.rotation, positions)[:, :, None]  # [batch, 1, 1, head_dim / 2]
        query_scale = self.rotary.query_scale(positions, embeds.dtype)
        x = embeds.reshape(batch, hidden)
        for i in range(len(self.weights.qkv)):
            qk, v = self._qkv(i, x, rotation)  # [batch, 1, heads + kv_heads, head_dim], [batch, 1, kv_heads, head_dim]
            qk, v = qk.transpose(1, 2), v.transpose(1, 2)
            q = qk[:, : self.heads] if query_scale is None else qk[:, : self.heads] * query_scale[:, None, :, None]
            x = self._rest_of_layer(i, x, self.cache.attend(i, q, qk[:, self.heads :], v, mask, column))
        return self._logits(x)


class KVBackends:
    """Opens the fastest backend a decoder allows: ``FoldedKV`` where ``can_fold`` (its weights kept
    here until one of them changes), else ``StaticKV``. A model holds one."""

    def __init__(self, max_fold_bytes: int = FOLD_MAX_BYTES) -> None:
        self.max_fold_bytes = max_fold_bytes
        self.folded: FoldedWeights | None = None

    def open(
        self, decoder: Decoder, lm_head: nn.Module, batch: int, max_length: int, *, fold: bool = True,
        ntk_alphas: list[int] | None = None, logn_seq_length: int | None = None,
    ) -> KVBackend:
        """A backend for ``batch`` rows of up to ``max_length`` tokens; ``fold=False`` always gives ``StaticKV``."""
        settings = dict(ntk_alphas=ntk_alphas, logn_seq_length=logn_seq_length)
        if not can_fold(decoder, lm_head, self.max_fold_bytes):
            self.folded = None  # e.g. after .half(): do not keep the old weights alive
        elif fold:
            self.folded = fold_weights(decoder, lm_head, self.folded)
            return FoldedKV(decoder, lm_head, batch, max_length, self.folded, **settings)
        return StaticKV(decoder, lm_head, batch, max_length, **settings)


__all__ = ["FOLD_MAX_BYTES", "PACK", "PACK_MIN_ELEMENTS", "FoldedKV", "FoldedWeights", "KVBackends", "Matrix", "can_fold", "fold_weights"]
