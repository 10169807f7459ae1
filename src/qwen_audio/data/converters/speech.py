"""Speech corpora → manifests: LibriSpeech, AISHELL-1, AISHELL-2 (ASR), CoVoST 2 (S2TT),
MELD (speech emotion). Audio paths are absolute; `write_manifest(..., relative_paths=True)`
makes them portable. Targets keep the corpus's own text: normalisation belongs to scoring.
"""

from __future__ import annotations

import csv
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
from qwen_audio.data.manifest import KNOWN_LANGUAGES, ManifestRecord
from qwen_audio.errors import ManifestError

LIBRISPEECH_SPLITS = (
    "train-clean-100", "train-clean-360", "train-other-500",
    "dev-clean", "dev-other", "test-clean", "test-other",
)


def convert_librispeech(
    root: Path, split: str, *, probe: bool = True
) -> Iterator[ManifestRecord]:
    """LibriSpeech (OpenSLR 12): ``<root>/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt``,
    lines ``<utt-id> <UPPER-CASE TEXT>``, audio ``<utt-id>.flac`` beside it.
    ``root`` may be the folder holding ``LibriSpeech/`` or ``LibriSpeech/`` itself."""
    root = Path(root).resolve()
    base = first_existing(root / split, root / "LibriSpeech" / split)
    if base is None:
        raise ManifestError(f"LibriSpeech split folder {split!r} not found under {root}; "
                            f"splits are {', '.join(LIBRISPEECH_SPLITS)}")
    for trans in sorted(base.glob("*/*/*.trans.txt")):
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        for line in trans.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{utt_id}.flac"
            yield ManifestRecord(
                id=utt_id, audio=str(audio), task="asr", text=text,
                duration=probe_duration(audio) if probe else None,
                audio_language="en", text_language="en",
                meta={"dataset": "librispeech", "split": split,
                      "speaker": speaker, "chapter": chapter},
            )


def _read_id_text(path: Path) -> dict[str, str]:
    """Kaldi-style ``<id><whitespace><rest>`` lines (AISHELL transcripts, wav.scp)."""
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2:
            table[parts[0]] = parts[1]
    return table


def convert_aishell1(root: Path, split: str, *, probe: bool = True) -> Iterator[ManifestRecord]:
    """AISHELL-1 (OpenSLR 33): ``transcript/aishell_transcript_v0.8.txt`` (``<id> 词 词 …``,
    word-segmented) and ``wav/<split>/<spk>/<id>.wav``; splits train/dev/test. Spaces of the
    segmentation are removed (Chinese is scored by character). Audio without a transcript
    line (a few hundred exist in the release) is skipped. ``root`` is ``data_aishell``."""
    root = Path(root).resolve()
    split = resolve_split(split, {"train": "train", "dev": "dev", "validation": "dev",
                                  "test": "test"}, "AISHELL-1")
    transcript = _read_id_text(require(
        root / "transcript" / "aishell_transcript_v0.8.txt", "AISHELL-1 transcript"))
    for wav in sorted(require(root / "wav" / split, "AISHELL-1 wav folder").glob("*/*.wav")):
        text = transcript.get(wav.stem)
        if text is None:
            continue
        yield ManifestRecord(
            id=wav.stem, audio=str(wav), task="asr", text="".join(text.split()),
            duration=probe_duration(wav) if probe else None,
            audio_language="zh", text_language="zh",
            meta={"dataset": "aishell1", "split": split, "speaker": wav.parent.name},
        )


def convert_aishell2(root: Path, split: str, *, probe: bool = True) -> Iterator[ManifestRecord]:
    """AISHELL-2: each set is a folder with ``wav.scp`` (``<id>\\t<path relative to the
    folder>``) and ``trans.txt`` (``<id>\\t<text>``). Training set: ``<root>/iOS/data``; the
    2018A eval sets: ``<root>/<iOS|Android|Mic>/<dev|test>`` (split ``"ios-test"``,
    ``"android-dev"``, …, or ``"train"``). Without ``wav.scp``, audio is ``wav/<id>.wav``."""
    root = Path(root).resolve()
    if split.lower() == "train":
        folder = root / "iOS" / "data"
    else:
        channel, _, part = split.lower().partition("-")
        names = {"ios": "iOS", "android": "Android", "mic": "Mic"}
        if channel not in names or part not in ("dev", "test"):
            raise ManifestError(f"AISHELL-2 split {split!r} unknown; use train or "
                                "<ios|android|mic>-<dev|test>, e.g. ios-test")
        folder = first_existing(root / names[channel] / part, root / channel.upper() / part)
        if folder is None:
            raise ManifestError(f"AISHELL-2 folder for {split!r} not found under {root}")
    transcript = _read_id_text(require(folder / "trans.txt", "AISHELL-2 trans.txt"))
    scp = folder / "wav.scp"
    paths = _read_id_text(scp) if scp.exists() else {}
    missing = MissingAudio("AISHELL-2")
    for utt_id, text in transcript.items():
        wav = folder / paths.get(utt_id, f"wav/{utt_id}.wav")
        if not missing(wav):
            continue
        yield ManifestRecord(
            id=utt_id, audio=str(wav), task="asr", text="".join(text.split()),
            duration=probe_duration(wav) if probe else None,
            audio_language="zh", text_language="zh",
            meta={"dataset": "aishell2", "split": split.lower()},
        )
    missing.report()


