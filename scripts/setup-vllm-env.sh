#!/usr/bin/env bash
# The vLLM environment: vLLM's CPU build, this package in editable mode and the plugin tests' needs.
# vLLM pins another transformers than ours, so it gets a virtual environment of its own.
#
#   scripts/setup-vllm-env.sh [VENV]     VENV defaults to .venv-vllm in the repository (git-ignored)
#
# Every version comes from scripts/vllm-requirements.txt, installed without dependency resolution
# (--no-deps): resolution would add torchvision/torchaudio/torchcodec builds that do not load
# against torch 2.13.0+cpu. qwen-audio itself goes in --no-deps too (it pins transformers 5.24).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python}"

"$PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps "$@"; }
pip_install -r scripts/vllm-requirements.txt
pip_install -e .
# The entry point is what `vllm serve` finds; importing the model module checks the vLLM interfaces it uses.
"$VENV/bin/python" - <<'PY'
from importlib.metadata import entry_points

import vllm
import qwen_audio.vllm.model  # noqa: F401

plugins = [e.value for e in entry_points(group="vllm.general_plugins")]
assert "qwen_audio.vllm:register" in plugins, plugins
print(f"vLLM {vllm.__version__} with the qwen_audio plugin in {__import__('sys').prefix}")
PY
# `qwen-audio serve --engine vllm` starts from this environment's command.
"$VENV/bin/qwen-audio" serve --help > /dev/null
