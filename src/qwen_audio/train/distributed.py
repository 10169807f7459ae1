"""Multi-process training under ``torchrun``: process group, device, and model wrapping.

One code path for 1 process and N: without torchrun's environment everything here is a no-op,
so the same recipe runs on a laptop, one GPU, or many nodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from qwen_audio.errors import ConfigError

STRATEGIES = ("none", "ddp", "fsdp")


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPU) or describe a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    target = torch.device(f"cuda:{local_rank}" if use_cuda else (device or "cpu"))
    if use_cuda:
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank, world_size, local_rank, target)


def wrap_model(model: torch.nn.Module, context: DistributedContext, strategy: str = "ddp") -> torch.nn.Module:
    """DDP replicates (small models, LoRA); FSDP shards parameters, grads and optimizer state (7B)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"distributed strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not context.enabled or strategy == "none":
        return model
    if strategy == "ddp":
        ids = [context.device.index] if context.device.type == "cuda" else None
        # Frozen towers have requires_grad=False and are ignored by DDP; every trainable part is
        # used on every batch in both stages, so no unused-parameter scan (it costs a graph walk).
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)
    from torch.distributed.fsdp import fully_shard

    # Shard each transformer block on its own, then the rest: the per-block all-gather overlaps
    # compute and keeps peak memory to one block's full weights.
    for module in model.modules():
        if type(module).__name__.endswith(("DecoderLayer", "EncoderLayer", "Block")):
            fully_shard(module)
    fully_shard(model)
    return model


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
