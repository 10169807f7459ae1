"""qwen-audio: Qwen-Audio and Qwen-Audio-Chat in PyTorch."""

from qwen_audio.errors import QwenAudioError

__version__ = "0.1.0"

__all__ = ["QwenAudioError", "__version__"]
