"""Layout rules (target = copy / chunk / concatenation of sources), checked before any read, and
the loader that applies them into a meta-device model."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from accelerate.utils import set_module_tensor_to_device
from torch import Tensor, nn

from qwen_audio.checkpoints.source import TensorSource
from qwen_audio.errors import CheckpointError


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




@dataclass
class LoadReport:
    """What a partial loader did: which model tensors it set, which it left as they were."""

    loaded: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    ignored_source_keys: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def short_list(keys: Iterable[str], limit: int = 8) -> str:
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
    targets = model_tensors(model)
    buffers = {name for name, _ in model.named_buffers()}
    available = source.keys()
    used = {s for rule in rules for s in rule.sources}
    missing = {s for rule in rules for s in rule.sources if s not in available and not optional(rule.target)}
    if missing:
        raise CheckpointError(f"{source.path}: not a complete {what} checkpoint; missing {short_list(missing)}")
    unexpected = {k for k in available - used if not ignore(k)}
    if unexpected:
        raise CheckpointError(f"{source.path}: unexpected tensors for a {what} checkpoint: {short_list(unexpected)}")
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
