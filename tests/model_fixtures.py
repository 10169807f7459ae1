"""Tiny random models, prompts and an independent Qwen v1 reference forward for the model tests."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from qwen_audio.audio import audio_span
from qwen_audio.configuration import QwenAudioConfig, preset_config
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.processing import pad_rows


def tiny_config(**overrides: object) -> QwenAudioConfig:
    # A wider init than 0.02 so logits are far from uniform and greedy choices are not near-ties.
    return preset_config("tiny", initializer_range=0.2, **overrides)


def tiny_model(seed: int = 0, **overrides: object) -> QwenAudioForCausalLM:
    torch.manual_seed(seed)
    model = QwenAudioForCausalLM(tiny_config(**overrides)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mapping mix-up cannot hide behind ones/zeros
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "_ln" in name or "ln_post" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def audio_prompt(config: QwenAudioConfig, before: list[int], num_samples: int, after: list[int]) -> tuple[list[int], int]:
    """Token ids with one audio span of the right length, and the audio's mel length."""
    span = audio_span(num_samples)
    ids = before + [config.audio_start_id] + [config.audio_pad_id] * (span.span_tokens - 2) + [config.audio_end_id] + after
    return ids, span.mel_len


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Ids and attention mask of a left-padded batch, as generation pads it (the processor's padding)."""
    return pad_rows(rows, pad_id, "left")


# --------------------------------------------------------------------------- official layout, written by hand


def official_state_dict(model: QwenAudioForCausalLM) -> dict[str, Tensor]:
    """The model's tensors under the official Qwen-Audio names, written independently of checkpoints.py."""
    state = model.state_dict()
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("audio."):
            out["transformer." + name] = tensor
    out["transformer.wte.weight"] = state["model.embed_tokens.weight"]
    out["transformer.ln_f.weight"] = state["model.norm.weight"]
    out["lm_head.weight"] = state["lm_head.weight"]
    for i in range(model.config.num_hidden_layers):
        ours, theirs = f"model.layers.{i}.", f"transformer.h.{i}."
        for kind in ("weight", "bias"):
            out[theirs + f"attn.c_attn.{kind}"] = torch.cat(
                [state[ours + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            )
        out[theirs + "attn.c_proj.weight"] = state[ours + "self_attn.o_proj.weight"]
        out[theirs + "ln_1.weight"] = state[ours + "input_layernorm.weight"]
        out[theirs + "ln_2.weight"] = state[ours + "post_attention_layernorm.weight"]
        out[theirs + "mlp.w1.weight"] = state[ours + "mlp.up_proj.weight"]
        out[theirs + "mlp.w2.weight"] = state[ours + "mlp.gate_proj.weight"]
        out[theirs + "mlp.c_proj.weight"] = state[ours + "mlp.down_proj.weight"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def official_tiny_model(seed: int = 0, n_ranks: int = 256, **overrides: object) -> QwenAudioForCausalLM:
    """A tiny model whose ids are those of an ``n_ranks``-rank qwen.tiktoken, as an official folder needs.

    The spec's order, counted by hand: <|endoftext|> <|im_start|> <|im_end|> at n, n+1, n+2, 205
    extras, the audio pad at n + 208, … <audio> </audio> last at n + 3520, n + 3521.
    """
    ids = dict(endoftext_id=n_ranks, im_start_id=n_ranks + 1, im_end_id=n_ranks + 2,
               audio_pad_id=n_ranks + 208, audio_start_id=n_ranks + 3520)
    vocab = -(-(n_ranks + 3522) // 64) * 64  # the embedding padded past the tokenizer, as the release's is
    return tiny_model(seed, **{"vocab_size": vocab, **ids, **overrides})


def tiktoken_lines(n_ranks: int) -> str:
    """A qwen.tiktoken of ``n_ranks`` distinct tokens (single bytes, then byte pairs): only the count matters here."""
    tokens = [bytes([b]) for b in range(256)] + [bytes([a, b]) for a in range(256) for b in range(256)]
    return "".join(f"{base64.b64encode(token).decode()} {rank}\n" for rank, token in enumerate(tokens[:n_ranks]))


def official_config_json(config: QwenAudioConfig, *, state_ids: bool = False) -> dict:
    """An official-style config.json (field names of QwenLM/Qwen-Audio's config.json).

    Like the released file it names no pad/eos/chat ids (the loader takes them from qwen.tiktoken)
    unless ``state_ids``: our own writer (``config_to_official``) adds them.
    """
    audio = dict(config.audio_config, audio_start_id=config.audio_start_id)
    return {
        "architectures": ["QWenLMHeadModel"], "model_type": "qwen", "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads, "num_hidden_layers": config.num_hidden_layers,
        "intermediate_size": 2 * config.intermediate_size, "kv_channels": config.hidden_size // config.num_attention_heads,
        "layer_norm_epsilon": config.rms_norm_eps, "rotary_emb_base": 10000, "rotary_pct": 1.0, "no_bias": True,
        "seq_length": 2048, "max_position_embeddings": 8192, "tie_word_embeddings": False,
        "vocab_size": config.vocab_size, "use_dynamic_ntk": True, "use_logn_attn": True, "audio": audio,
    } | ({"audio_pad_id": config.audio_pad_id, "endoftext_id": config.endoftext_id,
          "im_start_id": config.im_start_id, "im_end_id": config.im_end_id} if state_ids else {})


def write_official_checkpoint(model: QwenAudioForCausalLM, directory: Path, shards: int = 2, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Write config.json, qwen.tiktoken and sharded safetensors + index in the official layout.

    The model's ids must follow from a rank count (:func:`official_tiny_model`): the folder's
    tokenizer has that many ranks, as a real official folder's does.
    """
    c = model.config
    n_ranks = c.endoftext_id
    expected = (n_ranks, n_ranks + 1, n_ranks + 2, n_ranks + 208, n_ranks + 3520)
    if (c.endoftext_id, c.im_start_id, c.im_end_id, c.audio_pad_id, c.audio_start_id) != expected:
        raise ValueError("an official folder's ids follow from its qwen.tiktoken: build the model with official_tiny_model")
    directory.mkdir(parents=True, exist_ok=True)
    state = official_state_dict(model)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    (directory / "config.json").write_text(json.dumps(official_config_json(model.config)))
    (directory / "qwen.tiktoken").write_text(tiktoken_lines(n_ranks))
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i::shards]}
        save_file(part, str(directory / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return state


# --------------------------------------------------------------------------- the official LLM forward, re-derived


def _rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def released_ntk_alpha(true_seq_len: int, seq_length: int) -> int:
    """``QWenModel.get_ntk_alpha`` of the released modeling_qwen.py, transcribed."""
    context_value = math.log(true_seq_len / seq_length, 2) + 1
    return max(2 ** math.ceil(context_value) - 1, 1)


def qwen_v1_reference_logits(
    state: dict[str, Tensor], config: QwenAudioConfig, inputs_embeds: Tensor, *, ntk_alpha: float = 1.0,
    logn_seq_length: int | None = None,
) -> Tensor:
    """QWenLMHeadModel's math on official tensors: c_attn split q|k|v, rotate-half RoPE, c_proj(w1·silu(w2)).

    Long context as released (batch of one, absolute positions): the rotary base becomes
    ``base * ntk_alpha ** (dim / (dim - 2))``; with ``logn_seq_length`` the query at 0-based column j is
    multiplied by ``logn_list[j]``, ``logn_list = [log(i, seq_length) if i > seq_length else 1 for i in 1…]``.
    """
    heads, width = config.num_attention_heads, config.hidden_size
    head_dim = width // heads
    batch, length, _ = inputs_embeds.shape
    base = 10000 * ntk_alpha ** (head_dim / (head_dim - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    logn = torch.ones(length)
    if logn_seq_length is not None:
        logn = torch.tensor([math.log(i, logn_seq_length) if i > logn_seq_length else 1 for i in range(1, length + 1)])
    logn = logn[None, :, None, None]
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]

    def rotate(t: Tensor) -> Tensor:
        first, second = t.chunk(2, dim=-1)
        return t * cos + torch.cat([-second, first], dim=-1) * sin

    x = inputs_embeds.float()
    eps = config.rms_norm_eps
    for i in range(config.num_hidden_layers):
        p = f"transformer.h.{i}."
        h = _rms(x, state[p + "ln_1.weight"], eps)
        mixed = h @ state[p + "attn.c_attn.weight"].T + state[p + "attn.c_attn.bias"]
        q, k, v = (t.view(batch, length, heads, head_dim) for t in mixed.split(width, dim=2))
        q, k = rotate(q) * logn, rotate(k)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / head_dim**0.5
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        context = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(batch, length, width)
        x = x + context @ state[p + "attn.c_proj.weight"].T
        h = _rms(x, state[p + "ln_2.weight"], eps)
        a1 = h @ state[p + "mlp.w1.weight"].T
        a2 = h @ state[p + "mlp.w2.weight"].T
        x = x + (a1 * F.silu(a2)) @ state[p + "mlp.c_proj.weight"].T
    x = _rms(x, state["transformer.ln_f.weight"], eps)
    return x @ state["lm_head.weight"].T
