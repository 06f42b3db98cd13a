"""Time each harness adds to an agent call on top of the model's own time (spawn, MCP start-up, parsing).

Each adapter answers the same one-turn call against the local fake model server, which answers at once
(no delay; its request handling takes about a millisecond), with one MCP server attached (the issue
tracker's, over stdio), repeated. The call's wall time is then all overhead: the median is reported.
Prints one JSON object.

    python benchmarks/harness_overhead.py [--repeats 5] [--harnesses scripted,openai,codex,claude]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from vibeserve.harness import make_harness
from vibeserve.policies.issue_tracker_mcp import server_spec
from vibeserve.roles import reply_schema
from vibeserve.store import RunStore
from vibeserve.testing.fake_llm import FakeLLM, Script, Turn
from vibeserve.testing.toy_target import write_trajectory
from vibeserve.types import AgentCall, ExitReason, Role

REPLY = {"summary": "nothing to change", "notes": ""}


def one_call(root: Path, name: str, i: int, store_dir: Path) -> float:
    work = root / f"{name}-{i}"
    work.mkdir()
    call = AgentCall(key=f"r001/a{i}/implementer", role=Role.IMPLEMENTER, prompt="Reply at once.", workdir=work,
                     reply_schema=reply_schema(Role.IMPLEMENTER), timeout_s=120, model="fake-model",
                     mcp_servers=[server_spec(store_dir, f"r001/a{i}/implementer", Role.IMPLEMENTER)],
                     transcript_path=root / "t" / f"{name}-{i}.jsonl")
    with FakeLLM(Script(reply_tool="submit", turns=[Turn(reply=REPLY)])) as llm:
        opts = {
            "scripted": {"trajectory": str(write_trajectory(root / "traj", [{"key": "r*", "reply": REPLY}]))},
            "openai": {"base_url": llm.openai_base_url},
            "codex": {"base_url": llm.openai_base_url, "env_key": "FAKE_KEY"},
            "claude": {"base_url": llm.anthropic_base_url, "max_retries": 0},
        }[name]
        harness = make_harness(name, **opts)
        harness.check()
        t0 = time.monotonic()
        result = harness.run(call)
        wall = time.monotonic() - t0
    if result.exit_reason != ExitReason.OK:
        raise SystemExit(f"{name}: {result.exit_reason}: {result.error}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--harnesses", default="scripted,openai,codex,claude")
    args = ap.parse_args()
    os.environ.setdefault("FAKE_KEY", "dummy")
    os.environ.setdefault("ANTHROPIC_API_KEY", "dummy")
    os.environ.setdefault("OPENAI_API_KEY", "dummy")
    out: dict[str, object] = {"benchmark": "harness_overhead", "repeats": args.repeats, "mcp_servers": 1}
    with tempfile.TemporaryDirectory(prefix="vibeserve-ho-", dir=Path.home()) as tmp:
        root = Path(tmp)
        store = RunStore.create(root / "run")
        store.init_run("ho", "t", "issue-tracker", {}, {})
        store.close()
        for name in args.harnesses.split(","):
            times = [one_call(root, name, i, root / "run") for i in range(args.repeats)]
            out[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                         "max_s": round(max(times), 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
