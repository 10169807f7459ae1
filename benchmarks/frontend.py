"""Front-end throughput: load + resample + log-mel of 32 × 30 s files, against peers, same run.

Prints audio-seconds per wall-second for each pipeline and the ratios the foundation issue sets
as targets (≥ 2× transformers' WhisperFeatureExtractor; mel within 1.25× of a bare stft+matmul).

    python benchmarks/frontend.py [--files 32] [--seconds 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from transformers import WhisperFeatureExtractor

from qwen_audio.audio import (
    HOP_LENGTH,
    N_FFT,
    SAMPLE_RATE,
    batch_log_mel,
    load_audio,
    load_audios,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches (filters, windows, FFT plans)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_files(folder: Path, count: int, seconds: float, rate: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.2 * np.sin(2 * np.pi * (200 + 10 * i) * t)[:, None] + 0.05 * rng.standard_normal((t.size, 2))
        path = folder / f"{i:02d}.wav"
        sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=44_100, help="sample rate of the files on disk")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    total_audio = args.files * args.seconds
    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE)
    try:
        import whisper  # openai-whisper, from the `bench` extra
    except ImportError:
        whisper = None

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp), args.files, args.seconds, args.rate)
        waves = [pad_or_trim(load_audio(p)) for p in paths]
        batch = torch.from_numpy(np.stack(waves))

        def sf_soxr_load() -> list[np.ndarray]:
            out = []
            for p in paths:
                data, rate = sf.read(p, dtype="float32")
                out.append(soxr.resample(data.mean(axis=1), rate, SAMPLE_RATE, quality="HQ"))
            return out

        floor_window = torch.hann_window(N_FFT)
        floor_filters = mel_filters()

        def mel_floor() -> torch.Tensor:
            stft = torch.stft(batch, N_FFT, HOP_LENGTH, window=floor_window, return_complex=True)
            return floor_filters @ stft[..., :-1].abs().pow(2)

        def mel_floor_rows() -> list[torch.Tensor]:
            return [floor_filters @ torch.stft(row, N_FFT, HOP_LENGTH, window=floor_window, return_complex=True)[..., :-1].abs().pow(2) for row in batch]

        rows: list[tuple[str, str, float]] = [
            ("pipeline", "qwen-audio load_audio + batch_log_mel", best_of(lambda: batch_log_mel(load_audios(paths)), args.repeats)),
            ("pipeline", "soundfile+soxr + transformers extractor", best_of(lambda: extractor(sf_soxr_load(), sampling_rate=SAMPLE_RATE, return_tensors="np"), args.repeats)),
            ("mel", "qwen-audio log_mel_spectrogram (batched)", best_of(lambda: log_mel_spectrogram(batch), args.repeats)),
            ("mel", "transformers WhisperFeatureExtractor", best_of(lambda: extractor(waves, sampling_rate=SAMPLE_RATE, return_tensors="np"), args.repeats)),
            ("mel", "bare batched torch.stft + filter matmul (floor)", best_of(mel_floor, args.repeats)),
            ("mel", "bare per-file torch.stft + filter matmul", best_of(mel_floor_rows, args.repeats)),
        ]
        if whisper is not None:
            rows.append(("pipeline", "openai-whisper load_audio (ffmpeg) + log_mel", best_of(lambda: [whisper.log_mel_spectrogram(pad_or_trim(whisper.load_audio(str(p)))) for p in paths], args.repeats)) if _has_ffmpeg() else ("pipeline", "openai-whisper (no ffmpeg binary: skipped)", float("nan")))
            rows.append(("mel", "openai-whisper log_mel_spectrogram (per file)", best_of(lambda: [whisper.log_mel_spectrogram(torch.from_numpy(w)) for w in waves], args.repeats)))

    print(f"{args.files} files × {args.seconds:g} s at {args.rate} Hz stereo; torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print(f"{'stage':9} {'implementation':50} {'seconds':>8} {'audio-s/s':>10}")
    for stage, name, seconds in rows:
        print(f"{stage:9} {name:50} {seconds:8.3f} {total_audio / seconds:10.0f}")
    times = {name: seconds for _, name, seconds in rows}
    ours_pipe = times["qwen-audio load_audio + batch_log_mel"]
    ours_mel = times["qwen-audio log_mel_spectrogram (batched)"]
    print()
    print(f"pipeline speed-up vs transformers extractor: {times['soundfile+soxr + transformers extractor'] / ours_pipe:.2f}× (target ≥ 2)")
    print(f"mel speed-up vs transformers extractor:      {times['transformers WhisperFeatureExtractor'] / ours_mel:.2f}×")
    print(f"mel time / bare batched stft+matmul floor:   {ours_mel / times['bare batched torch.stft + filter matmul (floor)']:.2f}× (target ≤ 1.25)")
    print(f"mel time / bare per-file stft+matmul:        {ours_mel / times['bare per-file torch.stft + filter matmul']:.2f}×")
    if whisper is not None:
        print(f"mel speed-up vs openai-whisper (per file):   {times['openai-whisper log_mel_spectrogram (per file)'] / ours_mel:.2f}×")
        pipe = times.get("openai-whisper load_audio (ffmpeg) + log_mel", float("nan"))
        print(f"pipeline speed-up vs openai-whisper:         {pipe / ours_pipe:.2f}×")


def _has_ffmpeg() -> bool:
    import shutil

    return shutil.which("ffmpeg") is not None


if __name__ == "__main__":
    main()
