"""Sound corpora → manifests: Clotho, AudioCaps (captions), Clotho-AQA (audio QA), CochlScene,
TUT2017 (acoustic scenes), VocalSound (vocal sounds).

Captions: one record per clip by default, ``text`` the first caption and ``labels`` every
reference caption (what CIDEr/SPICE score against); ``one_per_caption=True`` yields one record
per caption for training. Non-speech audio gets ``audio_language="unknown"``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from qwen_audio.data.converters._common import (
    MissingAudio,
    first_existing,
    probe_duration,
    read_csv,
    require,
    resolve_split,
)
from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.errors import ManifestError


def _caption_records(
    clip_id: str, audio: Path, captions: list[str], meta: dict, one_per_caption: bool, probe: bool
) -> Iterator[ManifestRecord]:
    duration = probe_duration(audio) if probe else None
    if one_per_caption:
        for i, caption in enumerate(captions, start=1):
            yield ManifestRecord(
                id=f"{clip_id}#{i}", audio=str(audio), task="caption", text=caption,
                duration=duration, audio_language="unknown", text_language="en", meta=meta)
    else:
        yield ManifestRecord(
            id=clip_id, audio=str(audio), task="caption", text=captions[0],
            labels=tuple(captions), duration=duration, audio_language="unknown",
            text_language="en", meta=meta)


def convert_clotho(
    root: Path, split: str, *, one_per_caption: bool = False, probe: bool = True
) -> Iterator[ManifestRecord]:
    """Clotho v2 (Drossos et al. 2020): ``clotho_captions_<split>.csv`` (``file_name``,
    ``caption_1`` … ``caption_5``) and audio ``<split>/<file_name>``; splits development,
    validation, evaluation (aliases train/val/test). Caption style tag: ``meta.caption_style``."""
    root = Path(root).resolve()
    split = resolve_split(split, {"train": "development", "development": "development",
                                  "dev": "development", "val": "validation",
                                  "validation": "validation", "test": "evaluation",
                                  "evaluation": "evaluation"}, "Clotho")
    csv_path = require(root / f"clotho_captions_{split}.csv", "Clotho captions CSV")
    missing = MissingAudio("Clotho")
    for row in read_csv(csv_path):
        audio = root / split / row["file_name"]
        captions = [row[f"caption_{i}"].strip() for i in range(1, 6) if row.get(f"caption_{i}")]
        if not captions or not missing(audio):
            continue
        meta = {"dataset": "clotho", "split": split, "caption_style": "clotho"}
        yield from _caption_records(f"clotho-{split}-{Path(row['file_name']).stem}", audio,
                                    captions, meta, one_per_caption, probe)
    missing.report()


def convert_audiocaps(
    root: Path, split: str, *, one_per_caption: bool | None = None, probe: bool = True
) -> Iterator[ManifestRecord]:
    """AudioCaps (Kim et al. 2019): ``<split>.csv`` (``audiocap_id``, ``youtube_id``,
    ``start_time``, ``caption``); splits train/val/test. The corpus ships no audio: we assume
    10 s clips already cut by a downloader, named (first match wins) ``<split>/<youtube_id>.wav``,
    ``<split>/Y<youtube_id>.wav``, ``<split>/<youtube_id>_<start_time>.wav`` or
    ``<split>/<audiocap_id>.wav``; rows without audio are skipped with a warning (removed videos).
    val/test clips carry 5 captions each and are grouped per clip unless ``one_per_caption``."""
    root = Path(root).resolve()
    split = resolve_split(split, {"train": "train", "val": "val", "validation": "val",
                                  "dev": "val", "test": "test"}, "AudioCaps")
    if one_per_caption is None:
        one_per_caption = split == "train"
    csv_path = require(root / f"{split}.csv", "AudioCaps CSV")
    clips: dict[str, tuple[Path, list[str], str]] = {}
    missing = MissingAudio("AudioCaps")
    for row in read_csv(csv_path):
        yid, start = row["youtube_id"].strip(), row["start_time"].strip()
        folder = root / split
        audio = first_existing(folder / f"{yid}.wav", folder / f"Y{yid}.wav",
                               folder / f"{yid}_{start}.wav", folder / f"{row['audiocap_id']}.wav")
        if audio is None:
            missing(folder / f"{yid}.wav")
            continue
        clips.setdefault(yid, (audio, [], start))[1].append(row["caption"].strip())
    for yid, (audio, captions, start) in clips.items():
        meta = {"dataset": "audiocaps", "split": split, "caption_style": "audiocaps",
                "youtube_id": yid, "start_time": start}
        yield from _caption_records(f"audiocaps-{split}-{yid}", audio, captions, meta,
                                    one_per_caption, probe)
    missing.report()


def convert_clotho_aqa(
    root: Path, split: str, *, probe: bool = True
) -> Iterator[ManifestRecord]:
    """Clotho-AQA (Lipping et al. 2022): ``clotho_aqa_<split>.csv`` (``file_name``,
    ``QuestionText``, ``answer``, ``confidence``; three annotators answer each question, one row
    each) and audio ``audio_files/<file_name>``; splits train/val/test. Rows of one (clip,
    question) are grouped: ``text`` is the majority answer (first seen on ties), ``labels`` every
    annotator's answer, ``meta.confidence`` theirs."""
    root = Path(root).resolve()
    split = resolve_split(split, {"train": "train", "val": "val", "validation": "val",
                                  "dev": "val", "test": "test"}, "Clotho-AQA")
    csv_path = require(root / f"clotho_aqa_{split}.csv", "Clotho-AQA CSV")
    audio_dir = first_existing(root / "audio_files", root / "audio") or root / "audio_files"
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row in read_csv(csv_path):
        key = (row["file_name"].strip(), row["QuestionText"].strip())
        groups.setdefault(key, []).append((row["answer"].strip(), row.get("confidence", "").strip()))
    missing = MissingAudio("Clotho-AQA")
    for n, ((file_name, question), answers) in enumerate(groups.items()):
        audio = audio_dir / file_name
        if not missing(audio):
            continue
        labels = [a for a, _ in answers]
        majority = Counter(labels).most_common(1)[0][1]
        text = next(a for a in labels if labels.count(a) == majority)
        yield ManifestRecord(
            id=f"clothoaqa-{split}-{n:06d}", audio=str(audio), task="aqa", text=text,
            question=question, labels=tuple(labels),
            duration=probe_duration(audio) if probe else None,
            audio_language="unknown", text_language="en",
            meta={"dataset": "clotho_aqa", "split": split, "file_name": file_name,
                  "confidence": [c for _, c in answers]},
        )
    missing.report()


