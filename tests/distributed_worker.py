"""Run by test_distributed.py under torchrun: DDP on CPU/gloo over the trainer's toy task."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import torch

from qwen_audio.train.checkpointing import full_state
from qwen_audio.train.distributed import cleanup_distributed, init_distributed, wrap_model
from qwen_audio.train.trainer import Trainer, TrainerConfig
from tests.test_trainer import ToyModel, batch_at


def main(out: Path, strategy: str, resume: bool) -> None:
    context = init_distributed(device="cpu")
    model = ToyModel()
    wrapped = wrap_model(model, context, strategy)

    die_after = int(os.environ.get("DIE_AFTER_BATCHES", "0"))

    def source(start: int):  # each rank reads its own share of batches
        for i in itertools.count(start):
            if die_after and i >= die_after:
                raise SystemExit(3)  # the job is killed mid-run
            yield batch_at(i * context.world_size + context.rank)

    config = TrainerConfig(output_dir=str(out), max_steps=int(sys.argv[4]), learning_rate=1e-2, progress=False, tensorboard=False, save_every=3)
    trainer = Trainer(wrapped, config, source, is_main_process=context.is_main, unwrapped_model=model)
    result = trainer.train(resume=resume)
    weights, _ = full_state(model, trainer.optimizer)  # collective under FSDP: every rank calls it
    digest = float(sum(t.double().sum() for t in weights.values())) if context.is_main else None
    (out / f"rank{context.rank}.json").write_text(json.dumps({"digest": digest, "world": context.world_size, "steps": result.steps}))
    cleanup_distributed()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "resume")
