"""data/sampling.py: dynamic batches, task mixture, resumable state."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_audio.data.sampling import (
    BucketBatchSampler,
    BucketConfig,
    TaskMixtureSampler,
    bucket_batches,
    mixture_weights,
)


def durations(n: int = 200, seed: int = 0) -> list[float]:
    return np.random.default_rng(seed).uniform(1.0, 30.0, n).round(2).tolist()


def test_mixture_weights_follow_size_to_the_one_over_t() -> None:
    assert mixture_weights({"a": 100, "b": 1}, 1.0) == pytest.approx({"a": 100 / 101, "b": 1 / 101})
    assert mixture_weights({"a": 100, "b": 1}, 2.0) == pytest.approx({"a": 10 / 11, "b": 1 / 11})
    flat = mixture_weights({"a": 100, "b": 1}, 1e9)
    assert flat["a"] == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError):
        mixture_weights({"a": 0}, 1.0)
    with pytest.raises(ValueError):
        mixture_weights({"a": 1}, 0.0)


def test_bucket_batches_cover_each_index_once_within_budget() -> None:
    lengths = durations()
    config = BucketConfig(max_batch_seconds=60.0, max_batch_size=5, num_buckets=4)
    batches = bucket_batches(lengths, config, seed=1, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 5
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 60.0
    # Buckets group similar lengths: the spread inside a batch is far below the global spread.
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 0.5 * (max(lengths) - min(lengths))


def test_bucket_batches_are_deterministic_per_seed_and_epoch() -> None:
    lengths, config = durations(), BucketConfig(max_batch_seconds=90.0)
    assert bucket_batches(lengths, config, 3, 0) == bucket_batches(lengths, config, 3, 0)
    assert bucket_batches(lengths, config, 3, 0) != bucket_batches(lengths, config, 3, 1)
    assert bucket_batches(lengths, config, 3, 0) != bucket_batches(lengths, config, 4, 0)


def test_ranks_split_an_epoch_without_overlap() -> None:
    lengths, config = durations(), BucketConfig(max_batch_seconds=60.0, num_buckets=3)
    per_rank = [BucketBatchSampler(lengths, config, seed=5, rank=r, world_size=2) for r in range(2)]
    counts = {s.batches_per_epoch() for s in per_rank}
    assert len(counts) == 1
    seen = [{i for _ in range(s.batches_per_epoch()) for i in s.next_batch()} for s in per_rank]
    assert not seen[0] & seen[1]
    with pytest.raises(ValueError):
        BucketBatchSampler(lengths, config, rank=2, world_size=2)


def test_bucket_sampler_resumes_exactly_across_epochs() -> None:
    lengths, config = durations(50), BucketConfig(max_batch_seconds=60.0)
    reference = BucketBatchSampler(lengths, config, seed=9)
    stream = [reference.next_batch() for _ in range(40)]  # spans several epochs
    first = BucketBatchSampler(lengths, config, seed=9)
    for _ in range(17):
        first.next_batch()
    resumed = BucketBatchSampler(lengths, config, seed=9)
    resumed.load_state_dict(first.state_dict())
    assert [resumed.next_batch() for _ in range(23)] == stream[17:]
    with pytest.raises(ValueError, match="seed"):
        BucketBatchSampler(lengths, config, seed=10).load_state_dict(first.state_dict())


def test_task_mixture_frequencies_and_resume() -> None:
    data = {"asr": durations(400, 1), "caption": durations(100, 2), "scene": durations(25, 3)}
    sampler = TaskMixtureSampler(data, BucketConfig(max_batch_seconds=60.0), temperature=2.0, seed=11)
    names = [sampler.next_batch()[0] for _ in range(3000)]
    expected = mixture_weights({k: len(v) for k, v in data.items()}, 2.0)
    for name, p in expected.items():
        assert names.count(name) / len(names) == pytest.approx(p, abs=0.03)

    a = TaskMixtureSampler(data, seed=2)
    stream = [a.next_batch() for _ in range(30)]
    b = TaskMixtureSampler(data, seed=2)
    for _ in range(12):
        b.next_batch()
    c = TaskMixtureSampler(data, seed=2)
    c.load_state_dict(b.state_dict())
    assert [c.next_batch() for _ in range(18)] == stream[12:]


def test_task_mixture_explicit_weights() -> None:
    data = {"a": durations(20), "b": durations(20)}
    sampler = TaskMixtureSampler(data, weights={"a": 1.0, "b": 0.0}, seed=0)
    assert {sampler.next_batch()[0] for _ in range(50)} == {"a"}
    with pytest.raises(ValueError, match="not there"):
        TaskMixtureSampler(data, weights={"zzz": 1.0})
