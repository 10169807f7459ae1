"""Whisper checkpoints into the encoder, Qwen LLM checkpoints into the decoder."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from qwen_audio.checkpoints.official import (
    is_ignored_official,
    official_to_native_rules,
)
from qwen_audio.checkpoints.rules import (
    LoadReport,
    Rule,
    apply_rules,
    model_tensors,
    transformers_whisper_name,
)
from qwen_audio.checkpoints.source import TensorSource
from qwen_audio.errors import CheckpointError


def load_whisper_encoder(model: nn.Module, path: str | Path, *, dtype: torch.dtype | None = None) -> LoadReport:
    """Load a Whisper encoder into ``model.audio`` (or into an ``AudioEncoder`` passed directly).

    Reads openai-whisper ``.pt`` files (``{"dims", "model_state_dict"}``) and transformers'
    ``WhisperModel``/``WhisperForConditionalGeneration``/``WhisperEncoder`` safetensors. The decoder
    is ignored; ``proj`` and ``audio_bos_eos_token`` do not exist in Whisper and stay as they are.
    """
    encoder = getattr(model, "audio", model)
    with TensorSource(path) as source:
        keys = source.keys()
        if any(k.startswith("encoder.blocks.") for k in keys):  # openai-whisper names, our names
            prefix, rename = "encoder.", lambda ours: ours
        else:
            prefix = next((p for p in ("model.encoder.", "encoder.", "") if any(k.startswith(p + "layers.") for k in keys)), None)
            if prefix is None:
                raise CheckpointError(f"{path}: no Whisper encoder tensors (encoder.blocks.* or *encoder.layers.*)")
            rename = transformers_whisper_name
        dims = source.extra.get("dims")
        if isinstance(dims, dict) and dims.get("n_mels") not in (None, encoder.config.n_mels):
            raise CheckpointError(f"{path}: Whisper uses {dims['n_mels']} mel bins, this encoder {encoder.config.n_mels}")
        own = [n for n in model_tensors(encoder) if not n.startswith(("proj.", "audio_bos_eos_token."))]
        rules = [Rule(name, (prefix + rename(name),)) for name in own]
        return apply_rules(
            encoder, source, rules, what="Whisper encoder", dtype=dtype,
            ignore=lambda k: not k.startswith(prefix) or "decoder" in k or k == "proj_out.weight",
        )


def load_qwen_llm(model: nn.Module, path: str | Path, *, resize_vocab: bool = False, dtype: torch.dtype | None = None) -> LoadReport:
    """Load a Qwen LLM (Qwen v1 ``transformer.h.*`` or transformers' Qwen2 ``model.layers.*``) into the decoder.

    ``resize_vocab=True`` accepts a checkpoint with fewer vocabulary rows (Qwen-7B's 151,936 into
    Qwen-Audio's 155,947): its rows are copied, the audio-token rows keep their initial values.
    """
    names = [n for n in model_tensors(model) if n.startswith(("model.", "lm_head.")) and not n.endswith("inv_freq")]
    vocab = {"model.embed_tokens.weight", "lm_head.weight"}
    with TensorSource(path) as source:
        keys = source.keys()
        if any(k.startswith("transformer.h.") for k in keys):
            rules, what = official_to_native_rules(names), "Qwen (v1)"
            ignore = lambda k: is_ignored_official(k) or k.startswith("transformer.audio.")  # noqa: E731
        elif any(k.startswith("model.layers.") for k in keys):
            rules, what = [Rule(n, (n,)) for n in names], "Qwen2"
            ignore = lambda k: k.endswith("inv_freq")  # noqa: E731
        else:
            raise CheckpointError(f"{path}: neither a Qwen v1 (transformer.h.*) nor a Qwen2 (model.layers.*) checkpoint")
        if "lm_head.weight" not in keys and getattr(model.config, "tie_word_embeddings", False):
            rules = [r for r in rules if r.target != "lm_head.weight"]
        return apply_rules(
            model, source, rules, what=what, ignore=ignore, dtype=dtype,
            resizable=(lambda t: t in vocab) if resize_vocab else (lambda t: False),
        )
