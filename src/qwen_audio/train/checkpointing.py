"""Training checkpoints that resume exactly and never leave a half-written directory behind.

A checkpoint holds everything that decides the next step: weights, optimizer and scheduler
state, the data position, and every RNG. It is written to a temporary sibling and renamed into
place, so a kill mid-save leaves the previous checkpoint intact.
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
from safetensors.torch import load_model, save_model

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


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    *,
    keep_last: int | None = None,
) -> Path:
    """Write ``directory/checkpoint-<step>`` atomically and prune old ones beyond ``keep_last``."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"checkpoint-{state.step}"
    tmp = directory / f".tmp-checkpoint-{state.step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
        tmp / "training_state.pt",
    )
    (tmp / "trainer_state.json").write_text(
        json.dumps(
            {
                "step": state.step,
                "batches_consumed": state.batches_consumed,
                "data_state": state.data_state,
                "metrics": state.metrics,
            },
            indent=2,
        )
    )
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
    """Restore everything ``save_checkpoint`` wrote, RNGs included, and return the run position."""
    required = ["model.safetensors", "training_state.pt", "trainer_state.json"]
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path} is not a complete training checkpoint (missing {', '.join(missing)})")
    missing_keys, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if missing_keys or unexpected:
        raise CheckpointError(
            f"{path}: the checkpoint does not match this model "
            f"(missing {sorted(missing_keys)[:5]}, unexpected {sorted(unexpected)[:5]}); "
            "was it made with another config?"
        )
    saved = torch.load(path / "training_state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    meta = json.loads((path / "trainer_state.json").read_text())
    return TrainerState(meta["step"], meta["batches_consumed"], meta["data_state"], meta["metrics"])
