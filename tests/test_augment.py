"""data/augment.py: seeded speed, room and noise on training audio; times stay where they were."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_audio.data.augment import WaveAugmentConfig, augment_wave
from qwen_audio.errors import ConfigError


def voice(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


ALWAYS = WaveAugmentConfig(sources=("s",), speed=(1.2, 1.2), speed_p=1.0, reverb_p=1.0, noise_p=1.0)


def test_the_same_seed_draws_the_same_audio_and_another_seed_other_audio() -> None:
    config = WaveAugmentConfig(sources=("s",))
    a, b, c = (augment_wave(voice(), config, seed, timed=False) for seed in (7, 7, 8))
    assert np.array_equal(a, b) and not (a.shape == c.shape and np.allclose(a, c))


def test_speed_shortens_untimed_audio_and_never_moves_timed_audio() -> None:
    x = voice(2.0)
    faster = augment_wave(x, ALWAYS, 1, timed=False)
    assert abs(faster.size - x.size / 1.2) <= 2
    assert augment_wave(x, ALWAYS, 1, timed=True).size == x.size


def test_speed_raises_the_pitch() -> None:
    t = np.arange(16_000) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 400 * t)).astype(np.float32)
    only_speed = WaveAugmentConfig(sources=("s",), speed=(1.25, 1.25), speed_p=1.0, reverb_p=0.0, noise_p=0.0)
    out = augment_wave(tone, only_speed, 0, timed=False)
    peak = np.argmax(np.abs(np.fft.rfft(out))) * 16_000 / out.size
    assert abs(peak - 500) < 5


def test_output_is_finite_float32_within_the_peak_range() -> None:
    out = augment_wave(voice(), ALWAYS, 3, timed=False)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    assert ALWAYS.peak[0] - 1e-6 <= np.max(np.abs(out)) <= ALWAYS.peak[1] + 1e-6


def test_silence_and_empty_audio_pass_through() -> None:
    assert augment_wave(np.zeros(100, np.float32), ALWAYS, 0, timed=False).size == 100
    assert augment_wave(np.zeros(0, np.float32), ALWAYS, 0, timed=False).size == 0


@pytest.mark.parametrize("bad", [dict(sources=()), dict(sources=("s",), speed=(1.1, 0.9)),
                                 dict(sources=("s",), speed=(0.2, 1.0)), dict(sources=("s",), noise_p=1.5),
                                 dict(sources=("s",), peak=(0.5, 1.5)), dict(sources=("s",), warp=(0.5, 1.0)),
                                 dict(sources=("s",), warp=(1.1, 0.9)), dict(sources=("s",), warp_p=-0.1)])
def test_bad_settings_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError):
        WaveAugmentConfig(**bad)


def test_warp_factor_is_drawn_from_its_range_as_often_as_asked_and_seeded() -> None:
    from qwen_audio.data.augment import warp_factor

    config = WaveAugmentConfig(sources=("s",), warp=(0.9, 1.2), warp_p=0.5)
    draws = [warp_factor(config, seed) for seed in range(400)]
    said = [d for d in draws if d is not None]
    assert 150 < len(said) < 250 and all(0.9 <= d <= 1.2 for d in said)
    assert draws == [warp_factor(config, seed) for seed in range(400)]
    assert all(warp_factor(WaveAugmentConfig(sources=("s",)), seed) is None for seed in range(50))  # off by default
