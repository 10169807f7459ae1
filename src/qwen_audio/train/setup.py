"""Stage-specific model preparation: sizes that match the tokenizer, freezing, LoRA.

The paper trains the audio encoder with the LLM frozen in stage 1 and the LLM with the encoder
frozen in stage 2; both are plain name patterns here so a recipe can choose otherwise.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from qwen_audio.configuration import QwenAudioConfig, preset_config
from qwen_audio.errors import ConfigError
from qwen_audio.tokenizer import QwenAudioTokenizer

# Parameter-name patterns of the model's parts (QwenAudioForCausalLM's module names).
PARTS: dict[str, tuple[str, ...]] = {
    "encoder": ("audio.*",),
    "llm": ("model.*", "lm_head.*"),
    "embeddings": ("model.embed_tokens.*", "lm_head.*"),
}
STAGE_FREEZE = {"pretrain": ("llm",), "sft": ("encoder",)}


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    modules_to_save: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1 or not 0 <= self.dropout < 1:
            raise ConfigError("LoRA needs r ≥ 1, alpha ≥ 1 and 0 ≤ dropout < 1")


@dataclass(frozen=True)
class ModelSettings:
    init: str = "preset:small"  # "preset:<name>" or a checkpoint directory
    overrides: dict[str, Any] = field(default_factory=dict)  # config fields for a preset
    freeze: tuple[str, ...] | None = None  # parts or name patterns; None: the stage's default
    lora: LoraSettings | None = None
    # Train only the embedding rows of the tokens appended after the base vocabulary (the spec's
    # special tokens, ids ≥ endoftext_id): a pretrained LLM's own rows stay exactly as they were.
    new_token_rows_only: bool = False


def config_for_tokenizer(preset: str, tokenizer: QwenAudioTokenizer, **overrides: Any) -> QwenAudioConfig:
    """A preset whose vocabulary and special ids are this tokenizer's (embedding rows padded to 64)."""
    vocab = -(-tokenizer.vocab_size // 64) * 64
    ids = dict(
        vocab_size=vocab,
        endoftext_id=tokenizer.eod_id,
        im_start_id=tokenizer.im_start_id,
        im_end_id=tokenizer.im_end_id,
        audio_pad_id=tokenizer.audio_pad_id,
        audio_start_id=tokenizer.audio_start_id,
    )
    return preset_config(preset, **{**ids, **overrides})


def freeze_patterns(names: Sequence[str]) -> tuple[str, ...]:
    patterns: list[str] = []
    for name in names:
        patterns.extend(PARTS.get(name, (name,)))
    return tuple(patterns)


def apply_freezing(model: torch.nn.Module, names: Sequence[str]) -> dict[str, int]:
    """Freeze parameters matching the parts/patterns; return trainable and frozen counts."""
    patterns = freeze_patterns(names)
    counts = {"trainable": 0, "frozen": 0}
    matched = set()
    for name, param in model.named_parameters():
        hit = [p for p in patterns if fnmatch.fnmatchcase(name, p)]
        matched.update(hit)
        param.requires_grad_(not hit)
        counts["frozen" if hit else "trainable"] += param.numel()
    unused = set(patterns) - matched
    if unused:
        raise ConfigError(f"freeze pattern(s) {sorted(unused)} match no parameter; parts are {sorted(PARTS)}")
    return counts


def train_only_new_rows(model: torch.nn.Module) -> int:
    """Zero the gradient of the input/output embedding rows below ``config.endoftext_id``; return that row count.

    The spec appends its special tokens after the BPE ranks, so every id from ``endoftext_id`` on is
    new to a pretrained base. A gradient hook (not a second parameter) keeps the tied embedding one
    tensor; recipes pair it with ``weight_decay: 0``, which would otherwise still shrink the frozen rows.
    """
    first_new = int(model.config.endoftext_id)
    tensors = {id(t): t for t in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}
    for weight in tensors.values():
        if not weight.requires_grad:
            raise ConfigError("new_token_rows_only needs the embeddings trainable: do not freeze `embeddings`/`model.embed_tokens.*`")

        def keep_new_rows(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            grad[:first_new] = 0
            return grad

        weight.register_hook(keep_new_rows)
    return first_new


def apply_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Wrap the decoder's linear layers with PEFT LoRA adapters; what was trainable stays trainable.

    PEFT freezes every non-adapter parameter; a stage-1 recipe that trains the projection (and the
    new token rows) beside adapters on the frozen LLM needs those back, so the names trainable before
    wrapping are made trainable again (the adapted base layers themselves stay frozen).
    """
    from peft import LoraConfig, get_peft_model

    trainable = {name for name, param in model.named_parameters() if param.requires_grad}

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=list(settings.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(model, config)
    for name, param in wrapped.base_model.model.named_parameters():
        if name in trainable:
            param.requires_grad_(True)
    return wrapped
