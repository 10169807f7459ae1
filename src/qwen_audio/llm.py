"""The Qwen decoder: transformers' Qwen2 blocks, which compute exactly Qwen v1 (Qwen-7B), and the one
place that reads their internals.

Qwen v1 and Qwen2 share the block: RMSNorm → attention with a biased QKV projection and rotary
embeddings over the whole head (base 10000, halves rotated as in ``rotate_half``) → residual →
RMSNorm → SwiGLU → residual, and an untied ``lm_head``. Only the storage differs (fused
``c_attn``; ``w1``/``w2`` naming); ``checkpoints/`` translates it. Reusing the Qwen2 blocks gives
the KV cache, SDPA/flash attention, gradient checkpointing, PEFT target names
(``q_proj``…``down_proj``) and ``generate`` support for free.

Two paths need more than the blocks' ``forward``: the decoding loop's KV backends
(``generation/kv.py``) run the projections and norms themselves, and long-context inference
(``long_context.py``) swaps the rotary frequencies and scales the queries. Both read the blocks
through :func:`qwen2_parts` and :func:`rotary_frequencies` only, so the attribute names of
transformers' ``modeling_qwen2`` (``self_attn.q_proj``, ``variance_epsilon``, ``rotary_emb.inv_freq``,
``attention_scaling``…), which are not a public API, are written in this module alone.
A transformers upgrade that renames one fails here with :class:`~qwen_audio.errors.Qwen2StructureError`
(and ``tests/test_llm.py`` says which), not as a wrong logit somewhere else.

Inference needs the blocks' weights, never their ``forward``: the KV backends compute every layer.
:class:`DecoderLayout` holds the same parameters under the same names, in plain torch modules, so
the inference model (``runtime.py``) never imports transformers' modelling code, which costs more
than a short transcription (~1.5 s of a cold ``qwen-audio transcribe``: it imports ``torch._dynamo``
and ``torch.distributed.tensor``). ``tests/test_runtime.py`` checks the layout against ``Qwen2Model``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn

from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.errors import Qwen2StructureError

if TYPE_CHECKING:
    from transformers import Qwen2Model


def build_decoder(config: QwenAudioConfig) -> Qwen2Model:
    """The decoder stack (embeddings, blocks, final norm); ``lm_head`` lives in the model."""
    from transformers import Qwen2Model

    return Qwen2Model(config)


# --------------------------------------------------------------------------- Qwen2's layout in plain torch


class RMSNorm(nn.Module):
    """Qwen2's RMSNorm: normalised in fp32, then cast back and scaled."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(x.dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), unbiased."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class AttentionProjections(nn.Module):
    """q/k/v (biased) and o (unbiased); attention itself is the KV backends'."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=True)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=True)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=True)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)


class LayerLayout(nn.Module):
    def __init__(self, config: QwenAudioConfig, head_dim: int) -> None:
        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(hidden, eps)
        self.self_attn = AttentionProjections(hidden, config.num_attention_heads, config.num_key_value_heads, head_dim)
        self.post_attention_layernorm = RMSNorm(hidden, eps)
        self.mlp = SwiGLU(hidden, config.intermediate_size)


class RotaryLayout(nn.Module):
    """Plain RoPE's inverse frequencies, computed as transformers' default rope computes them (on the
    CPU, also inside a ``torch.device("meta")`` block: no checkpoint stores them; see ``encoder.sinusoids``)."""

    def __init__(self, theta: float, head_dim: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device="cpu") / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.attention_scaling = 1.0


def decoder_head_dim(config: QwenAudioConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def has_plain_layout(config: QwenAudioConfig) -> bool:
    """Whether :class:`DecoderLayout` holds this decoder: SiLU MLPs and plain RoPE (no scaled rope types)."""
    rope = getattr(config, "rope_parameters", None) or {}
    return config.hidden_act == "silu" and rope.get("rope_type", "default") == "default" and "rope_theta" in rope


class DecoderLayout(nn.Module):
    """A Qwen2 decoder's parameters under ``Qwen2Model``'s names, without its forward: what
    inference loads (the KV backends compute the layers, through :func:`qwen2_parts` as for ``Qwen2Model``)."""

    def __init__(self, config: QwenAudioConfig) -> None:
        super().__init__()
        if not has_plain_layout(config):
            raise ValueError("DecoderLayout holds SiLU decoders with plain RoPE only; use build_decoder")
        self.config = config
        head_dim = decoder_head_dim(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LayerLayout(config, head_dim) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryLayout(float(config.rope_parameters["rope_theta"]), head_dim)


Decoder = Union["Qwen2Model", DecoderLayout]


def position_ids_from_attention_mask(attention_mask: Tensor, length: int) -> Tensor:
    """Positions that count only real tokens, for the last ``length`` columns of a [batch, total] mask.

    With left padding this gives every sequence the same positions it has alone, which is what
    makes batched generation identical to batch size 1 (the official code ignores the mask here).
    """
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.clamp_(min=0)
    return positions[:, -length:]


# --------------------------------------------------------------------------- the adapter onto Qwen2's internals


@dataclass(frozen=True, eq=False)
class Qwen2LayerParts:
    """One decoder layer's modules, named for what they compute (whatever wraps them, e.g. LoRA, included)."""

    input_norm: nn.Module  # RMSNorm before attention
    q: nn.Module
    k: nn.Module
    v: nn.Module
    o: nn.Module
    post_attention_norm: nn.Module  # RMSNorm before the MLP
    mlp: nn.Module  # down(silu(gate(x)) * up(x))
    gate: nn.Module
    up: nn.Module
    down: nn.Module

    @property
    def projections(self) -> tuple[nn.Module, ...]:
        """The seven projections: q, k, v, o, gate, up, down."""
        return self.q, self.k, self.v, self.o, self.gate, self.up, self.down


