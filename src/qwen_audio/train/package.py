"""Package a trained model for shipping: as a delta over the pinned pretrained bases (``ship_delta``,
the default model), or whole as fp16 safetensors + tokenizer + model card (the synthetic model).

    python -m qwen_audio.train.package SRC_DIR DEST_DIR
    python -m qwen_audio.train.package card MODEL_DIR CORPUS_JSON SUITE_JSON [NOTES]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch



def ship_delta(release: str | Path, destination: str | Path, *, utterance_seconds: float | None = 12.0,
               rank_tolerance: float = 1e-3, max_rank: int = 64) -> Path:
    """Ship a model trained over the pinned bases as the bundled kind of folder: its delta
    (``checkpoints.bases.write_delta``), generation config and every folder beside it (a CTC aligner's).

    ``utterance_seconds``: what the model learned to hear at once (longer audio is split at pauses);
    ``rank_tolerance``, ``max_rank``: see ``write_delta`` (above 1e-3 a decoder change of rank over
    ``max_rank`` ships cut to ``max_rank``).
    """
    from qwen_audio.checkpoints.bases import write_delta
    from qwen_audio.checkpoints.loading import load_model

    release, destination = Path(release), Path(destination)
    model, tokenizer = load_model(release, dtype=torch.float32)
    model.config.utterance_seconds = utterance_seconds
    model.generation_config.eos_token_id = list(model.config.eos_token_ids)
    write_delta(model, tokenizer, destination, rank_tolerance=rank_tolerance, max_rank=max_rank)
    model.generation_config.save_pretrained(str(destination))
    for folder in (p for p in release.iterdir() if p.is_dir()):
        shutil.rmtree(destination / folder.name, ignore_errors=True)
        shutil.copytree(folder, destination / folder.name)
    return destination


def package_model(source: Path, destination: Path, dtype: torch.dtype = torch.float16) -> Path:
    from qwen_audio.checkpoints.loading import load_model

    model, tokenizer = load_model(source, dtype=torch.float32)
    model.to(dtype)
    tmp = destination.with_name(destination.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(str(tmp))
    card = destination / "MODEL_CARD.md"
    if card.is_file():  # the card is written by hand from the evaluation; keep it
        shutil.copy(card, tmp / "MODEL_CARD.md")
    shutil.rmtree(destination, ignore_errors=True)
    tmp.rename(destination)
    return destination


def model_card(model_dir: Path, corpus_summary: dict, suite_rows: list[dict], *, training_notes: str) -> str:
    """The model card's Markdown: what it was trained on, how, its sizes, and its held-out scores."""
    import json

    config = json.loads((model_dir / "config.json").read_text())
    audio = config["audio_config"]
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    train = corpus_summary["counts"]["train"]
    lines = [
        "# qwen-audio default model",
        "",
        "A small Qwen-Audio (Whisper-style encoder → Qwen2 decoder, the paper's architecture) trained",
        "from scratch by this project's own recipes on its own synthetic corpus; nothing was downloaded.",
        "It is a demonstration, not a general speech model: real recordings differ from espeak-ng speech",
        "and soundfont notes. Its quality gates: "
        + (", ".join(f"{r['benchmark']} {'passed' if r['passed'] else 'missed'}" for r in suite_rows) or "not measured")
        + " (scores below).",
        "",
        "## Sizes",
        f"- encoder: {audio['n_layer']} layers, width {audio['n_state']}, {audio['n_head']} heads; pooling to 40 ms frames",
        f"- decoder: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
        f"{config['num_attention_heads']} heads, SwiGLU {config['intermediate_size']}, vocabulary {config['vocab_size']}",
        f"- weights: fp16 safetensors, {weights / 2**20:.1f} MiB",
        "",
        "## Data",
        f"`qwen-audio make-corpus corpus --size {corpus_summary['size']} --seed {corpus_summary['seed']}` "
        f"({corpus_summary['audio_seconds']['train'] / 3600:.1f} h of training audio):",
    ]
    for manifest, tasks in train.items():
        lines.append(f"- {manifest}: " + ", ".join(f"{task} {n}" for task, n in tasks.items()))
    versions = corpus_summary.get("versions", {})
    lines += [
        f"- engines: espeak-ng {versions.get('espeak_ng', '?')}, fluidsynth {versions.get('fluidsynth', '?')}, TimGM6mb soundfont",
        "- the test split shares no sentence, voice variant, instrument program or sound source with training",
        "",
        "## Training",
        "`bash scripts/train-synthetic-model.sh` (recipes `configs/default-model-pretrain.yaml`, then",
        "`configs/default-model-chat.yaml`; tokenizer: `qwen-audio build-tokenizer`, 2,048 BPE ranks).",
        training_notes,
        "",
        "## Held-out scores (`qwen-audio eval --suite default`)",
        "",
        "| benchmark | value | gate | passed | examples |",
        "|---|---|---|---|---|",
    ]
    for row in suite_rows:
        lines.append(f"| {row['benchmark']} | {row['value']} | {row['gate']} | {'yes' if row['passed'] else 'no'} | {row['examples']} |")
    lines += ["", "Units: ASR in WER %, SRWT as mean absolute word-boundary error in seconds, the rest accuracy."]
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: Path, corpus_json: Path, suite_json: Path, training_notes: str = "") -> Path:
    """``MODEL_CARD.md`` in ``model_dir`` from the corpus summary and ``eval --suite`` results."""
    import json

    card = model_card(model_dir, json.loads(corpus_json.read_text()), json.loads(suite_json.read_text()),
                      training_notes=training_notes)
    path = model_dir / "MODEL_CARD.md"
    path.write_text(card)
    return path


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "card":
        print(write_model_card(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), " ".join(sys.argv[5:])))
    elif len(sys.argv) == 3:
        out = package_model(Path(sys.argv[1]), Path(sys.argv[2]))
        size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
        print(f"{out}: {size:.1f} MiB")
    else:
        sys.exit(__doc__)
