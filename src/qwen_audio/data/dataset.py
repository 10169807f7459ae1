"""Training examples on demand: a byte-offset index over JSONL manifests, a dataset, a collator.

No corpus is loaded into memory: the index keeps one offset and one duration per line (what
batching needs), and a worker process reads a line, decodes its audio, computes the mel and
tokenises only when that example is drawn. Every random choice (SpecAugment) is seeded by the
example's key, so a resumed run rebuilds exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import soundfile as sf
import torch

from qwen_audio.audio import SpecAugmentConfig, spec_augment, warp_mel
from qwen_audio.data.augment import WaveAugmentConfig, augment_wave, warp_factor
from qwen_audio.data.chat_manifest import ChatRecord
from qwen_audio.data.examples import IGNORE_INDEX, TextExample, chat_example, record_example, tokenize_example
from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.errors import ManifestError
from qwen_audio.formats.timestamps import TIME_TOKEN
from qwen_audio.processing import audio_features, no_audio_features, pad_rows
from qwen_audio.tokenizer import QwenAudioTokenizer


class ExampleKey(NamedTuple):
    """Which example, from which source, drawn at which point of the run (seeds augmentation)."""

    source: str
    index: int
    salt: int = 0


# Tasks whose target is what is said: a record longer than the encoder's 30 s window would train the
# model to say more than it hears, and its target tokens can pass max_tokens deep into a run.
TRANSCRIPT_TASKS = frozenset({"asr", "srwt", "s2tt"})
WINDOW_SECONDS = 30.0


class ManifestIndex:
    """Random access to the lines of one task or chat manifest (.jsonl or .jsonl.gz)."""

    def __init__(
        self, path: str | Path, tasks: Sequence[str] | None = None, languages: Sequence[str] | None = None
    ) -> None:
        """``tasks`` / ``languages`` keep only task records of those tasks / audio languages, so a
        recipe can weight a slice of a manifest (say English ASR) without rewriting the corpus."""
        self.path = Path(path)
        if not self.path.is_file():
            raise ManifestError(f"manifest not found: {self.path}")
        self._data: bytes | None = gzip.decompress(self.path.read_bytes()) if self.path.suffix == ".gz" else None
        self.offsets: list[int] = []
        self.durations: list[float] = []
        self.is_chat = False
        self.left_out: list[str] = []  # ids of transcript records too long for one window
        filtered = tasks is not None or languages is not None
        for offset, line in self._lines():
            obj = json.loads(line)
            self.is_chat = self.is_chat or "messages" in obj
            if filtered:
                if self.is_chat:
                    raise ManifestError(f"{self.path}: task/language filters apply to task manifests, not chat")
                if (tasks is not None and obj.get("task") not in tasks) or (
                    languages is not None and obj.get("audio_language") not in languages
                ):
                    continue
            if not self.is_chat and obj.get("task") in TRANSCRIPT_TASKS and float(obj.get("duration") or 0) > WINDOW_SECONDS:
                self.left_out.append(str(obj.get("id")))
                continue
            self.offsets.append(offset)
            self.durations.append(self._duration(obj))
        if self.left_out:
            warnings.warn(
                f"{self.path}: {len(self.left_out)} transcript record(s) with audio over {WINDOW_SECONDS:.0f} s left out "
                f"(first: {', '.join(self.left_out[:3])}); the encoder reads 30 s, so their targets would run past "
                "the audio: cut them into segments of ≤ 30 s to train on them",
                stacklevel=2,
            )
        if not self.offsets:
            asked = " and ".join(
                f"{name} {list(values)}" for name, values in (("tasks", tasks), ("languages", languages)) if values is not None
            )
            raise ManifestError(f"{self.path}: the manifest has no examples" + (f" with {asked}" if asked else ""))

    def _lines(self):  # noqa: ANN202
        if self._data is not None:
            offset = 0
            for line in self._data.splitlines(keepends=True):
                if line.strip():
                    yield offset, line
                offset += len(line)
            return
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                if line.strip():
                    yield offset, line
                offset += len(line)

    def _duration(self, obj: Mapping[str, Any]) -> float:
        """Seconds of audio (summed over a conversation's audios); read from headers when unknown."""
        items = [obj] if "audio" in obj else [
            c for m in obj.get("messages", []) if isinstance(m.get("content"), list)
            for c in m["content"] if c.get("type") == "audio"
        ]
        total = 0.0
        for item in items:
            duration = item.get("duration")
            if duration is None:
                audio = Path(item["audio"])
                path = audio if audio.is_absolute() else self.path.parent / audio
                try:
                    duration = sf.info(str(path)).duration - float(item.get("offset", 0.0))
                except (sf.LibsndfileError, RuntimeError):
                    duration = 30.0  # compressed or remote: assume the worst for batching
            total += min(float(duration), 30.0)
        return max(total, 0.1)

    def __len__(self) -> int:
        return len(self.offsets)

    def line(self, index: int) -> dict[str, Any]:
        offset = self.offsets[index]
        if self._data is not None:
            end = self._data.find(b"\n", offset)
            raw = self._data[offset : end if end >= 0 else None]
        else:
            with open(self.path, "rb") as f:
                f.seek(offset)
                raw = f.readline()
        return json.loads(raw)

    def example(self, index: int) -> TextExample:
        obj = self.line(index)
        if self.is_chat:
            return chat_example(ChatRecord.from_dict(obj), self.path.parent)
        return record_example(ManifestRecord.from_dict(obj), self.path.parent)


@dataclass(frozen=True)
class DatasetOptions:
    max_tokens: int = 2048  # longer examples are refused, never silently cut mid-target
    spec_augment: SpecAugmentConfig | None = None
    seed: int = 0
    # add each audio's transcript for a CTC loss (train/ctc.py): as UTF-8 bytes (a head on the encoder)
    # or as the LLM's own token ids (the projection read against the LLM's embeddings)
    transcripts: Literal["bytes", "tokens"] | None = None
    wave_augment: WaveAugmentConfig | None = None  # speed, room, noise on the named sources' audio
    # "tokens" only: an audio with no words but a known source (a note, a drum hit) gets that source's
    # name as its CTC target (``examples.heard_label``), so its projected frames move toward the words
    # the LLM reads for it, as speech frames move toward what is said
    sound_labels: bool = False


class AudioTextDataset(torch.utils.data.Dataset):
    """``dataset[ExampleKey]`` → one tokenised example with its 30 s mels (see :func:`collate`)."""

    def __init__(
        self, sources: Mapping[str, ManifestIndex], tokenizer: QwenAudioTokenizer, options: DatasetOptions = DatasetOptions()
    ) -> None:
        self.sources, self.tokenizer, self.options = dict(sources), tokenizer, options

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources.values())

    def __getitem__(self, key: ExampleKey) -> dict[str, Any]:
        key = ExampleKey(*key)
        example = self.sources[key.source].example(key.index)
        waves = [audio.load() for audio in example.audios]
        return example_item(example, waves, self.tokenizer, self.options, key)


