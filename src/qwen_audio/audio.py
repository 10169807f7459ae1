"""Audio front end: load any common file, mono 16 kHz, Whisper's log-mel, SpecAugment, VTLP.

The mel must match Whisper's bit for bit (within float error): the encoder weights were trained on
exactly that feature, so any drift here is a silent accuracy loss downstream.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar, Union

import av
import numpy as np
import soundfile as sf
import soxr
import torch
from transformers.audio_utils import hertz_to_mel, mel_filter_bank, mel_to_hertz

from qwen_audio.errors import (
    AudioDecodeError,
    AudioError,
    AudioFileNotFoundError,
    AudioTooLongError,
    ConfigError,
    EmptyAudioError,
    InvalidAudioError,
)
from qwen_audio.formats.spans import (  # noqa: F401  (the span arithmetic, re-exported)
    CHUNK_SECONDS,
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    AudioSpan,
    audio_span,
    min_audio_samples,
)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

N_FFT = 400
N_MELS = 80


# --------------------------------------------------------------------------- loading

MIN_SAMPLE_RATE = 2_000  # below this nothing in speech or music survives; almost surely a bug
MAX_SAMPLE_RATE = 384_000  # the highest rate common converters record at
MAX_CHANNELS = 64
_BLOCK_FRAMES = 65_536  # libsndfile reads this many frames at a time (64 channels: 16 MiB)

AudioSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO, np.ndarray, "torch.Tensor", tuple]


def load_audio(
    source: AudioSource,
    sr: int = SAMPLE_RATE,
    *,
    source_sr: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
    max_duration: float | None = None,
) -> np.ndarray:
    """Decode any common audio (or a video's audio track) to float32 mono at ``sr`` Hz.

    ``source`` is a path, encoded bytes, a binary file object, an array/tensor (then
    ``source_sr`` is required) or an ``(array, source_sr)`` tuple. ``offset``/``duration`` in
    seconds select a segment (as manifests do). ``max_duration`` refuses longer audio before it
    is decoded when the header tells the length, and stops decoding at the limit otherwise, so a
    small file that expands to hours costs no more than ``max_duration`` of audio.
    """
    _check_rate(sr, "target sample rate `sr`")
    if isinstance(source, tuple):
        # A tuple is one audio, never a batch: ("a.wav", "b.wav") used to decode a.wav alone.
        if len(source) != 2 or not isinstance(source[0], (np.ndarray, torch.Tensor)) or isinstance(source[1], bool) \
                or not isinstance(source[1], (int, float, np.integer)):
            kinds = ", ".join(type(item).__name__ for item in source)
            raise InvalidAudioError(f"an audio tuple is one audio, (samples array, sample_rate); got ({kinds}): "
                                    "pass a list for a batch")
        source, source_sr = source
    # Written so that NaN fails too: `nan > limit` is False, which would switch the limit off.
    if not (math.isfinite(offset) and offset >= 0) or (duration is not None and not (math.isfinite(duration) and duration > 0)):
        raise InvalidAudioError(f"offset must be ≥ 0 and duration > 0 (got {offset}, {duration})")
    if max_duration is not None and not (math.isfinite(max_duration) and max_duration > 0):
        raise InvalidAudioError(f"max_duration must be a finite number of seconds > 0, got {max_duration}")
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if source_sr is None:
            raise InvalidAudioError(
                "an array of samples needs its sample rate: pass source_sr=… or (array, sample_rate)"
            )
        _check_rate(source_sr, "source sample rate")
        samples, rate = _to_mono_float(_as_numpy(source)), int(source_sr)
        name = "array"
    else:
        samples, rate, name = _decode(source, lambda rate: _Budget.at(rate, offset, duration, max_duration))
    samples = _select_segment(samples, rate, offset, duration, name)
    if samples.size == 0:
        raise EmptyAudioError(f"{name}: the audio has no samples (zero length)")
    if not np.isfinite(samples).all():
        raise InvalidAudioError(f"{name}: the audio contains NaN or infinite samples")
    if max_duration is not None and samples.size / rate > max_duration:
        raise AudioTooLongError(
            f"{name}: audio is {samples.size / rate:.1f} s long; the limit is {max_duration:g} s"
        )
    if rate != sr:
        # soxr "HQ" is the quality/speed point Whisper-style pipelines use; VHQ costs 2× for no WER gain.
        samples = soxr.resample(samples, rate, sr, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def load_audios(
    sources: Sequence[AudioSource], sr: int = SAMPLE_RATE, *, num_workers: int | None = None, **kwargs: object
) -> list[np.ndarray]:
    """``load_audio`` over many sources in a thread pool, results in input order.

    libsndfile, FFmpeg and soxr all release the GIL, so threads decode and resample in parallel
    without the pickling cost of processes.
    """
    workers = num_workers or min(len(sources), os.cpu_count() or 1)
    if workers <= 1 or len(sources) <= 1:
        return [load_audio(s, sr, **kwargs) for s in sources]  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: load_audio(s, sr, **kwargs), sources))  # type: ignore[arg-type]


def _check_rate(rate: object, what: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) and not (
        isinstance(rate, float) and rate.is_integer()
    ):
        raise InvalidAudioError(f"{what} must be a whole number of Hz, got {rate!r}")
    if not MIN_SAMPLE_RATE <= int(rate) <= MAX_SAMPLE_RATE:
        raise InvalidAudioError(
            f"unsupported {what} {int(rate)} Hz: expected {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz"
        )


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().float().numpy()
    return np.asarray(array)


def _to_mono_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM → [-1, 1); 2-D → mono by averaging channels (as ffmpeg's ``-ac 1`` does)."""
    if samples.dtype.kind == "i":
        samples = samples.astype(np.float32) / float(-np.iinfo(samples.dtype).min)
    elif samples.dtype.kind == "u":
        half = float(np.iinfo(samples.dtype).max + 1) / 2
        samples = (samples.astype(np.float32) - half) / half
    elif samples.dtype.kind != "f":
        raise InvalidAudioError(f"audio samples must be numeric, got dtype {samples.dtype}")
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise InvalidAudioError(
            f"unsupported channel layout: expected (samples,) or (samples, channels), got shape {samples.shape}"
        )
    # soundfile's (frames, channels) is the norm; accept torchaudio's (channels, frames) when unambiguous.
    channel_axis = 1 if samples.shape[1] <= samples.shape[0] else 0
    channels = samples.shape[channel_axis]
    if channels == 0 or channels > MAX_CHANNELS:
        raise InvalidAudioError(
            f"unsupported channel layout: shape {samples.shape} has {channels} channels "
            f"(expected 1–{MAX_CHANNELS}, as (samples, channels))"
        )
    return samples.mean(axis=channel_axis, dtype=np.float32)


@dataclass(frozen=True)
class _Budget:
    """The frames of a file worth decoding, at the file's own rate: decoding ends quietly at
    ``stop`` (the end of the asked segment); audio running past ``limit`` is too long. Both are
    checked against the header's length before decoding and again while decoding, because a
    header may lie or say nothing (FLAC streams of unknown length, raw MP3)."""

    start: int
    stop: int | None
    limit: float | None
    max_duration: float | None

    @classmethod
    def at(cls, rate: int, offset: float, duration: float | None, max_duration: float | None) -> _Budget:
        start = int(round(offset * rate))
        stop = None if duration is None else start + int(round(duration * rate))
        return cls(start, stop, None if max_duration is None else start + max_duration * rate, max_duration)

    def check_length(self, frames: int | None, rate: int) -> None:
        """Refuse, before decoding, audio whose header says it is too long."""
        if frames is None or self.limit is None:
            return
        if self.stop is not None:
            frames = min(frames, self.stop)
        if frames > self.limit:
            raise AudioTooLongError(
                f"audio is {(frames - self.start) / rate:.1f} s long; the limit is {self.max_duration:g} s"
            )

    def collect(self, blocks: Iterator[np.ndarray]) -> np.ndarray:
        """Concatenate mono ``blocks`` up to ``stop``; refuse them once past ``limit``."""
        kept, decoded = [], 0
        for block in blocks:
            if self.stop is not None and decoded + block.size >= self.stop:
                kept.append(block[: self.stop - decoded])
                break
            if self.limit is not None and decoded + block.size > self.limit:
                raise AudioTooLongError(
                    f"audio runs past {self.max_duration:g} s (decoding stopped there); the limit is {self.max_duration:g} s"
                )
            kept.append(block)
            decoded += block.size
        return np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)


