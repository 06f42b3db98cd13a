"""`vibeserve status` and `vibeserve report` on a real toy run (a latency to minimize, with probes, an output
audit and TTFT/TPOT/ITL fields), and on stores that were interrupted or measured on a busy machine."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import cli
from test_loop import EVAL, PASS, implementer, orchestrator
from test_report import new_store, populate
from vibeserve.report import trajectory_figure
from vibeserve.store import RunStore
from vibeserve.testing.toy_target import make_toy_target, write_trajectory
from vibeserve.types import GateName, GateVerdict

# The toy's benchmark as a latency: the score the server declares is its TTFT in ms, a little slower on each
# timed repeat, with the `vllm bench serve` fields and the answers the output audit compares.
LATENCY_BENCH = '''\
import argparse, json, re, urllib.request
ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--responses", required=True)
a = ap.parse_args()
rows = []
for x in range(4):
    with urllib.request.urlopen(f"{a.url}/compute?x={x}", timeout=5) as r:
        rows.append({"prompt": f"x={x}", "max_tokens": 4, "text": str(json.load(r)["y"]), "ok": True})
with urllib.request.urlopen(f"{a.url}/stats", timeout=5) as r:
    score = json.load(r)["score"]
m = re.search(r"bench(\\d+)\\.json$", a.out)
ttft = score * (1 + (int(m.group(1)) if m else 0) / 100)
open(a.responses, "w").write("".join(json.dumps(r) + "\\n" for r in rows))
json.dump({"median_ttft_ms": ttft, "p99_ttft_ms": 2 * ttft, "median_tpot_ms": 10.0, "p99_tpot_ms": 30.0,
           "median_itl_ms": 9.0, "p99_itl_ms": 25.0, "completed": 4}, open(a.out, "w"))
'''
# The reference answers both the sample ({"x": ...}) and the audit's requests ({"prompt": "x=3", ...}).
REFERENCE = '''\
import argparse, json
ap = argparse.ArgumentParser()
ap.add_argument("--in", dest="inp", required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()
with open(a.inp) as fi, open(a.out, "w") as fo:
    for line in fi:
        req = json.loads(line)
        if "prompt" in req:
            x = int(req["prompt"].split("=")[1])
            fo.write(json.dumps({"id": req["id"], "text": str(x * x + 1)}) + "\\n")
        else:
            fo.write(json.dumps({"id": req["id"], "y": req["x"] * req["x"] + 1}) + "\\n")
'''
PROBES = '''\
import argparse, json, urllib.request
ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--report", required=True)
a = ap.parse_args()
bad = sum(json.load(urllib.request.urlopen(f"{a.url}/compute?x={x}", timeout=5))["y"] != x * x + 1 for x in range(5))
json.dump({"total": 5, "failures": bad}, open(a.report, "w"))
raise SystemExit(1 if bad else 0)
'''
HACK = {"verdict": "fail", "reasons": "reads [score.txt] on every request instead of serving faster",
        "reward_hacking": True, "criteria_met": False}


def latency_target(root: Path) -> Path:
    toy = make_toy_target(root, rounds=3, retries=1, repeats=3)
    toml = (toy / "target.toml").read_text()
    toml = toml.replace('command = ["python", "checks/bench.py", "--url", "{url}", "--out", "{report}"]',
                        'command = ["python", "checks/bench.py", "--url", "{url}", "--out", "{report}", '
                        '"--responses", "{responses}"]')
    toml = toml.replace('metric = "score"\ndirection = "max"\nunit = "pts"',
                        'metric = "median_ttft_ms"\ndirection = "min"\nunit = "ms"\nwarmup = 0')
    toml = toml.replace("[benchmark]", '[probes]\nkind = "command"\ncommand = ["python", "checks/probes.py", '
                        '"--url", "{url}", "--report", "{report}"]\n\n[benchmark]')
    (toy / "target.toml").write_text(toml)
    (toy / "checks" / "bench.py").write_text(LATENCY_BENCH)
    (toy / "checks" / "probes.py").write_text(PROBES)
    (toy / "reference.py").write_text(REFERENCE)
    (toy / "seed" / "score.txt").write_text("17476\n")
    return toy


@pytest.fixture(scope="module")
def latency_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Round 1 cuts TTFT from ~17476 ms to ~566 ms (kept), round 2 is rejected by the judge, round 3 is a
    little slower than round 1 (accepted, not kept). Run with --sandbox none."""
    root = tmp_path_factory.mktemp("latency")
    toy = latency_target(root / "toy")
    traj = write_trajectory(root / "traj", [
        orchestrator(1, "Cache the prefill"),
        implementer("r001/a1/implementer", {"score.txt": "566\n"}),
        orchestrator(2, "Read the score file"),
        implementer("r002/a1/implementer", {"score.txt": "100\n"}),
        {"key": "r002/a1/judge", "reply": HACK},
        orchestrator(3, "Smaller batches"),
        implementer("r003/a1/implementer", {"score.txt": "600\n"}),
        {"key": "r*/a*/judge", "reply": PASS},
        {"key": "r*/a*/evaluator", "reply": EVAL},
    ])
    runs = root / "runs"
    cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "lat", "--sandbox", "none",
        "--no-report", check=True)
    return runs


