"""`vibeserve report RUN RUN...`: two runs (ralph and evolutionary, written through the store's API) compared
on one page and in summary.md; the best-so-far curves against agent cost and wall time; runs ranked on different metrics
refused with what differs; the page drawn by a real headless Chromium with no console error and every image
loaded, and its screenshot saved; batched diffstats as git diff gives them."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cli
from vibeserve.report.compare import NotComparable, columns
from vibeserve.report.render import write_comparison
from vibeserve.report.screenshot import find_browser
from vibeserve.store import RunStore
from vibeserve.types import AgentResult, ExitReason, Role, Task

PNG = b"\x89PNG\r\n\x1a\n"


def _run(runs: Path, run_id: str, policy: str, best: float) -> None:
    """A finished run written through the store's API: baseline 1.0, one kept round at ``best``, with an
    implementer, a judge and an evaluator call."""
    store = _store(runs, run_id, "score", "max", "/t/toy", policy=policy)
    store.start_round(0)
    store.update_round(0, status="kept", metric=1.0, finished_at=store.run()["created_at"])
    for role, cost in ((Role.JUDGE, 0.1), (Role.EVALUATOR, 0.05)):
        store.record_agent_call(f"r001/a1/{role}", 1, 1, role, "codex", "m1", AgentResult(
            reply={"ok": True}, exit_reason=ExitReason.OK, wall_s=5.0, tokens_in=50, tokens_out=5, cost_usd=cost))
    _round(store, 1, best, 0.5)
    store.update_run(baseline_metric=1.0, baseline_commit="a" * 40, best_metric=best, best_commit=f"{1:040x}",
                     status="finished", finished_at=store.run()["created_at"] + 60)
    store.close()


def test_two_runs_on_one_page_in_summary_md_and_in_chromium(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _run(runs, "ralp", "ralph", 2.0)
    _run(runs, "evol", "evolutionary", 3.0)
    done = cli("report", "ralp", "evol", "--runs-dir", str(runs), check=True)
    out = runs / "compare-ralp-vs-evol"
    assert str(out) in done.stdout
    assert (out / "comparison.png").read_bytes().startswith(PNG)
    md = (out / "summary.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ralp") or
            line.startswith("| evol")}
    assert "| ralph | codex (m1) | toy |" in rows["ralp"] and "2x better than the baseline" in rows["ralp"]
    assert "| evolutionary | codex (m1) | toy |" in rows["evol"] and "3x better than the baseline" in rows["evol"]
    assert "| $0.65 |" in rows["ralp"]  # the agent cost of its three calls
    # The per-role table: a column group per run, each role's calls side by side.
    header = next(line for line in md.splitlines() if line.startswith("| Role |"))
    assert "ralp: calls" in header and "evol: calls" in header
    cells = next(line for line in md.splitlines() if line.startswith("| implementer |")).split("|")[2:-1]
    assert len(cells) == 8 and cells[0].strip() == cells[4].strip() == "1"  # one implementer call in each run
    html = (out / "index.html").read_text()
    assert 'src="comparison.png"' in html and html.count("<code>ralp</code>") >= 2

    if find_browser() is None:
        assert "no screenshot: chromium is not installed" in done.stdout
        pytest.skip("no chromium installed (apt-get install chromium) to render the page with")
    from browser import load_page

    shot = out / "screenshot.png"
    assert f"screenshot: {shot}" in done.stdout
    assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 20_000
    page = load_page((out / "index.html").as_uri())
    assert page.errors == []
    assert page.images and all(w > 0 for _, w in page.images), page.images
    assert page.title.startswith("vibeserve comparison")


def _store(root: Path, run_id: str, metric: str, direction: str, target: str, policy: str = "ralph") -> RunStore:
    store = RunStore.create(root / run_id)
    store.init_run(run_id, target, policy, {"benchmark": {"metric": metric, "direction": direction, "unit": "u"},
                                             "harness": "codex", "model": "m1"}, {})
    return store


def _round(store: RunStore, n: int, metric: float, cost: float) -> None:
    """Round ``n`` with one implementer call; the round ends the moment its call is recorded."""
    store.start_round(n)
    key = f"r{n:03d}/a1/implementer"
    store.record_agent_call(key, n, 1, Role.IMPLEMENTER, "codex", "m1", AgentResult(
        reply={"summary": "x"}, exit_reason=ExitReason.OK, wall_s=10.0, tokens_in=100, tokens_out=10, cost_usd=cost))
    store.update_round(n, status="kept", task=Task(start_commit="a" * 40, brief="b").model_dump_json(),
                       candidate=f"{n:040x}", metric=metric, finished_at=store.agent_call(key)["finished_at"])


def test_curves_follow_agent_cost_and_wall_time(tmp_path: Path) -> None:
    store = _store(tmp_path, "a", "score", "min", "/t/one")
    store.start_round(0)
    store.update_round(0, status="kept", metric=10.0, finished_at=store.run()["created_at"])
    _round(store, 1, 8.0, 0.5)
    _round(store, 2, 9.0, 0.25)  # worse (lower is better): not a new best, but its cost counts from here on
    _round(store, 3, 4.0, 1.0)
    (col,), _ = columns([store])
    assert [p.best for p in col.curve] == [10.0, 8.0, 4.0]
    assert [p.cost_usd for p in col.curve] == [0.0, 0.5, 1.75]
    assert col.curve[0].wall_s == 0.0 and 0 < col.curve[1].wall_s < col.curve[2].wall_s
    assert col.harness == "codex (m1)" and col.costs_known
    store.close()


def test_runs_on_different_metrics_are_refused_and_shared_metrics_compare(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for run_id, metric, direction, target in (("tput", "tokens_per_s", "max", "/t/one"),
                                              ("lat", "ttft_ms", "min", "/t/two"),
                                              ("other", "tokens_per_s", "max", "/t/three")):
        _store(runs, run_id, metric, direction, target).close()
    refused = cli("report", "tput", "lat", "--runs-dir", str(runs))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    said = " ".join(refused.stderr.split())
    assert "tput ranks tokens_per_s" in said and "lat ranks ttft_ms" in said and "same [benchmark] metric" in said
    assert not (runs / "compare-tput-vs-lat").exists()
    stores = [RunStore.open(runs / name) for name in ("tput", "other", "tput")]
    try:
        md = (write_comparison(stores[:2], tmp_path / "shared").parent / "summary.md").read_text()
        assert "different targets" in md and "/t/one" in md and "/t/three" in md
        with pytest.raises(NotComparable, match="named more than once"):
            columns([stores[0], stores[2]])
    finally:
        for store in stores:
            store.close()


def test_batched_diffstats_agree_with_git_diff_per_pair(tmp_path: Path) -> None:
    from vibeserve.report.round_detail import diffstat, diffstats
    from vibeserve.workspace import git

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shas = []
    for files, gone in (({"a.py": "x = 1\n" * 20, "b.bin": "\0\1"}, ()), ({"a.py": "x = 2\n" * 20}, ()),
                        ({"moved.py": "x = 2\n" * 20, "c.py": "y\n"}, ("a.py",))):
        for name, text in files.items():
            (repo / name).write_text(text)
        for name in gone:
            (repo / name).unlink()
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "c")
        shas.append(git(repo, "rev-parse", "HEAD"))
    pairs = [(shas[0], shas[1]), (shas[1], shas[2]), (shas[0], shas[2]), (shas[2], shas[2]), (shas[0], "f" * 40)]
    cache: dict = {}
    got = diffstats(repo, pairs, cache)
    for pair in pairs[:4]:
        assert got[pair] == diffstat(repo, *pair)
    assert any(" => " in f[0] for f in got[pairs[1]].files)  # the rename, as `git diff` names it
    assert pairs[4] not in got and pairs[4] not in cache  # an unknown commit: left out, asked again next time
    assert diffstats(tmp_path / "nowhere", pairs) == {}