def _check_layout(rate: int, channels: int) -> None:
    """A file's rate and channel count, checked before a sample is decoded."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidAudioError(
            f"the file's sample rate {rate:,} Hz is not supported: expected {MIN_SAMPLE_RATE:,}–{MAX_SAMPLE_RATE:,} Hz"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidAudioError(f"the file has {channels} audio channels; at most {MAX_CHANNELS} are supported")


def _decode(source: AudioSource, budget_at: Callable[[int], _Budget]) -> tuple[np.ndarray, int, str]:
    """Try libsndfile first (fast, exact for wav/flac/ogg), then FFmpeg through PyAV."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        name = str(path)
        if not path.is_file():
            if path.exists():
                raise AudioDecodeError(f"{name}: is not a file")
            raise AudioFileNotFoundError(f"{name}: no such audio file")
        if path.stat().st_size == 0:
            raise EmptyAudioError(f"{name}: the file is empty (0 bytes)")
        opener: Callable[[], object] = lambda: str(path)  # noqa: E731
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = f"<{len(data)} bytes>"
        if not data:
            raise EmptyAudioError("the audio bytes are empty (0 bytes)")
        opener = lambda: io.BytesIO(data)  # noqa: E731
    elif hasattr(source, "read"):
        data = source.read()
        if isinstance(data, str):
            raise InvalidAudioError("the audio file object must be opened in binary mode ('rb')")
        return _decode(bytes(data), budget_at) if data else _raise_empty(getattr(source, "name", "<file object>"))
    else:
        raise InvalidAudioError(f"cannot read audio from a {type(source).__name__}")

    try:
        samples, rate = _decode_with_soundfile(opener(), budget_at)
        return samples, rate, name
    except AudioError as error:
        raise type(error)(f"{name}: {error}") from None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        pass  # not a format libsndfile knows (mp3 on old builds, m4a, opus in mp4, video): try FFmpeg
    try:
        samples, rate = _decode_with_av(opener(), budget_at)
    except AudioError as error:
        raise type(error)(f"{name}: {error}") from None
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as error:
        raise AudioDecodeError(
            f"{name}: cannot decode audio ({type(error).__name__}: {error}); "
            "is it a supported audio or video file (wav, flac, ogg, mp3, m4a, opus, mp4, …)?"
        ) from None
    return samples, rate, name