def covost_language(code: str) -> str:
    """CoVoST/Common Voice codes → ours: ``zh-CN`` → ``zh``, ``sv-SE`` → ``sv``."""
    return code.split("-")[0].lower()


def convert_covost2(
    root: Path, split: str, *, source: str = "en", target: str = "de",
    clips_dir: Path | None = None, probe: bool = False,
) -> Iterator[ManifestRecord]:
    """CoVoST 2: ``covost_v2.<src>_<tgt>.<split>.tsv`` (as written by the official
    ``get_covost_splits.py``: tab-separated, unquoted, backslash escapes; columns ``path``,
    ``sentence``, ``translation``, ``client_id``) and Common Voice ``clips/<path>`` (mp3).
    The TSV is looked up in ``root`` then ``root/<src>``; clips in ``clips_dir``, ``root/clips``
    or ``root/<src>/clips``. Split: train/dev/test. ``probe`` is off by default: reading mp3
    headers of 300k clips is slow. The source transcript goes to ``meta["transcript"]``."""
    root = Path(root).resolve()
    split = resolve_split(split, {"train": "train", "dev": "dev", "validation": "dev",
                                  "test": "test"}, "CoVoST 2")
    name = f"covost_v2.{source}_{target}.{split}.tsv"
    tsv = first_existing(root / name, root / source / name)
    if tsv is None:
        raise ManifestError(f"{name} not found in {root} or {root / source}; generate it with "
                            "CoVoST's get_covost_splits.py")
    clips = first_existing(*(p for p in (clips_dir, root / "clips", root / source / "clips") if p))
    if clips is None:
        raise ManifestError(f"Common Voice clips/ folder not found under {root}; pass clips_dir")
    src, tgt = covost_language(source), covost_language(target)
    for code in (src, tgt):
        if code not in KNOWN_LANGUAGES:
            raise ManifestError(f"language {code!r} is not registered; call "
                                f"qwen_audio.data.manifest.register_language({code!r}) first")
    missing = MissingAudio("CoVoST 2")
    rows = read_csv(tsv, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
    for row in rows:
        audio = clips / row["path"]
        if not missing(audio):
            continue
        yield ManifestRecord(
            id=f"{Path(row['path']).stem}.{source}_{target}", audio=str(audio), task="s2tt",
            text=row["translation"], duration=probe_duration(audio) if probe else None,
            audio_language=src, text_language=tgt,
            meta={"dataset": "covost2", "split": split, "direction": f"{src}-{tgt}",
                  "transcript": row["sentence"], "client_id": row.get("client_id", "")},
        )
    missing.report()


MELD_AUDIO_DIRS = {
    "train": ("train_splits", "train/train_splits", "train"),
    "dev": ("dev_splits_complete", "dev/dev_splits_complete", "dev"),
    "test": ("output_repeated_splits_test", "test/output_repeated_splits_test", "test"),
}


def convert_meld(
    root: Path, split: str, *, audio_dir: Path | None = None, probe: bool = True
) -> Iterator[ManifestRecord]:
    """MELD (Poria et al. 2019): ``<split>_sent_emo.csv`` (columns ``Utterance``, ``Speaker``,
    ``Emotion``, ``Sentiment``, ``Dialogue_ID``, ``Utterance_ID``, …) and clips
    ``dia<D>_utt<U>.mp4`` in the release's folders (train_splits, dev_splits_complete,
    output_repeated_splits_test) — a ``.wav`` of the same stem is preferred when present
    (most pipelines extract audio first). Target: the emotion label (7 classes)."""
    root = Path(root).resolve()
    split = resolve_split(split, {"train": "train", "dev": "dev", "validation": "dev",
                                  "test": "test"}, "MELD")
    csv_path = first_existing(root / f"{split}_sent_emo.csv", root / split / f"{split}_sent_emo.csv")
    if csv_path is None:
        raise ManifestError(f"{split}_sent_emo.csv not found under {root}")
    folder = audio_dir or first_existing(*(root / d for d in MELD_AUDIO_DIRS[split]))
    if folder is None:
        raise ManifestError(f"MELD {split} audio folder not found under {root}; pass audio_dir")
    missing = MissingAudio("MELD")
    for row in read_csv(csv_path):
        stem = f"dia{row['Dialogue_ID'].strip()}_utt{row['Utterance_ID'].strip()}"
        audio = first_existing(folder / f"{stem}.wav", folder / f"{stem}.mp4") or folder / f"{stem}.mp4"
        if not missing(audio):
            continue
        emotion = row["Emotion"].strip().lower()
        yield ManifestRecord(
            id=f"meld-{split}-{stem}", audio=str(audio), task="emotion", text=emotion,
            labels=(emotion,), duration=probe_duration(audio) if probe else None,
            audio_language="en", text_language="en",
            meta={"dataset": "meld", "split": split, "utterance": row["Utterance"],
                  "speaker": row["Speaker"], "sentiment": row["Sentiment"].strip().lower()},
        )
    missing.report()
