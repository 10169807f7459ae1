"""Large corpora as tar shards, streamed: sequential reads, bounded memory, exact resume.

Layout: the webdataset convention — plain tar files ``shard-000000.tar`` … whose consecutive
members ``<key>.json`` (the manifest record, its audio renamed to the member) and ``<key>.<ext>``
(the audio's original bytes; a record's offset/duration slice re-encoded as FLAC) make one sample;
chat conversations carry ``<key>.audio0.<ext>``, ``<key>.audio1.<ext>`` … A ``shards.json`` beside
them lists shards, sample counts and every sample's duration.

Why this and not lhotse shar: shar splits each field into its own tar series around lhotse's
Cut model (one recording per cut); a multi-audio conversation does not fit it, and it would pull
in lhotse to read back records that are already ours. The webdataset layout is the one most tools
read (webdataset, HF ``datasets``, torchdata, ``tar tf``). We write and read it with ``tarfile``
instead of depending on the webdataset library: its shuffle and worker split are not resumable
to the batch, and exact resume is what the trainer's ``BatchSource`` needs.

Determinism: a batch is planned from durations alone (shards.json), so the whole order is a
pure function of (seed, epoch, rank, worker). Resuming skips whole epochs by planning with no I/O,
then reads the current epoch's shards up to the resume point without decoding any audio.
"""

from __future__ import annotations

import bisect
import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import soundfile as sf
import torch

from qwen_audio.audio import load_audio
from qwen_audio.data.chat_manifest import ChatRecord
from qwen_audio.data.dataset import DatasetOptions, ExampleKey, ManifestIndex, collate, example_item
from qwen_audio.data.examples import chat_example, record_example
from qwen_audio.data.manifest import URL_SCHEMES, ManifestRecord
from qwen_audio.data.sampling import BucketConfig, mixture_weights
from qwen_audio.errors import ConfigError, ManifestError
from qwen_audio.tokenizer import QwenAudioTokenizer

INDEX_FILE = "shards.json"
T = TypeVar("T")


# ---------------------------------------------------------------- writing


