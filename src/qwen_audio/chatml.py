"""Kept for compatibility: use :mod:`qwen_audio.formats.chatml`."""
from qwen_audio.formats.chatml import *  # noqa: F401,F403
