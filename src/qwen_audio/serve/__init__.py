"""OpenAI-compatible server and web UI over any :class:`~qwen_audio.infer.engine.Engine`."""

from qwen_audio.serve.app import create_app
from qwen_audio.serve.runner import BackgroundServer, serve
from qwen_audio.serve.settings import ServerSettings

__all__ = ["BackgroundServer", "ServerSettings", "create_app", "serve"]
