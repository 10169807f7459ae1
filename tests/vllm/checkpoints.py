"""Tiny random Qwen-Audio folders for the vLLM tests: this package's layout (``save_pretrained``) and
the official one (the conversion tests' writer, plus the release's other files).

Sizes fit vLLM's CPU attention kernel, which refuses a head size of 16: two heads of 64. The
vocabulary is the 256 single bytes (every text encodes, one token per byte) plus the spec's
special tokens; a wider init than 0.02 keeps greedy choices away from near-ties.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from qwen_audio.configuration import QwenAudioConfig, preset_config
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.tokenizer import QwenAudioTokenizer, write_tiktoken_ranks


def write_tiny_checkpoint(directory: Path, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = write_tiktoken_ranks({bytes([b]): b for b in range(256)}, directory / "qwen.tiktoken")
    tokenizer = QwenAudioTokenizer(vocab_file)
    config: QwenAudioConfig = preset_config(
        "tiny", vocab_size=-(-tokenizer.vocab_size // 64) * 64, endoftext_id=tokenizer.eod_id,
        im_start_id=tokenizer.im_start_id, im_end_id=tokenizer.im_end_id, audio_pad_id=tokenizer.audio_pad_id,
        audio_start_id=tokenizer.audio_start_id, hidden_size=128, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=256, audio_config={"n_state": 64, "n_head": 1, "output_dim": 128}, initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = QwenAudioForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms and biases: a loading mix-up cannot hide behind ones and zeros
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "_ln" in name or "ln_post" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(str(directory))
    return directory


# What stands for the release's remote code: it must never run (this package reads the folder itself).
REMOTE_CODE = 'raise RuntimeError("the official remote code was imported")\n'


def write_tiny_official_checkpoint(directory: Path, seed: int = 0) -> Path:
    """An official-layout folder (``transformer.*`` tensors, QWen config and tokenizer names), sized as above.

    Beside the tensors, config.json and qwen.tiktoken of ``tests.model_fixtures.write_official_checkpoint``
    it holds what the release ships: config.json's ``auto_map``, tokenizer_config.json naming
    ``QWenTokenizer``, the remote-code files (here ones that raise if imported) and a
    generation_config.json that, as the release's, stops at ``<|endoftext|>`` only.
    """
    from tests.model_fixtures import official_tiny_model, write_official_checkpoint

    model = official_tiny_model(seed, n_ranks=256, hidden_size=128, num_attention_heads=2, num_key_value_heads=2,
                                intermediate_size=256, audio_config={"n_state": 64, "n_head": 1, "output_dim": 128})
    write_official_checkpoint(model, directory)
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_qwen.QWenConfig", "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 8192, "tokenizer_class": "QWenTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
    }))
    eod = model.config.endoftext_id
    (directory / "generation_config.json").write_text(json.dumps({
        "chat_format": "chatml", "eos_token_id": eod, "pad_token_id": eod, "max_new_tokens": 512,
    }))
    for name in ("configuration_qwen.py", "modeling_qwen.py", "tokenization_qwen.py"):
        (directory / name).write_text(REMOTE_CODE)
    return directory


def tone(seconds: float, frequency: float = 440.0, seed: int = 0) -> np.ndarray:
    """A 16 kHz tone with a little noise: audio whose mels are not all alike."""
    t = np.arange(int(seconds * 16_000)) / 16_000
    noise = np.random.default_rng(seed).normal(0, 0.05, t.size)
    return (0.4 * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)
