"""Signal helpers shared by the generators: noise colours, reverberation, gain, silence trimming.

Everything is float32 numpy at 16 kHz, seeded by the caller's ``numpy.random.Generator`` so an
item renders identically in any worker process.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f^k spectrum (white k=0, pink k=1, brown k=2)."""
    k = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
    spectrum = np.fft.rfft(rng.standard_normal(max(n, 2)))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / freqs ** (k / 2), n=max(n, 2))[:n]
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def add_noise(x: np.ndarray, snr_db: float, colour: str, rng: np.random.Generator,
              reference_rms: float | None = None) -> np.ndarray:
    """Add noise at ``snr_db`` below the signal's RMS (or below ``reference_rms``)."""
    level = (reference_rms if reference_rms is not None else rms(x)) / 10 ** (snr_db / 20)
    return x + level * coloured_noise(len(x), colour, rng)


def reverberate(x: np.ndarray, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room: noise under an exponential decay reaching -60 dB at rt60.

    The dry path is kept at time zero, so word timings measured on the dry signal stay valid
    (only a tail is added after each word).
    """
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    impulse = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    impulse /= np.sqrt(np.sum(impulse**2)) + 1e-12
    tail = np.fft.irfft(np.fft.rfft(x, len(x) + n) * np.fft.rfft(impulse, len(x) + n))[: len(x)]
    return ((1 - wet) * x + wet * tail * rms(x) / (rms(tail) + 1e-12)).astype(np.float32)


def normalise_peak(x: np.ndarray, peak: float) -> np.ndarray:
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (peak / top)).astype(np.float32) if top > 0 else x.astype(np.float32)


def active_bounds(x: np.ndarray, threshold_db: float = -40.0, frame: int = 80) -> tuple[int, int]:
    """First and last sample of the frames louder than ``threshold_db`` re the loudest frame.

    Used to trim the silence espeak-ng puts around each word, so word edges are exact.
    """
    n_frames = max(1, len(x) // frame)
    frames = x[: n_frames * frame].reshape(n_frames, frame).astype(np.float64)
    energy = np.sqrt(np.mean(frames**2, axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(energy / energy.max()) > threshold_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * frame), int(min(len(x), (loud[-1] + 1) * frame))


def fade(x: np.ndarray, seconds: float = 0.005) -> np.ndarray:
    """Short linear fades so cut edges do not click."""
    n = min(len(x) // 2, int(seconds * SAMPLE_RATE))
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)