def _raise_empty(name: str) -> tuple[np.ndarray, int, str]:
    raise EmptyAudioError(f"{name}: the audio file object is empty (0 bytes)")


def _decode_with_soundfile(file: object, budget_at: Callable[[int], _Budget]) -> tuple[np.ndarray, int]:
    with sf.SoundFile(file) as audio:
        rate, channels = int(audio.samplerate), int(audio.channels)
        _check_layout(rate, channels)
        budget = budget_at(rate)
        budget.check_length(audio.frames if audio.frames < 2**62 else None, rate)  # 2**63 − 1: length unknown

        def blocks() -> Iterator[np.ndarray]:
            while len(block := audio.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)):
                yield block[:, 0] if channels == 1 else block.mean(axis=1, dtype=np.float32)

        return budget.collect(blocks()), rate


def _decode_with_av(file: object, budget_at: Callable[[int], _Budget]) -> tuple[np.ndarray, int]:
    with av.open(file, mode="r") as container:
        if not container.streams.audio:
            raise AudioDecodeError("the file has no audio stream")
        stream = container.streams.audio[0]
        context = stream.codec_context
        if context is None:  # FFmpeg found no decoder: e.g. a WAV header saying 0 bits per sample
            raise AudioDecodeError("the audio stream cannot be decoded (a broken header or an unsupported codec)")
        rate = context.sample_rate
        if not rate:
            raise AudioDecodeError("the audio stream has no sample rate")
        _check_layout(rate, context.channels)
        budget = budget_at(rate)
        known = stream.duration is not None and stream.time_base is not None
        budget.check_length(int(stream.duration * stream.time_base * rate) if known else None, rate)

        def blocks() -> Iterator[np.ndarray]:
            # Planar float at the native rate, mixed to mono frame by frame (memory: one channel);
            # soxr does the resampling, not swresample.
            to_float = av.AudioResampler(format="fltp")
            for frame in container.decode(stream):
                for converted in to_float.resample(frame):
                    yield converted.to_ndarray().mean(axis=0, dtype=np.float32)
            for converted in to_float.resample(None):
                yield converted.to_ndarray().mean(axis=0, dtype=np.float32)

        return budget.collect(blocks()), int(rate)


