"""Qwen-Audio (v1) as a vLLM model: an out-of-tree plugin for vLLM's serving engine.

vLLM calls :func:`register` in every one of its processes (the ``vllm.general_plugins`` entry
point in pyproject.toml) before it opens a model. It makes a folder in this package's layout
(``model_type: qwen_audio``, ``architectures: [QwenAudioForCausalLM]``) servable as it is, and an
official Qwen-Audio / Qwen-Audio-Chat folder too (``official.py``: its config, tokenizer and tensor
names read by this package, no remote code run):

- the config and tokenizer classes become known to transformers' ``Auto*`` classes, so vLLM reads
  the folder's config.json and tokenizer_config.json (``tokenizer.VllmPromptTokenizer`` stands in
  for ``QwenAudioTokenizer``: it writes each ``<audio>…</audio>`` as a placeholder span);
- ``QwenAudioForCausalLM`` names ``model.QwenAudioForCausalLM``: our Whisper encoder, spliced
  into vLLM's own Qwen2 decoder (paged KV cache, continuous batching, tensor parallelism);
- the folder's chat template falls back to ``chat_template.jinja`` (ChatML with ``Audio k:``
  items, as ``formats.chatml`` renders it).

``engine.py`` puts this package's own server in front of vLLM (``qwen-audio serve --engine vllm``).

vLLM lives in its own environment (``scripts/setup-vllm-env.sh``): it pins another transformers.
Nothing else in ``qwen_audio`` imports this package, but for that server option, on use.
"""

from __future__ import annotations

from pathlib import Path

ARCHITECTURE = "QwenAudioForCausalLM"
CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")


def register() -> None:
    """The plugin entry point: idempotent, as vLLM may call it more than once per process."""
    from transformers import AutoConfig, AutoTokenizer
    from vllm import ModelRegistry
    from vllm.transformers_utils.chat_templates.registry import (
        get_chat_template_fallback_path,
        register_chat_template_fallback_path,
    )

    from qwen_audio.configuration import QwenAudioConfig
    from qwen_audio.tokenizer import QwenAudioTokenizer
    from qwen_audio.vllm.official import OfficialPromptTokenizer, QwenAudioOfficialConfig, QWenTokenizer
    from qwen_audio.vllm.tokenizer import VllmPromptTokenizer

    AutoConfig.register(QwenAudioConfig.model_type, QwenAudioConfig, exist_ok=True)
    AutoConfig.register(QwenAudioOfficialConfig.model_type, QwenAudioOfficialConfig, exist_ok=True)
    # A folder's tokenizer_config.json names QwenAudioTokenizer (ours) or QWenTokenizer (official); the
    # "fast" alias is what AutoTokenizer then builds, here the subclass that encodes audio spans as
    # placeholders. The official name is registered first, so our config's entry is the second's; the
    # official config class stays out of the mapping: the name alone resolves, which makes it local
    # code that wins over the folder's tokenization_qwen.py.
    AutoTokenizer.register(QwenAudioConfig, slow_tokenizer_class=QWenTokenizer,
                           fast_tokenizer_class=OfficialPromptTokenizer, exist_ok=True)
    AutoTokenizer.register(QwenAudioConfig, slow_tokenizer_class=QwenAudioTokenizer,
                           fast_tokenizer_class=VllmPromptTokenizer, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "qwen_audio.vllm.model:QwenAudioForCausalLM")
    for model_type in (QwenAudioConfig.model_type, QwenAudioOfficialConfig.model_type):
        if get_chat_template_fallback_path(model_type, "") is None:
            register_chat_template_fallback_path(model_type, CHAT_TEMPLATE)


__all__ = ["ARCHITECTURE", "CHAT_TEMPLATE", "register"]
