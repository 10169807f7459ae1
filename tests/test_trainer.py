"""train/trainer.py + checkpointing: loss goes down, frozen stays frozen, resume is exact."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from qwen_audio.errors import CheckpointError, ConfigError
from qwen_audio.train.checkpointing import list_checkpoints
from qwen_audio.train.trainer import Trainer, TrainerConfig, build_optimizer, build_scheduler


class ToyModel(torch.nn.Module):
    """Regression with dropout, so resuming must restore the RNG too."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.frozen = torch.nn.Linear(4, 8)
        self.head = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.head(torch.tanh(self.frozen(x))).squeeze(-1), y))


def batch_at(index: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(index)
    x = torch.randn(16, 4, generator=g)
    return {"x": x, "y": x @ torch.tensor([0.5, -0.3, 0.2, 0.1]), "attention_mask": torch.ones(16, 3)}


def source(start: int):
    return (batch_at(i) for i in itertools.count(start))


def config(tmp_path: Path, **overrides) -> TrainerConfig:
    base = dict(output_dir=str(tmp_path), max_steps=12, learning_rate=3e-2, warmup_steps=2, grad_accum=2,
                save_every=4, progress=False, tensorboard=False, log_every=1)
    return TrainerConfig(**{**base, **overrides})


def test_training_lowers_the_loss_and_keeps_frozen_weights(tmp_path: Path) -> None:
    model = ToyModel()
    frozen_before = model.frozen.weight.clone()
    result = Trainer(model, config(tmp_path, max_steps=40, save_every=0), source).train(resume=False)
    assert result.steps == 40
    assert sum(result.losses[-5:]) / 5 < 0.5 * sum(result.losses[:5]) / 5
    assert torch.equal(model.frozen.weight, frozen_before)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 40


class FrozenPathModel(ToyModel):
    """Odd batches reach only the frozen layer, as a text-only chat reaches only a frozen decoder."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        if int(y.abs().sum() * 1000) % 2:
            return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.frozen(x).mean(-1), y))
        return super().forward(x, y, attention_mask)


def test_a_batch_that_reaches_no_trainable_weight_is_a_step_that_changes_nothing(tmp_path: Path) -> None:
    model = FrozenPathModel()
    assert any(int(batch_at(i)["y"].abs().sum() * 1000) % 2 for i in range(8))  # such batches do come
    result = Trainer(model, config(tmp_path, max_steps=8, grad_accum=1, save_every=0), source).train(resume=False)
    assert result.steps == 8 and all(torch.isfinite(torch.tensor(result.losses)))


def test_sigterm_finishes_the_step_saves_and_resumes_exactly(tmp_path: Path) -> None:
    import os
    import signal

    reference = ToyModel()
    Trainer(reference, config(tmp_path / "ref", save_every=0), source).train(resume=False)

    def terminated_after(batches: int):
        def batches_from(start: int):
            for i in itertools.count(start):
                if i == batches:  # arrives mid-step (grad_accum=2): the step still completes
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch_at(i)
        return batches_from

    stopped = Trainer(ToyModel(), config(tmp_path / "run", save_every=0), terminated_after(7)).train(resume=False)
    assert stopped.steps == 4 and stopped.checkpoint is not None and stopped.checkpoint.name == "checkpoint-4"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone once training returns
    resumed = ToyModel()
    result = Trainer(resumed, config(tmp_path / "run", save_every=0), source).train(resume=True)
    assert result.steps == 12
    for a, b in zip(resumed.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_stop_at_ends_where_a_sigterm_did_on_the_full_run_s_schedule(tmp_path: Path) -> None:
    """A release cut mid-run (SIGTERM at step 4 of 12) is reproducible from the config alone."""
    import os
    import signal

    def terminated_after(batches: int):
        def batches_from(start: int):
            for i in itertools.count(start):
                if i == batches:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch_at(i)
        return batches_from

    signalled = ToyModel()
    Trainer(signalled, config(tmp_path / "signal", save_every=0), terminated_after(7)).train(resume=False)
    cut = ToyModel()
    result = Trainer(cut, config(tmp_path / "cut", save_every=0, stop_at=4), source).train(resume=False)
    assert result.steps == 4 and result.checkpoint is not None and result.checkpoint.name == "checkpoint-4"
    for a, b in zip(cut.parameters(), signalled.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="stop_at"):
        config(tmp_path, stop_at=13)


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = ToyModel()
    Trainer(reference, config(tmp_path / "ref"), source).train(resume=False)

    def dies_after(batches: int):
        def make(start: int):
            for i in itertools.count(start):
                if i >= batches:
                    raise KeyboardInterrupt  # the process is killed mid-run
                yield batch_at(i)
        return make

    with pytest.raises(KeyboardInterrupt):
        Trainer(ToyModel(), config(tmp_path / "run"), dies_after(15)).train()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-4"]
    # A fresh process: new model object, resume from the newest checkpoint, finish the run.
    resumed = ToyModel()
    result = Trainer(resumed, config(tmp_path / "run"), source).train(resume=True)
    assert result.steps == 12
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_checkpoints_are_pruned_and_half_written_ones_ignored(tmp_path: Path) -> None:
    Trainer(ToyModel(), config(tmp_path, keep_last=2), source).train(resume=False)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-8", "checkpoint-12"]
    (tmp_path / ".tmp-checkpoint-16-1").mkdir()
    (tmp_path / "checkpoint-20").mkdir()  # no trainer_state.json: incomplete
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-8", "checkpoint-12"]


def test_resuming_into_a_different_model_is_refused(tmp_path: Path) -> None:
    Trainer(ToyModel(), config(tmp_path, max_steps=2, warmup_steps=0), source).train(resume=False)

    class Other(ToyModel):
        def __init__(self) -> None:
            super().__init__()
            self.extra = torch.nn.Linear(2, 2)

    with pytest.raises(CheckpointError, match="does not match"):
        Trainer(Other(), config(tmp_path, max_steps=4, warmup_steps=0), source).train(resume=True)


def test_warmup_then_cosine_schedule(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_steps=10, warmup_steps=2, learning_rate=1.0, min_lr_ratio=0.1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] > 0.1 - 1e-9


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config(tmp_path, precision="fp8")
    with pytest.raises(ConfigError):
        config(tmp_path, max_steps=0)
    with pytest.raises(ConfigError):
        Trainer(ToyModel().frozen, config(tmp_path), source)  # all frozen: nothing to train


def test_lr_scales_give_matching_parameters_their_own_rate_through_the_schedule(tmp_path: Path) -> None:
    model = ToyModel()
    cfg = config(tmp_path, learning_rate=0.1, warmup_steps=0, max_steps=4, lr_scales={"head.0.*": 0.25})
    optimizer = build_optimizer(model, cfg)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rate[id(model.head[0].weight)] == rate[id(model.head[0].bias)] == pytest.approx(0.025)
    assert rate[id(model.head[2].weight)] == pytest.approx(0.1)
    assert not any(id(p) in rate for p in model.frozen.parameters())
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decay[id(model.head[0].bias)] == 0.0  # biases never decay, scaled or not
    scheduler = build_scheduler(optimizer, cfg)
    optimizer.step()
    scheduler.step()
    scaled = [g["lr"] for g in optimizer.param_groups if id(model.head[0].weight) in map(id, g["params"])][0]
    plain = [g["lr"] for g in optimizer.param_groups if id(model.head[2].weight) in map(id, g["params"])][0]
    assert scaled / plain == pytest.approx(0.25)  # the ratio holds as the schedule moves
    with pytest.raises(ConfigError, match="match no trainable"):
        build_optimizer(model, config(tmp_path, lr_scales={"frozen.*": 0.5}))
    with pytest.raises(ConfigError, match="positive"):
        config(tmp_path, lr_scales={"head.*": 0.0})


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    result = Trainer(ToyModel(), config(tmp_path, precision="bf16", max_steps=3, save_every=0), source).train(resume=False)
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_tensorboard_event_files_are_written(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    Trainer(ToyModel(), config(tmp_path, max_steps=2, warmup_steps=0, tensorboard=True, save_every=0), source).train(resume=False)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_a_lora_checkpoint_reads_back_as_the_merged_model(tmp_path: Path) -> None:
    """Checkpoint N of a LoRA run inside a CTC wrapper evaluates as what export_model would ship."""
    import json

    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    from qwen_audio.train.checkpointing import model_weights
    from qwen_audio.train.ctc import EmbeddingCtc
    from tests.model_fixtures import tiny_model

    lora = get_peft_model(tiny_model(), LoraConfig(r=2, lora_alpha=6, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    wrapper = EmbeddingCtc(lora, 0.3)
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    save_file({k: v.clone() for k, v in wrapper.state_dict().items()}, str(checkpoint / "model.safetensors"))
    (tmp_path / "recipe.json").write_text(json.dumps({"model": {"lora": {"r": 2, "alpha": 6}}}))
    weights = model_weights(checkpoint)
    merged = lora.merge_and_unload().state_dict()
    assert set(weights) == set(merged)
    for key, value in merged.items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=1e-6)

    (tmp_path / "recipe.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(CheckpointError, match="rank and alpha"):
        model_weights(checkpoint)
