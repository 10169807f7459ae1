"""Shared fixtures. The real 151,643-rank qwen.tiktoken is not available offline, so the tests
train a small byte-level BPE file in the same format once per session."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

SMALL_VOCAB = 800


def sample_corpus(n_sentences: int = 400, seed: int = 0) -> list[str]:
    """Mixed English, Chinese, digits and punctuation: enough variety for merges of every kind."""
    rng = random.Random(seed)
    words = "the quick brown fox jumps over lazy dog hello world speech audio music rain bell".split()
    hanzi = "你好世界今天天气很好我们说话音乐下雨"
    sentences = []
    for _ in range(n_sentences):
        english = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        chinese = "".join(rng.choice(hanzi) for _ in range(rng.randint(2, 8)))
        sentences.append(f"{english.capitalize()}, {rng.randint(0, 9999)}! {chinese}。 It's café-time?\n")
    return sentences


@pytest.fixture(scope="session")
def tiktoken_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small qwen.tiktoken (≤ SMALL_VOCAB ranks) built from :func:`sample_corpus`."""
    from qwen_audio.tokenizer import build_tiktoken_file

    return build_tiktoken_file(sample_corpus(), SMALL_VOCAB, tmp_path_factory.mktemp("vocab") / "qwen.tiktoken")


@pytest.fixture(scope="session")
def tokenizer(tiktoken_file: Path):
    from qwen_audio.tokenizer import QwenAudioTokenizer

    return QwenAudioTokenizer(tiktoken_file)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A random-weight tiny QwenAudio saved with the test tokenizer (``from_pretrained`` layout)."""
    import torch

    from qwen_audio.model import QwenAudioForCausalLM
    from qwen_audio.train.setup import config_for_tokenizer

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-model")
    QwenAudioForCausalLM(config_for_tokenizer("tiny", tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(str(directory))
    return directory
