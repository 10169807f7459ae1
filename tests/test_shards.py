"""data/shards.py: tar shards written from manifests, streamed back in bounded memory, resumed exactly."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from qwen_audio.audio import SpecAugmentConfig
from qwen_audio.data import shards as shards_module
from qwen_audio.data.dataset import AudioTextDataset, DatasetOptions, ExampleKey, ManifestIndex, collate
from qwen_audio.data.sampling import BucketConfig
from qwen_audio.data.shards import (
    Sample,
    ShardIndex,
    ShardStream,
    StreamConfig,
    bucketed_batches,
    partition_batches,
    read_shard,
    shuffle_buffer,
    write_shards,
)
from qwen_audio.errors import ConfigError, ManifestError

AUGMENT = SpecAugmentConfig(freq_masks=1, max_freq_width=8, time_masks=1, max_time_width=10, max_time_ratio=0.2)


def write_wav(path: Path, seconds: float, freq: float) -> str:
    t = np.arange(int(seconds * 16_000)) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16_000)  # PCM_16 wav
    return path.name


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """12 task records (3 tasks, 0.2–1.3 s, two of them slices of a longer file) and 3 chats."""
    long = write_wav(tmp_path / "long.wav", 2.0, 330)
    records = []
    for i in range(12):
        name = write_wav(tmp_path / f"a{i}.wav", 0.2 + 0.1 * i, 200 + 50 * i)
        task = ("asr", "scene", "pitch")[i % 3]
        text = {"asr": f"hello world {i}", "scene": "park", "pitch": str(40 + i)}[task]
        record = {"id": f"r{i}", "audio": name, "task": task, "audio_language": "en" if task == "asr" else "unknown",
                  "text_language": "en", "text": text}
        if i in (4, 9):
            record.update(audio=long, offset=0.25 * i / 4, duration=0.7)
        records.append(record)
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    chats = [{"id": f"c{i}", "messages": [
        {"role": "user", "content": [{"type": "audio", "audio": f"a{i}.wav"},
                                     {"type": "audio", "audio": long, "offset": 0.5, "duration": 0.4 + 0.1 * i},
                                     {"type": "text", "text": "which is longer?"}]},
        {"role": "assistant", "content": f"the first, {i}"}]} for i in range(3)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    return tmp_path


def stream_config(**kw: object) -> StreamConfig:
    return StreamConfig(BucketConfig(max_batch_seconds=2.0, max_batch_size=3, num_buckets=2), **kw)  # type: ignore[arg-type]


def epoch_indices(index: ShardIndex, config: StreamConfig, partition: int, partitions: int, epoch: int) -> list[int]:
    out = []
    for e, batch in partition_batches(index, config, partition, partitions):
        if e > epoch:
            return out
        if e == epoch:
            out += [s.index for s in batch]
    raise AssertionError("unreachable: the stream is endless")


def test_shards_use_the_webdataset_layout(corpus: Path) -> None:
    paths = write_shards(corpus / "tasks.jsonl", corpus / "shards", max_samples_per_shard=5)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    summary = json.loads((corpus / "shards" / "shards.json").read_text())
    assert [s["samples"] for s in summary["shards"]] == [5, 5, 2] and summary["kind"] == "task"
    assert summary["shards"][0]["durations"] == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.7])
    assert summary["seconds"] == pytest.approx(sum(ManifestIndex(corpus / "tasks.jsonl").durations), abs=1e-2)
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
        record = json.loads(tar.extractfile("000000004.json").read())  # type: ignore[union-attr]
        sliced = tar.extractfile("000000004.flac").read()  # type: ignore[union-attr]
        whole = tar.extractfile("000000001.wav").read()  # type: ignore[union-attr]
    assert names[:4] == ["000000000.json", "000000000.wav", "000000001.json", "000000001.wav"]
    assert record["audio"] == "000000004.flac" and "offset" not in record and record["duration"] == 0.7
    assert whole == (corpus / "a1.wav").read_bytes()  # untouched original bytes
    assert sf.info(io.BytesIO(sliced)).frames == round(0.7 * 16_000)


def test_max_bytes_per_shard_splits_early(corpus: Path) -> None:
    paths = write_shards(corpus / "tasks.jsonl", corpus / "shards", max_bytes_per_shard=60_000)
    summary = ShardIndex.load(corpus / "shards")
    assert len(paths) > 3 and len(summary) == 12
    assert all(p.stat().st_size <= 60_000 + 10_240 or s.samples == 1 for p, s in zip(paths, summary.shards))


def test_shard_examples_equal_manifest_examples(corpus: Path, tokenizer) -> None:
    write_shards(corpus / "tasks.jsonl", corpus / "shards", max_samples_per_shard=5)
    index = ShardIndex.load(corpus / "shards")
    options = DatasetOptions(spec_augment=AUGMENT, seed=3)
    stream = ShardStream(index, tokenizer, options, stream_config(), source="tasks")
    dataset = AudioTextDataset({"tasks": ManifestIndex(corpus / "tasks.jsonl")}, tokenizer, options)
    samples = [s for info in index.shards for s in read_shard(corpus / "shards" / info.name, info)]
    assert [s.index for s in samples] == list(range(12))
    for sample in samples:
        got, want = stream.example(sample, epoch=1), dataset[ExampleKey("tasks", sample.index, 1)]
        assert got["id"] == want["id"]
        for name in ("input_ids", "labels", "audio_features", "audio_lengths"):
            assert torch.equal(got[name], want[name]), (sample.index, name)


def test_chat_shards_carry_every_audio_of_a_conversation(corpus: Path, tokenizer) -> None:
    write_shards(corpus / "chat.jsonl", corpus / "chat_shards")
    index = ShardIndex.load(corpus / "chat_shards")
    assert index.kind == "chat" and len(index) == 3
    with tarfile.open(corpus / "chat_shards" / "shard-000000.tar") as tar:
        assert tar.getnames()[:3] == ["000000000.json", "000000000.audio0.wav", "000000000.audio1.flac"]
    stream = ShardStream(index, tokenizer, DatasetOptions(), stream_config(), source="chat")
    dataset = AudioTextDataset({"chat": ManifestIndex(corpus / "chat.jsonl")}, tokenizer)
    for sample in read_shard(corpus / "chat_shards" / "shard-000000.tar", index.shards[0]):
        got, want = stream.example(sample, 0), dataset[ExampleKey("chat", sample.index, 0)]
        assert got["audio_features"].shape[0] == 2
        assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["labels"], want["labels"])
        assert torch.equal(got["audio_features"], want["audio_features"])


def test_every_example_once_per_epoch_and_partitions_disjoint(corpus: Path) -> None:
    write_shards(corpus / "tasks.jsonl", corpus / "shards", max_samples_per_shard=2)  # 6 shards
    index = ShardIndex.load(corpus / "shards")
    config = stream_config(shuffle_buffer=4, seed=7)
    single = [epoch_indices(index, config, 0, 1, epoch) for epoch in range(2)]
    assert sorted(single[0]) == sorted(single[1]) == list(range(12)) and single[0] != single[1]
    for partitions in (2, 3):  # e.g. 2 ranks × 1 worker, 3 ranks × 1 worker
        parts = [epoch_indices(index, config, p, partitions, 0) for p in range(partitions)]
        assert sorted(itertools.chain(*parts)) == list(range(12))
        assert all(parts)
    assert epoch_indices(index, stream_config(seed=8), 0, 1, 0) != single[0]


def test_too_few_shards_for_the_partitions_is_an_error(corpus: Path) -> None:
    write_shards(corpus / "tasks.jsonl", corpus / "shards")
    with pytest.raises(ConfigError, match="1 shards cannot feed 2"):
        next(partition_batches(ShardIndex.load(corpus / "shards"), stream_config(), 0, 2))


def test_shuffle_buffer_holds_at_most_its_size() -> None:
    pulled = 0

    def counted() -> object:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield i

    emitted, peak = [], 0
    for item in shuffle_buffer(counted(), 8, np.random.default_rng(0)):
        emitted.append(item)
        peak = max(peak, pulled - len(emitted) + 1)  # the item just handed out was held too
    assert peak == 8 and sorted(emitted) == list(range(100)) and emitted != list(range(100))
    assert list(shuffle_buffer(range(10), 1, np.random.default_rng(0))) == list(range(10))


def test_bucketed_batches_respect_the_budget() -> None:
    rng = np.random.default_rng(0)
    samples = [Sample(i, float(d), None) for i, d in enumerate(rng.uniform(0.5, 10.0, 200))]
    config = BucketConfig(max_batch_seconds=30.0, max_batch_size=5, num_buckets=3)
    batches = list(bucketed_batches(samples, (3.0, 7.0), config))
    assert sorted(s.index for b in batches for s in b) == list(range(200))
    for batch in batches:
        durations = [s.duration for s in batch]
        assert len(batch) <= 5 and len(batch) * max(durations) <= 30.0
        assert len({(d > 3.0) + (d > 7.0) for d in durations}) == 1  # one duration bucket per batch


def test_resume_reproduces_the_stream_without_decoding_skipped_audio(
    corpus: Path, tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_shards(corpus / "tasks.jsonl", corpus / "shards", max_samples_per_shard=4)
    index = ShardIndex.load(corpus / "shards")
    options = DatasetOptions(spec_augment=AUGMENT)
    config = stream_config(shuffle_buffer=3)

    def take(start: int, n: int) -> list[dict[str, torch.Tensor]]:
        return list(itertools.islice(iter(ShardStream(index, tokenizer, options, config, source="t", start=start)), n))

    full = take(0, 14)  # more than one epoch (12 examples, ≤ 3 per batch)
    decoded = []
    real_load = shards_module.load_audio
    monkeypatch.setattr(shards_module, "load_audio", lambda *a, **k: decoded.append(1) or real_load(*a, **k))
    for start in (5, 11):
        decoded.clear()
        resumed = take(start, 14 - start)
        assert len(decoded) == sum(len(b["input_ids"]) for b in resumed)  # skipped batches: nothing decoded
        for want, got in zip(full[start:], resumed):
            assert want.keys() == got.keys()
            assert all(torch.equal(want[k], got[k]) for k in want)


def test_recipe_trains_from_shards(corpus: Path, tokenizer, tiktoken_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_audio.train.distributed import DistributedContext
    from qwen_audio.train.recipe import DataSource, Recipe, make_batch_source

    write_shards(corpus / "tasks.jsonl", corpus / "shards", max_samples_per_shard=4)
    recipe_path = corpus / "configs" / "r.yaml"
    recipe_path.parent.mkdir()
    recipe_path.write_text(f"""
