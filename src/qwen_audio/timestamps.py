"""Kept for compatibility: use :mod:`qwen_audio.formats.timestamps`."""
from qwen_audio.formats.timestamps import *  # noqa: F401,F403
