"""Kept for compatibility: use :mod:`qwen_audio.formats.srwt`."""
from qwen_audio.formats.srwt import *  # noqa: F401,F403
