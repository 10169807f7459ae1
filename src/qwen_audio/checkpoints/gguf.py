"""A Llama-family GGUF file → Qwen2-named decoder tensors, its sizes, and its BPE vocabulary.

The registry ships SmolLM2 only as GGUF (see shared notes). The ``gguf`` package (llama.cpp's own
reader) parses the file and dequantises; what is ours is the mapping: a Llama block *is* a Qwen2
block with zero q/k/v biases, so the tensors are renamed into transformers' Qwen2 names and the
biases are supplied as zeros. llama.cpp's converter permutes the q/k rows of every head from the
"rotate halves" order to interleaved pairs; :func:`unpermute_rotary_rows` undoes it, so the
Qwen2 blocks' ``rotate_half`` rotary applies unchanged.

The vocabulary (``tokenizer.ggml.tokens``, GPT-2 byte-level strings) becomes tiktoken ranks with
rank = token id, the order in which byte-level BPE learned its merges, which is the order tiktoken's
greedy merging needs. Control tokens (``<|im_start|>``…) are kept as ranks of their literal bytes:
the pre-tokeniser splits ``<|`` from letters, so plain text can never merge into them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qwen_audio.errors import CheckpointError

# llama.cpp's pre-tokeniser names → the equivalent single regex for tiktoken (checked against a
# `tokenizers` BPE with the same pre-tokeniser by tests/test_gguf.py). "smollm": digits split off one
# by one first, then GPT-2's regex on each piece; so a run of spaces just before a digit ends its
# piece and stays one token (`\s+(?!\S)` sees the piece's end): hence the lookahead's `\p{N}`.
PRE_TOKENIZER_PATTERNS = {
    "smollm": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+""",
}

_LAYER = re.compile(r"blk\.(\d+)\.(.+)\.weight")
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}


@dataclass(frozen=True)
class LlamaSizes:
    """The decoder sizes a GGUF file declares (its ``{arch}.*`` metadata)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rope_theta: float
    rms_norm_eps: float
    context_length: int
    tied_embeddings: bool


def unpermute_rotary_rows(weight: Tensor, n_heads: int) -> Tensor:
    """Undo llama.cpp's q/k row permutation (interleaved pairs → the two halves of each head)."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


