"""Offline multi-task corpus generator: speech (espeak-ng), notes (fluidsynth), sounds, chat.

No machine here can download datasets, so the default model is trained on audio this package
synthesises, with exact labels (word timings, pitches, sources) and splits that share no
sentence, voice variant or sound source. Entry point: `make_corpus`.
"""

from qwen_audio.data.synth.config import (
    SIZES,
    SPLITS,
    SYSTEM_PACKAGES,
    CorpusConfig,
    CorpusSummary,
)
from qwen_audio.data.synth.corpus import make_corpus

__all__ = ["SIZES", "SPLITS", "SYSTEM_PACKAGES", "CorpusConfig", "CorpusSummary", "make_corpus"]
