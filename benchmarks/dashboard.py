"""The dashboard (`vibeserve ui`) on a long run: page load, and the time from a round's end to its row on the
live page. Goal: under 300 ms per page and under 1 s per update, on a store with 1,000 rounds.

Builds a run with ``--rounds`` finished rounds (each with three gate verdicts and three agent calls, written
through ``RunStore``'s own API, and a candidate commit in the run's git repo), starts the real `vibeserve ui`
as a subprocess, and measures:

- ``page_ms``: GET of the run page (the whole page, as a browser's first load), median and p95 over repeats;
  also the ``?partial=1`` part the page's script fetches on each change, and the runs index.
- ``update_ms``: a writer records a new finished round (as the engine does at a round's end); the clock
  stops when the page's event stream has said ``change`` and the ``?partial=1`` fetch that follows (what
  ``ui.js`` does) holds that round's row. Median and p95 over ``--updates`` rounds.

With ``--src DIR`` given more than once, one server per source tree (for example the tree before a change,
checked out with `git worktree add`) is measured on the same store, alternately, so the numbers compare.
The machine's load average is printed with the numbers: timings on a busy machine are not clean.

    python benchmarks/dashboard.py [--rounds 1000] [--repeats 15] [--updates 5] [--src src --src /tmp/old/src]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from vibeserve.store import RunStore
from vibeserve.types import (
    AgentResult,
    ExitReason,
    GateName,
    GateVerdict,
    Role,
    RoundResult,
    RoundStatus,
    Task,
)
from vibeserve.workspace import Workspace, git

RUN = "long"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "p95": round(pct(values, 0.95), 1),
            "min": round(min(values), 1), "max": round(max(values), 1), "n": len(values)}


def make_commits(repo: Path, n: int) -> list[str]:
    """``n`` candidate commits in a chain after the seed, made in one `git fast-import` (seconds, not minutes)."""
    seed = git(repo, "rev-parse", "HEAD")
    lines = []
    for i in range(1, n + 1):
        body = f"# candidate {i}\nSCORE = {1.0 + i / 1000:.4f}\n" + "x = 1\n" * (i % 7)
        msg = f"round {i}"
        lines += ["commit refs/heads/bench", f"mark :{i}", "committer vibeserve <v@localhost> 1700000000 +0000",
                  f"data {len(msg)}", msg, f"from {seed}" if i == 1 else f"from :{i - 1}",
                  f"M 100644 inline server/part{i % 25}.py", f"data {len(body.encode())}", body, ""]
    marks = repo / ".git" / "bench-marks"
    subprocess.run(["git", "fast-import", "--quiet", f"--export-marks={marks}"], cwd=repo, check=True,
                   input="\n".join(lines).encode())
    by_mark = dict(line.split() for line in marks.read_text().splitlines())
    return [by_mark[f":{i}"] for i in range(1, n + 1)]


def add_round(store: RunStore, n: int, start: str, cand: str, metric: float, best: float) -> None:
    """Round ``n`` as the engine records it: started, gates, agent calls, then finished in one write."""
    store.start_round(n)
    status = RoundStatus.KEPT if metric > best else RoundStatus.ACCEPTED
    task = Task(start_commit=start, brief=f"try idea {n}", title=f"idea {n}", acceptance_criteria=["faster"])
    verdicts = [GateVerdict(gate=GateName.ACCURACY, passed=True, commit=cand, reason="8/8 exact"),
                GateVerdict(gate=GateName.PROBES, passed=True, commit=cand, reason="8/8 probes"),
                GateVerdict(gate=GateName.BENCHMARK, passed=True, commit=cand, metric=metric,
                            samples=[metric * 0.99, metric, metric * 1.01], spread=0.02, reason="measured")]
    for v in verdicts:
        store.record_gate(n, 1, v)
    for role, wall in ((Role.IMPLEMENTER, 300.0), (Role.JUDGE, 40.0), (Role.EVALUATOR, 30.0)):
        store.record_agent_call(f"r{n:03d}/a1/{role}", n, 1, role, "codex", "gpt-5", AgentResult(
            reply={"summary": "ok"}, exit_reason=ExitReason.OK, wall_s=wall, tokens_in=20_000, tokens_out=2_000,
            cost_usd=0.05))
    result = RoundResult(round=n, task=task, status=status, candidate=cand, attempts=1, metric=metric,
                         verdicts=verdicts, reason="beats the best" if status == RoundStatus.KEPT else "no gain")
    store.update_round(n, status=str(status), task=task.model_dump_json(), start_commit=start, candidate=cand,
                       metric=metric, attempts=1, result=result.model_dump_json(), finished_at=time.time())
    for gate in ("accuracy", "probes", "benchmark"):
        (store.dir / "logs" / f"r{n:03d}" / "a1" / gate).mkdir(parents=True, exist_ok=True)


def build(runs: Path, rounds: int) -> tuple[RunStore, list[str]]:
    run_dir = runs / RUN
    store = RunStore.create(run_dir)
    store.init_run(RUN, "toy", "evolutionary", {"benchmark": {"metric": "score", "direction": "max", "unit": "pts"},
                                                "harness": "codex", "sandbox": "none"}, {})
    seed_dir = runs.parent / "seed"
    seed_dir.mkdir()
    (seed_dir / "server").mkdir()
    (seed_dir / "server" / "__main__.py").write_text("print('seed')\n")
    seed = Workspace(run_dir).init(seed_dir)
    shas = make_commits(run_dir / "repo", rounds + 50)  # the extra ones are for the update rounds
    store.start_round(0)
    store.update_round(0, status="kept", task=Task(start_commit=seed, brief="seed").model_dump_json(),
                       start_commit=seed, candidate=seed, metric=1.0, finished_at=time.time())
    store.update_run(baseline_commit=seed, baseline_metric=1.0, best_commit=seed, best_metric=1.0)
    best, prev = 1.0, seed
    for n in range(1, rounds + 1):
        metric = 1.0 + (n % 97) / 50 + n / 2000
        add_round(store, n, prev, shas[n - 1], metric, best)
        best, prev = max(best, metric), shas[n - 1]
    store.update_run(best_metric=best)
    return store, shas


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vibeserve ui` from one source tree, as a subprocess on a free loopback port."""

    def __init__(self, src: Path, runs: Path):
        self.src, self.port = src, free_port()
        env = {**os.environ, "PYTHONPATH": str(src.resolve()), "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "vibeserve", "ui", "--runs-dir", str(runs),
                                      "--port", str(self.port)], env=env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.base + "/", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def get_ms(self, client: httpx.Client, path: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        r = client.get(self.base + path, timeout=120)
        r.raise_for_status()
        return (time.perf_counter() - t0) * 1000, r.text

    def stop(self) -> None:
        os.killpg(self.proc.pid, 15)
        self.proc.wait(10)


def update_ms(server: Server, store: RunStore, n: int, start: str, cand: str) -> float:
    """Record round ``n`` finished; the time until the live page's partial fetch shows its row."""
    changed = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with httpx.Client(timeout=None) as c, c.stream("GET", f"{server.base}/runs/{RUN}/events") as r:
            for line in r.iter_lines():
                if line == "event: ready":
                    ready.set()
                elif line == "event: change":
                    changed.set()
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    ready.wait(30)
    time.sleep(0.3)  # the stream's first signature is taken; the write below is a change to it
    t0 = time.perf_counter()
    add_round(store, n, start, cand, 1.5, 1e9)
    with httpx.Client() as client:
        while True:
            if not changed.wait(30):
                raise RuntimeError("no change event within 30 s")
            _, html = server.get_ms(client, f"/runs/{RUN}?partial=1")
            if f'id="round-{n}"' in html:
                return (time.perf_counter() - t0) * 1000
            changed.clear()  # not there yet: wait for the next event, as the page would


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--src", type=Path, action="append", help="source tree(s) of vibeserve to serve from")
    args = ap.parse_args()
    srcs = args.src or [Path(__file__).resolve().parent.parent / "src"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        t0 = time.monotonic()
        store, shas = build(runs, args.rounds)
        built_s = time.monotonic() - t0
        servers = [Server(src, runs) for src in srcs]
        page: dict[str, dict[str, list[float]]] = {str(s.src): {"run": [], "partial": [], "index": []}
                                                    for s in servers}
        update: dict[str, list[float]] = {str(s.src): [] for s in servers}
        try:
            with httpx.Client() as client:
                for s in servers:  # a first load each (imports, caches), not counted
                    s.get_ms(client, f"/runs/{RUN}")
                for _ in range(args.repeats):  # alternated, so load on the machine hits all alike
                    for s in servers:
                        for name, path in (("run", f"/runs/{RUN}"), ("partial", f"/runs/{RUN}?partial=1"),
                                           ("index", "/")):
                            page[str(s.src)][name].append(s.get_ms(client, path)[0])
            n = args.rounds
            for _ in range(args.updates):
                for s in servers:
                    n += 1
                    update[str(s.src)].append(update_ms(s, store, n, shas[n - 2], shas[n - 1]))
        finally:
            for s in servers:
                s.stop()
            store.close()
    out = {
        "rounds": args.rounds, "build_s": round(built_s, 1), "load_avg_1_5_15": list(os.getloadavg()),
        "cpus": os.cpu_count(), "goal_ms": {"page": 300, "update": 1000},
        "servers": {src: {"page_ms": {k: stats(v) for k, v in page[src].items()}, "update_ms": stats(update[src])}
                    for src in page},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