stage: pretrain
tokenizer: {tiktoken_file}
model: {{init: "preset:tiny"}}
data:
  train: [{{shards: shards}}]
  max_batch_seconds: 2
  max_batch_size: 3
  num_buckets: 2
  num_workers: 0
  shuffle_buffer: 5
  spec_augment: null
trainer: {{output_dir: out, max_steps: 1}}
""")
    monkeypatch.chdir(corpus)
    recipe = Recipe.load(recipe_path)  # relative paths: relative to the working directory
    assert recipe.data.train[0].shards == str(corpus / "shards")
    source = make_batch_source(recipe, tokenizer, DistributedContext(0, 1, 0, torch.device("cpu")))
    stream = ShardStream(ShardIndex.load(corpus / "shards"), tokenizer, DatasetOptions(max_tokens=2048, spec_augment=None),
                         StreamConfig(BucketConfig(2, 3, 2), 5), source="shards", start=2)
    for want, got in zip(itertools.islice(iter(stream), 3), itertools.islice(source(2), 3)):
        assert torch.equal(want["input_ids"], got["input_ids"]) and torch.equal(want["audio_features"], got["audio_features"])
    with pytest.raises(ConfigError, match="either a `manifest` or a `shards`"):
        DataSource()
    with pytest.raises(ConfigError, match="either a `manifest` or a `shards`"):
        DataSource(manifest="a.jsonl", shards="s")


def test_mixed_shard_sets_resume_exactly(corpus: Path, tokenizer) -> None:
    write_shards(corpus / "tasks.jsonl", corpus / "tasks_shards", max_samples_per_shard=4)
    write_shards(corpus / "chat.jsonl", corpus / "chat_shards")
    sources = {"tasks": ShardIndex.load(corpus / "tasks_shards"), "chat": ShardIndex.load(corpus / "chat_shards")}
    source = shards_module.shard_batch_source(sources, tokenizer, DatasetOptions(), stream_config(), temperature=1.0)
    full = list(itertools.islice(source(0), 8))
    assert {b["audio_features"].shape[0] == 2 * len(b["input_ids"]) for b in full} == {True, False}  # both sets drawn
    for want, got in zip(full[3:], itertools.islice(source(3), 5)):
        assert torch.equal(want["input_ids"], got["input_ids"])


@pytest.mark.slow
def test_dataloader_workers_split_shards_and_resume(corpus: Path, tokenizer) -> None:
    write_shards(corpus / "tasks.jsonl", corpus / "shards", max_samples_per_shard=3)  # 4 shards
    index = ShardIndex.load(corpus / "shards")
    config = stream_config()
    source = shards_module.shard_batch_source({"t": index}, tokenizer, DatasetOptions(), config, num_workers=2)
    full = list(itertools.islice(source(0), 10))
    # Batch g comes from partition g % 2 (worker 0 and 1 take turns); together they cover epoch 0.
    plain = ShardStream(index, tokenizer, DatasetOptions(), config, source="t")
    parts = [list(itertools.islice(partition_batches(index, config, p, 2), 5)) for p in range(2)]
    for g, batch in enumerate(full):
        epoch, samples = parts[g % 2][g // 2]
        want = collate([plain.example(s, epoch) for s in samples], pad_id=tokenizer.eod_id)
        assert torch.equal(batch["input_ids"], want["input_ids"])
    assert sorted(itertools.chain(*(epoch_indices(index, config, p, 2, 0) for p in range(2)))) == list(range(12))
    for start in (3, 4):
        for want, got in zip(full[start:], itertools.islice(source(start), 10 - start)):
            assert torch.equal(want["input_ids"], got["input_ids"])


def test_errors_tell_what_to_do(corpus: Path) -> None:
    (corpus / "url.jsonl").write_text(json.dumps({"id": "u", "audio": "https://x/a.wav", "task": "asr", "duration": 1.0,
                                                  "text": "hi"}) + "\n")
    with pytest.raises(ManifestError, match="download the audio"):
        write_shards(corpus / "url.jsonl", corpus / "u")
    with pytest.raises(ManifestError, match="make-shards"):
        ShardIndex.load(corpus)
    write_shards(corpus / "tasks.jsonl", corpus / "shards")
    summary = json.loads((corpus / "shards" / "shards.json").read_text())
    summary["shards"][0]["samples"] = 13
    (corpus / "shards" / "shards.json").write_text(json.dumps(summary))
    index = ShardIndex.load(corpus / "shards")
    with pytest.raises(ManifestError, match="re-run make-shards"):
        list(read_shard(corpus / "shards" / "shard-000000.tar", index.shards[0]))


def test_make_shards_command(corpus: Path) -> None:
    from typer.testing import CliRunner

    from qwen_audio.cli import app

    result = CliRunner().invoke(app, ["make-shards", str(corpus / "tasks.jsonl"), str(corpus / "out"),
                                      "--max-samples-per-shard", "6"])
    assert result.exit_code == 0, result.output
    assert "2 shards, 12 samples" in result.output and (corpus / "out" / "shards.json").is_file()


def test_the_webdataset_library_reads_our_shards(corpus: Path) -> None:
    wds = pytest.importorskip("webdataset")
    write_shards(corpus / "chat.jsonl", corpus / "chat_shards")
    samples = list(wds.WebDataset(str(corpus / "chat_shards" / "shard-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["000000000", "000000001", "000000002"]
    assert {"json", "audio0.wav", "audio1.flac"} <= set(samples[0])
