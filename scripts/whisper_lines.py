"""Whisper base on exactly the examples a suite WER line scores: the peer's figure beside the model card's.

    python scripts/whisper_lines.py LIMIT LINE [LINE ...] [--data world-data]

e.g. ``python scripts/whisper_lines.py 50 world-tuxpaint-asr-es world-tuxpaint-asr-fr``: the records
``qwen-audio eval --suite default --limit LIMIT`` draws for each line (``spread_sample``), transcribed by the
pinned Whisper base through faster-whisper (fp32, greedy, the language given, 2 threads; the ``bench``
extra), scored by the suite's WER (``eval.metrics.word_error_rate``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("limit", type=int)
    parser.add_argument("lines", nargs="+")
    parser.add_argument("--data", type=Path, default=Path("world-data"))
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from asr import whisper_folder
    from faster_whisper import WhisperModel

    from qwen_audio.eval.metrics import word_error_rate
    from qwen_audio.eval.runner import spread_sample
    from qwen_audio.eval.suite import WORLD_SUITE

    entries = {e.benchmark.name: e for e in WORLD_SUITE}
    unknown = [line for line in args.lines if line not in entries or entries[line].benchmark.metric != "wer"]
    if unknown:
        parser.error(f"not WER lines of the default suite: {unknown}")
    model = WhisperModel(str(whisper_folder()), device="cpu", compute_type="float32", cpu_threads=2)
    for line in args.lines:
        entry = entries[line]
        manifest = args.data / entry.manifest
        records = spread_sample(entry.records(manifest), args.limit)
        said = []
        for record in records:
            audio = record.audio if Path(record.audio).is_absolute() else str(manifest.parent / record.audio)
            segments, _ = model.transcribe(audio, language=record.audio_language, beam_size=1)
            said.append(" ".join(s.text.strip() for s in segments))
        wer = word_error_rate([r.text for r in records], said, language=records[0].audio_language)
        print(f"{line} ({len(records)}): Whisper base {100 * wer.value:.1f} % WER", flush=True)


if __name__ == "__main__":
    main()
