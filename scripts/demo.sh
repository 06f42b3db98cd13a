#!/usr/bin/env bash
# The main job: a full offline run on the bundled CPU example with the scripted harness, ending in a report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
target=examples/targets/tiny-llama
run_id=demo-$(date +%Y%m%d-%H%M%S)
.venv/bin/vibeserve validate "$target"
.venv/bin/vibeserve run "$target" --harness scripted --trajectory examples/trajectories/tiny-llama \
  --run-id "$run_id" --runs-dir runs --rounds 2
echo "report: runs/$run_id/report/index.html"
