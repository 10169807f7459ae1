"""Training checkpoints that resume exactly and never leave a half-written directory behind.

A checkpoint holds everything that decides the next step: weights, optimizer and scheduler
state, the data position, and every rank's RNGs. It is written to a temporary sibling and
renamed into place, so a kill mid-save leaves the previous checkpoint intact. Sharded (FSDP)
models are gathered into full tensors first, so a checkpoint does not depend on the world size.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from qwen_audio.errors import CheckpointError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class TrainerState:
    """Position of a run: optimizer steps taken and batches consumed (≥ steps × accumulation)."""

    step: int
    batches_consumed: int
    data_state: dict[str, Any]
    metrics: dict[str, float]


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rank() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    # The state dict, not .parameters(): FSDP2 swaps unsharded tensors in around forward/backward.
    return any(isinstance(t, DTensor) for t in model.state_dict().values())


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    """Full (unsharded, CPU) model and optimizer state; a collective call under FSDP."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return model.state_dict(), optimizer.state_dict()


def _independent(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): give each its own copy."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    *,
    keep_last: int | None = None,
) -> Path | None:
    """Write ``directory/checkpoint-<step>`` atomically; every rank calls it. Returns the path on rank 0."""
    rank, world = _rank()
    model_state, optimizer_state = full_state(model, optimizer)
    final = directory / f"checkpoint-{state.step}"
    tmp = directory / f".tmp-checkpoint-{state.step}"
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if rank == 0:
        save_file(_independent(model_state), str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "world_size": world},
                   tmp / "training_state.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({
            "step": state.step, "batches_consumed": state.batches_consumed,
            "data_state": state.data_state, "metrics": state.metrics, "world_size": world,
        }, indent=2))
    _barrier()
    if rank != 0:
        return None
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep_last:
        for old in list_checkpoints(directory)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary, half-written ones are ignored)."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").is_file()]


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> TrainerState:
    """Restore everything ``save_checkpoint`` wrote, this rank's RNGs included; every rank calls it."""
    required = ["model.safetensors", "training_state.pt", "trainer_state.json"]
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path} is not a complete training checkpoint (missing {', '.join(missing)})")
    tensors = load_file(str(path / "model.safetensors"))
    expected = set(model.state_dict())
    if set(tensors) != expected:
        raise CheckpointError(
            f"{path}: the checkpoint does not match this model "
            f"(missing {sorted(expected - set(tensors))[:5]}, unexpected {sorted(set(tensors) - expected)[:5]}); "
            "was it made with another config?"
        )
    saved = torch.load(path / "training_state.pt", weights_only=False)
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=tensors, optim_state_dict=saved["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(tensors)
        optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rank, world = _rank()
    if saved.get("world_size", 1) == world and (path / f"rng-rank{rank}.pt").is_file():
        set_rng_state(torch.load(path / f"rng-rank{rank}.pt", weights_only=False))
    meta = json.loads((path / "trainer_state.json").read_text())
    return TrainerState(meta["step"], meta["batches_consumed"], meta["data_state"], meta["metrics"])


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    """A training checkpoint's weights as the plain model's state dict: what ``export_model`` would write.

    A checkpoint holds whatever was trained: a CTC wrapper around the model (``model.`` prefix and
    its head), PEFT's LoRA wrapping (``base_model.model.`` prefix, ``base_layer`` and ``lora_A/B``
    factors). Evaluating checkpoint N must not need the run to finish, so the wrapper is dropped and
    each adapter merged (W + α/r · B·A, α and r read from the run's ``recipe.json``).
    """
    tensors = load_file(str(Path(path) / "model.safetensors"))
    if any(k.startswith("model.") and not k.startswith(("model.layers.", "model.embed_tokens.", "model.norm.")) for k in tensors):
        tensors = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    if not any(k.startswith("base_model.model.") for k in tensors):
        return tensors
    tensors = {k.removeprefix("base_model.model."): v for k, v in tensors.items()}
    recipe = Path(path).parent / "recipe.json"
    lora = json.loads(recipe.read_text())["model"].get("lora") if recipe.is_file() else None
    if not lora:
        raise CheckpointError(f"{path} holds LoRA adapters but {recipe} does not say their rank and alpha")
    scale = lora["alpha"] / lora["r"]
    merged: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            stem, _, leaf = key.partition(".base_layer.")
            a, b = tensors.get(f"{stem}.lora_A.default.{leaf}"), tensors.get(f"{stem}.lora_B.default.{leaf}")
            key = f"{stem}.{leaf}"
            if a is not None and b is not None and leaf == "weight":
                value = value + scale * (b.float() @ a.float()).to(value.dtype)
        merged[key] = value
    return merged
