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
from qwen_audio.configuration import AudioEncoderConfig, QwenAudioConfig, is_official_checkpoint
from qwen_audio.errors import CheckpointError, TokenizerError
from qwen_audio.formats.tokens import AUDIO_PAD, AUDIO_START, ENDOFTEXT, IM_END, IM_START, SPECIAL_TOKENS, special_token_ids


# Our config's names for the ids the official code takes from its tokenizer, and the tokens they are.
_TOKENIZER_IDS = {
    "endoftext_id": ENDOFTEXT,
    "im_start_id": IM_START,
    "im_end_id": IM_END,
    "audio_pad_id": AUDIO_PAD,
    "audio_start_id": AUDIO_START,
}
_SPEC_RANKS = 151_643  # the released qwen.tiktoken, whose ids the spec's defaults are


def ids_for_ranks(n_ranks: int) -> dict[str, int]:
    """Our id fields for a vocabulary of ``n_ranks`` BPE ranks (the special tokens follow, spec order)."""
    ids = special_token_ids(n_ranks)
    return {name: ids[token] for name, token in _TOKENIZER_IDS.items()}


def official_tokenizer_ranks(path: str | Path) -> int | None:
    """How many BPE ranks the folder's ``qwen.tiktoken`` has; None when the folder has none."""
    from qwen_audio.tokenizer import VOCAB_FILE, load_tiktoken_ranks

    file = Path(path) / VOCAB_FILE
    if not file.is_file():
        return None
    try:
        return len(load_tiktoken_ranks(file))
    except TokenizerError as error:
        raise CheckpointError(f"{path}: its {VOCAB_FILE} does not read ({error}); replace it with the checkpoint's own") from error


def config_from_official(values: dict[str, Any], *, tokenizer_ranks: int | None = None, **overrides: Any) -> QwenAudioConfig:
    """Our config from the official config.json (``intermediate_size`` there is both SwiGLU branches).

    The official config.json carries no pad/eos/chat ids: the released code takes them from its
    ``qwen.tiktoken`` (the special tokens follow its ranks, in the spec's order). So with
    ``tokenizer_ranks`` (the folder's rank count) the ids are derived from it, and an id the file
    does state (``audio.audio_start_id``; ``audio_pad_id`` … as ``config_to_official`` writes them)
    must agree. Without a tokenizer, the stated ids or else the 151,643-rank ids of the release.
    """
    if values.get("rotary_pct", 1.0) != 1.0 or not values.get("no_bias", True):
        raise CheckpointError("only rotary_pct 1.0 and no_bias true (the released Qwen-Audio) are supported")
    hidden, heads = values["hidden_size"], values["num_attention_heads"]
    if values.get("kv_channels", hidden // heads) != hidden // heads:
        raise CheckpointError(f"kv_channels {values['kv_channels']} ≠ hidden_size / num_attention_heads")
    audio = dict(values["audio"])
    vocab_size = values["vocab_size"]
    fields = dict(
        vocab_size=vocab_size,
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
    )
    stated = {name: values[name] for name in _TOKENIZER_IDS if name in values}
    if "audio_start_id" in audio:
        stated["audio_start_id"] = audio["audio_start_id"]
    if tokenizer_ranks is not None:
        derived = ids_for_ranks(tokenizer_ranks)
        wrong = {name: value for name, value in stated.items() if value != derived[name]}
        if wrong:
            said = ", ".join(f"{name} {value} (the tokenizer's is {derived[name]})" for name, value in sorted(wrong.items()))
            raise CheckpointError(
                f"config.json disagrees with its qwen.tiktoken ({tokenizer_ranks} ranks): it says {said}; "
                "ship the tokenizer the model was trained with, or correct the ids in config.json"
            )
        ids = derived
        last = tokenizer_ranks + len(SPECIAL_TOKENS) - 1
        if last >= vocab_size:
            raise CheckpointError(
                f"qwen.tiktoken has {tokenizer_ranks} ranks, so its special tokens reach id {last}, but the embedding "
                f"has vocab_size {vocab_size} rows; this tokenizer does not belong to this checkpoint"
            )
    else:
        ids = {**ids_for_ranks(_SPEC_RANKS), **stated}
    fields.update(ids)
    fields.update(overrides)
    outside = [name for name in _TOKENIZER_IDS if not (isinstance(fields[name], int) and 0 <= fields[name] < fields["vocab_size"])]
    if outside and tokenizer_ranks is None:
        raise CheckpointError(
            f"no qwen.tiktoken to take the special ids from, and {', '.join(f'{n} {fields[n]}' for n in outside)} "
            f"(config.json's, else the released vocabulary's) do not fit vocab_size {fields['vocab_size']}; "
            "put the checkpoint's qwen.tiktoken in the folder"
        )
    return QwenAudioConfig(**fields)


def official_config(path: str | Path, **overrides: Any) -> QwenAudioConfig:
    """The config of an official folder: its config.json, ids from its own ``qwen.tiktoken``."""
    path = Path(path)
    if not is_official_checkpoint(path):
        raise CheckpointError(f"{path}: not an official Qwen-Audio directory (config.json with model_type 'qwen' and 'audio')")
    values = json.loads((path / "config.json").read_text())
    return config_from_official(values, tokenizer_ranks=official_tokenizer_ranks(path), **overrides)


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
    config = official_config(path, **config_overrides)
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