@dataclass(frozen=True, eq=False)
class Qwen2Parts:
    """What decoding reads of a Qwen2 decoder besides its config."""

    layers: tuple[Qwen2LayerParts, ...]
    final_norm: nn.Module
    rms_norm_eps: float  # every norm's epsilon (the modules' own, checked equal)
    inv_freq: Tensor  # [head_dim / 2] rotary inverse frequencies, as the rotary module holds them
    attention_scaling: float  # the factor the rotary module applies to cos and sin


def _read(owner: Any, path: str, where: str) -> Any:
    value = owner
    for name in path.split("."):
        try:
            value = getattr(value, name)
        except AttributeError:
            raise Qwen2StructureError(
                f"transformers {transformers.__version__}'s Qwen2 decoder has no {where}{path}, which qwen-audio's "
                "decoding and long-context paths read: install the transformers version pyproject.toml pins, or "
                "update qwen_audio/llm.py (the only module that names Qwen2's internals) to the new names"
            ) from None
    return value


def qwen2_parts(decoder: Decoder) -> Qwen2Parts:
    """The decoder's layers, norms and rotary settings; raises ``Qwen2StructureError`` if transformers moved one."""
    layers = []
    for i, layer in enumerate(_read(decoder, "layers", "")):
        where = f"layers[{i}]."
        layers.append(Qwen2LayerParts(
            input_norm=_read(layer, "input_layernorm", where),
            q=_read(layer, "self_attn.q_proj", where),
            k=_read(layer, "self_attn.k_proj", where),
            v=_read(layer, "self_attn.v_proj", where),
            o=_read(layer, "self_attn.o_proj", where),
            post_attention_norm=_read(layer, "post_attention_layernorm", where),
            mlp=_read(layer, "mlp", where),
            gate=_read(layer, "mlp.gate_proj", where),
            up=_read(layer, "mlp.up_proj", where),
            down=_read(layer, "mlp.down_proj", where),
        ))
    final_norm = _read(decoder, "norm", "")
    norms = [("norm.", final_norm)] + [
        (f"layers[{i}].{name}.", norm) for i, p in enumerate(layers)
        for name, norm in (("input_layernorm", p.input_norm), ("post_attention_layernorm", p.post_attention_norm))
    ]
    eps = float(_read(final_norm, "variance_epsilon", "norm."))
    for where, norm in norms:
        _read(norm, "weight", where)
        if float(_read(norm, "variance_epsilon", where)) != eps:
            raise Qwen2StructureError(
                f"the decoder's RMSNorms differ in epsilon ({where}): qwen-audio's decoding assumes one")
    return Qwen2Parts(
        layers=tuple(layers), final_norm=final_norm, rms_norm_eps=eps,
        inv_freq=_read(decoder, "rotary_emb.inv_freq", ""),
        attention_scaling=float(_read(decoder, "rotary_emb.attention_scaling", "")),
    )


@contextmanager
def rotary_frequencies(decoder: Qwen2Model, inv_freq: Tensor) -> Iterator[None]:
    """The decoder's rotary module uses ``inv_freq`` instead of its own inside the block.

    Qwen2RotaryEmbedding multiplies ``position_ids[..., None]`` by its ``inv_freq``: one of shape
    [batch, 1, head_dim / 2] gives each row its own frequencies (``long_context``'s dynamic NTK).
    Not re-entrant and not for two threads on one model at once.
    """
    rotary = _read(decoder, "rotary_emb", "")
    saved = _read(rotary, "inv_freq", "rotary_emb.")
    rotary.inv_freq = inv_freq.to(saved.device)
    try:
        yield
    finally:
        rotary.inv_freq = saved


__all__ = [
    "Decoder", "DecoderLayout", "Qwen2LayerParts", "Qwen2Parts", "build_decoder", "decoder_head_dim", "has_plain_layout",
    "position_ids_from_attention_mask", "qwen2_parts",
    "rotary_frequencies",
]
