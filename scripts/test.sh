#!/usr/bin/env bash
# The test suite, with its own set-up. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/ruff check src tests benchmarks examples
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest selected no test: that is a failure" >&2
  exit 1
fi
exit "$rc"
