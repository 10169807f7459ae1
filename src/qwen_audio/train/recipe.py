"""A recipe (one YAML file) → a training run: ``qwen-audio train configs/<recipe>.yaml``.

Works the same in one process and under ``torchrun --nproc_per_node N``; the run resumes from
its newest checkpoint when restarted with the same recipe.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from qwen_audio.audio import SpecAugmentConfig
from qwen_audio.data.augment import WaveAugmentConfig
from qwen_audio.data.dataset import AudioTextDataset, DatasetOptions, ExampleKey, ManifestIndex, collate
from qwen_audio.data.sampling import BucketConfig, TaskMixtureSampler
from qwen_audio.errors import ConfigError
from qwen_audio.tokenizer import QwenAudioTokenizer
from qwen_audio.train.distributed import DistributedContext, cleanup_distributed, init_distributed, wrap_model
from qwen_audio.train.setup import STAGE_FREEZE, ModelSettings, apply_freezing, apply_lora, config_for_tokenizer, train_only_new_rows
from qwen_audio.train.trainer import Trainer, TrainerConfig, TrainResult
from qwen_audio.yaml_config import load_yaml_config, to_dict


@dataclass(frozen=True)
class DataSource:
    manifest: str | None = None
    shards: str | None = None  # a folder with shards.json (`qwen-audio make-shards`), streamed
    name: str | None = None  # defaults to the file (or shard folder) name
    weight: float | None = None  # fixed mixture weight; None: temperature sampling by size
    tasks: tuple[str, ...] | None = None  # keep only these tasks of the manifest
    languages: tuple[str, ...] | None = None  # keep only audios in these languages

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.shards is None):
            raise ConfigError("a data source names either a `manifest` or a `shards` folder, not both or neither")
        if self.shards is not None and (self.tasks is not None or self.languages is not None):
            raise ConfigError("`tasks` / `languages` filters apply to manifests; shard folders are streamed whole")

    @property
    def default_name(self) -> str:
        if self.name:
            return self.name
        return Path(self.manifest).name.split(".")[0] if self.manifest else Path(str(self.shards)).name


@dataclass(frozen=True)
class DataSettings:
    train: tuple[DataSource, ...]
    temperature: float = 1.0
    max_batch_seconds: float = 240.0
    max_batch_size: int = 64
    num_buckets: int = 8
    num_workers: int = 2
    max_tokens: int = 2048
    shuffle_buffer: int = 1000  # shard sources only: samples held for shuffling (bounds memory)
    spec_augment: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)
    wave_augment: WaveAugmentConfig | None = None  # speed, room and noise on the sources it names

    def __post_init__(self) -> None:
        if not self.train:
            raise ConfigError("data.train needs at least one manifest")
        if self.wave_augment is not None:
            unknown = set(self.wave_augment.sources) - {s.default_name for s in self.train}
            if unknown:
                raise ConfigError(f"wave_augment names sources that data.train lacks: {sorted(unknown)}")

    def dataset_options(self, seed: int, transcripts: Literal["bytes", "tokens"] | None,
                        sound_labels: bool = False) -> DatasetOptions:
        """How every example of this data is turned into tensors (manifests and shards alike)."""
        return DatasetOptions(self.max_tokens, self.spec_augment, seed, transcripts, self.wave_augment, sound_labels)


@dataclass(frozen=True)
class Recipe:
    stage: Literal["pretrain", "sft"]
    tokenizer: str  # a qwen.tiktoken file, or a directory holding one (e.g. the stage-1 output)
    model: ModelSettings
    data: DataSettings
    trainer: TrainerConfig
    seed: int = 0
    # > 0: add a CTC loss (train/ctc.py). "bytes": a head on the encoder, for encoders trained from
    # scratch; "tokens": the projected frames read against the LLM's token embeddings, which teaches the
    # projection the LLM's input space. lm_loss false skips the LLM (a cheap warm-up of the projection).
    ctc_weight: float = 0.0
    ctc_units: Literal["bytes", "tokens"] = "bytes"
    # token CTC only: a sound's frames read its source's name (data.examples.heard_label), as speech
    # frames read what is said (the LLM then finds the sound in its own input space)
    ctc_sound_labels: bool = False
    # next-token loss averaged per example, then over examples (model.QwenAudioForCausalLM): short
    # answers (a sound's label, a language) weigh as much as long transcripts; with token averaging
    # the sound tasks stayed at chance even on their training clips (session 21; a 120-step probe with it,
    # configs/default-model-v2-stage2-sounds3-probe.yaml, did not move them either)
    loss_per_example: bool = False
    lm_loss: bool = True
    distributed: Literal["none", "ddp", "fsdp"] = "ddp"
    device: str | None = None  # None: cuda when available

    def __post_init__(self) -> None:
        if not self.lm_loss and self.transcripts != "tokens":
            raise ConfigError("lm_loss: false trains on the CTC loss alone: it needs ctc_weight > 0 and ctc_units: tokens")
        if self.ctc_sound_labels and self.transcripts != "tokens":
            raise ConfigError("ctc_sound_labels reads sounds' labels with the token CTC: it needs ctc_weight > 0 and "
                              "ctc_units: tokens")

    @property
    def transcripts(self) -> Literal["bytes", "tokens"] | None:
        """What each example carries for the CTC loss, if there is one."""
        return self.ctc_units if self.ctc_weight > 0 else None

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe; its relative paths (tokenizer, model.init, manifests, shards, output_dir)
        are relative to the current working directory, as with any command-line tool, not to the
        YAML file's folder: run from the project root, as ``scripts/`` do. They come back absolute,
        so a run does not depend on the folder it was started from afterwards."""
        return load_yaml_config(cls, path).resolved(Path.cwd())

    def resolved(self, base: Path) -> Recipe:
        """This recipe with its relative paths made absolute against ``base``."""

        def fix(p: str) -> str:
            return p if Path(p).is_absolute() or p.startswith("preset:") else str(base / p)

        def fix_source(s: DataSource) -> DataSource:
            return replace(s, manifest=s.manifest and fix(s.manifest), shards=s.shards and fix(s.shards))

        data = replace(self.data, train=tuple(fix_source(s) for s in self.data.train))
        return replace(
            self,
            tokenizer=fix(self.tokenizer),
            model=replace(self.model, init=fix(self.model.init)),
            data=data,
            trainer=replace(self.trainer, output_dir=fix(self.trainer.output_dir)),
        )


