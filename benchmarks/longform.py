"""One long real recording, word times on: a qwen-audio model against Whisper base (faster-whisper), same run.

The recording is ``--clips`` real clips of one language from a manifest (by default the reserved
Asterisk prompts), joined with ``--gap`` s of silence: a few minutes of speech with pauses, as a
voicemail or a lecture comes. Each system transcribes the file in a fresh process (fp32,
``--threads`` threads, word timestamps on, as ``qwen-audio transcribe -f json`` and subtitles ask),
loading excluded from the time. Printed per system: WER, wall seconds, times faster than real time
and the process's peak resident memory; then ours over Whisper base's for time and memory.

    python benchmarks/longform.py [--model DIR] [--manifest world-data/asterisk/validation.jsonl] [--clips 40]

Why beside ``asr.py``: short clips never show what grows with the audio (how many pieces decode
together, what is held for word times), and that is where a long file ran out of time or memory.
Needs the ``bench`` extra (faster-whisper).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

OURS = """
import json, resource, sys, time
import torch
torch.set_num_threads({threads})
from qwen_audio.api import QwenAudio
api = QwenAudio.from_pretrained({model!r}) if {model!r} else QwenAudio.from_pretrained()
start = time.perf_counter()
result = api.transcribe({path!r}, language={language!r}, word_timestamps=True)
wall = time.perf_counter() - start
print(json.dumps({{"text": result.text, "wall": wall, "words": len(result.words),
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""

WHISPER = """
import json, resource, sys, time
sys.path.insert(0, {here!r})
from asr import whisper_folder
from faster_whisper import WhisperModel
model = WhisperModel(str(whisper_folder()), device="cpu", compute_type="float32", cpu_threads={threads})
start = time.perf_counter()
segments, _ = model.transcribe({path!r}, language={language!r}, beam_size=1, temperature=0.0,
                               condition_on_previous_text=False, vad_filter=False, word_timestamps=True)
segments = list(segments)
wall = time.perf_counter() - start
print(json.dumps({{"text": " ".join(s.text.strip() for s in segments), "wall": wall,
                  "words": sum(len(s.words or []) for s in segments),
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""


def long_recording(manifest: Path, language: str, clips: int, gap: float, target: Path) -> tuple[str, float]:
    """The first ``clips`` ASR records of ``language`` (manifest order) joined by ``gap`` s of silence,
    written to ``target``: their joined texts and the seconds of audio."""
    import numpy as np
    import soundfile as sf

    from qwen_audio.audio import SAMPLE_RATE, load_audio

    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    chosen = [r for r in records if r.get("task", "asr") == "asr" and r.get("audio_language") == language][:clips]
    if not chosen:
        raise SystemExit(f"no {language} ASR records in {manifest}")
    silence = np.zeros(int(gap * SAMPLE_RATE), np.float32)
    wave = np.concatenate([part for r in chosen for part in (load_audio(r["audio"]), silence)])
    sf.write(target, wave, SAMPLE_RATE)
    return " ".join(r["text"] for r in chosen), wave.size / SAMPLE_RATE


def run(script: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from qwen_audio.eval.metrics import word_error_rate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="a qwen-audio model directory (default: the bundled default model)")
    parser.add_argument("--manifest", default="world-data/asterisk/validation.jsonl",
                        help="JSONL of real recordings with text and audio_language (default: the reserved Asterisk prompts)")
    parser.add_argument("--language", default="en")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds of silence between clips")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        reference, seconds = long_recording(Path(args.manifest), args.language, args.clips, args.gap, path)
        print(f"{args.clips} {args.language} clips joined: {seconds:.1f} s of audio, {len(reference.split())} words")
        shared = {"path": str(path), "language": args.language, "threads": args.threads}
        results = {
            "whisper-base (faster-whisper)": run(WHISPER.format(here=str(Path(__file__).parent), **shared), args.threads),
            "qwen-audio": run(OURS.format(model=args.model, **shared), args.threads),
        }
    for name, found in results.items():
        wer = 100 * word_error_rate([reference], [found["text"]], language=args.language).value
        print(f"{name:30s} WER {wer:5.1f} %   {found['wall']:6.1f} s ({seconds / found['wall']:.1f}× real time)"
              f"   peak RSS {found['rss']:.2f} GB   {found['words']} timed words")
    ours, peer = results["qwen-audio"], results["whisper-base (faster-whisper)"]
    print(f"qwen-audio / whisper-base: time {ours['wall'] / peer['wall']:.2f}, peak memory {ours['rss'] / peer['rss']:.2f}")


if __name__ == "__main__":
    main()
