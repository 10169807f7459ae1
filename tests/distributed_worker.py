"""Run by test_distributed.py under torchrun: DDP on CPU/gloo over the trainer's toy task."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch

from qwen_audio.train.distributed import cleanup_distributed, init_distributed, wrap_model
from qwen_audio.train.trainer import Trainer, TrainerConfig
from tests.test_trainer import ToyModel, batch_at


def main(out: Path) -> None:
    context = init_distributed(device="cpu")
    model = ToyModel()
    wrapped = wrap_model(model, context, "ddp")

    def source(start: int):  # each rank reads its own share of batches
        return (batch_at(i * context.world_size + context.rank) for i in itertools.count(start))

    config = TrainerConfig(output_dir=str(out), max_steps=6, learning_rate=1e-2, progress=False, tensorboard=False, save_every=3)
    result = Trainer(wrapped, config, source, is_main_process=context.is_main, unwrapped_model=model).train(resume=False)
    digest = float(sum(p.double().sum() for p in model.parameters()))
    (out / f"rank{context.rank}.json").write_text(json.dumps({"digest": digest, "world": context.world_size, "steps": result.steps}))
    cleanup_distributed()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
