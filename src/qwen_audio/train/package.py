"""Package a trained model for shipping: fp16 safetensors + tokenizer + model card, small enough
to live inside the wheel (the bundled default model must stay ≤ 60 MB).

    python -m qwen_audio.train.package SRC_DIR DEST_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from qwen_audio.tokenizer import QwenAudioTokenizer


def package_model(source: Path, destination: Path, dtype: torch.dtype = torch.float16) -> Path:
    from qwen_audio.model import QwenAudioForCausalLM

    model = QwenAudioForCausalLM.from_pretrained(source, dtype=torch.float32).to(dtype)
    tokenizer = QwenAudioTokenizer.from_pretrained(str(source))
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


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out = package_model(Path(sys.argv[1]), Path(sys.argv[2]))
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"{out}: {size:.1f} MiB")
