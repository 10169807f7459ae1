"""Reading checkpoints lazily: names and shapes first, tensors one at a time (memory-mapped)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from qwen_audio.checkpoints.ctranslate2 import is_ctranslate2_file
from qwen_audio.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("qwen.tiktoken", "tokenizer_config.json", "mel_filters.npz")
DEFAULT_SHARD_BYTES = 4 * 1024**3




class TensorSource:
    """Names, shapes and lazily read tensors of a checkpoint: safetensors dir/file, a torch file, a GGUF or a CTranslate2 file."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        self._stack = ExitStack()
        self._files: dict[str, Any] = {}  # key → open safe_open handle
        self._tensors: dict[str, Tensor] = {}  # torch-pickle checkpoints (openai-whisper .pt)
        self._lazy: dict[str, tuple[Any, Any]] = {}  # converted formats: name → (shape fn, read fn)
        self.extra: dict[str, Any] = {}
        if path.is_dir():
            if (path / INDEX_FILE).is_file():
                weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
                files = sorted(set(weight_map.values()))
            else:
                files = sorted(p.name for p in path.glob("*.safetensors"))
            if not files:
                raise CheckpointError(f"{path}: no *.safetensors weights (nor {INDEX_FILE}) in this directory")
            for name in files:
                self._open_safetensors(path / name)
        elif path.suffix == ".safetensors":
            self._open_safetensors(path)
        elif path.suffix == ".gguf":
            self._open_gguf(path)
        elif is_ctranslate2_file(path):
            self._open_ctranslate2(path)
        elif path.is_file():
            self._load_pickle(path)
        else:
            raise CheckpointError(f"{path}: no such checkpoint file or directory")

    def _open_safetensors(self, file: Path) -> None:
        if not file.is_file():
            raise CheckpointError(f"{file}: listed in the index but missing; the checkpoint download is incomplete")
        handle = self._stack.enter_context(safe_open(str(file), framework="pt"))
        for key in handle.keys():
            self._files[key] = handle

    def _open_gguf(self, file: Path) -> None:
        """A Llama GGUF, seen in transformers' Qwen2 names (``checkpoints.gguf``)."""
        from qwen_audio.checkpoints.gguf import GgufModel

        model = GgufModel(file)
        self._lazy = {name: (model.shape, model.get) for name in model.names}

    def _open_ctranslate2(self, file: Path) -> None:
        """A CTranslate2 Whisper, seen in openai-whisper's encoder names (``checkpoints.ctranslate2``)."""
        from qwen_audio.checkpoints.ctranslate2 import Ct2Model, read_third, whisper_encoder_names

        model = Ct2Model(file)
        self._stack.callback(model.close)
        names = whisper_encoder_names(model)

        def shape(name: str) -> tuple[int, ...]:
            variable, third = names[name]
            dims = model.variables[variable].shape
            return dims if third is None else (dims[0] // 3, *dims[1:])

        self._lazy = {name: (shape, lambda n, v=v: read_third(model, *v)) for name, v in names.items()}
        self.extra = {"dims": {"n_mels": model.variables["encoder/conv1/weight"].shape[1]}}

    def _load_pickle(self, file: Path) -> None:
        try:
            data = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a checkpoint we read"
            raise CheckpointError(f"{file}: cannot read as a torch checkpoint ({error})") from None
        if isinstance(data, dict) and "model_state_dict" in data:  # openai-whisper: {"dims", "model_state_dict"}
            self.extra = {k: v for k, v in data.items() if k != "model_state_dict"}
            data = data["model_state_dict"]
        if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
            raise CheckpointError(f"{file}: expected a state dict of tensors")
        self._tensors = data

    def keys(self) -> set[str]:
        return set(self._files) | set(self._tensors) | set(self._lazy)

    def shape(self, key: str) -> tuple[int, ...]:
        if key in self._lazy:
            return tuple(self._lazy[key][0](key))
        if key in self._tensors:
            return tuple(self._tensors[key].shape)
        return tuple(self._files[key].get_slice(key).get_shape())

    def get(self, key: str) -> Tensor:
        if key in self._lazy:
            return self._lazy[key][1](key)
        return self._tensors[key] if key in self._tensors else self._files[key].get_tensor(key)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
