"""Training throughput on CPU, the data pipeline alone, and whether the pipeline can feed the model.

(a) optimizer steps of the default model's size (configs/default-model-pretrain.yaml) on
    synthetic batches of real shape (3 s audio, ~40 text tokens, batch 16), fp32 and bf16 autocast:
    samples/s, tokens/s, peak RSS;
(b) the recipe's batch source alone over a generated corpus of 3 s wavs, from the JSONL manifest
    and from tar shards, with 0 and 2 DataLoader workers: examples/s;
(c) pipeline examples/s ÷ training samples/s: ≥ 1 means the data side keeps up.

    python benchmarks/train.py [--steps 4] [--files 192] [--workers 0 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
import torch
import yaml

from qwen_audio.audio import SpecAugmentConfig, audio_span
from qwen_audio.data.dataset import DatasetOptions, ExampleKey, collate, example_item
from qwen_audio.data.examples import record_example
from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.data.shards import write_shards
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.tokenizer import QwenAudioTokenizer, build_tiktoken_file
from qwen_audio.train.distributed import DistributedContext
from qwen_audio.train.recipe import DataSettings, DataSource, Recipe, make_batch_source
from qwen_audio.train.setup import ModelSettings, config_for_tokenizer
from qwen_audio.train.trainer import TrainerConfig, build_optimizer

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the quick brown fox jumps over a lazy dog while rain falls on seven quiet music halls".split()


class PeakRSS:
    """Highest resident set size seen while the block runs (sampled every 5 ms, children excluded)."""

    def __enter__(self) -> PeakRSS:
        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def sentence(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS, words))


def make_corpus(folder: Path, files: int, seconds: float, text_words: int) -> Path:
    """Tone-plus-noise 16 kHz PCM wavs and an ASR manifest over them."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16_000)) / 16_000
    lines = []
    for i in range(files):
        wave = 0.2 * np.sin(2 * np.pi * (150 + 3 * i) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(folder / f"{i:04d}.wav", wave.astype(np.float32), 16_000)
        record = ManifestRecord(id=f"u{i}", audio=f"{i:04d}.wav", task="asr", audio_language="en", text_language="en",
                                text=sentence(rng, text_words), duration=seconds)
        lines.append(json.dumps(record.to_dict()))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


def synthetic_batch(tokenizer: QwenAudioTokenizer, batch: int, seconds: float, text_words: int) -> dict[str, torch.Tensor]:
    """A collated batch built by the real example code from in-memory noise waves."""
    rng = np.random.default_rng(1)
    items = []
    for i in range(batch):
        record = ManifestRecord(id=f"s{i}", audio="x.wav", task="asr", audio_language="en", text_language="en",
                                text=sentence(rng, text_words))
        wave = (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32)
        items.append(example_item(record_example(record, "."), [wave], tokenizer, DatasetOptions(), ExampleKey("s", i)))
    return collate(items, pad_id=tokenizer.eod_id)


def train_throughput(model: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str, steps: int) -> dict[str, float]:
    optimizer = build_optimizer(model, TrainerConfig(output_dir=".", max_steps=1, learning_rate=1e-4))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step() -> None:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    step()  # warm-up: allocator, kernels, AdamW state
    with PeakRSS() as memory:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter() - start
    rows = batch["input_ids"].shape[0]
    return {"samples_s": steps * rows / elapsed, "tokens_s": steps * int(batch["attention_mask"].sum()) / elapsed,
            "step_s": elapsed / steps, "peak_rss": memory.peak}


def pipeline_throughput(batches: Callable[[int], Iterator[dict[str, torch.Tensor]]], examples: int) -> dict[str, float]:
    """Examples/s of a BatchSource: first batch (start-up) apart, then steady state."""
    start = time.perf_counter()
    stream = batches(0)
    first = next(stream)
    ready = time.perf_counter()
    seen = 0
    while seen < examples:
        seen += next(stream)["input_ids"].shape[0]
    elapsed = time.perf_counter() - ready
    del stream  # stops DataLoader workers
    return {"first_s": ready - start, "examples_s": seen / elapsed, "batch": first["input_ids"].shape[0]}


def recipe_for(source: DataSource, tokenizer_path: Path, spec: SpecAugmentConfig, args: argparse.Namespace, workers: int) -> Recipe:
    data = DataSettings(train=(source,), max_batch_seconds=args.batch * args.seconds, max_batch_size=args.batch,
                        num_buckets=1, num_workers=workers, max_tokens=1024, shuffle_buffer=64, spec_augment=spec)
    return Recipe(stage="pretrain", tokenizer=str(tokenizer_path), model=ModelSettings(), data=data,
                  trainer=TrainerConfig(output_dir=".", max_steps=1), distributed="none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="audio length of every example")
    parser.add_argument("--text-words", type=int, default=30, help="~40 tokens with the 2k-rank tokenizer")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per precision")
    parser.add_argument("--files", type=int, default=192, help="wavs in the pipeline corpus")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--recipe", type=Path, default=ROOT / "configs" / "default-model-pretrain.yaml")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe_yaml = yaml.safe_load(args.recipe.read_text())
    overrides, spec = recipe_yaml["model"]["overrides"], SpecAugmentConfig(**recipe_yaml["data"]["spec_augment"])
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        tokenizer_path = build_tiktoken_file((sentence(rng, 12) for _ in range(2000)), 2048, folder / "qwen.tiktoken")
        tokenizer = QwenAudioTokenizer(tokenizer_path)
        model = QwenAudioForCausalLM(config_for_tokenizer("tiny", tokenizer, **overrides))
        batch = synthetic_batch(tokenizer, args.batch, args.seconds, args.text_words)
        parameters = sum(p.numel() for p in model.parameters())
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {psutil.cpu_count()} CPUs; "
              f"model: tiny preset + {args.recipe.name} overrides, {parameters / 1e6:.1f} M parameters")
        span = audio_span(int(args.seconds * 16_000)).span_tokens
        text = int(batch["attention_mask"].sum()) // args.batch - span
        print(f"batch: {args.batch} × ({args.seconds:g} s audio = {span} span tokens, {text} text tokens of which "
              f"{int((batch['labels'] != -100).sum()) // args.batch} targets)\n")
        print(f"(a) training, {args.steps} timed steps after 1 warm-up")
        print(f"    {'precision':10} {'step s':>7} {'samples/s':>10} {'tokens/s':>9} {'peak RSS MiB':>13}")
        training = {}
        for precision in ("fp32", "bf16"):
            training[precision] = r = train_throughput(model, batch, precision, args.steps)
            print(f"    {precision:10} {r['step_s']:7.2f} {r['samples_s']:10.1f} {r['tokens_s']:9.0f} {r['peak_rss'] / 2**20:13.0f}")

        start = time.perf_counter()
        manifest = make_corpus(folder, args.files, args.seconds, args.text_words)
        made = time.perf_counter()
        write_shards(manifest, folder / "shards", max_samples_per_shard=max(1, args.files // 8))
        packed = time.perf_counter()
        print(f"\n(b) data pipeline alone: {args.files} × {args.seconds:g} s wavs (16 kHz PCM), SpecAugment on; "
              f"corpus {made - start:.1f} s, make-shards {packed - made:.1f} s ({args.files / (packed - made):.0f} examples/s)")
        print(f"    {'source':9} {'workers':>7} {'first batch s':>14} {'examples/s':>11}")
        context = DistributedContext(0, 1, 0, torch.device("cpu"))
        pipeline = {}
        for kind, source in (("manifest", DataSource(manifest=str(manifest))), ("shards", DataSource(shards=str(folder / "shards")))):
            for workers in args.workers:
                batches = make_batch_source(recipe_for(source, tokenizer_path, spec, args, workers), tokenizer, context)
                pipeline[kind, workers] = r = pipeline_throughput(batches, args.files)
                print(f"    {kind:9} {workers:7d} {r['first_s']:14.2f} {r['examples_s']:11.1f}")

    print("\n(c) can the pipeline feed the model? (pipeline examples/s ÷ training samples/s; ≥ 1: yes)")
    for (kind, workers), r in pipeline.items():
        ratios = "  ".join(f"{p} {r['examples_s'] / t['samples_s']:6.1f}×" for p, t in training.items())
        print(f"    {kind:9} {workers} workers: {ratios}")
    print("    (measured apart: on a machine with few cores, workers and training share them)")


if __name__ == "__main__":
    main()
