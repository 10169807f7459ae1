"""Speech recognition on real clips: a qwen-audio model against Whisper base (faster-whisper), same run.

Both transcribe the same clips, language given, greedy, on the CPU (fp32, ``--threads`` threads).
Printed per system: WER (Whisper's normalisers, ``eval.metrics.word_error_rate``) per language and
overall, and wall seconds; then the time ratio the default-model issue sets (ours within 2× of
Whisper base), and one cold ``qwen-audio transcribe`` of a 5 s clip, loading included (≤ 5 s).

    python benchmarks/asr.py [--model DIR] [--manifest world-data/asterisk/validation.jsonl] [--per-language 20]

The peer is the very Whisper base whose encoder the default model starts from (the pinned
CTranslate2 base, ``checkpoints.bases.WHISPER_BASE``), so the comparison asks what the joined LLM
costs and gains. Needs the ``bench`` extra (faster-whisper).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def clips(manifest: Path, per_language: int, seed: int) -> dict[str, list[dict]]:
    """``per_language`` ASR records per language, at most 30 s each, drawn reproducibly."""
    by_language: dict[str, list[dict]] = defaultdict(list)
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        if record.get("task", "asr") == "asr" and record.get("duration", 0) <= 30:
            by_language[record["audio_language"]].append(record)
    rng = random.Random(seed)
    return {lang: rng.sample(rows, min(per_language, len(rows))) for lang, rows in sorted(by_language.items())}


def whisper_folder() -> Path:
    """A faster-whisper model folder over the pinned, sha256-verified CTranslate2 Whisper base."""
    import importlib.resources

    from qwen_audio.checkpoints.bases import WHISPER_BASE, verified_base_file

    model_bin = verified_base_file(WHISPER_BASE)
    data = Path(str(importlib.resources.files(WHISPER_BASE.files[0].module))) / "data"
    folder = Path(tempfile.mkdtemp(prefix="whisper-base-"))
    (folder / "model.bin").symlink_to(model_bin)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).symlink_to(data / name)
    return folder


def run_whisper(waves: dict[str, list[np.ndarray]], threads: int) -> tuple[dict[str, list[str]], float]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(whisper_folder()), device="cpu", compute_type="float32", cpu_threads=threads)
    start = time.perf_counter()
    out = {}
    for lang, items in waves.items():
        out[lang] = []
        for wave in items:
            segments, _ = model.transcribe(wave, language=lang, beam_size=1, temperature=0.0,
                                           condition_on_previous_text=False, vad_filter=False, without_timestamps=True)
            out[lang].append(" ".join(s.text.strip() for s in segments))
    return out, time.perf_counter() - start


def run_ours(model: str | None, waves: dict[str, list[np.ndarray]], threads: int) -> tuple[dict[str, list[str]], float]:
    import torch

    from qwen_audio.api import QwenAudio

    torch.set_num_threads(threads)
    api = QwenAudio.from_pretrained(model) if model else QwenAudio.from_pretrained()
    start = time.perf_counter()
    out = {lang: [t.text for t in api.transcribe([(w, 16_000) for w in items], language=lang)] for lang, items in waves.items()}
    return out, time.perf_counter() - start


def cold_transcribe(model: str | None, wave: np.ndarray) -> float:
    """Wall seconds of one ``qwen-audio transcribe`` process on a 5 s clip, start-up and loading included."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        sf.write(path, wave[: 5 * 16000], 16000)
        command = [sys.executable, "-m", "qwen_audio.cli", "transcribe", str(path)] + (["--model", model] if model else [])
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        return time.perf_counter() - start


def main() -> None:
    from qwen_audio.audio import load_audio
    from qwen_audio.eval.metrics import word_error_rate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a qwen-audio model directory (default: the bundled default model)")
    parser.add_argument("--manifest", default="world-data/asterisk/validation.jsonl",
                        help="JSONL of real recordings with text and audio_language (default: the reserved Asterisk prompts)")
    parser.add_argument("--per-language", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    chosen = clips(Path(args.manifest), args.per_language, args.seed)
    waves = {lang: [load_audio(r["audio"]) for r in rows] for lang, rows in chosen.items()}
    seconds = sum(w.size for items in waves.values() for w in items) / 16000
    print(f"{sum(map(len, waves.values()))} clips, {seconds:.0f} s of audio, languages {', '.join(waves)}")
    results = {"whisper-base (faster-whisper)": run_whisper(waves, args.threads), "qwen-audio": run_ours(args.model, waves, args.threads)}
    for name, (hyps, wall) in results.items():
        wers = {lang: 100 * word_error_rate([r["text"] for r in chosen[lang]], hyps[lang], language=lang).value for lang in chosen}
        per_language = "  ".join(f"{lang} {value:.1f}" for lang, value in wers.items())
        mean = sum(wers.values()) / len(wers)
        print(f"{name:30s} WER % {per_language}  mean {mean:.1f}   {wall:.1f} s ({seconds / wall:.1f}× real time)")
        print("    e.g. " + " | ".join(hyps[lang][0][:60] for lang in chosen))
    ratio = results["qwen-audio"][1] / results["whisper-base (faster-whisper)"][1]
    print(f"time ratio qwen-audio / whisper-base: {ratio:.2f} (target ≤ 2)")
    first = next(iter(waves.values()))[0]
    print(f"cold `qwen-audio transcribe` of a 5 s clip: {cold_transcribe(args.model, np.tile(first, 5)):.1f} s wall (target ≤ 5)")


if __name__ == "__main__":
    main()
