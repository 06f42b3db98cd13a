#!/usr/bin/env bash
# The main job: a full offline run on the bundled CPU example with the scripted harness, ending in a report.
#
#   bash scripts/demo.sh              # SmolLM2-135M on this CPU: seed, continuous batching, three attempts
#                                     # at cheaper steps judged by the gates, threads that yield to other
#                                     # work, batched prefill, packed GEMM for decode, rows retired in place
#                                     # (six rounds)
#   bash scripts/demo.sh tiny-llama   # the same loop on a random 2-layer model (about 3 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-smollm2}" in
  smollm2) name=smollm2-chat-cpu rounds=6 ;;
  tiny-llama) name=tiny-llama rounds=2 ;;
  *) echo "usage: bash scripts/demo.sh [smollm2|tiny-llama]" >&2; exit 2 ;;
esac
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
run_id=demo-$name-$(date +%Y%m%d-%H%M%S)
.venv/bin/vibeserve run "examples/targets/$name" --harness scripted --trajectory "examples/trajectories/$name" \
  --run-id "$run_id" --runs-dir runs --rounds "$rounds"
echo "report: runs/$run_id/report/index.html"
