"""Conversion between the official layout and this package's, written as sharded safetensors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from torch import Tensor

from qwen_audio.checkpoints.official import (
    config_from_official,
    config_to_official,
    is_ignored_official,
    is_official_checkpoint,
    load_official,
    native_parameter_names,
    native_to_official_rules,
    official_config,
    official_to_native_rules,
)
from qwen_audio.checkpoints.rules import (
    LoadReport,
    Rule,
    apply_rules,
    official_name,
    short_list,
)
from qwen_audio.checkpoints.source import (
    DEFAULT_SHARD_BYTES,
    INDEX_FILE,
    TOKENIZER_FILES,
    TensorSource,
)
from qwen_audio.checkpoints.towers import load_qwen_llm, load_whisper_encoder
from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.encoder import sinusoids
from qwen_audio.errors import CheckpointError


def _write_shards(dst: Path, tensors: Iterator[tuple[str, Tensor]], max_shard_bytes: int) -> None:
    """Write ``model-0000i-of-0000n.safetensors`` + index (or one ``model.safetensors``), one shard in RAM at a time."""
    shards: list[list[str]] = []
    current: dict[str, Tensor] = {}
    size = total = 0

    def flush() -> None:
        nonlocal current, size
        if current:
            save_file(current, str(dst / f"shard-{len(shards):05d}.tmp"), metadata={"format": "pt"})
            shards.append(list(current))
            current, size = {}, 0

    for key, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            flush()
        current[key] = tensor.contiguous()
        size += nbytes
        total += nbytes
    flush()
    if len(shards) == 1:
        (dst / "shard-00000.tmp").rename(dst / "model.safetensors")
        return
    weight_map = {}
    for i, keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (dst / f"shard-{i:05d}.tmp").rename(dst / name)
        weight_map.update({k: name for k in keys})
    (dst / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    to: Literal["official", "native"] = "native",
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Rewrite a checkpoint between the official layout and ours, tensor by tensor (no model is built).

    Tokenizer files (``qwen.tiktoken`` …) are copied. The official remote-code ``*.py`` files are
    copied when the source has them; a native → official result otherwise needs them added.
    """
    src, dst = Path(src), Path(dst)
    official = is_official_checkpoint(src)
    if to not in ("official", "native"):
        raise CheckpointError(f"convert to 'official' or 'native', not {to!r}")
    if to == "native" and not official:
        raise CheckpointError(f"{src}: not an official Qwen-Audio directory (config.json with model_type 'qwen' and 'audio')")
    if to == "official" and (official or not (src / "config.json").is_file()):
        raise CheckpointError(f"{src}: not a qwen-audio (native) checkpoint directory; nothing to convert to 'official'")
    if dst.exists() and any(dst.iterdir()):
        raise CheckpointError(f"{dst}: exists and is not empty; choose a new directory")
    dst.mkdir(parents=True, exist_ok=True)
    if official:
        config = official_config(src)
        names = native_parameter_names(config)
        rules, what, ignore = official_to_native_rules(names), "Qwen-Audio", is_ignored_official
        config.save_pretrained(dst)
        from transformers import GenerationConfig

        GenerationConfig(eos_token_id=list(config.eos_token_ids), pad_token_id=config.endoftext_id).save_pretrained(dst)
    else:
        config = QwenAudioConfig.from_pretrained(src)
        names = native_parameter_names(config)
        rules, what, ignore = native_to_official_rules(names), "qwen-audio (native)", (lambda k: k.endswith("inv_freq"))
        (dst / "config.json").write_text(json.dumps(config_to_official(config), indent=2))
    with TensorSource(src) as source:
        available = source.keys()
        missing = {s for r in rules for s in r.sources if s not in available and not s.endswith("positional_embedding")}
        unexpected = {k for k in available - {s for r in rules for s in r.sources} if not ignore(k)}
        if missing or unexpected:
            raise CheckpointError(
                f"{src}: not a complete {what} checkpoint; missing {short_list(missing) or '-'}; unexpected {short_list(unexpected) or '-'}"
            )

        def tensors() -> Iterator[tuple[str, Tensor]]:
            for rule in rules:
                if all(s in available for s in rule.sources):
                    value = rule.build([source.get(s) for s in rule.sources])
                    yield rule.target, value.to(dtype) if dtype is not None and value.is_floating_point() else value

        _write_shards(dst, tensors(), max_shard_bytes)
    for file in [*TOKENIZER_FILES, *(p.name for p in src.glob("*.py"))]:
        if (src / file).is_file():
            shutil.copy2(src / file, dst / file)
    return dst


__all__ = [
    "CheckpointError", "LoadReport", "Rule", "TensorSource", "apply_rules", "config_from_official",
    "config_to_official", "convert_checkpoint", "is_official_checkpoint", "load_official", "load_qwen_llm",
    "load_whisper_encoder", "native_to_official_rules", "official_name", "official_to_native_rules",
    "sinusoids",
]