def load_tokenizer(path: str | Path) -> QwenAudioTokenizer:
    location = Path(path)
    if location.is_dir():
        return QwenAudioTokenizer.from_pretrained(str(location))
    if not location.is_file():
        raise ConfigError(f"tokenizer not found: {location} (a qwen.tiktoken file or a model directory; "
                          "a recipe's relative paths are relative to the folder you run from)")
    return QwenAudioTokenizer(location)


def build_model(settings: ModelSettings, tokenizer: QwenAudioTokenizer):  # noqa: ANN201
    from qwen_audio.model import QwenAudioForCausalLM

    if settings.init.startswith("preset:"):
        return QwenAudioForCausalLM(config_for_tokenizer(settings.init.split(":", 1)[1], tokenizer, **settings.overrides))
    if settings.overrides:
        raise ConfigError("model.overrides only apply to presets; a checkpoint keeps its own config")
    from qwen_audio.checkpoints.loading import load_model

    return load_model(settings.init, dtype=torch.float32)[0]


def make_batch_source(recipe: Recipe, tokenizer: QwenAudioTokenizer, context: DistributedContext):  # noqa: ANN201
    """The trainer's ``BatchSource``: batches from any point of the deterministic data order."""
    if any(source.shards for source in recipe.data.train):
        return _shard_batch_source(recipe, tokenizer, context)
    indexes = {}
    weights = {}
    for source in recipe.data.train:
        name = source.default_name
        if name in indexes:
            raise ConfigError(f"two data sources are named {name!r}; give them distinct `name`s")
        indexes[name] = ManifestIndex(source.manifest, source.tasks, source.languages)
        if source.weight is not None:
            weights[name] = source.weight
    if weights and len(weights) != len(indexes):
        raise ConfigError("give every data source a weight, or none (temperature sampling)")
    dataset = AudioTextDataset(
        indexes,
        tokenizer,
        recipe.data.dataset_options(recipe.seed, recipe.transcripts, recipe.ctc_sound_labels),
    )
    bucket = BucketConfig(recipe.data.max_batch_seconds, recipe.data.max_batch_size, recipe.data.num_buckets)

    def batches(start: int) -> Iterator[dict[str, torch.Tensor]]:
        sampler = TaskMixtureSampler(
            {name: index.durations for name, index in indexes.items()},
            bucket,
            temperature=recipe.data.temperature,
            weights=weights or None,
            seed=recipe.seed,
            rank=context.rank,
            world_size=context.world_size,
        )
        for _ in range(start):  # cheap: index arithmetic only, no audio is read
            sampler.next_batch()

        def keys() -> Iterator[list[ExampleKey]]:
            for step, (name, indices) in enumerate(sampler, start=start):
                yield [ExampleKey(name, i, step) for i in indices]

        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=keys(),
            collate_fn=functools.partial(collate, pad_id=tokenizer.eod_id),
            num_workers=recipe.data.num_workers,
            prefetch_factor=4 if recipe.data.num_workers else None,
        )
        return iter(loader)

    return batches


