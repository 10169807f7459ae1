"""One way to open a stored model, whatever its layout: this package's folder, an official
Qwen-Audio / Qwen-Audio-Chat folder (converted on load), or a shipped delta over the pinned
pretrained bases (joined once per machine). The API, training recipes and packaging all open models
here, so ``model.py`` stays below the checkpoint loaders (which build the model) instead of
dispatching to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from qwen_audio.configuration import is_official_checkpoint
from qwen_audio.errors import CheckpointError

# What a folder in this package's (transformers') layout keeps its weights in.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@contextmanager
def _quiet_loading() -> Iterator[None]:
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def load_model(path: str | Path, *, dtype: torch.dtype | None = None, inference: bool = False):  # noqa: ANN201
    """(QwenAudioForCausalLM, QwenAudioTokenizer) from any supported folder.

    ``dtype`` None keeps what the folder stores for an official one and loads ours in fp32.
    ``inference``: a folder in this package's layout opens as ``runtime.QwenAudioRuntime`` (same
    tensors and decoding, no transformers modelling code to import); official folders, which are
    converted on load, and other layouts still open as ``QwenAudioForCausalLM``.
    """
    from qwen_audio.checkpoints.bases import assemble, is_delta_model
    from qwen_audio.runtime import can_load_runtime, load_runtime
    from qwen_audio.tokenizer import QwenAudioTokenizer

    location = Path(path)
    if not (location / "config.json").is_file():
        raise CheckpointError(f"no model at {location}: expected a directory with config.json")
    if is_delta_model(location):  # trained tensors over pinned pretrained bases
        location = assemble(location)
    if is_official_checkpoint(location):
        from qwen_audio.checkpoints.official import load_official

        model = load_official(location, dtype=dtype)
    elif inference and can_load_runtime(location):
        model = load_runtime(location, dtype=dtype or torch.float32)
    else:
        from qwen_audio.model import QwenAudioForCausalLM

        if not any((location / name).is_file() for name in WEIGHT_FILES):
            raise CheckpointError(f"no weights in {location}: expected {' or '.join(WEIGHT_FILES[::2])} "
                                  "(or their .index.json when sharded)")
        with _quiet_loading():  # a sub-second load needs no "Loading weights" bar on the user's terminal
            model = QwenAudioForCausalLM.from_pretrained(location, dtype=dtype or torch.float32)
    return model, QwenAudioTokenizer.from_pretrained(str(location))
