"""The vLLM plugin's tests run in the vLLM environment (scripts/setup-vllm-env.sh); elsewhere each
module skips (``pytest.importorskip("vllm")``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# vLLM's CPU build sizes its KV cache from this (GiB); its default is far more than a tiny model needs.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# What vLLM writes for itself stays in its environment's folder (inside the repository in CI), not in ~.
os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(sys.prefix) / "vllm-cache"))
os.environ.setdefault("VLLM_CONFIG_ROOT", str(Path(sys.prefix) / "vllm-config"))
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.vllm.checkpoints import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-qwen-audio"))


@pytest.fixture(scope="session")
def tiny_official_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.vllm.checkpoints import write_tiny_official_checkpoint

    return write_tiny_official_checkpoint(tmp_path_factory.mktemp("tiny-qwen-audio-official"))


@pytest.fixture(scope="session")
def reference(tiny_checkpoint: Path):  # noqa: ANN201
    """``QwenAudio`` on the same folder: the engine vLLM must agree with."""
    from qwen_audio.api import QwenAudio

    return QwenAudio.from_pretrained(tiny_checkpoint)