def _select_segment(
    samples: np.ndarray, rate: int, offset: float, duration: float | None, name: str
) -> np.ndarray:
    if offset == 0 and duration is None:
        return samples
    start = int(round(offset * rate))
    if start >= samples.size:
        raise EmptyAudioError(f"{name}: offset {offset:g} s is past the end ({samples.size / rate:.2f} s)")
    stop = samples.size if duration is None else start + int(round(duration * rate))
    return samples[start:stop]


def pad_or_trim(array: ArrayT, length: int = N_SAMPLES, *, axis: int = -1) -> ArrayT:
    """Zero-pad or cut ``array`` along ``axis`` to ``length`` (Whisper's 30 s window by default)."""
    size = array.shape[axis]
    if size > length:
        if isinstance(array, torch.Tensor):
            return array.narrow(axis, 0, length)
        return np.take(array, np.arange(length), axis=axis)
    if size < length:
        if isinstance(array, torch.Tensor):
            pad = [0, 0] * (array.dim() - 1 - (axis % array.dim())) + [0, length - size]
            return torch.nn.functional.pad(array, pad)
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, length - size)
        return np.pad(array, widths)
    return array


# --------------------------------------------------------------------------- log-mel


@functools.lru_cache(maxsize=8)
def mel_filters(device: str = "cpu", n_mels: int = N_MELS) -> torch.Tensor:
    """Slaney-normalised mel filter bank [n_mels, n_fft/2+1], the one Whisper ships (librosa's)."""
    bank = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(bank.T.astype(np.float32)).to(device)


@functools.lru_cache(maxsize=8)
def _hann_window(device: str) -> torch.Tensor:
    return torch.hann_window(N_FFT, device=device)


def log_mel_spectrogram(
    audio: np.ndarray | torch.Tensor, n_mels: int = N_MELS, *, device: str | torch.device | None = None
) -> torch.Tensor:
    """Whisper's log-mel: [n_mels, len//160] for 1-D audio, [batch, n_mels, len//160] for 2-D.

    Each batch row is floored at its own maximum − 8 (log10 units), exactly as a 1-D call would.
    """
    waveform = torch.as_tensor(audio, dtype=torch.float32)
    if device is not None:
        waveform = waveform.to(device)
    if waveform.dim() not in (1, 2):
        raise InvalidAudioError(f"log_mel_spectrogram takes 1-D or 2-D audio, got shape {tuple(waveform.shape)}")
    if waveform.shape[-1] < HOP_LENGTH:
        raise InvalidAudioError(f"audio of {waveform.shape[-1]} samples is too short for one mel frame")
    if waveform.dim() == 2:
        # Row by row: one 30 s STFT fits in cache, a batched one does not (≈2× faster on CPU).
        return torch.stack([log_mel_spectrogram(row, n_mels) for row in waveform])
    dev = str(waveform.device)
    stft = torch.stft(waveform, N_FFT, HOP_LENGTH, window=_hann_window(dev), return_complex=True)
    power = stft.abs().pow_(2)
    # Whisper drops the last (centre-padded) frame so that frames = samples // hop.
    log_spec = torch.matmul(mel_filters(dev, n_mels), power)[:, :-1].clamp_(min=1e-10).log10_()
    return torch.maximum(log_spec, log_spec.max() - 8.0).add_(4.0).div_(4.0)


@dataclass(frozen=True)
class MelBatch:
    """Encoder input for several audios: 30 s mels plus what is real in each."""

    features: torch.Tensor  # [batch, n_mels, 3000]
    num_samples: torch.Tensor  # [batch] long: real samples (≤ 30 s) of each audio
    mel_lengths: torch.Tensor  # [batch] long: real mel frames
    spans: tuple[AudioSpan, ...]

    @property
    def frame_mask(self) -> torch.Tensor:
        """[batch, 3000] bool, True on real mel frames."""
        frames = torch.arange(self.features.shape[-1], device=self.features.device)
        return frames[None, :] < self.mel_lengths[:, None].to(self.features.device)


