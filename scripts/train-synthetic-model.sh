#!/usr/bin/env bash
# Reproduce the first default model, trained from scratch on the synthetic template world (no longer
# shipped: it heard nothing real; issue 16). From nothing but this repository (no downloads):
# corpus (+ two English-only speech corpora) → tokenizer → stage 1 (multi-task) → stage 1b (re-weighted
# to the gated tasks) → stage 1c (half English ASR/SRWT) → stage 1d (a second English corpus) →
# stage 2 (chat) → fp16 package → held-out evaluation. On 2 CPU cores: corpora ≈ 30 min, training ≈ 6.7 h.
# Needs scripts/install-system-packages.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f corpus/corpus.json ] || qwen-audio make-corpus corpus --size default --seed 0 --workers 2
[ -f corpus-en/corpus.json ] || qwen-audio make-corpus corpus-en --size default --seed 1 --workers 2 \
    --split train --family speech --language en --scale 6
[ -f corpus-en2/corpus.json ] || qwen-audio make-corpus corpus-en2 --size default --seed 2 --workers 2 \
    --split train --family speech --language en --scale 6
mkdir -p runs/default-model
[ -f runs/default-model/qwen.tiktoken ] || qwen-audio build-tokenizer corpus/train/*.jsonl \
    --out runs/default-model/qwen.tiktoken --vocab-size 2048
qwen-audio train configs/default-model-pretrain.yaml
qwen-audio train configs/default-model-focus.yaml
qwen-audio train configs/default-model-english.yaml
qwen-audio train configs/default-model-english2.yaml
qwen-audio train configs/default-model-chat.yaml
python -m qwen_audio.train.package runs/default-model/stage2/final src/qwen_audio/assets/default-model
python scripts/bundle_samples.py --corpus corpus  # the demo's samples: held-out test audio
qwen-audio eval --suite default --model src/qwen_audio/assets/default-model --corpus corpus \
    --output runs/default-model/eval
python -m qwen_audio.train.package card src/qwen_audio/assets/default-model corpus/corpus.json \
    runs/default-model/eval/suite.json "Recipes and step counts: configs/default-model-*.yaml."