class GgufModel:
    """A GGUF file's metadata, vocabulary and tensors (dequantised one at a time, in Qwen2 names)."""

    def __init__(self, path: str | Path) -> None:
        import gguf

        self.path = Path(path)
        try:
            self._reader = gguf.GGUFReader(str(self.path))
        except (ValueError, OSError, IndexError) as error:
            raise CheckpointError(f"{self.path}: not a readable GGUF file ({error})") from None
        self._dequantize = gguf.quants.dequantize
        self.architecture = str(self.field("general.architecture"))
        if self.architecture != "llama":
            raise CheckpointError(f"{self.path}: a GGUF '{self.architecture}' model; only 'llama' maps onto Qwen2 blocks")
        self._tensors = {t.name: t for t in self._reader.tensors}
        tokens = self.field("tokenizer.ggml.tokens")
        arch = self.architecture
        self.sizes = LlamaSizes(
            vocab_size=len(tokens),
            hidden_size=int(self.field(f"{arch}.embedding_length")),
            intermediate_size=int(self.field(f"{arch}.feed_forward_length")),
            num_hidden_layers=int(self.field(f"{arch}.block_count")),
            num_attention_heads=int(self.field(f"{arch}.attention.head_count")),
            num_key_value_heads=int(self.field(f"{arch}.attention.head_count_kv")),
            rope_theta=float(self.field(f"{arch}.rope.freq_base")),
            rms_norm_eps=float(self.field(f"{arch}.attention.layer_norm_rms_epsilon")),
            context_length=int(self.field(f"{arch}.context_length")),
            tied_embeddings="output.weight" not in self._tensors,
        )
        self.names = self._native_names()

    def field(self, key: str) -> object:
        field = self._reader.fields.get(key)
        if field is None:
            raise CheckpointError(f"{self.path}: GGUF metadata lacks {key!r}")
        return field.contents()

    def _native_names(self) -> dict[str, str]:
        """Qwen2 name → GGUF tensor name; q/k/v biases map to "" (zeros)."""
        names: dict[str, str] = {}
        for name in self._tensors:
            if name in _TOP_NAMES:
                names[_TOP_NAMES[name]] = name
                continue
            match = _LAYER.fullmatch(name)
            if not match or match.group(2) not in _LAYER_NAMES:
                raise CheckpointError(f"{self.path}: unexpected GGUF tensor {name!r} for a Llama decoder")
            layer, kind = match.groups()
            names[f"model.layers.{layer}.{_LAYER_NAMES[kind]}.weight"] = name
            if kind in ("attn_q", "attn_k", "attn_v"):
                names[f"model.layers.{layer}.{_LAYER_NAMES[kind]}.bias"] = ""
        return names

    def shape(self, native: str) -> tuple[int, ...]:
        source = self.names[native]
        if not source:  # a zero bias: the projection's output width
            return (self.shape(native.removesuffix(".bias") + ".weight")[0],)
        return tuple(int(d) for d in reversed(self._tensors[source].shape.tolist()))  # GGUF lists dims innermost first

    def get(self, native: str) -> Tensor:
        source = self.names[native]
        if not source:
            return torch.zeros(self.shape(native), dtype=torch.float32)
        tensor = self._tensors[source]
        array = np.asarray(self._dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        weight = torch.from_numpy(array.reshape(self.shape(native)).copy())
        if source.endswith(("attn_q.weight", "attn_k.weight")):
            heads = self.sizes.num_attention_heads if "attn_q" in source else self.sizes.num_key_value_heads
            weight = unpermute_rotary_rows(weight, heads)
        return weight

    # ---- vocabulary

    def token_bytes(self) -> list[bytes]:
        """Every token's bytes, by id (GPT-2 byte-level strings decoded; control tokens as their UTF-8)."""
        from qwen_audio.tokenizer import byte_level_decoder

        if self.field("tokenizer.ggml.model") != "gpt2":
            raise CheckpointError(f"{self.path}: tokenizer model {self.field('tokenizer.ggml.model')!r}; only byte-level BPE ('gpt2') is read")
        decode = byte_level_decoder()
        kinds = self.field("tokenizer.ggml.token_type")
        tokens: list[bytes] = []
        for token, kind in zip(self.field("tokenizer.ggml.tokens"), kinds):
            tokens.append(token.encode("utf-8") if kind == 3 else bytes(decode[c] for c in token))
        if len(set(tokens)) != len(tokens):
            raise CheckpointError(f"{self.path}: the vocabulary holds the same bytes under two ids")
        return tokens

    def tiktoken_ranks(self) -> dict[bytes, int]:
        """Ranks for tiktoken: every token at its id, then any single byte the vocabulary lacks.

        tiktoken needs every byte as a rank; byte-level BPE vocabularies trained on text omit bytes
        that never occur there (SmolLM2: 21 control and non-UTF-8 bytes). Appending them after the
        vocabulary keeps every original id; their embedding rows are new, like the special tokens'.
        """
        ranks = {token: i for i, token in enumerate(self.token_bytes())}
        for byte in range(256):
            ranks.setdefault(bytes([byte]), len(ranks))
        return ranks

    def control_tokens(self) -> dict[str, int]:
        """Control tokens (``<|im_start|>``…) → id."""
        kinds = self.field("tokenizer.ggml.token_type")
        return {t: i for i, (t, k) in enumerate(zip(self.field("tokenizer.ggml.tokens"), kinds)) if k == 3}

    def pre_tokenizer_pattern(self) -> str:
        name = str(self.field("tokenizer.ggml.pre"))
        if name not in PRE_TOKENIZER_PATTERNS:
            raise CheckpointError(f"{self.path}: pre-tokeniser {name!r} is not known here; known: {sorted(PRE_TOKENIZER_PATTERNS)}")
        return PRE_TOKENIZER_PATTERNS[name]