def batch_log_mel(
    audios: Sequence[np.ndarray | torch.Tensor], *, device: str | torch.device | None = None
) -> MelBatch:
    """Pad each audio to 30 s (cutting longer ones, as the official processor does) and take mels."""
    if not audios:
        raise InvalidAudioError("batch_log_mel needs at least one audio")
    spans = tuple(audio_span(int(a.shape[-1])) for a in audios)
    padded = torch.stack([pad_or_trim(torch.as_tensor(a, dtype=torch.float32)) for a in audios])
    features = log_mel_spectrogram(padded, device=device)
    return MelBatch(
        features=features,
        num_samples=torch.tensor([s.num_samples for s in spans], dtype=torch.long),
        mel_lengths=torch.tensor([s.mel_len for s in spans], dtype=torch.long),
        spans=spans,
    )


# --------------------------------------------------------------------------- SpecAugment


@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment (Park et al., 2019) masks; defaults are the LibriSpeech-double-like policy."""

    freq_masks: int = 2
    max_freq_width: int = 27
    time_masks: int = 2
    max_time_width: int = 100
    max_time_ratio: float = 0.05  # a time mask never exceeds this share of the real frames

    def __post_init__(self) -> None:
        if min(self.freq_masks, self.max_freq_width, self.time_masks, self.max_time_width) < 0:
            raise ConfigError("SpecAugment counts and widths must be ≥ 0")
        if not 0.0 <= self.max_time_ratio <= 1.0:
            raise ConfigError("max_time_ratio must be in [0, 1]")


def spec_augment(
    mel: torch.Tensor,
    mel_length: int | None = None,
    config: SpecAugmentConfig = SpecAugmentConfig(),
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return a copy of ``mel`` [n_mels, frames] with frequency and time bands set to its mean.

    Only the first ``mel_length`` (real) frames are masked, so padding stays what the encoder
    expects; the mask value is the real region's mean, which keeps the input distribution centred.
    """
    n_mels, frames = mel.shape
    length = frames if mel_length is None else min(int(mel_length), frames)
    out = mel.clone()
    if length <= 0:
        return out
    fill = out[:, :length].mean()

    def draw(high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=generator)) if high > 0 else 0

    for _ in range(config.freq_masks):
        width = draw(min(config.max_freq_width, n_mels) + 1)
        start = draw(n_mels - width + 1)
        out[start : start + width, :length] = fill
    max_time = min(config.max_time_width, int(config.max_time_ratio * length))
    for _ in range(config.time_masks):
        width = draw(max_time + 1)
        start = draw(length - width + 1)
        out[:, start : start + width] = fill
    return out


# --------------------------------------------------------------------------- vocal tract length perturbation

WARP_KNEE = 0.8  # of the Nyquist frequency: above it the warp bends back so that Nyquist stays Nyquist


def warp_mel(mel: torch.Tensor, factor: float) -> torch.Tensor:
    """Return ``mel`` [n_mels, frames] (Whisper's log-mel) as a vocal tract ``factor`` times shorter
    would have said it: every frequency f below the knee moves to ``factor`` × f (VTLP, Jaitly & Hinton,
    2013; Kaldi's piecewise-linear VTLN warp), read off the log-mel by interpolating between bins.

    Why beside speed perturbation (``data.augment``): resampling moves formants, pitch and tempo together;
    speakers differ in formants at the same pitch and rate, which only a frequency warp imitates.
    """
    if not 0.5 <= factor <= 2.0:
        raise ConfigError(f"a vocal tract warp factor lies in [0.5, 2.0], got {factor}")
    n_mels = mel.shape[0]
    if factor == 1.0 or n_mels < 2:
        return mel.clone()
    nyquist = SAMPLE_RATE / 2
    edges = np.linspace(hertz_to_mel(0.0, "slaney"), hertz_to_mel(nyquist, "slaney"), n_mels + 2)
    centres = mel_to_hertz(edges[1:-1], "slaney")
    knee = WARP_KNEE * nyquist * min(1.0, 1.0 / factor)  # in the source's frequencies
    source = np.where(centres <= factor * knee, centres / factor,
                      knee + (centres - factor * knee) * (nyquist - knee) / (nyquist - factor * knee))
    position = (hertz_to_mel(source, "slaney") - edges[1]) / (edges[2] - edges[1])
    position = torch.from_numpy(np.clip(position, 0.0, n_mels - 1.0)).to(mel.dtype)
    low = position.floor().long().clamp(max=n_mels - 2)
    weight = (position - low.to(mel.dtype)).unsqueeze(1)
    return mel[low] * (1 - weight) + mel[low + 1] * weight

