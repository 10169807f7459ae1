"""OpenAI-compatible server and web UI over any :class:`~qwen_audio.infer.engine.Engine`.

Attributes load on first use, so ``qwen_audio.serve.cli`` (and the whole CLI) starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "qwen_audio.serve.app",
    "BackgroundServer": "qwen_audio.serve.runner",
    "serve": "qwen_audio.serve.runner",
    "ServerSettings": "qwen_audio.serve.settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qwen_audio.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
