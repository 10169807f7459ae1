"""Checkpoint layouts ↔ this package: official Qwen-Audio, openai/transformers Whisper, Qwen v1/Qwen2.

Every layout is described by *rules*: one target tensor = copy / chunk / concatenation of source
tensors. Rules are checked against the source's metadata (names, shapes) before any tensor is read,
so a wrong checkpoint fails with a precise message and nothing half-loaded; tensors are then read
one at a time from memory-mapped safetensors and assigned into a model whose parameters were
created on the meta device, so a 7.7B model never needs twice its size in RAM.

Official Qwen v1 storage, verified against QwenLM/Qwen-Audio ``modeling_qwen.py``:
``c_attn`` is q, k, v stacked on the output dim (``split(split_size, dim=2)`` in that order), and
the MLP computes ``c_proj(w1(x) * silu(w2(x)))``, so ``w2`` is the gate and ``w1`` the up branch.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from qwen_audio.configuration import AudioEncoderConfig, QwenAudioConfig
from qwen_audio.encoder import sinusoids
from qwen_audio.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("qwen.tiktoken", "tokenizer_config.json", "mel_filters.npz")
DEFAULT_SHARD_BYTES = 4 * 1024**3


# --------------------------------------------------------------------------- reading tensors


class TensorSource:
    """Names, shapes and lazily read tensors of a checkpoint (safetensors dir/file, or a torch file)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        self._stack = ExitStack()
        self._files: dict[str, Any] = {}  # key → open safe_open handle
        self._tensors: dict[str, Tensor] = {}  # torch-pickle checkpoints (openai-whisper .pt)
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
        return set(self._files) | set(self._tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        if key in self._tensors:
            return tuple(self._tensors[key].shape)
        return tuple(self._files[key].get_slice(key).get_shape())

    def get(self, key: str) -> Tensor:
        return self._tensors[key] if key in self._tensors else self._files[key].get_tensor(key)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """``target`` = ``sources[0]`` (copy), its ``part``-th of ``parts`` along dim 0 (chunk), or all sources concatenated."""

    target: str
    sources: tuple[str, ...]
    part: int | None = None
    parts: int = 1

    def source_shape(self, target_shape: tuple[int, ...], shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        """The target shape these sources imply (to compare before reading anything)."""
        if len(self.sources) > 1:
            return (sum(s[0] for s in shapes), *shapes[0][1:])
        if self.part is not None:
            return (shapes[0][0] // self.parts, *shapes[0][1:])
        return shapes[0]

    def build(self, tensors: list[Tensor]) -> Tensor:
        if len(tensors) > 1:
            return torch.cat(tensors, dim=0)
        if self.part is not None:
            return tensors[0].chunk(self.parts, dim=0)[self.part]
        return tensors[0]


_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_QWEN_V1_LAYER = {
    "input_layernorm.weight": "ln_1.weight",
    "post_attention_layernorm.weight": "ln_2.weight",
    "self_attn.o_proj.weight": "attn.c_proj.weight",
    "mlp.up_proj.weight": "mlp.w1.weight",  # a1 = w1(x): the branch that is *not* activated
    "mlp.gate_proj.weight": "mlp.w2.weight",  # silu(w2(x)): the gate
    "mlp.down_proj.weight": "mlp.c_proj.weight",
}
_QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}
_DECODER_TOP = {"model.embed_tokens.weight": "transformer.wte.weight", "model.norm.weight": "transformer.ln_f.weight"}


def official_name(native: str) -> tuple[str, int | None]:
    """Official key of a native tensor, and which third of the fused ``c_attn`` it is (else None)."""
    if native.startswith("audio."):
        return "transformer." + native, None  # the encoder keeps openai-whisper's names
    if native in _DECODER_TOP:
        return _DECODER_TOP[native], None
    if native == "lm_head.weight":
        return native, None
    match = _LAYER.fullmatch(native)
    if match:
        layer, rest = match.groups()
        prefix = f"transformer.h.{layer}."
        if rest in _QWEN_V1_LAYER:
            return prefix + _QWEN_V1_LAYER[rest], None
        projection, _, kind = rest.removeprefix("self_attn.").partition(".")
        if rest.startswith("self_attn.") and projection in _QKV:
            return f"{prefix}attn.c_attn.{kind}", _QKV[projection]
    raise CheckpointError(f"no official Qwen-Audio name for tensor {native!r}")


_HF_WHISPER = [  # (openai-whisper encoder name, transformers' WhisperEncoder name)
    (r"positional_embedding$", "embed_positions.weight"),
    (r"blocks\.(\d+)\.attn\.query\.", r"layers.\1.self_attn.q_proj."),
    (r"blocks\.(\d+)\.attn\.key\.", r"layers.\1.self_attn.k_proj."),
    (r"blocks\.(\d+)\.attn\.value\.", r"layers.\1.self_attn.v_proj."),
    (r"blocks\.(\d+)\.attn\.out\.", r"layers.\1.self_attn.out_proj."),
    (r"blocks\.(\d+)\.attn_ln\.", r"layers.\1.self_attn_layer_norm."),
    (r"blocks\.(\d+)\.mlp\.0\.", r"layers.\1.fc1."),
    (r"blocks\.(\d+)\.mlp\.2\.", r"layers.\1.fc2."),
    (r"blocks\.(\d+)\.mlp_ln\.", r"layers.\1.final_layer_norm."),
    (r"ln_post\.", "layer_norm."),
]


def transformers_whisper_name(name: str) -> str:
    """transformers' WhisperEncoder name of an openai-whisper encoder tensor (``blocks.0.attn.query.weight``)."""
    for ours, theirs in _HF_WHISPER:
        renamed, count = re.subn("^" + ours, theirs, name)
        if count:
            return renamed
    return name  # conv1/conv2 share their names


# --------------------------------------------------------------------------- loading into a model


@dataclass
class LoadReport:
    """What a partial loader did: which model tensors it set, which it left as they were."""

    loaded: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    ignored_source_keys: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)


def _model_tensors(model: nn.Module) -> dict[str, Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _short(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def apply_rules(
    model: nn.Module,
    source: TensorSource,
    rules: list[Rule],
    *,
    what: str,
    ignore: Callable[[str], bool] = lambda key: False,
    optional: Callable[[str], bool] = lambda target: False,
    resizable: Callable[[str], bool] = lambda target: False,
    dtype: torch.dtype | None = None,
) -> LoadReport:
    """Check every rule against the source's metadata, then set the targets one tensor at a time.

    Raises ``CheckpointError`` for missing source tensors (unless the target is ``optional``),
    source tensors no rule uses (unless ``ignore``d) and shape mismatches (``resizable`` targets
    may be larger along dim 0: the vocabulary rows the checkpoint lacks keep their values).
    """
    targets = _model_tensors(model)
    buffers = {name for name, _ in model.named_buffers()}
    available = source.keys()
    used = {s for rule in rules for s in rule.sources}
    missing = {s for rule in rules for s in rule.sources if s not in available and not optional(rule.target)}
    if missing:
        raise CheckpointError(f"{source.path}: not a complete {what} checkpoint; missing {_short(missing)}")
    unexpected = {k for k in available - used if not ignore(k)}
    if unexpected:
        raise CheckpointError(f"{source.path}: unexpected tensors for a {what} checkpoint: {_short(unexpected)}")
    report = LoadReport(ignored_source_keys=sorted(available - used))
    todo = [r for r in rules if all(s in available for s in r.sources)]
    for rule in todo:
        target_shape = tuple(targets[rule.target].shape)
        got = rule.source_shape(target_shape, [source.shape(s) for s in rule.sources])
        if got != target_shape:
            grows = resizable(rule.target) and got[1:] == target_shape[1:] and got[0] <= target_shape[0]
            if not grows:
                raise CheckpointError(
                    f"{source.path}: {' + '.join(rule.sources)} gives {rule.target} shape {list(got)}, the model "
                    f"expects {list(target_shape)}; the checkpoint's config does not match this model's"
                )
            report.resized.append(rule.target)
    cache: tuple[str, Tensor] | None = None  # the fused c_attn is read once for its three parts
    for rule in todo:
        tensors = []
        for key in rule.sources:
            if cache is None or cache[0] != key:
                cache = (key, source.get(key))
            tensors.append(cache[1])
        _assign(model, rule.target, targets[rule.target], rule.target in buffers, rule.build(tensors), dtype)
        report.loaded.append(rule.target)
    report.untouched = sorted(set(targets) - set(report.loaded))
    return report


@torch.no_grad()
def _assign(model: nn.Module, name: str, current: Tensor, is_buffer: bool, value: Tensor, dtype: torch.dtype | None) -> None:
    if is_buffer or not value.is_floating_point():
        target_dtype = current.dtype
    else:  # parameters keep the stored dtype unless asked: a bf16 release must not be widened to fp32 in RAM
        target_dtype = dtype or (value.dtype if current.is_meta else current.dtype)
    if current.is_meta:
        if value._base is not None or not value.is_contiguous():
            value = value.clone(memory_format=torch.contiguous_format)  # a c_attn third must not pin the fused tensor
        set_module_tensor_to_device(model, name, "cpu", value=value, dtype=target_dtype)
    elif value.shape == current.shape:
        current.copy_(value)
    else:  # a smaller vocabulary: fill the rows the checkpoint has
        current[: value.shape[0]].copy_(value)


# --------------------------------------------------------------------------- official Qwen-Audio


def is_official_checkpoint(path: str | Path) -> bool:
    """A directory whose config.json is the official remote-code Qwen config with an ``"audio"`` dict."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    values = json.loads(config.read_text())
    return values.get("model_type") == "qwen" and isinstance(values.get("audio"), dict)


def config_from_official(values: dict[str, Any], **overrides: Any) -> QwenAudioConfig:
    """Our config from the official config.json (``intermediate_size`` there is both SwiGLU branches)."""
    if values.get("rotary_pct", 1.0) != 1.0 or not values.get("no_bias", True):
        raise CheckpointError("only rotary_pct 1.0 and no_bias true (the released Qwen-Audio) are supported")
    hidden, heads = values["hidden_size"], values["num_attention_heads"]
    if values.get("kv_channels", hidden // heads) != hidden // heads:
        raise CheckpointError(f"kv_channels {values['kv_channels']} ≠ hidden_size / num_attention_heads")
    audio = dict(values["audio"])
    fields = dict(
        vocab_size=values["vocab_size"],
        hidden_size=hidden,
        num_hidden_layers=values["num_hidden_layers"],
        num_attention_heads=heads,
        intermediate_size=values["intermediate_size"] // 2,
        rms_norm_eps=values.get("layer_norm_epsilon", 1e-6),
        rope_parameters={"rope_type": "default", "rope_theta": float(values.get("rotary_emb_base", 10000))},
        max_position_embeddings=values.get("max_position_embeddings", 8192),
        seq_length=values.get("seq_length", 2048),
        use_dynamic_ntk=values.get("use_dynamic_ntk", True),
        use_logn_attn=values.get("use_logn_attn", True),
        tie_word_embeddings=values.get("tie_word_embeddings", False),
        initializer_range=values.get("initializer_range", 0.02),
        audio_config=AudioEncoderConfig.from_dict(audio).to_dict(),
        audio_start_id=audio.get("audio_start_id", 155163),
    )
    # The official config carries no chat/pad ids; keep ours (the spec's) unless the file says otherwise.
    for name in ("audio_pad_id", "endoftext_id", "im_start_id", "im_end_id"):
        if name in values:
            fields[name] = values[name]
    fields.update(overrides)
    return QwenAudioConfig(**fields)


def config_to_official(config: QwenAudioConfig) -> dict[str, Any]:
    """The official config.json for our config (loads with the official remote code)."""
    return {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig", "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
        "attn_dropout_prob": 0.0, "bf16": False, "fp16": False, "fp32": False, "emb_dropout_prob": 0.0,
        "intermediate_size": 2 * config.intermediate_size,
        "initializer_range": config.initializer_range,
        "kv_channels": config.hidden_size // config.num_attention_heads,
        "layer_norm_epsilon": config.rms_norm_eps,
        "model_type": "qwen",
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_hidden_layers,
        "max_position_embeddings": config.max_position_embeddings,
        "no_bias": True, "onnx_safe": None,
        "rotary_emb_base": (config.rope_parameters or {}).get("rope_theta", 10000.0),
        "rotary_pct": 1.0, "scale_attn_weights": True,
        "seq_length": config.seq_length,
        "tie_word_embeddings": config.tie_word_embeddings,
        "tokenizer_type": "QWenTokenizer", "use_cache": True,
        "vocab_size": config.vocab_size,
        "use_dynamic_ntk": config.use_dynamic_ntk,
        "use_logn_attn": config.use_logn_attn,
        "audio": {**config.audio.to_dict(), "audio_start_id": config.audio_start_id},
        # Not read by the official code; kept so a round trip restores our ids for non-standard vocabularies.
        "audio_pad_id": config.audio_pad_id, "endoftext_id": config.endoftext_id,
        "im_start_id": config.im_start_id, "im_end_id": config.im_end_id,
    }


def _ignored_official(key: str) -> bool:
    return bool(re.search(r"rotary_emb\.inv_freq$|attn\.masked_bias$|attn\.bias$", key))


def _native_names(config: QwenAudioConfig) -> list[str]:
    from qwen_audio.model import QwenAudioForCausalLM

    with init_empty_weights(include_buffers=True):
        model = QwenAudioForCausalLM(config)
    return [n for n in _model_tensors(model) if not n.endswith("inv_freq")]


def official_to_native_rules(native_names: Iterable[str]) -> list[Rule]:
    rules = []
    for name in native_names:
        official, part = official_name(name)
        rules.append(Rule(name, (official,), part, 3 if part is not None else 1))
    return rules


def native_to_official_rules(native_names: Iterable[str]) -> list[Rule]:
    grouped: dict[str, list[tuple[int, str]]] = {}
    for name in native_names:
        official, part = official_name(name)
        grouped.setdefault(official, []).append((part or 0, name))
    return [Rule(official, tuple(n for _, n in sorted(parts))) for official, parts in grouped.items()]


def load_official(path: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", **config_overrides: Any):  # noqa: ANN201
    """Build ``QwenAudioForCausalLM`` from an official Qwen-Audio / Qwen-Audio-Chat directory.

    Parameters start on the meta device and receive the stored tensors one by one (memory-mapped),
    in ``dtype`` if given, else the stored dtype (bf16 for the release).
    """
    from qwen_audio.model import QwenAudioForCausalLM

    path = Path(path)
    if not is_official_checkpoint(path):
        raise CheckpointError(f"{path}: not an official Qwen-Audio directory (config.json with model_type 'qwen' and 'audio')")
    config = config_from_official(json.loads((path / "config.json").read_text()), **config_overrides)
    with init_empty_weights(include_buffers=False):
        model = QwenAudioForCausalLM(config)
    names = [n for n in _model_tensors(model) if not n.endswith("inv_freq")]
    with TensorSource(path) as source:
        apply_rules(
            model, source, official_to_native_rules(names), what="Qwen-Audio", ignore=_ignored_official,
            optional=lambda target: target.endswith("positional_embedding"), dtype=dtype,
        )
    still_meta = [n for n, t in _model_tensors(model).items() if t.is_meta]
    if still_meta:
        raise CheckpointError(f"{path}: these tensors were never loaded: {_short(still_meta)}")
    if dtype is not None:
        model.to(dtype)
    return model.to(device).eval()


# --------------------------------------------------------------------------- Whisper and Qwen LLM into parts


def load_whisper_encoder(model: nn.Module, path: str | Path, *, dtype: torch.dtype | None = None) -> LoadReport:
    """Load a Whisper encoder into ``model.audio`` (or into an ``AudioEncoder`` passed directly).

    Reads openai-whisper ``.pt`` files (``{"dims", "model_state_dict"}``) and transformers'
    ``WhisperModel``/``WhisperForConditionalGeneration``/``WhisperEncoder`` safetensors. The decoder
    is ignored; ``proj`` and ``audio_bos_eos_token`` do not exist in Whisper and stay as they are.
    """
    encoder = getattr(model, "audio", model)
    with TensorSource(path) as source:
        keys = source.keys()
        if any(k.startswith("encoder.blocks.") for k in keys):  # openai-whisper names, our names
            prefix, rename = "encoder.", lambda ours: ours
        else:
            prefix = next((p for p in ("model.encoder.", "encoder.", "") if any(k.startswith(p + "layers.") for k in keys)), None)
            if prefix is None:
                raise CheckpointError(f"{path}: no Whisper encoder tensors (encoder.blocks.* or *encoder.layers.*)")
            rename = transformers_whisper_name
        dims = source.extra.get("dims")
        if isinstance(dims, dict) and dims.get("n_mels") not in (None, encoder.config.n_mels):
            raise CheckpointError(f"{path}: Whisper uses {dims['n_mels']} mel bins, this encoder {encoder.config.n_mels}")
        own = [n for n in _model_tensors(encoder) if not n.startswith(("proj.", "audio_bos_eos_token."))]
        rules = [Rule(name, (prefix + rename(name),)) for name in own]
        return apply_rules(
            encoder, source, rules, what="Whisper encoder", dtype=dtype,
            ignore=lambda k: not k.startswith(prefix) or "decoder" in k or k == "proj_out.weight",
        )


def load_qwen_llm(model: nn.Module, path: str | Path, *, resize_vocab: bool = False, dtype: torch.dtype | None = None) -> LoadReport:
    """Load a Qwen LLM (Qwen v1 ``transformer.h.*`` or transformers' Qwen2 ``model.layers.*``) into the decoder.

    ``resize_vocab=True`` accepts a checkpoint with fewer vocabulary rows (Qwen-7B's 151,936 into
    Qwen-Audio's 155,947): its rows are copied, the audio-token rows keep their initial values.
    """
    names = [n for n in _model_tensors(model) if n.startswith(("model.", "lm_head.")) and not n.endswith("inv_freq")]
    vocab = {"model.embed_tokens.weight", "lm_head.weight"}
    with TensorSource(path) as source:
        keys = source.keys()
        if any(k.startswith("transformer.h.") for k in keys):
            rules, what = official_to_native_rules(names), "Qwen (v1)"
            ignore = lambda k: _ignored_official(k) or k.startswith("transformer.audio.")  # noqa: E731
        elif any(k.startswith("model.layers.") for k in keys):
            rules, what = [Rule(n, (n,)) for n in names], "Qwen2"
            ignore = lambda k: k.endswith("inv_freq")  # noqa: E731
        else:
            raise CheckpointError(f"{path}: neither a Qwen v1 (transformer.h.*) nor a Qwen2 (model.layers.*) checkpoint")
        if "lm_head.weight" not in keys and getattr(model.config, "tie_word_embeddings", False):
            rules = [r for r in rules if r.target != "lm_head.weight"]
        return apply_rules(
            model, source, rules, what=what, ignore=ignore, dtype=dtype,
            resizable=(lambda t: t in vocab) if resize_vocab else (lambda t: False),
        )


# --------------------------------------------------------------------------- conversion


def _write_shards(dst: Path, tensors: Iterator[tuple[str, Tensor]], max_shard_bytes: int) -> None:
    """Write ``model-0000i-of-0000n.safetensors`` + index (or one ``model.safetensors``), one shard in RAM at a time."""
    shards: list[list[str]] = []
    current: dict[str, Tensor] = {}
    size = total = 0

    def flush() -> None:
        nonlocal current, size
        if current:
            save_file(current, str(dst / f"shard-{len(shards):05d}.tmp"), metadata={"format": "pt"})
            shards.append(list(current))
            current, size = {}, 0

    for key, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            flush()
        current[key] = tensor.contiguous()
        size += nbytes
        total += nbytes
    flush()
    if len(shards) == 1:
        (dst / "shard-00000.tmp").rename(dst / "model.safetensors")
        return
    weight_map = {}
    for i, keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (dst / f"shard-{i:05d}.tmp").rename(dst / name)
        weight_map.update({k: name for k in keys})
    (dst / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    to: Literal["official", "native"] = "native",
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Rewrite a checkpoint between the official layout and ours, tensor by tensor (no model is built).

    Tokenizer files (``qwen.tiktoken`` …) are copied. The official remote-code ``*.py`` files are
    copied when the source has them; a native → official result otherwise needs them added.
    """
    src, dst = Path(src), Path(dst)
    official = is_official_checkpoint(src)
    if to not in ("official", "native"):
        raise CheckpointError(f"convert to 'official' or 'native', not {to!r}")
    if to == "native" and not official:
        raise CheckpointError(f"{src}: not an official Qwen-Audio directory (config.json with model_type 'qwen' and 'audio')")
    if to == "official" and (official or not (src / "config.json").is_file()):
        raise CheckpointError(f"{src}: not a qwen-audio (native) checkpoint directory; nothing to convert to 'official'")
    if dst.exists() and any(dst.iterdir()):
        raise CheckpointError(f"{dst}: exists and is not empty; choose a new directory")
    dst.mkdir(parents=True, exist_ok=True)
    if official:
        config = config_from_official(json.loads((src / "config.json").read_text()))
        names = _native_names(config)
        rules, what, ignore = official_to_native_rules(names), "Qwen-Audio", _ignored_official
        config.save_pretrained(dst)
        from transformers import GenerationConfig

        GenerationConfig(eos_token_id=list(config.eos_token_ids), pad_token_id=config.endoftext_id).save_pretrained(dst)
    else:
        config = QwenAudioConfig.from_pretrained(src)
        names = _native_names(config)
        rules, what, ignore = native_to_official_rules(names), "qwen-audio (native)", (lambda k: k.endswith("inv_freq"))
        (dst / "config.json").write_text(json.dumps(config_to_official(config), indent=2))
    with TensorSource(src) as source:
        available = source.keys()
        missing = {s for r in rules for s in r.sources if s not in available and not s.endswith("positional_embedding")}
        unexpected = {k for k in available - {s for r in rules for s in r.sources} if not ignore(k)}
        if missing or unexpected:
            raise CheckpointError(
                f"{src}: not a complete {what} checkpoint; missing {_short(missing) or '-'}; unexpected {_short(unexpected) or '-'}"
            )

        def tensors() -> Iterator[tuple[str, Tensor]]:
            for rule in rules:
                if all(s in available for s in rule.sources):
                    value = rule.build([source.get(s) for s in rule.sources])
                    yield rule.target, value.to(dtype) if dtype is not None and value.is_floating_point() else value

        _write_shards(dst, tensors(), max_shard_bytes)
    for file in [*TOKENIZER_FILES, *(p.name for p in src.glob("*.py"))]:
        if (src / file).is_file():
            shutil.copy2(src / file, dst / file)
    return dst


__all__ = [
    "CheckpointError", "LoadReport", "Rule", "TensorSource", "apply_rules", "config_from_official",
    "config_to_official", "convert_checkpoint", "is_official_checkpoint", "load_official", "load_qwen_llm",
    "load_whisper_encoder", "native_to_official_rules", "official_name", "official_to_native_rules",
    "sinusoids",
]
