"""One exception hierarchy, so callers can catch everything this package raises in one place.

Every message should tell the user what to do next, not only what went wrong.
"""

from __future__ import annotations


class QwenAudioError(Exception):
    """Base class of every error raised on purpose by qwen-audio."""


class AudioError(QwenAudioError):
    """Something is wrong with an audio input."""


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The audio path does not exist."""


class AudioDecodeError(AudioError):
    """The audio exists but cannot be decoded (corrupt, unsupported codec, no audio stream)."""


class EmptyAudioError(AudioError):
    """The audio decoded to zero samples."""


class InvalidAudioError(AudioError, ValueError):
    """Decoded samples are unusable: NaN/inf values, bad shape, bad sample rate or layout."""


class AudioTooLongError(AudioError, ValueError):
    """The audio is longer than the operation allows."""


class TokenizerError(QwenAudioError):
    """A tokenizer file is missing or malformed, or text cannot be encoded as asked."""


class TagFormatError(QwenAudioError, ValueError):
    """A task-tag request is inconsistent (unknown task, language, style…)."""


class CheckpointError(QwenAudioError):
    """A checkpoint is missing, has unexpected/missing keys, or a tensor has the wrong shape."""


class Qwen2StructureError(QwenAudioError, RuntimeError):
    """The installed transformers no longer has a Qwen2 module attribute that ``llm.py`` reads
    (its decoding and long-context paths use the blocks' internals): a transformers upgrade."""


class ConfigError(QwenAudioError, ValueError):
    """A configuration value is invalid."""


class ManifestError(QwenAudioError, ValueError):
    """A data manifest line is malformed."""


class MetricUnavailableError(QwenAudioError):
    """A metric needs a dependency (Java, a jar, a tokenizer, a data file) that is not installed
    here; the figure is reported as unavailable rather than computed another way."""
