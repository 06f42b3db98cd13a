#!/usr/bin/env bash
# The test suite, with its own set-up. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
workers="${VIBESERVE_TEST_WORKERS:-2}"
# One torch thread per test process when workers share the cores: two workers each spinning two OpenMP
# threads on two cores slow each other down several times over. A test that needs more sets its own.
if [ "$workers" -gt 1 ]; then export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"; fi
.venv/bin/ruff check src tests benchmarks examples
set +e
# Two workers, a test file each at a time: most tests wait on servers and subprocesses more than they
# compute, and a file's shared fixtures (a model server, the corpus's run) stay in one worker. Files go out
# in collection order (conftest puts the longest first), not xdist's default of the most tests first.
.venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder --durations=12 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest selected no test: that is a failure" >&2
  exit 1
fi
exit "$rc"
