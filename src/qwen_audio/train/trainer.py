"""The training loop shared by both stages: accumulation, mixed precision, schedule, resume.

Stage-specific choices (what is frozen, LoRA, which data) are made before the loop, in
``train.setup``; this file only knows "a model that returns ``.loss`` for a batch".
"""

from __future__ import annotations

import fnmatch
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import get_cosine_schedule_with_warmup

from qwen_audio.errors import ConfigError
from qwen_audio.train.checkpointing import TrainerState, list_checkpoints, load_checkpoint, save_checkpoint

Batch = Mapping[str, torch.Tensor]
# Given how many batches were already consumed, yield the batches that follow: a deterministic
# data order is what lets a resumed run see exactly the batches the uninterrupted one would.
BatchSource = Callable[[int], Iterator[Batch]]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainerConfig:
    output_dir: str
    max_steps: int
    learning_rate: float = 1e-4
    min_lr_ratio: float = 0.0  # cosine decays to learning_rate × this
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    save_every: int = 0  # 0: only at the end
    keep_last: int = 2
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True
    # parameter-name pattern (fnmatch) → learning-rate multiplier, first match wins; e.g. a pretrained
    # encoder's blocks at 0.1 beside a fresh projection (measured on the default model's warm-up: encoder
    # at 1e-4 with the projection at 3e-3 fit 48 utterances to CTC loss 0.7 in 60 steps, one 1e-3 for
    # both stayed at 5.0)
    lr_scales: dict[str, float] = field(default_factory=dict)
    # end the run at this step, the schedule still that of max_steps: a release cut mid-run (as a
    # SIGTERM there did) written down, so rerunning the recipe reproduces it
    stop_at: int | None = None

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.grad_accum < 1:
            raise ConfigError("max_steps and grad_accum must be ≥ 1")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if self.learning_rate <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("learning_rate must be > 0 and min_lr_ratio in [0, 1]")
        if self.warmup_steps < 0 or self.warmup_steps > self.max_steps:
            raise ConfigError("warmup_steps must be in [0, max_steps]")
        if any(not scale > 0 for scale in self.lr_scales.values()):
            raise ConfigError(f"lr_scales must be positive, got {self.lr_scales}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.max_steps:
            raise ConfigError(f"stop_at must be in [1, max_steps], got {self.stop_at}")


@dataclass(frozen=True)
class TrainResult:
    steps: int
    final_loss: float
    losses: tuple[float, ...]  # one per optimizer step of this run
    checkpoint: Path | None


def build_optimizer(model: torch.nn.Module, config: TrainerConfig) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no weight decay on norms, biases and embeddings-as-vectors;
    ``config.lr_scales`` multiplies the learning rate of the parameters whose names match."""
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    used: set[str] = set()
    for name, param in model.named_parameters():
        if param.requires_grad:
            pattern = next((p for p in config.lr_scales if fnmatch.fnmatchcase(name, p)), None)
            scale = 1.0 if pattern is None else config.lr_scales[pattern]
            if pattern is not None:
                used.add(pattern)
            decays = not (param.ndim < 2 or "norm" in name or name.endswith(".bias"))
            groups.setdefault((scale, decays), []).append(param)
    if not groups:
        raise ConfigError("nothing to train: every parameter is frozen")
    unused = sorted(set(config.lr_scales) - used)
    if unused:
        raise ConfigError(f"lr_scales pattern(s) {unused} match no trainable parameter")
    return torch.optim.AdamW(
        [{"params": params, "lr": config.learning_rate * scale, "weight_decay": config.weight_decay if decays else 0.0}
         for (scale, decays), params in sorted(groups.items(), key=lambda item: (-item[0][0], not item[0][1]))],
        lr=config.learning_rate, betas=config.betas,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainerConfig) -> torch.optim.lr_scheduler.LambdaLR:
    if config.min_lr_ratio == 0:
        return get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps)

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@contextmanager
def _stop_requests() -> Iterator[list[str]]:
    """A list that gets the signal's name when SIGTERM or SIGINT arrives (main thread only).

    Long runs are stopped from outside (a session's end, ``timeout``, a scheduler); the loop finishes
    its step and checkpoints instead of losing everything since the last ``save_every``. A second
    signal is not caught: it stops the process at once.
    """
    stop: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def request(signum: int, frame: object) -> None:
        stop.append(signal.Signals(signum).name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, request)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Runs optimizer steps until ``max_steps``, resuming from the newest checkpoint if asked."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainerConfig,
        batches: BatchSource,
        *,
        is_main_process: bool = True,
        unwrapped_model: torch.nn.Module | None = None,
    ) -> None:
        self.model, self.config, self.batches = model, config, batches
        self.is_main = is_main_process
        self.unwrapped = unwrapped_model or model  # what checkpoints hold (not the DDP wrapper)
        self.output_dir = Path(config.output_dir)
        if config.gradient_checkpointing and hasattr(self.unwrapped, "activation_checkpointing_enable"):
            self.unwrapped.activation_checkpointing_enable()
        self.optimizer = build_optimizer(model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.device = next(model.parameters()).device

    def _autocast(self):  # noqa: ANN202
        dtype = PRECISIONS[self.config.precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()

    def train(self, resume: bool | Path = True) -> TrainResult:
        state = TrainerState(step=0, batches_consumed=0, data_state={}, metrics={})
        if resume:
            found = [Path(resume)] if isinstance(resume, Path) else list_checkpoints(self.output_dir)
            if found:
                state = load_checkpoint(found[-1], self.unwrapped, self.optimizer, self.scheduler)
        config, step, consumed = self.config, state.step, state.batches_consumed
        writer = self._tensorboard()
        losses: list[float] = []
        last_checkpoint: Path | None = None
        stream = self.batches(consumed)
        self.model.train()
        with self._progress() as progress, _stop_requests() as stop:
            task = progress.add_task("training", total=config.max_steps, completed=step, loss=float("nan"), tps=0.0)
            tokens, started = 0, time.perf_counter()
            end = config.max_steps if config.stop_at is None else config.stop_at
            while step < end:
                step_loss = 0.0
                for _ in range(config.grad_accum):
                    batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in next(stream).items()}
                    consumed += 1
                    with self._autocast():
                        loss = self.model(**batch).loss / config.grad_accum
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss is {loss.item()} at step {step}: lower the learning rate or use bf16")
                    if loss.requires_grad:  # a batch that reaches no trainable weight (text only, the
                        loss.backward()  # decoder frozen whole) is a step that changes nothing
                    step_loss += float(loss.detach())
                    tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], config.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(step_loss)
                elapsed = max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=step, loss=step_loss, tps=tokens / elapsed)
                if self.is_main and (step % config.log_every == 0 or step == config.max_steps):
                    extra = getattr(self.unwrapped, "last_metrics", {})  # e.g. the parts of a combined loss
                    self._log(writer, step, {"loss": step_loss, **extra, "lr": self.scheduler.get_last_lr()[0],
                                             "tokens_per_s": tokens / elapsed})
                if (config.save_every and step % config.save_every == 0) or step == end or stop:
                    last_checkpoint = self._save(TrainerState(step, consumed, {}, {"loss": step_loss}))
                if stop:  # SIGTERM/SIGINT: the step is finished and saved, so a restart resumes exactly
                    progress.console.print(f"stopped at step {step} ({stop[0]}); checkpoint {last_checkpoint}")
                    break
        if writer is not None:
            writer.close()
        return TrainResult(step, losses[-1] if losses else float("nan"), tuple(losses), last_checkpoint)

    def _save(self, state: TrainerState) -> Path | None:
        # Every rank takes part: gathering FSDP shards and writing each rank's RNG are collective.
        return save_checkpoint(self.output_dir, self.unwrapped, self.optimizer, self.scheduler, state,
                               keep_last=self.config.keep_last)

    def _log(self, writer, step: int, metrics: dict[str, float]) -> None:  # noqa: ANN001
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if writer is not None:
            for name, value in metrics.items():
                writer.add_scalar(f"train/{name}", value, step)

    def _tensorboard(self):  # noqa: ANN202
        if not (self.config.tensorboard and self.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional; metrics.jsonl is always written
            return None
        return SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[tps]:.0f} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not (self.config.progress and self.is_main),
        )
