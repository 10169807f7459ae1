"""CTranslate2 ``model.bin`` (binary version 6) → Whisper encoder tensors in openai-whisper's names.

The registry ships Whisper only in CTranslate2's format (see shared notes), so the encoder is read
from it. The reader is our own because the ``ctranslate2`` package can write this format but has no
API that returns the stored variables; the layout is small and fixed (``ModelSpec._serialize``):

    u32 version, string spec name, u32 revision, u32 variable count,
    per variable: string name, u8 rank, u32 × rank dims, u8 dtype id, u32 byte count, raw bytes;
    u32 alias count, per alias: string alias, string target.

Strings are a u16 length (with the trailing NUL) then UTF-8 bytes and a NUL. Arrays are views into
one memory map, so listing names and shapes reads nothing but the headers.

CTranslate2's Whisper layout (``WhisperSpec``): ``encoder/conv1|conv2``, ``encoder/position_encodings``,
``encoder/layer_N/self_attention/linear_0`` holds q, k, v stacked (k's bias slot is zeros: Whisper's
key has no bias), ``linear_1`` the output, ``encoder/layer_N/ffn/linear_0|1`` the MLP, layer norms as
``gamma``/``beta``, ``encoder/layer_norm`` the final norm (openai-whisper's ``ln_post``).
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qwen_audio.errors import CheckpointError

SUPPORTED_VERSION = 6
# CTranslate2's DataType enum order (include/ctranslate2/types.h).
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # id 5 = bfloat16, mapped below


@dataclass(frozen=True)
class Ct2Variable:
    shape: tuple[int, ...]
    dtype_id: int
    offset: int
    nbytes: int


def is_ctranslate2_file(path: str | Path) -> bool:
    """True when the file starts like a CTranslate2 model (version 1–6, a short spec name)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError:
        return False
    if len(head) < 6:
        return False
    version, name_length = struct.unpack("<IH", head)
    return 1 <= version <= SUPPORTED_VERSION and 0 < name_length < 256