def write_shards(
    manifest_path: str | Path, out_dir: str | Path, *, max_samples_per_shard: int = 1000,
    max_bytes_per_shard: int = 1 << 30,
) -> list[Path]:
    """Pack a task or chat manifest into tar shards + ``shards.json``; returns the shard paths.

    ``max_bytes_per_shard`` bounds the tar's blocks; ``tarfile`` may add up to 10 KiB of final padding.
    Records keep their manifest order (sample ``k`` is line ``k``), so a shard example and the
    manifest's ``AudioTextDataset`` example with the same index are the same tensors.
    """
    if max_samples_per_shard < 1 or max_bytes_per_shard < 1:
        raise ConfigError("max_samples_per_shard and max_bytes_per_shard must be ≥ 1")
    index = ManifestIndex(manifest_path)  # offsets and durations; each record is validated below
    folder, out = index.path.parent, Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    paths: list[Path] = []
    tar: tarfile.TarFile | None = None
    size = 0
    for i in range(len(index)):
        key = f"{i:09d}"
        members = _sample_members(index.line(i), key, folder, index.is_chat)
        sample_bytes = sum(512 + -(-len(data) // 512) * 512 for _, data in members)  # header + padded data
        if tar is None or shards[-1]["samples"] >= max_samples_per_shard or (
                size + sample_bytes + 1024 > max_bytes_per_shard and shards[-1]["samples"]):
            if tar is not None:
                tar.close()
            paths.append(out / f"shard-{len(shards):06d}.tar")
            tar, size = tarfile.open(paths[-1], "w", format=tarfile.USTAR_FORMAT), 0
            shards.append({"name": paths[-1].name, "samples": 0, "first_index": i, "durations": []})
        for name, data in members:
            _add_member(tar, name, data)
        size += sample_bytes
        shards[-1]["samples"] += 1
        shards[-1]["durations"].append(round(index.durations[i], 3))
    if tar is not None:
        tar.close()
    for shard in shards:
        shard["seconds"] = round(sum(shard["durations"]), 3)
    summary = {"format": "webdataset", "kind": "chat" if index.is_chat else "task", "source": index.path.name,
               "samples": len(index), "seconds": round(sum(s["seconds"] for s in shards), 3), "shards": shards}
    (out / INDEX_FILE).write_text(json.dumps(summary))  # written last: its presence marks completion
    return paths


def _sample_members(obj: dict[str, Any], key: str, folder: Path, is_chat: bool) -> list[tuple[str, bytes]]:
    """The (member name, bytes) of one sample, JSON first; validates the record on the way."""
    if is_chat:
        ChatRecord.from_dict(obj)
        items = [c for m in obj["messages"] if isinstance(m["content"], list) for c in m["content"]
                 if c.get("type") == "audio"]
        stems = [f"{key}.audio{n}" for n in range(len(items))]
    else:
        ManifestRecord.from_dict(obj)
        items, stems = [obj], [key]
    members = []
    for item, stem in zip(items, stems):
        audio = item["audio"]
        if audio.startswith(URL_SCHEMES):
            raise ManifestError(f"{obj['id']}: {audio} is a URL; download the audio and point the manifest at it")
        path = Path(audio) if Path(audio).is_absolute() else folder / audio
        ext, data, sliced = _audio_bytes(path, float(item.get("offset", 0.0)), item.get("duration"))
        item["audio"] = f"{stem}.{ext}"
        if sliced:
            item.pop("offset", None)  # the member *is* the slice; duration stays (a no-op trim)
        members.append((item["audio"], data))
    return [(f"{key}.json", json.dumps(obj, ensure_ascii=False).encode())] + members


def _audio_bytes(path: Path, offset: float, duration: float | None) -> tuple[str, bytes, bool]:
    """(extension, bytes, sliced): the file as is, or just its slice as FLAC (never whole long files)."""
    ext = path.suffix.lstrip(".").lower() or "audio"
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        info = None
    whole = offset == 0 and (duration is None or (info is not None and duration * info.samplerate >= info.frames - 0.5))
    if whole:
        try:
            return ext, path.read_bytes(), False
        except FileNotFoundError:
            raise ManifestError(f"{path}: no such audio file (fix the manifest before packing)") from None
    buffer = io.BytesIO()
    if info is not None and info.subtype in ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24"):
        # Integer PCM read and written as integers: the FLAC decodes to exactly the manifest's slice
        # (same rounding of start and length as audio._select_segment).
        start = int(round(offset * info.samplerate))
        stop = None if duration is None else start + int(round(duration * info.samplerate))
        wide = info.subtype == "PCM_24"
        samples, rate = sf.read(str(path), start=start, stop=stop, dtype="int32" if wide else "int16", always_2d=True)
        sf.write(buffer, samples, rate, format="FLAC", subtype="PCM_24" if wide else "PCM_16")
    else:  # float or compressed sources: FLAC has no float, 24 bits is far below audible/trainable noise
        rate = info.samplerate if info is not None else 16_000
        wave = load_audio(path, rate, offset=offset, duration=duration)
        sf.write(buffer, wave, rate, format="FLAC", subtype="PCM_24")
    return "flac", buffer.getvalue(), True


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444  # fixed metadata: same corpus → same bytes
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class ShardInfo:
    name: str
    samples: int
    first_index: int  # manifest line of the shard's first sample
    durations: tuple[float, ...]


@dataclass(frozen=True)
class ShardIndex:
    """``shards.json``: what planning needs (durations), loaded once; the tar files stay on disk."""

    folder: Path
    kind: str  # "task" or "chat"
    shards: tuple[ShardInfo, ...]

    @classmethod
    def load(cls, folder: str | Path) -> ShardIndex:
        folder = Path(folder)
        if not (folder / INDEX_FILE).is_file():
            raise ManifestError(f"{folder}: no {INDEX_FILE}; write shards with `qwen-audio make-shards`")
        data = json.loads((folder / INDEX_FILE).read_text())
        shards = tuple(ShardInfo(s["name"], s["samples"], s["first_index"], tuple(s["durations"]))
                       for s in data["shards"])
        if not shards:
            raise ManifestError(f"{folder}: the shard set has no samples")
        return cls(folder, data["kind"], shards)

    def __len__(self) -> int:
        return sum(s.samples for s in self.shards)

    def bucket_edges(self, num_buckets: int) -> tuple[float, ...]:
        """Duration quantiles: equal-count buckets, as `sampling.bucket_batches` makes per epoch."""
        durations = np.concatenate([s.durations for s in self.shards])
        return tuple(np.quantile(durations, np.arange(1, num_buckets) / num_buckets).tolist())


@dataclass(frozen=True)
class StreamConfig:
    """Streaming order: seeded shard shuffle per epoch, a bounded shuffle buffer, duration buckets."""

    bucket: BucketConfig = field(default_factory=BucketConfig)
    # Samples (encoded bytes) a partition holds for shuffling; open batches add ≤ buckets × batch size.
    shuffle_buffer: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 1:
            raise ConfigError("shuffle_buffer must be ≥ 1")


class Sample(NamedTuple):
    index: int  # manifest line
    duration: float
    members: dict[str, bytes] | None  # None while planning without I/O


def shuffle_buffer(items: Iterable[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """Approximate shuffle holding at most ``size`` items: emit a random held one, then refill."""
    source = iter(items)
    held = [item for _, item in zip(range(size), source)]
    end = object()
    while held:
        slot = int(rng.integers(len(held)))
        yield held[slot]
        incoming = next(source, end)
        if incoming is end:
            held[slot] = held[-1]
            held.pop()
        else:
            held[slot] = incoming  # type: ignore[assignment]


def bucketed_batches(samples: Iterable[Sample], edges: Sequence[float], config: BucketConfig) -> Iterator[list[Sample]]:
    """Streaming dynamic batching: one open batch per duration bucket, closed when over budget.

    Same rule as ``sampling.bucket_batches``: cost = batch size × its longest audio. Holds at most
    ``(len(edges) + 1) × max_batch_size`` samples.
    """
    open_batches: list[list[Sample]] = [[] for _ in range(len(edges) + 1)]
    longest = [0.0] * len(open_batches)
    for sample in samples:
        b = bisect.bisect_right(edges, sample.duration)
        candidate = max(longest[b], sample.duration)
        if open_batches[b] and (len(open_batches[b]) >= config.max_batch_size
                                or (len(open_batches[b]) + 1) * candidate > config.max_batch_seconds):
            yield open_batches[b]
            open_batches[b], candidate = [], sample.duration
        open_batches[b].append(sample)
        longest[b] = candidate
    yield from (batch for batch in open_batches if batch)


def read_shard(path: Path, info: ShardInfo) -> Iterator[Sample]:
    """The samples of one tar, in order, read sequentially (works on pipes and network mounts)."""
    key, members, position = None, {}, 0

    def sample() -> Sample:
        expected = f"{info.first_index + position:09d}"
        if key != expected or position >= info.samples:
            raise ManifestError(f"{path}: sample {key} where {expected} was expected; re-run make-shards")
        return Sample(info.first_index + position, info.durations[position], members)

    with tarfile.open(path, "r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name_key, _, suffix = member.name.rpartition("/")[2].partition(".")
            if members and name_key != key:
                yield sample()
                members, position = {}, position + 1
            key = name_key
            members[suffix] = tar.extractfile(member).read()  # type: ignore[union-attr]
    if members:
        yield sample()
        position += 1
    if position != info.samples:
        raise ManifestError(f"{path}: {position} samples, shards.json says {info.samples}; re-run make-shards")


def partition_batches(
    index: ShardIndex, config: StreamConfig, partition: int, partitions: int, skip: int = 0
) -> Iterator[tuple[int, list[Sample]]]:
    """Endless (epoch, batch) stream of one partition (a rank's DataLoader worker), ``skip`` dropped.

    Every epoch, all ranks draw the same shard permutation from (seed, epoch) and partition ``p``
    takes shards ``p, p + partitions, …`` of it: partitions are disjoint and cover every sample.
    """
    if len(index.shards) < partitions:
        raise ConfigError(f"{len(index.shards)} shards cannot feed {partitions} ranks × DataLoader workers; "
                          "write smaller shards (--max-samples-per-shard) or use fewer workers")

    def plan(epoch: int, read: bool) -> Iterator[list[Sample]]:
        chosen = np.random.default_rng([config.seed, epoch]).permutation(len(index.shards))[partition::partitions]

        def samples() -> Iterator[Sample]:
            for s in chosen.tolist():
                info = index.shards[s]
                if read:
                    yield from read_shard(index.folder / info.name, info)
                else:
                    yield from (Sample(info.first_index + i, d, None) for i, d in enumerate(info.durations))

        rng = np.random.default_rng([config.seed, epoch, partition, partitions])
        return bucketed_batches(shuffle_buffer(samples(), config.shuffle_buffer, rng), edges, config.bucket)

    edges = index.bucket_edges(config.bucket.num_buckets)

    epoch = 0
    while skip >= (per_epoch := sum(1 for _ in plan(epoch, read=False))):  # whole epochs: no I/O at all
        skip, epoch = skip - per_epoch, epoch + 1
    while True:
        for batch in plan(epoch, read=True):
            if skip:
                skip -= 1  # read, never decoded
                continue
            yield epoch, batch
        epoch += 1


class ShardStream(torch.utils.data.IterableDataset):
    """Collated batches of one shard set for one rank; each DataLoader worker streams its partition.

    ``start`` counts batches this rank already consumed from this set. The DataLoader hands out
    workers' batches round-robin, so partition ``p`` of ``W`` owns batches ``p, p + W, …``; a new
    DataLoader begins with its worker 0, which therefore plays partition ``start % W``. The order
    depends on world size and ``num_workers``: resume with the same ones.
    """

    def __init__(
        self, index: ShardIndex, tokenizer: QwenAudioTokenizer, options: DatasetOptions, config: StreamConfig,
        *, source: str, rank: int = 0, world_size: int = 1, start: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.index, self.tokenizer, self.options, self.config = index, tokenizer, options, config
        self.source, self.rank, self.world_size, self.start = source, rank, world_size, start

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = torch.utils.data.get_worker_info()
        w, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        role = (w + self.start) % workers
        batches = partition_batches(self.index, self.config, self.rank * workers + role, self.world_size * workers,
                                    skip=len(range(role, self.start, workers)))
        for epoch, batch in batches:
            yield collate([self.example(sample, epoch) for sample in batch], pad_id=self.tokenizer.eod_id)

    def example(self, sample: Sample, epoch: int) -> dict[str, Any]:
        """The same dict as ``AudioTextDataset[ExampleKey(source, sample.index, epoch)]``."""
        obj = json.loads(sample.members["json"])  # type: ignore[index]
        folder = self.index.folder
        example = (chat_example(ChatRecord.from_dict(obj), folder) if self.index.kind == "chat"
                   else record_example(ManifestRecord.from_dict(obj), folder))
        waves = [load_audio(sample.members[Path(a.source).name.partition(".")[2]],  # type: ignore[index]
                            offset=a.offset, duration=a.duration) for a in example.audios]
        return example_item(example, waves, self.tokenizer, self.options, ExampleKey(self.source, sample.index, epoch))


def shard_batch_source(
    sources: Mapping[str, ShardIndex], tokenizer: QwenAudioTokenizer, options: DatasetOptions, config: StreamConfig,
    *, temperature: float = 1.0, weights: Mapping[str, float] | None = None, rank: int = 0, world_size: int = 1,
    num_workers: int = 0,
):  # noqa: ANN201 - a trainer.BatchSource
    """The trainer's ``BatchSource`` over shard sets: ``shard_batches(start)`` resumes exactly.

    Several sets are mixed per step like ``TaskMixtureSampler`` (the choice of set depends on
    (seed, step) only, so all ranks train the same task at the same step).
    """
    names = sorted(sources)
    probabilities = dict(weights) if weights else mixture_weights({n: len(sources[n]) for n in names}, temperature)
    cumulative = np.cumsum([probabilities.get(n, 0.0) for n in names])
    if cumulative[-1] <= 0:
        raise ConfigError("mixture weights must not all be zero")

    def choice(step: int) -> str:
        draw = np.random.default_rng([config.seed, step]).random() * cumulative[-1]
        return names[min(int(np.searchsorted(cumulative, draw, side="right")), len(names) - 1)]

    def shard_batches(start: int) -> Iterator[dict[str, torch.Tensor]]:
        consumed = Counter(choice(s) for s in range(start)) if len(names) > 1 else Counter({names[0]: start})
        streams: dict[str, Iterator[dict[str, torch.Tensor]]] = {}
        step = start
        while True:
            name = choice(step) if len(names) > 1 else names[0]
            step += 1
            if name not in streams:  # started lazily: a set never drawn costs no worker processes
                stream = ShardStream(sources[name], tokenizer, options, config, source=name, rank=rank,
                                     world_size=world_size, start=consumed[name])
                streams[name] = iter(torch.utils.data.DataLoader(
                    stream, batch_size=None, num_workers=num_workers,
                    prefetch_factor=4 if num_workers else None, persistent_workers=False))
            yield next(streams[name])

    return shard_batches


# ---------------------------------------------------------------- CLI
