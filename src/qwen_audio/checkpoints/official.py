"""The official Qwen-Audio layout: detection, config translation, name rules, loading."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights

from qwen_audio.checkpoints.rules import (
    Rule,
    apply_rules,
    model_tensors,
    official_name,
    short_list,
)
from qwen_audio.checkpoints.source import TensorSource
from qwen_audio.configuration import AudioEncoderConfig, QwenAudioConfig
from qwen_audio.errors import CheckpointError


def is_official_checkpoint(path: str | Path) -> bool:
    """A directory whose config.json is the official remote-code Qwen config with an ``"audio"`` dict."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    values = json.loads(config.read_text())
    return values.get("model_type") == "qwen" and isinstance(values.get("audio"), dict)


def config_from_official(values: dict[str, Any], **overrides: Any) -> QwenAudioConfig:
    """Our config from the official config.json (``intermediate_size`` there is both SwiGLU branches)."""
    if values.get("rotary_pct", 1.0) != 1.0 or not values.get("no_bias", True):
        raise CheckpointError("only rotary_pct 1.0 and no_bias true (the released Qwen-Audio) are supported")
    hidden, heads = values["hidden_size"], values["num_attention_heads"]
    if values.get("kv_channels", hidden // heads) != hidden // heads:
        raise CheckpointError(f"kv_channels {values['kv_channels']} ≠ hidden_size / num_attention_heads")
    audio = dict(values["audio"])
    fields = dict(
        vocab_size=values["vocab_size"],
        hidden_size=hidden,
        num_hidden_layers=values["num_hidden_layers"],
        num_attention_heads=heads,
        intermediate_size=values["intermediate_size"] // 2,
        rms_norm_eps=values.get("layer_norm_epsilon", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(values.get("rotary_emb_base", 10000))},
        max_position_embeddings=values.get("max_position_embeddings", 8192),
        seq_length=values.get("seq_length", 2048),
        use_dynamic_ntk=values.get("use_dynamic_ntk", True),
        use_logn_attn=values.get("use_logn_attn", True),
        tie_word_embeddings=values.get("tie_word_embeddings", False),
        initializer_range=values.get("initializer_range", 0.02),
        audio_config=AudioEncoderConfig.from_dict(audio).to_dict(),
        audio_start_id=audio.get("audio_start_id", 155163),
    )
    # The official config carries no chat/pad ids; keep ours (the spec's) unless the file says otherwise.
    for name in ("audio_pad_id", "endoftext_id", "im_start_id", "im_end_id"):
        if name in values:
            fields[name] = values[name]
    fields.update(overrides)
    return QwenAudioConfig(**fields)


def config_to_official(config: QwenAudioConfig) -> dict[str, Any]:
    """The official config.json for our config (loads with the official remote code)."""
    return {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig", "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
        "attn_dropout_prob": 0.0, "bf16": False, "fp16": False, "fp32": False, "emb_dropout_prob": 0.0,
        "intermediate_size": 2 * config.intermediate_size,
        "initializer_range": config.initializer_range,
        "kv_channels": config.hidden_size // config.num_attention_heads,
        "layer_norm_epsilon": config.rms_norm_eps,
        "model_type": "qwen",
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_hidden_layers,
        "max_position_embeddings": config.max_position_embeddings,
        "no_bias": True, "onnx_safe": None,
        "rotary_emb_base": (config.rope_parameters or {}).get("rope_theta", 10000.0),
        "rotary_pct": 1.0, "scale_attn_weights": True,
        "seq_length": config.seq_length,
        "tie_word_embeddings": config.tie_word_embeddings,
        "tokenizer_type": "QWenTokenizer", "use_cache": True,
        "vocab_size": config.vocab_size,
        "use_dynamic_ntk": config.use_dynamic_ntk,
        "use_logn_attn": config.use_logn_attn,
        "audio": {**config.audio.to_dict(), "audio_start_id": config.audio_start_id},
        # Not read by the official code; kept so a round trip restores our ids for non-standard vocabularies.
        "audio_pad_id": config.audio_pad_id, "endoftext_id": config.endoftext_id,
        "im_start_id": config.im_start_id, "im_end_id": config.im_end_id,
    }


def is_ignored_official(key: str) -> bool:
    return bool(re.search(r"rotary_emb\.inv_freq$|attn\.masked_bias$|attn\.bias$", key))


def native_parameter_names(config: QwenAudioConfig) -> list[str]:
    from qwen_audio.model import QwenAudioForCausalLM

    with init_empty_weights(include_buffers=True):
        model = QwenAudioForCausalLM(config)
    return [n for n in model_tensors(model) if not n.endswith("inv_freq")]


def official_to_native_rules(native_names: Iterable[str]) -> list[Rule]:
    rules = []
    for name in native_names:
        official, part = official_name(name)
        rules.append(Rule(name, (official,), part, 3 if part is not None else 1))
    return rules


def native_to_official_rules(native_names: Iterable[str]) -> list[Rule]:
    grouped: dict[str, list[tuple[int, str]]] = {}
    for name in native_names:
        official, part = official_name(name)
        grouped.setdefault(official, []).append((part or 0, name))
    return [Rule(official, tuple(n for _, n in sorted(parts))) for official, parts in grouped.items()]


def load_official(path: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", **config_overrides: Any):  # noqa: ANN201
    """Build ``QwenAudioForCausalLM`` from an official Qwen-Audio / Qwen-Audio-Chat directory.

    Parameters start on the meta device and receive the stored tensors one by one (memory-mapped),
    in ``dtype`` if given, else the stored dtype (bf16 for the release).
    """
    from qwen_audio.model import QwenAudioForCausalLM

    path = Path(path)
    if not is_official_checkpoint(path):
        raise CheckpointError(f"{path}: not an official Qwen-Audio directory (config.json with model_type 'qwen' and 'audio')")
    config = config_from_official(json.loads((path / "config.json").read_text()), **config_overrides)
    with init_empty_weights(include_buffers=False):
        model = QwenAudioForCausalLM(config)
    names = [n for n in model_tensors(model) if not n.endswith("inv_freq")]
    with TensorSource(path) as source:
        apply_rules(
            model, source, official_to_native_rules(names), what="Qwen-Audio", ignore=is_ignored_official,
            optional=lambda target: target.endswith("positional_embedding"), dtype=dtype,
        )
    still_meta = [n for n, t in model_tensors(model).items() if t.is_meta]
    if still_meta:
        raise CheckpointError(f"{path}: these tensors were never loaded: {short_list(still_meta)}")
    if dtype is not None:
        model.to(dtype)
    return model.to(device).eval()
