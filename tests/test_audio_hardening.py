"""Malicious audio: headers that lie, decompression bombs, absurd rates and layouts. Each file is
a few bytes built here; each must fail with a named error, fast, and without decoding the bomb."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from qwen_audio.audio import load_audio
from qwen_audio.errors import AudioDecodeError, AudioTooLongError, InvalidAudioError

RATE = 8_000
MINUTES = 10  # of silence: 4.8 M samples, 19 MB as float32, 14 kB as FLAC


def wav_header(rate: int, channels: int, bits: int, data_bytes: int) -> bytes:
    """A PCM WAV header saying whatever it is told to."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", data_bytes))


def lying_wav(rate: int, channels: int = 1, bits: int = 16, frames: int = 1000) -> bytes:
    data = bytes(frames * channels * max(bits, 8) // 8)
    return wav_header(rate, channels, bits, len(data)) + data


@pytest.fixture(scope="module")
def silent_flac() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(RATE * 60 * MINUTES, np.int16), RATE, format="FLAC")
    return buffer.getvalue()


def with_total_samples(flac: bytes, total: int) -> bytes:
    """``flac`` whose STREAMINFO claims ``total`` samples (0: unknown), MD5 cleared to match."""
    data = bytearray(flac)
    info = data.index(b"fLaC") + 8  # after the magic and the metadata block header
    word = int.from_bytes(data[info + 10 : info + 18], "big")
    data[info + 10 : info + 18] = ((word & ~((1 << 36) - 1)) | total).to_bytes(8, "big")
    data[info + 18 : info + 34] = bytes(16)
    return bytes(data)


def peak_memory_and_time(call) -> tuple[float, float]:
    """Python-visible peak allocation (numpy arrays included) in MB, and seconds."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        call()
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    return peak, elapsed


def test_header_claiming_hours_is_refused_before_decoding(silent_flac: bytes) -> None:
    bomb = with_total_samples(silent_flac, RATE * 3600 * 10)  # "10 hours"

    def load() -> None:
        with pytest.raises(AudioTooLongError, match="36000.0 s long; the limit is 30 s"):
            load_audio(bomb, max_duration=30)

    peak, elapsed = peak_memory_and_time(load)
    assert peak < 2 and elapsed < 1


def test_stream_of_unknown_length_stops_decoding_at_the_limit(silent_flac: bytes) -> None:
    bomb = with_total_samples(silent_flac, 0)  # FLAC allows "length unknown": only decoding can tell

    def load() -> None:
        with pytest.raises(AudioTooLongError, match="decoding stopped there"):
            load_audio(bomb, max_duration=1)

    peak, elapsed = peak_memory_and_time(load)
    assert peak < 2, f"{peak:.1f} MB: the whole file was decoded"  # all of it: ≥ 19 MB
    assert elapsed < 1


def test_a_segment_decodes_only_up_to_its_end_and_equals_the_full_decode(silent_flac: bytes) -> None:
    clip = np.sin(np.arange(RATE * 3) / 7).astype(np.float32) * 0.5
    buffer = io.BytesIO()
    sf.write(buffer, clip, RATE, format="FLAC", subtype="PCM_16")
    full = load_audio(buffer.getvalue(), sr=RATE)
    part = load_audio(buffer.getvalue(), sr=RATE, offset=1.0, duration=1.0, max_duration=1.5)
    np.testing.assert_array_equal(part, full[RATE : 2 * RATE])
    # a short segment of a long file is within the limit, however long the file
    assert load_audio(silent_flac, sr=RATE, duration=0.5, max_duration=1).size == RATE // 2


@pytest.mark.parametrize("rate", [1, 500, 1_999, 400_000, 2_000_000])
def test_absurd_sample_rates_in_a_file_header_are_refused(rate: int) -> None:
    # 1 Hz made a 2 kB WAV into 1,000 s of audio, resampled ×16,000
    with pytest.raises(InvalidAudioError, match=f"sample rate {rate:,} Hz is not supported"):
        load_audio(lying_wav(rate))


def test_too_many_channels_is_named_not_an_ffmpeg_errno() -> None:
    with pytest.raises(InvalidAudioError, match="65 audio channels; at most 64"):
        load_audio(lying_wav(16_000, channels=65))


def test_wav_with_zero_bits_per_sample_is_a_decode_error() -> None:
    with pytest.raises(AudioDecodeError, match="cannot be decoded"):
        load_audio(lying_wav(16_000, bits=0))


@pytest.mark.parametrize("limit", [float("nan"), float("inf"), 0.0, -1.0])
def test_a_duration_limit_must_be_finite_and_positive(limit: float) -> None:
    # NaN switched the limit off (`length > nan` is False): a 31-minute upload was accepted
    with pytest.raises(InvalidAudioError, match="max_duration"):
        load_audio(lying_wav(16_000), max_duration=limit)


@pytest.mark.parametrize(
    "source",
    [("a.wav", "b.wav"), (np.zeros(160, np.float32), 16_000, 1), (np.zeros(160, np.float32), "16000"),
     (np.zeros(160, np.float32), True), (np.zeros(160, np.float32), np.zeros(160, np.float32)), ()],
    ids=["two-paths", "three-items", "rate-as-text", "rate-as-bool", "two-arrays", "empty"],
)
def test_a_tuple_is_one_audio_and_anything_else_says_pass_a_list(source: tuple) -> None:
    with pytest.raises(InvalidAudioError, match="pass a list for a batch"):
        load_audio(source)


def test_a_samples_and_rate_tuple_is_read_at_its_rate() -> None:
    assert load_audio((np.ones(800, np.float32) * 0.1, 8_000.0)).size == 1_600
