"""Kept for compatibility: use :mod:`qwen_audio.formats.tags`."""
from qwen_audio.formats.tags import *  # noqa: F401,F403