def convert_cochlscene(root: Path, split: str, *, probe: bool = True) -> Iterator[ManifestRecord]:
    """CochlScene (Jeong & Park 2022): ``<Train|Val|Test>/<Scene>/*.wav``, 13 scenes
    (Bus, Cafe, Car, CrowdedIndoor, …); the folder name is the label."""
    root = Path(root).resolve()
    split = resolve_split(split, {"train": "Train", "val": "Val", "validation": "Val",
                                  "dev": "Val", "test": "Test"}, "CochlScene")
    for wav in sorted(require(root / split, "CochlScene split folder").glob("*/*.wav")):
        scene = wav.parent.name
        yield ManifestRecord(
            id=f"cochlscene-{split.lower()}-{wav.stem}", audio=str(wav), task="scene",
            text=scene, labels=(scene,), duration=probe_duration(wav) if probe else None,
            audio_language="unknown", text_language="en",
            meta={"dataset": "cochlscene", "split": split.lower()},
        )


def convert_tut2017(root: Path, split: str, *, probe: bool = True) -> Iterator[ManifestRecord]:
    """TUT Acoustic Scenes 2017 (DCASE 2017 task 1): a package folder with ``meta.txt``
    (``audio/<file>.wav<TAB><scene>[<TAB><location id>]``) and ``evaluation_setup/`` lists.
    ``split`` names a list: ``fold1_train`` … ``fold4_evaluate`` (development package),
    ``evaluate`` (evaluation package's ``evaluation_setup/evaluate.txt``), or ``meta`` for all
    of ``meta.txt``. Labels are kept as written (``cafe/restaurant``, ``city_center`` …)."""
    root = Path(root).resolve()
    listing = root / "meta.txt" if split == "meta" else root / "evaluation_setup" / f"{split}.txt"
    require(listing, f"TUT2017 list {split!r}")
    labels: dict[str, str] = {}
    meta_file = root / "meta.txt"
    if meta_file.exists():
        for line in meta_file.read_text(encoding="utf-8").splitlines():
            parts = line.strip().split("\t")
            if len(parts) >= 2:
                labels[parts[0]] = parts[1]
    missing = MissingAudio("TUT2017")
    for line in listing.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split("\t")
        if not parts[0]:
            continue
        scene = parts[1] if len(parts) >= 2 else labels.get(parts[0])
        if scene is None:
            raise ManifestError(f"TUT2017: no scene label for {parts[0]} in {listing} or meta.txt")
        audio = root / parts[0]
        if not missing(audio):
            continue
        yield ManifestRecord(
            id=f"tut2017-{Path(parts[0]).stem}", audio=str(audio), task="scene", text=scene,
            labels=(scene,), duration=probe_duration(audio) if probe else None,
            audio_language="unknown", text_language="en",
            meta={"dataset": "tut2017", "split": split},
        )
    missing.report()


VOCALSOUND_LABELS = ("laughter", "sigh", "cough", "throatclearing", "sneeze", "sniff")


def convert_vocalsound(root: Path, split: str, *, probe: bool = True) -> Iterator[ManifestRecord]:
    """VocalSound (Gong et al. 2022): ``audio_16k/<spk>_<n>_<label>.wav`` (e.g.
    ``f0003_0_cough.wav``; 6 labels). The speaker-disjoint splits come from the release's
    ``datafiles/{tr,val,te}.json`` (``{"data": [{"wav": …}]}``; only file names are used);
    ``split="all"`` takes every file."""
    root = Path(root).resolve()
    split = resolve_split(split, {"train": "tr", "val": "val", "validation": "val", "dev": "val",
                                  "test": "te", "all": "all"}, "VocalSound")
    audio_dir = require(root / "audio_16k", "VocalSound audio_16k folder")
    if split == "all":
        names = sorted(p.name for p in audio_dir.glob("*.wav"))
    else:
        datafile = require(root / "datafiles" / f"{split}.json", "VocalSound datafile")
        names = [Path(item["wav"]).name for item in json.loads(datafile.read_text())["data"]]
    missing = MissingAudio("VocalSound")
    for name in names:
        stem = Path(name).stem
        label = stem.rsplit("_", 1)[-1]
        if label not in VOCALSOUND_LABELS:
            raise ManifestError(f"VocalSound: {name} does not end in one of {VOCALSOUND_LABELS}")
        audio = audio_dir / name
        if not missing(audio):
            continue
        yield ManifestRecord(
            id=f"vocalsound-{stem}", audio=str(audio), task="vocal_sound", text=label,
            labels=(label,), duration=probe_duration(audio) if probe else None,
            audio_language="unknown", text_language="en",
            meta={"dataset": "vocalsound", "split": split, "speaker": stem.split("_")[0]},
        )
    missing.report()
