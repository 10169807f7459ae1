"""An official Qwen-Audio / Qwen-Audio-Chat folder, served by vLLM as it is (no ``qwen-audio convert``).

Such a folder points three times at the release's remote code (``trust_remote_code``); each is met
here with this package's own reading of the same files, so no remote code runs:

- config.json says ``model_type: qwen``, ``architectures: [QWenLMHeadModel]`` in the official field
  names. :class:`QwenAudioOfficialConfig`, registered for ``qwen``, translates it with
  ``checkpoints.official.config_from_official`` (ids from the folder's own ``qwen.tiktoken``, as
  ``qwen-audio convert`` does) and names ``QwenAudioForCausalLM``.
- tokenizer_config.json names ``QWenTokenizer`` (``tokenization_qwen.py``). That name resolves to
  :class:`OfficialPromptTokenizer`: ``VllmPromptTokenizer`` over the same ``qwen.tiktoken``, whose end
  of sequence is ``<|im_end|>``. The release's generation_config.json stops only at
  ``<|endoftext|>`` (its chat code adds ``<|im_end|>`` as a stop word by hand), and vLLM stops at the
  tokenizer's end of sequence and the generation config's: so at both, as ``QwenAudio`` does.
- the weights are named ``transformer.*``, q/k/v fused in ``c_attn``, the SwiGLU branches ``w1``/``w2``.
  :func:`native_weights` renames them by ``checkpoints.official``'s rules, those ``qwen-audio convert``
  applies, into this package's names, which the vLLM model loads.

Both classes live outside transformers, which therefore prefers them to the folder's remote code
even under ``--trust-remote-code``. No vLLM import here: the main environment's tests use it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from torch import Tensor

from qwen_audio.checkpoints.official import (
    config_from_official,
    is_ignored_official,
    native_parameter_names,
    official_to_native_rules,
    official_tokenizer_ranks,
)
from qwen_audio.checkpoints.rules import Rule
from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.errors import CheckpointError, ConfigError
from qwen_audio.formats.tokens import IM_END
from qwen_audio.vllm import ARCHITECTURE
from qwen_audio.vllm.tokenizer import VllmPromptTokenizer


class QwenAudioOfficialConfig(QwenAudioConfig):
    """Our config, read from an official config.json (``model_type: qwen``)."""

    model_type = "qwen"

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> QwenAudioOfficialConfig:
        values = dict(config_dict)
        if isinstance(values.get("audio"), dict):  # the official file; else ours already (to_dict's round trip)
            folder = kwargs.get("name_or_path") or values.get("_name_or_path")
            ranks = official_tokenizer_ranks(folder) if folder and Path(folder).is_dir() else None
            stored = {"dtype": values["torch_dtype"]} if values.get("torch_dtype") else {}
            values = {**config_from_official(values, tokenizer_ranks=ranks, **stored).to_dict(), "architectures": [ARCHITECTURE]}
        elif "audio_config" not in values:
            raise ConfigError(
                "this model_type 'qwen' config has no 'audio' encoder: it is not Qwen-Audio, the only Qwen (v1) "
                "model the qwen_audio vLLM plugin serves"
            )
        values["model_type"] = cls.model_type
        return super().from_dict(values, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> QwenAudioOfficialConfig:
        kwargs.setdefault("name_or_path", str(pretrained_model_name_or_path))  # where qwen.tiktoken is (AutoConfig passes it too)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)


class OfficialPromptTokenizer(VllmPromptTokenizer):
    """The tokenizer an official folder gets: ``<|im_end|>`` ends a sequence (see the module docstring)."""

    def __init__(self, vocab_file: str | Path, **kwargs: object) -> None:
        kwargs.setdefault("eos_token", IM_END)
        super().__init__(vocab_file, **kwargs)


class QWenTokenizer(OfficialPromptTokenizer):
    """Only a name: the official tokenizer_config.json's ``tokenizer_class``, registered to resolve to
    :class:`OfficialPromptTokenizer` (transformers maps a registered "slow" name to its "fast" class)."""


def native_weights(config: QwenAudioConfig, weights: Iterable[tuple[str, Tensor]]) -> Iterator[tuple[str, Tensor]]:
    """Official tensors under this package's names (``c_attn`` split in three); other names pass as they are.

    The official buffers the conversion also drops (rotary ``inv_freq``, attention masks) are skipped.
    """
    by_source: dict[str, list[Rule]] = {}
    for rule in official_to_native_rules(native_parameter_names(config)):
        by_source.setdefault(rule.sources[0], []).append(rule)
    for name, tensor in weights:
        rules = by_source.get(name)
        if rules is None:
            if is_ignored_official(name):  # (its pattern also fits c_attn.bias, which has rules: so asked second)
                continue
            if name.startswith("transformer."):
                raise CheckpointError(f"{name}: not a tensor of the official Qwen-Audio layout this config describes")
            yield name, tensor
            continue
        for rule in rules:
            yield rule.target, rule.build([tensor])


__all__ = ["OfficialPromptTokenizer", "QWenTokenizer", "QwenAudioOfficialConfig", "native_weights"]
