"""audio.py: loading every format, Whisper-exact mels, span arithmetic, SpecAugment, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperFeatureExtractor

from qwen_audio import audio
from qwen_audio.audio import (
    N_SAMPLES,
    SpecAugmentConfig,
    audio_span,
    batch_log_mel,
    load_audio,
    log_mel_spectrogram,
    pad_or_trim,
    spec_augment,
)
from qwen_audio.errors import (
    AudioDecodeError,
    AudioError,
    AudioFileNotFoundError,
    AudioTooLongError,
    ConfigError,
    EmptyAudioError,
    InvalidAudioError,
    QwenAudioError,
)
from tests.audio_fixtures import aligned_snr_db, encode_with_av, noise, speech_like, tones


@pytest.fixture(scope="module")
def extractor() -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor(feature_size=80, sampling_rate=16_000)


# ----------------------------------------------------------------------------- span arithmetic


@pytest.mark.parametrize(
    ("samples", "mel", "conv", "pooled", "tokens"),
    [
        (480_000, 3000, 1500, 750, 752),  # exactly 30 s: the official 750 frames + bos/eos
        (960_000, 3000, 1500, 750, 752),  # longer audio is capped at 30 s
        (16_000, 100, 50, 25, 27),  # 1 s → 25 frames of 40 ms
        (16_160, 101, 51, 25, 27),  # odd mel length: conv rounds up, pooling rounds down
        (480, 3, 2, 1, 3),  # the shortest audio that yields a frame
    ],
)
def test_audio_span_matches_the_spec(samples: int, mel: int, conv: int, pooled: int, tokens: int) -> None:
    span = audio_span(samples)
    assert (span.mel_len, span.conv_len, span.pooled_len, span.span_tokens) == (mel, conv, pooled, tokens)
    assert span.num_samples == min(samples, N_SAMPLES)


def test_audio_span_refuses_audio_too_short_for_one_frame() -> None:
    with pytest.raises(ValueError, match="too short"):
        audio_span(479)
    with pytest.raises(ValueError):
        audio_span(0)


def test_audio_span_long_window_cap_is_configurable() -> None:
    assert audio_span(960_000, max_samples=960_000).pooled_len == 1500


# ----------------------------------------------------------------------------- mel parity


@pytest.mark.parametrize("seconds", [0.37, 1.0, 7.3, 30.0, 41.5])
@pytest.mark.parametrize("signal", [speech_like, noise])
def test_log_mel_matches_transformers_whisper_extractor(extractor, signal, seconds: float) -> None:
    wave = signal(seconds)
    expected = extractor(wave, sampling_rate=16_000, return_tensors="np").input_features[0]
    ours = log_mel_spectrogram(pad_or_trim(wave)).numpy()
    assert ours.shape == expected.shape == (80, 3000)
    assert np.abs(ours - expected).max() <= 1e-4


def test_batched_log_mel_equals_one_by_one() -> None:
    waves = [pad_or_trim(speech_like(s, seed=i)) for i, s in enumerate([2.0, 5.5, 30.0])]
    batch = log_mel_spectrogram(np.stack(waves))
    for row, wave in zip(batch, waves):
        torch.testing.assert_close(row, log_mel_spectrogram(wave), atol=1e-5, rtol=0)


def test_log_mel_unpadded_frames_are_samples_over_hop() -> None:
    assert log_mel_spectrogram(noise(1.234)).shape == (80, int(1.234 * 16_000) // 160)


def test_batch_log_mel_pads_to_30_s_and_reports_real_lengths() -> None:
    waves = [speech_like(1.0), noise(3.0), speech_like(35.0)]
    batch = batch_log_mel(waves)
    assert batch.features.shape == (3, 80, 3000)
    assert batch.mel_lengths.tolist() == [100, 300, 3000]
    assert batch.num_samples.tolist() == [16_000, 48_000, 480_000]
    assert [s.span_tokens for s in batch.spans] == [27, 77, 752]
    mask = batch.frame_mask
    assert mask.shape == (3, 3000) and mask.sum(dim=1).tolist() == [100, 300, 3000]


def test_pad_or_trim_numpy_and_torch() -> None:
    assert pad_or_trim(np.ones(10), 4).shape == (4,)
    padded = pad_or_trim(np.ones((2, 3)), 5)
    assert padded.shape == (2, 5) and padded[:, 3:].sum() == 0
    assert pad_or_trim(torch.ones(2, 3), 5, axis=0).shape == (5, 3)
    assert pad_or_trim(torch.ones(7), 7).shape == (7,)


# ----------------------------------------------------------------------------- loading formats


@pytest.fixture(scope="module")
def stereo_44k() -> np.ndarray:
    return tones(1.5, 44_100, channels=2)


@pytest.fixture(scope="module")
def reference_16k(stereo_44k: np.ndarray) -> np.ndarray:
    return load_audio(stereo_44k, source_sr=44_100)


def test_array_input_mixes_to_mono_and_resamples(stereo_44k, reference_16k) -> None:
    assert reference_16k.dtype == np.float32 and reference_16k.ndim == 1
    assert abs(reference_16k.size - 1.5 * 16_000) <= 1
    # The mix is the mean of both channels: a 440 Hz + 660 Hz… signal, peak ≈ ½ of the sum.
    direct = load_audio(stereo_44k.mean(axis=1), source_sr=44_100)
    np.testing.assert_allclose(reference_16k, direct, atol=1e-6)
    # torchaudio's (channels, samples) layout gives the same result.
    np.testing.assert_allclose(load_audio(torch.from_numpy(stereo_44k.T.copy()), source_sr=44_100), direct, atol=1e-6)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_soundfile_formats_decode_like_the_original(tmp_path: Path, stereo_44k, reference_16k, fmt: str) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, stereo_44k, 44_100, format=fmt)
    decoded = load_audio(path)
    assert abs(decoded.size - reference_16k.size) <= 1
    # WAV/FLAC at 16-bit are near-exact; Vorbis is lossy.
    assert aligned_snr_db(reference_16k, decoded) > (40 if fmt != "OGG" else 15)


@pytest.mark.parametrize(
    ("suffix", "codec", "video"),
    [("mp3", "libmp3lame", False), ("m4a", "aac", False), ("opus", "libopus", False), ("mp4", "aac", True)],
)
def test_ffmpeg_formats_decode_like_the_original(
    tmp_path: Path, stereo_44k, reference_16k, suffix: str, codec: str, video: bool
) -> None:
    sr = 48_000 if codec == "libopus" else 44_100
    source = stereo_44k if sr == 44_100 else tones(1.5, sr, channels=2)
    reference = reference_16k if sr == 44_100 else load_audio(source, source_sr=sr)
    path = encode_with_av(source, sr, tmp_path / f"x.{suffix}", codec, with_video=video)
    decoded = load_audio(path)
    assert abs(decoded.size - reference.size) < 0.1 * 16_000  # codecs add at most a frame or two
    assert aligned_snr_db(reference, decoded) > 15


def test_bytes_and_file_objects(tmp_path: Path, stereo_44k, reference_16k) -> None:
    path = tmp_path / "x.mp3"
    encode_with_av(stereo_44k, 44_100, path, "libmp3lame")
    from_path = load_audio(path)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), from_path)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(load_audio(f), from_path)
    buffer = io.BytesIO()
    sf.write(buffer, stereo_44k, 44_100, format="FLAC")
    assert aligned_snr_db(reference_16k, load_audio(buffer.getvalue())) > 40


def test_offset_and_duration_select_a_segment() -> None:
    wave = np.arange(16_000, dtype=np.float32) / 16_000
    seg = load_audio(wave, source_sr=16_000, offset=0.25, duration=0.5)
    assert seg.size == 8000 and seg[0] == pytest.approx(0.25)


def test_integer_pcm_is_scaled() -> None:
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    np.testing.assert_allclose(load_audio(pcm, source_sr=16_000), [0, 0.5, -1, 32767 / 32768])


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioFileNotFoundError, match="no such audio file"):
        load_audio(tmp_path / "nope.wav")


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.mp3"
    path.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioDecodeError, match="cannot decode"):
        load_audio(path)


def test_truncated_wav(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    sf.write(path, noise(1.0), 16_000)
    path.write_bytes(path.read_bytes()[:30])  # header cut mid-way
    with pytest.raises(AudioError):
        load_audio(path)


def test_video_without_audio_track(tmp_path: Path) -> None:
    import av

    path = tmp_path / "silent.mp4"
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        load_audio(path)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b""),  # 0-byte file
        lambda p: sf.write(p, np.zeros(0, np.float32), 16_000),  # valid header, no samples
    ],
)
def test_empty_audio(tmp_path: Path, make) -> None:
    path = tmp_path / "empty.wav"
    make(path)
    with pytest.raises(EmptyAudioError):
        load_audio(path)


def test_empty_bytes_and_array() -> None:
    with pytest.raises(EmptyAudioError):
        load_audio(b"")
    with pytest.raises(EmptyAudioError):
        load_audio(np.zeros(0, np.float32), source_sr=16_000)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(bad: float) -> None:
    wave = noise(0.1)
    wave[5] = bad
    with pytest.raises(InvalidAudioError, match="NaN or infinite"):
        load_audio(wave, source_sr=16_000)


@pytest.mark.parametrize("rate", [0, -16_000, 100, 10_000_000, 16_000.5, None])
def test_unsupported_sample_rates(rate) -> None:
    with pytest.raises(InvalidAudioError):
        load_audio(noise(0.1), source_sr=rate)


def test_unsupported_target_rate() -> None:
    with pytest.raises(InvalidAudioError):
        load_audio(noise(0.1), sr=50, source_sr=16_000)


@pytest.mark.parametrize("shape", [(2, 3, 400), (400, 400)])
def test_unsupported_channel_layouts(shape) -> None:
    with pytest.raises(InvalidAudioError, match="channel layout"):
        load_audio(np.zeros(shape, np.float32), source_sr=16_000)


def test_too_long_audio() -> None:
    with pytest.raises(AudioTooLongError, match="limit is 1 s"):
        load_audio(noise(2.0), source_sr=16_000, max_duration=1)


def test_unreadable_source_types() -> None:
    with pytest.raises(InvalidAudioError):
        load_audio(12345)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match="binary mode"):
        load_audio(io.StringIO("text"))


def test_errors_share_one_base_class() -> None:
    for error in (AudioFileNotFoundError, AudioDecodeError, EmptyAudioError, InvalidAudioError, AudioTooLongError):
        assert issubclass(error, QwenAudioError)


def test_mel_of_too_short_audio_is_an_error() -> None:
    with pytest.raises(InvalidAudioError):
        log_mel_spectrogram(np.zeros(10, np.float32))


# ----------------------------------------------------------------------------- SpecAugment


def test_spec_augment_is_seeded_and_masks_only_real_frames() -> None:
    mel = log_mel_spectrogram(pad_or_trim(speech_like(10.0)))
    config = SpecAugmentConfig(freq_masks=2, max_freq_width=20, time_masks=3, max_time_width=80, max_time_ratio=0.1)
    a = spec_augment(mel, 1000, config, generator=torch.Generator().manual_seed(3))
    b = spec_augment(mel, 1000, config, generator=torch.Generator().manual_seed(3))
    c = spec_augment(mel, 1000, config, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a[:, 1000:], mel[:, 1000:])  # padding untouched
    changed = (a != mel)[:, :1000]
    assert changed.any()
    # Each time mask covers at most 80 frames and each frequency mask at most 20 bins.
    masked_cols = changed.all(dim=0).sum().item()
    assert masked_cols <= 3 * 80
    assert torch.equal(mel, log_mel_spectrogram(pad_or_trim(speech_like(10.0))))  # input not modified


def test_spec_augment_config_validates() -> None:
    with pytest.raises(ValueError):
        SpecAugmentConfig(freq_masks=-1)
    with pytest.raises(ValueError):
        SpecAugmentConfig(max_time_ratio=2.0)


@pytest.mark.parametrize("hertz", [1000.0, 2500.0])
@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_vocal_tract_warp_moves_a_tone_where_the_factor_says(hertz: float, factor: float) -> None:
    from qwen_audio.audio import warp_mel

    t = np.arange(16_000) / 16_000
    tone = lambda f: log_mel_spectrogram(pad_or_trim((0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)))  # noqa: E731
    peak = lambda mel: int(mel[:, 10:90].mean(1).argmax())  # noqa: E731
    warped = warp_mel(tone(hertz), factor)
    assert peak(tone(hertz)) != peak(tone(hertz * factor))  # the move is big enough to see
    assert abs(peak(warped) - peak(tone(hertz * factor))) <= 1
    assert warped.shape == (80, 3000) and torch.isfinite(warped).all()
    torch.testing.assert_close(warped[:, 200:], tone(hertz)[:, 200:])  # padding's columns stay constant
    torch.testing.assert_close(warp_mel(tone(hertz), 1.0), tone(hertz))
    with pytest.raises(ConfigError):
        warp_mel(tone(hertz), 3.0)


def test_module_exposes_the_stable_interface() -> None:
    for name in ("load_audio", "pad_or_trim", "log_mel_spectrogram"):
        assert callable(getattr(audio, name))


def test_load_audios_keeps_order_and_propagates_errors(tmp_path: Path) -> None:
    from qwen_audio.audio import load_audios

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], np.full(1600 * (i + 1), 0.1 * (i + 1), np.float32), 16_000)
    loaded = load_audios(paths, num_workers=3)
    assert [a.size for a in loaded] == [1600, 3200, 4800, 6400]
    assert [round(float(a[0]), 3) for a in loaded] == [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(AudioFileNotFoundError):
        load_audios([paths[0], tmp_path / "missing.wav"], num_workers=2)
