"""Which examples go into which batch: duration buckets, dynamic batch size, task mixture.

Audio lengths vary from 1 s to 30 s; batching by a budget of audio seconds instead of a fixed
count keeps memory flat and avoids padding short clips to long ones. Datasets of very different
sizes are mixed by temperature sampling (p_i ∝ n_i^(1/T)), as multi-task speech models do, so a
small task is seen often enough without drowning the large ones.

Every sampler here is a pure function of (seed, position): its ``state_dict`` is a few integers,
which is what makes kill-and-resume reproduce the uninterrupted run exactly.

Why not lhotse's bucketing samplers and ``mux``: they batch lhotse Cuts, one recording segment
each, while an example here is a manifest record or a chat that holds several audios ("Audio 1:",
"Audio 2:") or none (text-only turns), and its duration budget counts all of them; adopting them
would mean a second manifest format beside ours for a few dozen lines of arithmetic. The resume
guarantee above is tested (tests/test_sampling.py, tests/test_trainer.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qwen_audio.errors import ConfigError


@dataclass(frozen=True)
class BucketConfig:
    """Dynamic batching: a batch holds at most ``max_batch_seconds`` of (padded) audio."""

    max_batch_seconds: float = 240.0
    max_batch_size: int = 64
    num_buckets: int = 8

    def __post_init__(self) -> None:
        if self.max_batch_seconds <= 0 or self.max_batch_size < 1 or self.num_buckets < 1:
            raise ConfigError("max_batch_seconds > 0, max_batch_size ≥ 1 and num_buckets ≥ 1 are required")


def mixture_weights(sizes: Mapping[str, int], temperature: float = 1.0) -> dict[str, float]:
    """Sampling probability of each dataset: ∝ size^(1/T). T=1 is proportional, T→∞ uniform."""
    if temperature <= 0:
        raise ConfigError("temperature must be > 0")
    if not sizes or any(n <= 0 for n in sizes.values()):
        raise ConfigError("every dataset needs at least one example")
    raw = {name: float(n) ** (1.0 / temperature) for name, n in sizes.items()}
    total = sum(raw.values())
    return {name: value / total for name, value in raw.items()}


def bucket_batches(
    durations: Sequence[float], config: BucketConfig, seed: int, epoch: int
) -> list[list[int]]:
    """One epoch's batches of indices: shuffled, grouped by similar duration, budgeted.

    A batch's cost is ``len(batch) × longest duration`` (what padding really costs).
    """
    lengths = np.asarray(durations, dtype=np.float64)
    if lengths.size == 0:
        return []
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(lengths.size)
    # Equal-count buckets by duration rank keep every bucket populated whatever the distribution.
    ranks = np.empty(lengths.size, dtype=np.int64)
    ranks[np.argsort(lengths[order], kind="stable")] = np.arange(lengths.size)
    bucket_of = ranks * config.num_buckets // lengths.size
    batches: list[list[int]] = []
    for bucket in range(config.num_buckets):
        members = order[bucket_of == bucket]
        current: list[int] = []
        longest = 0.0
        for index in members.tolist():
            candidate = max(longest, lengths[index])
            if current and (
                len(current) >= config.max_batch_size or (len(current) + 1) * candidate > config.max_batch_seconds
            ):
                batches.append(current)
                current, candidate = [], lengths[index]
            current.append(index)
            longest = candidate
        if current:
            batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


class BucketBatchSampler:
    """Endless stream of duration-bucketed batches over one dataset, epoch after epoch.

    With ``world_size`` > 1 each rank takes every ``world_size``-th batch of the same global
    order, so ranks never share an example and all see the same number of batches per epoch.
    """

    def __init__(
        self,
        durations: Sequence[float],
        config: BucketConfig = BucketConfig(),
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.durations = list(durations)
        if not self.durations:
            raise ConfigError("cannot sample batches from an empty dataset")
        self.config, self.seed, self.rank, self.world_size = config, seed, rank, world_size
        self.epoch, self.position = 0, 0
        self._epoch_batches: list[list[int]] | None = None

    def _batches(self) -> list[list[int]]:
        if self._epoch_batches is None:
            batches = bucket_batches(self.durations, self.config, self.seed, self.epoch)
            usable = len(batches) // self.world_size * self.world_size or len(batches)
            self._epoch_batches = batches[:usable][self.rank :: self.world_size] or batches[:1]
        return self._epoch_batches

    def next_batch(self) -> list[int]:
        batches = self._batches()
        if self.position >= len(batches):
            self.epoch, self.position, self._epoch_batches = self.epoch + 1, 0, None
            batches = self._batches()
        batch = batches[self.position]
        self.position += 1
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.next_batch()

    def batches_per_epoch(self) -> int:
        return len(self._batches())

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ConfigError(f"sampler state was saved with seed {state['seed']}, this run uses {self.seed}")
        self.epoch, self.position, self._epoch_batches = int(state["epoch"]), int(state["position"]), None


class TaskMixtureSampler:
    """Endless (dataset name, batch indices) stream mixing datasets by temperature sampling."""

    def __init__(
        self,
        durations: Mapping[str, Sequence[float]],
        config: BucketConfig = BucketConfig(),
        *,
        temperature: float = 1.0,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.names = sorted(durations)
        probabilities = dict(weights) if weights else mixture_weights(
            {name: len(durations[name]) for name in self.names}, temperature
        )
        unknown = set(probabilities) - set(self.names)
        if unknown:
            raise ConfigError(f"weights name datasets that are not there: {sorted(unknown)}")
        total = sum(probabilities.get(name, 0.0) for name in self.names)
        if total <= 0 or any(p < 0 for p in probabilities.values()):
            raise ConfigError("mixture weights must be ≥ 0 and not all zero")
        self.probabilities = np.array([probabilities.get(n, 0.0) / total for n in self.names])
        self.samplers = {
            name: BucketBatchSampler(durations[name], config, seed=seed * 1_000_003 + i, rank=rank, world_size=world_size)
            for i, name in enumerate(self.names)
        }
        # The dataset choice must agree across ranks (same step → same task), so it ignores rank.
        self.seed, self.step = seed, 0

    def next_batch(self) -> tuple[str, list[int]]:
        draw = np.random.default_rng([self.seed, self.step]).random()
        index = min(int(np.searchsorted(np.cumsum(self.probabilities), draw, side="right")), len(self.names) - 1)
        self.step += 1
        name = self.names[index]
        return name, self.samplers[name].next_batch()

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, object]:
        return {"step": self.step, "seed": self.seed, "samplers": {n: s.state_dict() for n, s in self.samplers.items()}}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        if state["seed"] != self.seed:
            raise ConfigError(f"sampler state was saved with seed {state['seed']}, this run uses {self.seed}")
        self.step = int(state["step"])  # type: ignore[arg-type]
        for name, sampler_state in state["samplers"].items():  # type: ignore[union-attr]
            self.samplers[name].load_state_dict(sampler_state)


def expected_batches(total_seconds: float, config: BucketConfig) -> int:
    """Rough batch count of an epoch, for progress bars and schedules."""
    return max(1, math.ceil(total_seconds / config.max_batch_seconds))
