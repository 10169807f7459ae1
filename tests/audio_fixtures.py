"""Signals and encoded files for the audio tests, generated on the fly (no binaries committed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def speech_like(seconds: float, sr: int = 16_000, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal: energy where speech has it, with silences."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 2
    noise = 0.01 * rng.standard_normal(t.size)
    return (0.3 * voice * syllables + noise).astype(np.float32)


def noise(seconds: float, sr: int = 16_000, seed: int = 1) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def tones(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    """Low tones that lossy codecs keep almost intact: (samples, channels)."""
    t = np.arange(int(seconds * sr)) / sr
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)
    right = 0.3 * np.sin(2 * np.pi * 660 * t) + 0.1 * np.sin(2 * np.pi * 300 * t)
    cols = [left, right][:channels] if channels <= 2 else [left] * channels
    return np.stack(cols, axis=1).astype(np.float32)


def encode_with_av(
    samples: np.ndarray, sr: int, path: Path, codec: str, *, with_video: bool = False
) -> Path:
    """Write (samples, channels) float audio with FFmpeg's encoder ``codec`` into ``path``."""
    channels = samples.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), mode="w") as container:
        if with_video:
            video = container.add_stream("mpeg4", rate=10)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        stream = container.add_stream(codec, rate=sr)
        stream.layout = layout
        frame_size = stream.codec_context.frame_size or 1024
        fmt = stream.codec_context.format.name
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=sr)
        planar = np.ascontiguousarray(samples.T)
        for start in range(0, planar.shape[1], frame_size):
            chunk = planar[:, start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = start
            frame.time_base = Fraction(1, sr)
            for out in resampler.resample(frame):
                container.mux(stream.encode(out))
        container.mux(stream.encode(None))
        if with_video:
            for i in range(int(samples.shape[0] / sr * 10)):
                image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20 % 255, np.uint8), format="rgb24")
                image.pts = i
                container.mux(video.encode(image))
            container.mux(video.encode(None))
    return path


def aligned_snr_db(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 4096) -> float:
    """SNR (dB) of ``decoded`` against ``reference`` after removing the codec's start delay."""
    n = min(reference.size, decoded.size) - max_lag
    size = 1 << int(np.ceil(np.log2(2 * (n + max_lag))))
    xcorr = np.fft.irfft(np.fft.rfft(decoded[: n + max_lag], size) * np.conj(np.fft.rfft(reference[:n], size)), size)
    lag = int(np.argmax(xcorr[:max_lag]))
    a, b = reference[:n], decoded[lag : lag + n]
    return float(10 * np.log10(np.sum(a**2) / max(float(np.sum((a - b) ** 2)), 1e-12)))
