"""train/package.py: fp16 packaging and the model card written from corpus + suite results."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from qwen_audio.train.package import package_model, write_model_card


def test_package_then_card(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = package_model(tiny_model_dir, tmp_path / "packaged")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}
    assert (out / "qwen.tiktoken").is_file()
    corpus = {"counts": {"train": {"speech": {"asr": 10}}}, "audio_seconds": {"train": 7200.0},
              "size": "small", "seed": 0, "versions": {"espeak_ng": "1.51", "fluidsynth": "2.3.1"}}  # corpus.json's layout
    rows = [{"benchmark": "synthetic-asr-en", "value": 12.5, "gate": "≤ 10", "passed": False, "examples": 40}]
    (tmp_path / "corpus.json").write_text(json.dumps(corpus))
    (tmp_path / "suite.json").write_text(json.dumps(rows))
    card = write_model_card(out, tmp_path / "corpus.json", tmp_path / "suite.json", "note").read_text()
    assert "| synthetic-asr-en | 12.5 | ≤ 10 | no | 40 |" in card
    assert "speech: asr 10" in card and "2.0 h of training audio" in card
    # Re-packaging keeps the hand-checked card.
    package_model(tiny_model_dir, out)
    assert (out / "MODEL_CARD.md").read_text() == card
