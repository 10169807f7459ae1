"""Read back what an EmbeddingCtc checkpoint shows the LLM: the best path of its projected frames
against the LLM's embeddings, decoded as text, beside the reference, with WER per language.

    python scripts/probe_ctc.py --model runs/dm2/base --checkpoint runs/dm2/ctc/checkpoint-200

A diagnostic for the warm-up (configs/default-model-v2-ctc.yaml): if the best path already spells
the words, stage 1 only has to teach the frozen LLM to copy them.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import torch


def main() -> None:
    from safetensors.torch import load_file

    from qwen_audio.audio import batch_log_mel, load_audio
    from qwen_audio.eval.metrics import word_error_rate
    from qwen_audio.model import QwenAudioForCausalLM
    from qwen_audio.tokenizer import QwenAudioTokenizer
    from qwen_audio.train.checkpointing import model_weights
    from qwen_audio.train.ctc import EmbeddingCtc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--manifests", nargs="+", default=["world-data/asterisk/validation.jsonl", "world-data/tts/test.jsonl"])
    parser.add_argument("--per-language", type=int, default=20)
    parser.add_argument("--show", type=int, default=2)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = QwenAudioForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = QwenAudioTokenizer.from_pretrained(args.model)
    wrapper = EmbeddingCtc(model, 1.0, lm_loss=False)
    missing, _ = model.load_state_dict(model_weights(Path(args.checkpoint)), strict=False)  # LoRA merged
    if [m for m in missing if m != "lm_head.weight"]:
        raise SystemExit(f"{args.checkpoint} lacks {missing[:3]}")
    model.tie_weights()
    blank = load_file(str(Path(args.checkpoint) / "model.safetensors"), device="cpu")
    if "blank" not in blank:
        raise SystemExit(f"{args.checkpoint} is not an EmbeddingCtc checkpoint (no blank vector)")
    wrapper.blank.copy_(blank["blank"])
    wrapper.blank_bias.copy_(blank["blank_bias"])
    for manifest in args.manifests:
        by_language = defaultdict(list)
        for line in Path(manifest).read_text().splitlines():
            record = json.loads(line)
            if record.get("task") == "asr" and record.get("duration", 0) <= 30:
                by_language[record["audio_language"]].append(record)
        for language, rows in sorted(by_language.items()):
            rows = random.Random(0).sample(rows, min(args.per_language, len(rows)))
            hyps, refs = [], []
            for record in rows:
                mel = batch_log_mel([load_audio(record["audio"])])
                encoded = model.encode_audio(mel.features, mel.mel_lengths)
                ids = wrapper.greedy_ids(encoded.frames, encoded.lengths)[0]
                hyps.append(tokenizer.decode(ids))
                refs.append(record["text"])
            wer = word_error_rate(refs, hyps, language=language)
            print(f"{Path(manifest).parent.name}/{Path(manifest).stem} {language}: WER {wer.value:.3f} (n={len(rows)})")
            for ref, hyp in list(zip(refs, hyps))[: args.show]:
                print(f"   ref: {ref}\n   hyp: {hyp}")


if __name__ == "__main__":
    main()
