"""train/package.py: a delta over the bases, fp16 packaging, and the model card written from corpus + suite results."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from qwen_audio.checkpoints import bases
from qwen_audio.checkpoints.bases import assemble, build_base_model
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.train.ctc import ALIGNER_FILE, EmbeddingCtc
from qwen_audio.train.package import package_model, ship_delta, write_model_card
from tests.test_bases import TinyBases, cache, tiny_bases, tiny_pins  # noqa: F401  (fixtures)


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


def test_ship_delta_writes_the_delta_its_generation_config_and_the_folders_beside_the_model(
        tiny_pins: TinyBases, cache: Path, tmp_path: Path) -> None:
    model, tokenizer = build_base_model()
    with torch.no_grad():
        model.audio.proj.bias.add_(0.5)
    model.save_pretrained(tmp_path / "release")
    tokenizer.save_pretrained(str(tmp_path / "release"))
    EmbeddingCtc(model, 0.3).save_aligner(tmp_path / "release")
    shipped = ship_delta(tmp_path / "release", tmp_path / "shipped", utterance_seconds=12.0)
    assert bases.is_delta_model(shipped)
    assert (shipped / ALIGNER_FILE).read_bytes() == (tmp_path / "release" / ALIGNER_FILE).read_bytes()
    assert sorted(p.name for p in shipped.glob("*.safetensors")) == ["trained.safetensors"]  # no aligner on top
    assert json.loads((shipped / "config.json").read_text())["utterance_seconds"] == 12.0
    eos = json.loads((shipped / "generation_config.json").read_text())["eos_token_id"]
    assert eos == list(model.config.eos_token_ids)
    loaded = QwenAudioForCausalLM.from_pretrained(assemble(shipped))
    assert torch.equal(loaded.audio.proj.bias, model.audio.proj.bias.half().float())
