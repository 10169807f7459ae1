"""Checkpoint layouts ↔ this package: official Qwen-Audio, openai/transformers Whisper, Qwen v1/Qwen2.

Every layout is described by *rules*: one target tensor = copy / chunk / concatenation of source
tensors. Rules are checked against the source's metadata (names, shapes) before any tensor is read,
so a wrong checkpoint fails with a precise message and nothing half-loaded; tensors are then read
one at a time from memory-mapped safetensors and assigned into a model whose parameters were
created on the meta device, so a 7.7B model never needs twice its size in RAM.

Official Qwen v1 storage, verified against QwenLM/Qwen-Audio ``modeling_qwen.py``:
``c_attn`` is q, k, v stacked on the output dim (``split(split_size, dim=2)`` in that order), and
the MLP computes ``c_proj(w1(x) * silu(w2(x)))``, so ``w2`` is the gate and ``w1`` the up branch.
"""

from qwen_audio.checkpoints.convert import convert_checkpoint
from qwen_audio.checkpoints.official import (
    config_from_official,
    config_to_official,
    is_official_checkpoint,
    load_official,
    native_to_official_rules,
    official_config,
    official_to_native_rules,
)
from qwen_audio.checkpoints.rules import (
    LoadReport,
    Rule,
    apply_rules,
    official_name,
    transformers_whisper_name,
)
from qwen_audio.checkpoints.source import TensorSource
from qwen_audio.checkpoints.towers import load_qwen_llm, load_whisper_encoder

__all__ = [
    "LoadReport",
    "Rule",
    "TensorSource",
    "apply_rules",
    "config_from_official",
    "config_to_official",
    "convert_checkpoint",
    "is_official_checkpoint",
    "load_official",
    "load_qwen_llm",
    "load_whisper_encoder",
    "native_to_official_rules",
    "official_config",
    "official_name",
    "official_to_native_rules",
    "transformers_whisper_name",
]