class Ct2Model:
    """The variables of a CTranslate2 ``model.bin``, read lazily from a memory map."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            try:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError as error:  # an empty file
                raise CheckpointError(f"{self.path}: empty file, not a CTranslate2 model ({error})") from None
        self.variables: dict[str, Ct2Variable] = {}
        self.aliases: dict[str, str] = {}
        try:
            self._parse()
        except (struct.error, UnicodeDecodeError) as error:
            raise CheckpointError(f"{self.path}: truncated or corrupt CTranslate2 model ({error})") from None

    def _parse(self) -> None:
        data, pos = self._map, 0

        def read(fmt: str) -> tuple:
            nonlocal pos
            values = struct.unpack_from("<" + fmt, data, pos)
            pos += struct.calcsize("<" + fmt)
            return values

        def string() -> str:
            nonlocal pos
            (length,) = read("H")
            if pos + length > len(data):  # slicing past the end would quietly return a shorter name
                raise struct.error(f"a string of {length} bytes runs past the file's end")
            text = bytes(data[pos : pos + length - 1]).decode("utf-8")
            pos += length
            return text

        (self.version,) = read("I")
        if self.version != SUPPORTED_VERSION:
            raise CheckpointError(
                f"{self.path}: CTranslate2 binary version {self.version}; this reader supports version {SUPPORTED_VERSION}"
            )
        self.spec = string()
        (self.revision,) = read("I")
        (count,) = read("I")
        for _ in range(count):
            name = string()
            (rank,) = read("B")
            shape = read("I" * rank)
            dtype_id, nbytes = read("B")[0], read("I")[0]
            if dtype_id >= len(_DTYPES) or pos + nbytes > len(data):
                raise CheckpointError(f"{self.path}: variable {name!r} has dtype id {dtype_id} or runs past the file's end")
            self.variables[name] = Ct2Variable(tuple(shape), dtype_id, pos, nbytes)
            pos += nbytes
        (n_aliases,) = read("I")
        for _ in range(n_aliases):
            alias = string()
            self.aliases[alias] = string()

    def array(self, name: str) -> np.ndarray:
        """The stored array (a read-only view for numeric dtypes; bfloat16 is widened to float32)."""
        variable = self.variables[self.aliases.get(name, name)]
        raw = np.frombuffer(self._map, dtype=np.uint8, count=variable.nbytes, offset=variable.offset)
        if variable.dtype_id == 5:  # bfloat16: the high half of a float32
            return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(variable.shape)
        return raw.view(_DTYPES[variable.dtype_id]).reshape(variable.shape)

    def tensor(self, name: str) -> Tensor:
        return torch.from_numpy(np.array(self.array(name)))  # copied: the map closes with the model

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # a view is still alive (e.g. in an error's traceback): the map closes with it
            pass


_LAYER = re.compile(r"encoder/layer_(\d+)/(.+)")
_LAYER_NAMES = {  # CTranslate2 suffix → openai-whisper suffix (q/k/v of linear_0 handled apart)
    "self_attention/linear_1/weight": "attn.out.weight",
    "self_attention/linear_1/bias": "attn.out.bias",
    "self_attention/layer_norm/gamma": "attn_ln.weight",
    "self_attention/layer_norm/beta": "attn_ln.bias",
    "ffn/linear_0/weight": "mlp.0.weight",
    "ffn/linear_0/bias": "mlp.0.bias",
    "ffn/linear_1/weight": "mlp.2.weight",
    "ffn/linear_1/bias": "mlp.2.bias",
    "ffn/layer_norm/gamma": "mlp_ln.weight",
    "ffn/layer_norm/beta": "mlp_ln.bias",
}
_TOP_NAMES = {
    "encoder/conv1/weight": "conv1.weight", "encoder/conv1/bias": "conv1.bias",
    "encoder/conv2/weight": "conv2.weight", "encoder/conv2/bias": "conv2.bias",
    "encoder/position_encodings/encodings": "positional_embedding",
    "encoder/layer_norm/gamma": "ln_post.weight", "encoder/layer_norm/beta": "ln_post.bias",
}


def whisper_encoder_names(model: Ct2Model) -> dict[str, tuple[str, int | None]]:
    """openai-whisper encoder name (``encoder.blocks.0.attn.query.weight``) → (CTranslate2 variable, q/k/v third)."""
    if not model.spec.startswith("Whisper"):
        raise CheckpointError(f"{model.path}: a CTranslate2 {model.spec}, not a Whisper model")
    if any(v.endswith("/weight_scale") for v in model.variables):
        raise CheckpointError(
            f"{model.path}: a quantised (int8/int16) CTranslate2 model; convert it with --quantization float16 or float32"
        )
    names: dict[str, tuple[str, int | None]] = {}
    for variable in model.variables:
        if variable in _TOP_NAMES:
            names["encoder." + _TOP_NAMES[variable]] = (variable, None)
            continue
        match = _LAYER.fullmatch(variable)
        if not match:
            continue  # the decoder and scalar attributes (num_heads)
        layer, rest = match.groups()
        prefix = f"encoder.blocks.{layer}."
        if rest in _LAYER_NAMES:
            names[prefix + _LAYER_NAMES[rest]] = (variable, None)
        elif rest.startswith("self_attention/linear_0/"):
            kind = rest.rsplit("/", 1)[1]
            for third, projection in enumerate(("query", "key", "value")):
                if projection == "key" and kind == "bias":
                    continue  # Whisper's key has no bias; the slot is checked to be zero on read
                names[f"{prefix}attn.{projection}.{kind}"] = (variable, third)
    return names


def read_third(model: Ct2Model, variable: str, third: int | None) -> Tensor:
    """A variable, or one third (q, k or v) of a stacked ``linear_0`` along dim 0."""
    if third is None:
        return model.tensor(variable)
    array = model.array(variable)
    if variable.endswith("bias"):
        key_bias = array.reshape(3, -1)[1]
        if np.any(key_bias != 0):
            raise CheckpointError(f"{model.path}: {variable}'s key slot is not zero; Whisper's key projection has no bias")
    return torch.from_numpy(np.array(array.reshape(3, -1, *array.shape[1:])[third]))
