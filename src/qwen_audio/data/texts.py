"""The text side of a corpus, for training a tokenizer the model's vocabulary will fit.

A small model cannot afford the 151,643-rank Qwen vocabulary (its embedding alone would be most
of the model), so the bundled model gets BPE ranks learnt from its own training text plus the
fixed strings every prompt uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from qwen_audio.data.chat_manifest import read_chat_manifest
from qwen_audio.data.manifest import read_manifest
from qwen_audio.formats.chatml import DEFAULT_SYSTEM
from qwen_audio.tokenizer import build_tiktoken_file

# Strings of the prompt formats that are plain text, not special tokens.
FIXED_TEXTS = (DEFAULT_SYSTEM, "system\n", "user\n", "assistant\n", *(f"Audio {i}:" for i in range(1, 10)))


def manifest_texts(paths: Iterable[str | Path]) -> Iterator[str]:
    """Every target, question, choice, label and chat message of the manifests."""
    yield from FIXED_TEXTS
    for path in paths:
        path = Path(path)
        first = path.read_text(encoding="utf-8").lstrip()[:200] if path.suffix != ".gz" else ""
        if '"messages"' in first:
            for record in read_chat_manifest(path):
                yield from (m.text for m in record.messages if m.text)
            continue
        for record in read_manifest(path):
            if record.text:
                yield record.text
            if record.question:
                yield record.question
            yield from record.choices or ()
            yield from record.labels or ()


def build_corpus_tokenizer(manifests: Iterable[str | Path], vocab_size: int, out: Path) -> Path:
    """Learn ``vocab_size`` BPE ranks from the manifests' text and write ``out`` (qwen.tiktoken)."""
    return build_tiktoken_file(manifest_texts(manifests), vocab_size, out, min_frequency=2)