def example_item(
    example: TextExample, waves: Sequence[np.ndarray], tokenizer: QwenAudioTokenizer, options: DatasetOptions,
    key: ExampleKey,
) -> dict[str, Any]:
    """One example whose audios are already decoded → tokens, labels and (augmented) mels.

    Shared by the indexed dataset and the tar-shard stream (``data/shards.py``), so both turn the
    same record into the same tensors; ``key`` seeds SpecAugment and the waveform augmentation.
    """
    source, index, salt = key
    augment = options.wave_augment
    if waves and augment is not None and source in augment.sources:
        timed = any(trained and TIME_TOKEN.search(text) for text, trained in example.pieces)
        waves = [augment_wave(w, augment, _seed(options.seed, source, index, salt, number, "wave"), timed=timed)
                 for number, w in enumerate(waves)]
    tokens = tokenize_example(example, tokenizer, [w.size for w in waves])
    if len(tokens.input_ids) > options.max_tokens:
        raise ManifestError(
            f"{example.id}: {len(tokens.input_ids)} tokens exceed max_tokens={options.max_tokens}; "
            "shorten the example or raise the limit"
        )
    features, lengths = no_audio_features(), torch.zeros(0, dtype=torch.long)
    if waves:
        mels = audio_features(waves)
        features, lengths = mels.features, mels.mel_lengths
        if augment is not None and source in augment.sources:
            for number in range(len(waves)):
                factor = warp_factor(augment, _seed(options.seed, source, index, salt, number, "warp"))
                if factor is not None:
                    features[number] = warp_mel(features[number], factor)
    if options.spec_augment is not None:
        for number, length in enumerate(lengths.tolist()):
            generator = torch.Generator().manual_seed(_seed(options.seed, source, index, salt, number))
            features[number] = spec_augment(features[number], length, options.spec_augment, generator=generator)
    item = {
        "id": example.id,
        "input_ids": torch.tensor(tokens.input_ids, dtype=torch.long),
        "labels": torch.tensor(tokens.labels, dtype=torch.long),
        "audio_features": features,
        "audio_lengths": lengths,
    }
    if options.transcripts == "bytes":
        item["transcripts"] = [audio.transcript for audio in example.audios]
    elif options.transcripts == "tokens":
        item["transcript_ids"] = [
            transcript_ids(audio.transcript or (audio.label if options.sound_labels else None), tokenizer)
            for audio in example.audios]
    return item


def _seed(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def transcript_targets(transcripts: Sequence[str | None]) -> dict[str, torch.Tensor]:
    """Per-audio CTC targets: UTF-8 bytes shifted by one (0 is the blank), every language alike.

    ``ctc_lengths`` is 0 for an audio with no known transcript (music, sounds), which the loss skips.
    """
    return _ctc_targets([list((t or "").encode()) for t in transcripts])


def transcript_ids(transcript: str | None, tokenizer: QwenAudioTokenizer) -> list[int]:
    """What is said as the LLM reads it: the plain-text token ids of the transcript, as a
    transcription target spells it; none for an audio without a transcript."""
    return tokenizer.encode_plain(transcript.strip()) if transcript and transcript.strip() else []


def token_targets(ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """Per-audio CTC targets over LLM token ids, shifted by one (0 is the blank)."""
    return _ctc_targets(ids)


def _ctc_targets(units: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    return {
        "ctc_targets": torch.tensor([u + 1 for row in units for u in row], dtype=torch.long),
        "ctc_lengths": torch.tensor([len(row) for row in units], dtype=torch.long),
    }


def collate(examples: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad text (labels with ``IGNORE_INDEX``) and concatenate every example's audios.

    Right padding (the processor's ``pad_rows``) keeps each label under its id from column 0.
    Audios stay in reading order (row by row), which is how the model matches them to spans.
    """
    input_ids, attention_mask = pad_rows([e["input_ids"] for e in examples], pad_id, "right")
    labels, _ = pad_rows([e["labels"] for e in examples], IGNORE_INDEX, "right")
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    features = [e["audio_features"] for e in examples if len(e["audio_features"])]
    if features:
        batch["audio_features"] = torch.cat(features)
        batch["audio_lengths"] = torch.cat([e["audio_lengths"] for e in examples])
    if any("transcripts" in e for e in examples):
        batch.update(transcript_targets([t for e in examples for t in e.get("transcripts", [])]))
    elif any("transcript_ids" in e for e in examples):
        batch.update(token_targets([t for e in examples for t in e.get("transcript_ids", [])]))
    return batch
