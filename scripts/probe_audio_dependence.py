"""Does a model use its audio? Next-token logit spread across different held-out audios.

A model that answers from priors gives nearly the same logits whatever the audio (spread ≈ 0);
one that hears gives spreads comparable to the spread across the vocabulary. Cheap enough to run
on every training checkpoint (20 pitch notes and 20 language-ID utterances of the test split).

    python scripts/probe_audio_dependence.py RECIPE.yaml CHECKPOINT_DIR [--corpus corpus]

CHECKPOINT_DIR is a trainer checkpoint (model.safetensors state dict) or a from_pretrained folder.
For a checkpoint trained with an auxiliary CTC head (recipe ``ctc_weight``), it also prints the
head's greedy character error rate on 20 English test utterances: the encoder's own read-out.
With ``--asr`` it also prints the decoder's greedy WER on those utterances (slower: it generates).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from qwen_audio.audio import batch_log_mel, load_audio
from qwen_audio.data.manifest import read_manifest
from qwen_audio.encoder import conv_lengths
from qwen_audio.eval.metrics import character_error_rate, word_error_rate
from qwen_audio.formats.tags import Task, build_prompt
from qwen_audio.processing import QwenAudioProcessor
from qwen_audio.train.ctc import EncoderCtc, greedy_decode
from qwen_audio.train.recipe import Recipe, build_model, load_tokenizer


@torch.no_grad()
def ctc_cer(wrapper: EncoderCtc, split: Path) -> float:
    records = english_test_asr(split)
    waves = [load_audio(str(split / r.audio)) for r in records]
    mels = batch_log_mel(waves)
    frames, _ = wrapper.model.audio.hidden_states(mels.features, mels.mel_lengths)
    hypotheses = greedy_decode(wrapper, frames, conv_lengths(mels.mel_lengths))
    return character_error_rate([r.text for r in records], hypotheses).value


def english_test_asr(split: Path, count: int = 20) -> list:
    return [r for r in read_manifest(split / "speech.jsonl") if r.task == "asr" and r.audio_language == "en"][:count]


@torch.no_grad()
def decoder_wer(model: torch.nn.Module, tokenizer, split: Path) -> tuple[float, str, str]:  # noqa: ANN001
    """Greedy transcripts of the English test utterances: WER and the first (reference, hypothesis)."""
    records = english_test_asr(split)
    hypotheses = []
    processor = QwenAudioProcessor(tokenizer)
    for record in records:
        inputs = processor([build_prompt(Task.ASR, audio="a", audio_language="en")], [[load_audio(str(split / record.audio))]])
        out = model.generate(inputs.input_ids, **inputs.audio_kwargs(), max_new_tokens=48, do_sample=False,
                             eos_token_id=tokenizer.eod_id)
        width = inputs.input_ids.shape[1]
        hypotheses.append(tokenizer.decode(out[0, width:].tolist(), skip_special_tokens=True).strip())
    return word_error_rate([r.text for r in records], hypotheses).value, records[0].text, hypotheses[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--corpus", type=Path, default=Path("corpus"))
    parser.add_argument("--asr", action="store_true", help="also the decoder's greedy WER (generates)")
    args = parser.parse_args()
    recipe = Recipe.load(args.recipe)
    if (args.checkpoint / "config.json").is_file():
        from qwen_audio.model import QwenAudioForCausalLM

        model, tokenizer = QwenAudioForCausalLM.from_pretrained(args.checkpoint), load_tokenizer(args.checkpoint)
    else:
        tokenizer = load_tokenizer(recipe.tokenizer)
        model = build_model(recipe.model, tokenizer)
        state = load_file(str(args.checkpoint / "model.safetensors"))
        if "ctc_head.weight" in state:
            wrapper = EncoderCtc(model, recipe.ctc_weight or 1.0)
            wrapper.load_state_dict(state)
            wrapper.eval()
            print(f"CTC head      greedy CER on English test speech {ctc_cer(wrapper, args.corpus / 'test'):.3f}")
        else:
            model.load_state_dict(state)
    model.eval()
    split = args.corpus / "test"
    for manifest, task, prompt_task in (("music.jsonl", "pitch", Task.NOTE_PITCH), ("speech.jsonl", "language_id", Task.LANGUAGE_ID)):
        records = [r for r in read_manifest(split / manifest) if r.task == task]
        records = records[:: max(1, len(records) // 20)][:20]
        logits, frames = [], []
        processor = QwenAudioProcessor(tokenizer)
        with torch.no_grad():
            for record in records:
                inputs = processor([build_prompt(prompt_task, audio="a")], [[load_audio(str(split / record.audio))]])
                logits.append(model(**inputs.as_kwargs()).logits[0, -1])
                frames.append(model.encode_audio(inputs.audio_features, inputs.audio_lengths).frames)
        stacked = torch.stack(logits)
        print(f"{task:12} logit spread across audios {stacked.std(0).mean():.3f} | across vocabulary "
              f"{stacked.std(1).mean():.3f} | encoder frame std {torch.cat([f.flatten() for f in frames]).std():.2f}")
    if args.asr:
        wer, reference, hypothesis = decoder_wer(model, tokenizer, split)
        print(f"decoder ASR   greedy WER on English test speech {wer:.3f} ('{reference}' → '{hypothesis}')")


if __name__ == "__main__":
    main()