def _shard_batch_source(recipe: Recipe, tokenizer: QwenAudioTokenizer, context: DistributedContext):  # noqa: ANN202
    from qwen_audio.data.shards import ShardIndex, StreamConfig, shard_batch_source

    if not all(source.shards for source in recipe.data.train):
        raise ConfigError("mix shard sources with shard sources only: pack the manifests with `qwen-audio make-shards`")
    names = [source.default_name for source in recipe.data.train]
    if len(set(names)) != len(names):
        raise ConfigError("two data sources have the same name; give them distinct `name`s")
    weights = {n: s.weight for n, s in zip(names, recipe.data.train) if s.weight is not None}
    if weights and len(weights) != len(names):
        raise ConfigError("give every data source a weight, or none (temperature sampling)")
    data = recipe.data
    return shard_batch_source(
        {n: ShardIndex.load(s.shards) for n, s in zip(names, data.train)},  # type: ignore[arg-type]
        tokenizer,
        data.dataset_options(recipe.seed, recipe.transcripts, recipe.ctc_sound_labels),
        StreamConfig(BucketConfig(data.max_batch_seconds, data.max_batch_size, data.num_buckets), data.shuffle_buffer, recipe.seed),
        temperature=data.temperature, weights=weights or None, rank=context.rank, world_size=context.world_size,
        num_workers=data.num_workers,
    )


def run_recipe(recipe: Recipe, *, resume: bool = True) -> TrainResult:
    context = init_distributed(recipe.device)
    torch.manual_seed(recipe.seed)
    tokenizer = load_tokenizer(recipe.tokenizer)
    model = build_model(recipe.model, tokenizer)
    model.loss_per_example = recipe.loss_per_example
    freeze = recipe.model.freeze if recipe.model.freeze is not None else STAGE_FREEZE[recipe.stage]
    counts = apply_freezing(model, freeze)
    if recipe.model.new_token_rows_only:
        train_only_new_rows(model)
    if recipe.model.lora is not None:
        model = apply_lora(model, recipe.model.lora)
    trained = model
    if recipe.ctc_weight > 0:
        from qwen_audio.train.ctc import EmbeddingCtc, EncoderCtc

        if recipe.ctc_units == "tokens":
            trained = EmbeddingCtc(model, recipe.ctc_weight, lm_loss=recipe.lm_loss)
            if not recipe.model.init.startswith("preset:"):
                trained.load_aligner(recipe.model.init)
        else:
            trained = EncoderCtc(model, recipe.ctc_weight)
    trained.to(context.device)
    wrapped = wrap_model(trained, context, recipe.distributed)
    output = Path(recipe.trainer.output_dir)
    if context.is_main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "recipe.json").write_text(json.dumps({**to_dict(recipe), "parameters": counts}, indent=2))
    trainer = Trainer(
        wrapped, recipe.trainer, make_batch_source(recipe, tokenizer, context),
        is_main_process=context.is_main, unwrapped_model=trained,
    )
    result = trainer.train(resume=resume)
    if context.is_main:
        export_model(model, tokenizer, output / "final")
        if recipe.transcripts == "tokens":  # the token CTC's blank aligns words at inference
            trained.save_aligner(output / "final")
    cleanup_distributed()
    return result


def export_model(model: torch.nn.Module, tokenizer: QwenAudioTokenizer, directory: Path) -> Path:
    """The trained model in ``from_pretrained`` form (LoRA adapters merged in), tokenizer beside it."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(str(directory))
    return directory