def round_line(out: str, n: int) -> str:
    """The one status line of round ``n``."""
    lines = [line for line in out.splitlines() if re.match(rf"{n}\s+(kept|accepted|rejected|failed|running)\b", line)]
    assert len(lines) == 1, out
    return lines[0]


def test_status_prints_one_plain_line_per_round(latency_run: Path) -> None:
    out = cli("status", "lat", "--runs-dir", str(latency_run), check=True).stdout
    assert "warning: measured without the sandbox (sandbox = none)" in out
    assert "baseline 17651 ms, best 571.7 ms" in out  # medians of the repeats, in plain notation
    assert "30.9x better than the baseline; lower is better" in out
    assert "e+0" not in out
    r1 = round_line(out, 1)
    assert re.search(r"kept\s+571\.7\s+30\.9x better\s+30\.9x better\s+1\s+accuracy pass, probes 5/5, "
                     r"benchmark 571\.7 ms, audit 4/4\s+Cache the prefill", r1)
    r2 = round_line(out, 2)  # the judge's words with their brackets, on one line with the verdict
    assert "Read the score file: judge: reads [score.txt] on every request instead of serving faster" in r2
    assert "accuracy pass, probes 5/5" in r2
    r3 = round_line(out, 3)  # better than the baseline, worse than the best before it
    assert re.search(r"accepted\s+606\.0\s+29\.1x better\s+5\.67% worse", r3)
    assert "not kept: its slowest repeat (612.0)" in r3
    assert not any(ch in out for ch in "┏┃│╭")  # no table boxes


def test_report_shows_factors_gates_repeats_latency_load_and_links(latency_run: Path) -> None:
    done = cli("report", "lat", "--runs-dir", str(latency_run), check=True)
    out = latency_run / "lat" / "report"
    if shutil.which("chromium"):  # the page as a browser draws it, saved with the report
        assert (out / "screenshot.png").read_bytes().startswith(b"\x89PNG") and "screenshot: " in done.stdout
    else:
        assert "no screenshot: chromium is not installed" in done.stdout
    md = (out / "summary.md").read_text()
    assert md.index("Warning: measured without the sandbox") < md.index("median_ttft_ms: 17651 → 571.7 ms")
    assert "(30.9x better than the baseline, lower is better)" in md
    assert re.search(r"\| 1 \| kept \| Cache the prefill \|.*\| 571\.7 \| 30\.9x better \| 30\.9x better \| 1 \| "
                     r"accuracy pass, probes 5/5, benchmark 571\.7 ms, audit 4/4 \|", md)
    assert "| 29.1x better | 5.67% worse |" in md
    assert "reads \\[score.txt\\] on every request" in md  # Markdown-escaped, still whole
    r1 = md[md.index("### Round 1:"):md.index("### Round 2:")]
    assert "- repeats: 566.0, 571.7, 577.3 ms (spread 2.0%)" in r1
    assert "TTFT p50 571.7 ms, p99 1143 ms; TPOT p50 10.00 ms, p99 30.00 ms; ITL p50 9.000 ms, p99 25.00 ms" in r1
    assert re.search(r"- other load while it measured: [0-9.]+ of \d+ cores", r1)
    assert re.search(r"- diff \w{8}\.\.\w{8}: 1 file, \+1 -1 \(score\.txt \+1 -1\)", r1)
    links = re.findall(r"\]\(([^)]+)\)", r1)
    assert "../logs/r001/a1/benchmark/" in links and "../transcripts/r001-a1-implementer.jsonl" in links
    assert all((out / link).exists() for link in links)  # every link resolves from the report's folder
    assert "e+0" not in md

    html = (out / "index.html").read_text()
    assert 'href="../logs/r001/a1/probes/"' in html
    assert "reads [score.txt] on every request" in html
    assert "measured without the sandbox" in html
    assert "30.9x better than the baseline" in html


