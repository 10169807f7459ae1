"""Pick the README demo's bundled samples from the held-out test split of the synthetic corpus.

The default model knows only the corpus' vocabulary and sounds, so its demo uses audio of the
same kind that it never trained on: the first clean English test utterance of 3–6 s, and the
first bell of at least 1 s. Written as FLAC into ``src/qwen_audio/assets/samples``.

    python scripts/bundle_samples.py [--corpus corpus]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import soundfile as sf

from qwen_audio.audio import load_audio
from qwen_audio.data.manifest import read_manifest

SAMPLES = Path(__file__).resolve().parent.parent / "src" / "qwen_audio" / "assets" / "samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("corpus"))
    args = parser.parse_args()
    test = args.corpus / "test"
    speech = next(
        r for r in read_manifest(test / "speech.jsonl")
        if r.task == "asr" and r.audio_language == "en" and not (r.meta or {}).get("noise") and 3 <= r.duration <= 6
    )
    bell = next(r for r in read_manifest(test / "sounds.jsonl") if r.task == "sound_event" and r.text == "bell" and r.duration >= 1)
    for record, name in ((speech, "speech_en.flac"), (bell, "bell.flac")):
        sf.write(SAMPLES / name, load_audio(str(test / record.audio)), 16_000, format="FLAC")
        print(f"{name}: {record.id} ({record.duration:.2f} s) “{record.text}”")


if __name__ == "__main__":
    main()
