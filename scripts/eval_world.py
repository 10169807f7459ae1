"""Score a model (or a training checkpoint) on the held-out real-world splits of `data.world`.

    python scripts/eval_world.py --model runs/dm2/base --checkpoint runs/dm2/stage1c/checkpoint-300

Splits: the md5-reserved Asterisk validation prompts (real voices, never trained on) and the TTS
test split (held-out text source and voices). Per language: WER with Whisper's normalisers, given
the language (the ASR figure) and language-ID accuracy; a few transcripts are printed beside their
references so a number can be read against what the model actually says.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch


def load(model_dir: str, checkpoint: str | None):  # noqa: ANN201
    from qwen_audio.api import QwenAudio
    from qwen_audio.model import QwenAudioForCausalLM
    from qwen_audio.tokenizer import QwenAudioTokenizer
    from qwen_audio.train.checkpointing import model_weights

    model = QwenAudioForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if checkpoint:
        state = model_weights(Path(checkpoint))  # wrappers dropped, LoRA merged
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [m for m in missing if m != "lm_head.weight"]:
            raise SystemExit(f"{checkpoint}: unexpected {unexpected[:3]} missing {missing[:3]}")
        model.tie_weights()
    return QwenAudio(model, QwenAudioTokenizer.from_pretrained(model_dir))


def records(manifest: Path, per_language: int, seed: int) -> dict[str, list[dict]]:
    by_language: dict[str, list[dict]] = defaultdict(list)
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        if record.get("task") == "asr":
            by_language[record["audio_language"]].append(record)
    rng = random.Random(seed)
    return {lang: rng.sample(rows, min(per_language, len(rows))) for lang, rows in sorted(by_language.items())}


def main() -> None:
    from qwen_audio.eval.metrics import word_error_rate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", help="a training checkpoint directory (or an exported model directory)")
    parser.add_argument("--data", default="world-data")
    parser.add_argument("--per-language", type=int, default=30)
    parser.add_argument("--show", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="+", default=["asterisk-validation", "tts-test"])
    parser.add_argument("--out")
    args = parser.parse_args()
    api = load(args.model, args.checkpoint)
    report = {}
    for split, manifest in (("asterisk-validation", "asterisk/validation.jsonl"), ("tts-test", "tts/test.jsonl")):
        if split not in args.splits:
            continue
        for lang, rows in records(Path(args.data) / manifest, args.per_language, args.seed).items():
            start = time.time()
            audios = [r["audio"] for r in rows]
            hyps = [t.text for t in api.transcribe(audios, language=lang)]
            detected = api.detect_language(audios)
            wer = word_error_rate([r["text"] for r in rows], hyps, language=lang)
            lid = sum(d == lang for d in detected) / len(rows)
            report[f"{split}/{lang}"] = {"wer": round(wer.value, 4), "lid": round(lid, 4), "n": len(rows)}
            print(f"{split}/{lang}: WER {wer.value:.3f}  LID {lid:.2f}  n={len(rows)}  ({time.time() - start:.0f} s)")
            for r, h in list(zip(rows, hyps))[: args.show]:
                print(f"    ref: {r['text']}\n    hyp: {h}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
