#!/usr/bin/env bash
# The profile tool's Nsight Systems path on a CUDA machine, end to end, in under 5 minutes.
#
#   bash benchmarks/profile_gpu_check.sh [--seconds 10] [--sandbox bwrap|none] [--keep DIR]
#
# Run it as root from the repository's root after `bash scripts/setup.sh` (a .venv whose torch has CUDA),
# with Nsight Systems' `nsys` on PATH. It checks those first, then runs benchmarks/profile_gpu_check.py,
# which profiles a CUDA variant of tiny-llama and checks the report, the stats CSVs and the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

command -v nvidia-smi >/dev/null || { echo "profile_gpu_check: no nvidia-smi: this needs an NVIDIA GPU" >&2; exit 2; }
nvidia-smi -L
command -v nsys >/dev/null || {
  echo "profile_gpu_check: nsys is not on PATH: install Nsight Systems' CLI (nsight-systems-cli) or add" \
       "its bin folder (e.g. /usr/local/cuda/bin or /opt/nvidia/nsight-systems/*/bin) to PATH" >&2; exit 2; }
nsys --version
[ "$(id -u)" = 0 ] || echo "profile_gpu_check: not root: nsys cannot enter a sandboxed candidate's namespaces" \
                           "(expect the summary to say so), and py-spy may not attach" >&2
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else
  "profile_gpu_check: this torch (" + torch.__version__ + ") sees no CUDA device")'
export HF_HUB_OFFLINE=1
exec timeout 300 "$PY" benchmarks/profile_gpu_check.py "$@"