def test_trajectory_uses_a_log_axis_only_for_a_wide_span(latency_run: Path, tmp_path: Path) -> None:
    store = RunStore.open(latency_run / "lat")
    try:
        ax = trajectory_figure(store).axes[0]
        assert ax.get_yscale() == "log"  # 17651 ms down to 571.7 ms: more than 10x
        labels = [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
        assert labels and not any("e+" in t or "10^" in t for t in labels)
    finally:
        store.close()
    narrow = new_store(tmp_path)
    populate(narrow)  # 100 to 400: 4x
    assert trajectory_figure(narrow).axes[0].get_yscale() == "linear"


def test_an_interrupted_run_says_so_in_one_line_at_the_top(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    populate(store)
    crash = "interrupted (SIGTERM)\nTraceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: '[run]'"
    store.update_run(status="interrupted", stop_reason=crash)
    store.close()
    runs = tmp_path / "runs"
    out = cli("status", "r1", "--runs-dir", str(runs), check=True).stdout
    assert out.splitlines()[0] == ("run r1 (smollm2-chat-cpu, issue-tracker): interrupted: interrupted (SIGTERM) "
                                   "KeyError: '[run]'")
    assert "Traceback" not in out and "sandbox" not in out  # no sandbox recorded: no banner
    cli("report", "r1", "--runs-dir", str(runs), "--no-screenshot", check=True)
    md = (runs / "r1" / "report" / "summary.md").read_text()
    first = md.split("\n\n")[1]
    assert first == ("> **Warning: run interrupted: interrupted (SIGTERM) KeyError: '\\[run\\]'; continue with "
                     "\\`vibeserve resume r1\\`**")


def test_gate_warnings_are_stored_and_shown(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    populate(store)
    busy = "other work kept 1.50 of 2 cores busy during this measurement [benchmark]: its numbers may be low"
    store.record_gate(4, 1, GateVerdict(gate=GateName.BENCHMARK, passed=True, commit="c" * 40, metric=150.0,
                                        samples=[149.0, 150.0, 152.0], spread=0.02, warnings=[busy],
                                        report={"load": {"other_cores": 1.5, "cores": 2}}))
    store.close()
    runs = tmp_path / "runs"
    out = cli("status", "r1", "--runs-dir", str(runs), check=True).stdout
    assert f"round 4 warning: {busy}" in out
    cli("report", "r1", "--runs-dir", str(runs), "--no-screenshot", check=True)
    md = (runs / "r1" / "report" / "summary.md").read_text()
    r4 = md[md.index("### Round 4:"):md.index("### Round 5:")]
    assert "- repeats: 149.0, 150.0, 152.0 tok/s (spread 2.0%)" in r4
    assert "- other load while it measured: 1.500 of 2 cores" in r4
    assert "**warning: other work kept 1.50 of 2 cores busy during this measurement \\[benchmark\\]" in r4
