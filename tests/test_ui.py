"""`vibeserve ui`: the dashboard's pages over a real toy run (evolutionary, so it has lineage), read-only
opening of a store a live process writes, refused paths, escaping, the access token, the event stream, and
the real server rendered by a headless browser."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import cli
from test_loop import EVAL, PASS, implementer
from vibeserve.store import RunStore
from vibeserve.testing.toy_target import make_toy_target, write_trajectory
from vibeserve.ui import RunSource, create_app, open_readonly

SCRIPT = '<script>alert("owned")</script>'
SNEAKY = {"verdict": "fail", "reasons": f"serves a canned answer {SCRIPT} for every prompt",
          "reward_hacking": True, "criteria_met": False}
LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An evolutionary run on the toy: round 1 doubles the score (kept), round 2 is rejected by the judge
    with a reason holding a script tag, round 3 is better than the baseline but not the best (accepted)."""
    root = tmp_path_factory.mktemp("ui")
    toy = make_toy_target(root / "toy", rounds=3, retries=1, repeats=2)
    traj = write_trajectory(root / "traj", [
        implementer("r001/a1/implementer", {"score.txt": "2.0\n"}),
        implementer("r002/a1/implementer", {"score.txt": "9.0\n"}),
        {"key": "r002/a1/judge", "reply": SNEAKY},
        implementer("r003/a1/implementer", {"score.txt": "1.5\n"}),
        {"key": "r*/a*/judge", "reply": PASS},
        {"key": "r*/a*/evaluator", "reply": EVAL},
    ])
    runs = root / "runs"
    cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "evo", "--policy",
        "evolutionary", "--sandbox", "none", "--no-report", "-P", "temperature=0.01", check=True)
    return runs


@pytest.fixture
def client(runs: Path) -> TestClient:
    return TestClient(create_app(RunSource(runs)), base_url=LOCAL)


@pytest.fixture
def run_copy(runs: Path, tmp_path: Path) -> Path:
    """A copy of the run that a test may write to (a second writer, a planted link) without touching the
    module's run."""
    dst = tmp_path / "runs"
    shutil.copytree(runs, dst, symlinks=True)
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, timeout: float = 30, **kw) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2, **kw)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_index_lists_every_run_under_the_runs_dir(client: TestClient, runs: Path) -> None:
    (runs / "not-a-run").mkdir(exist_ok=True)
    html = client.get("/").text
    assert 'href="/runs/evo"' in html and "evolutionary" in html and "2x better" in html
    assert "not-a-run" not in html
    named = TestClient(create_app(RunSource(runs, {"evo": runs / "evo"})), base_url=LOCAL).get("/").text
    assert "the runs named on the command line" in named and 'href="/runs/evo"' in named


def test_run_page_shows_the_rounds_gates_trajectory_and_lineage(client: TestClient) -> None:
    html = client.get("/runs/evo").text
    rows = {n: html[html.index(f'id="round-{n}"'):] for n in range(4)}
    assert '<span class="verdict pass">benchmark pass</span>' in rows[1].split("</tr>")[0]
    r2 = rows[2].split("</tr>")[0]
    assert '<span class="status rejected">rejected</span>' in r2 and "accuracy pass" in r2
    assert "benchmark" not in r2  # the judge stopped it before the benchmark
    assert "judge: serves a canned answer" in r2
    r3 = rows[3].split("</tr>")[0]
    assert "accepted" in r3 and "1.500 pts" in r3 and "25% worse" in r3 and "not kept" in r3
    assert "(round 1)" in r3  # its parent, chosen by the evolutionary policy
    assert "1 file, +1 -1" in r3 and "± 0.0%" in r3
    # two charts (by round, by wall time), each with marks per status, the baseline and the lineage
    assert html.count('<svg class="trajectory"') == 2
    assert html.count('class="mark kept"') >= 4 and html.count('class="mark rejected"') >= 2
    assert html.count('class="baseline"') == 2
    assert html.count('class="lineage"') == 4  # 0 -> 1 and 1 -> 3, in both charts
    assert 'href="/runs/evo/rounds/3"' in html


def test_text_from_the_run_is_escaped(client: TestClient) -> None:
    for url in ("/runs/evo", "/runs/evo/rounds/2", "/runs/evo?partial=1"):
        html = client.get(url).text
        assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in html, url
        assert SCRIPT not in html
    assert "script-src 'self'" in client.get("/runs/evo").headers["content-security-policy"]


def test_round_page_shows_diff_gate_logs_transcripts_and_costs(client: TestClient) -> None:
    html = client.get("/runs/evo/rounds/1").text
    assert '<span class="del">-1.0</span>' in html and '<span class="add">+2.0</span>' in html
    assert "1 file, +1 -1: score.txt +1 -1" in html
    assert "<code>r001/a1/implementer</code>" in html and "scripted" in html and "$0.00" in html
    assert "score file read per request" in html  # the evaluator's analysis
    assert 'href="/runs/evo/files?path=logs/r001/a1/benchmark"' in html
    link = "/runs/evo/files?path=transcripts/r001-a1-implementer.jsonl"
    assert f'href="{link}"' in html
    transcript = client.get(link)
    assert transcript.status_code == 200 and "score.txt" in transcript.text
    listing = client.get("/runs/evo/files?path=logs/r001/a1/benchmark").text
    assert "logs/r001/a1/benchmark/" in listing
    log = listing.split('href="')[1].split('"')[0].replace("&amp;", "&")
    assert client.get(log).status_code == 200
    assert client.get(log + "&raw=1").headers["content-type"].startswith("text/plain")
    assert client.get("/runs/evo/rounds/9").status_code == 404
    assert client.get("/runs/nope").status_code == 404


def test_paths_that_leave_the_run_are_refused(runs: Path, run_copy: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (run_copy / "evo" / "logs" / "escape").symlink_to(secret)
    client = TestClient(create_app(RunSource(run_copy)), base_url=LOCAL)
    for path in ("../secret.txt", "logs/../run.db", "logs/../../secret.txt", str(secret), "/etc/passwd",
                 "run.db", "repo/score.txt", "logs/escape", "logs\\..\\run.db", ""):
        r = client.get("/runs/evo/files", params={"path": path})
        assert r.status_code == 403, path
        assert "top secret" not in r.text
    assert client.get("/runs/evo/files?path=logs%2F..%2F..%2Fsecret.txt").status_code == 403
    assert client.get("/runs/..%2F..%2Fetc/files?path=logs").status_code == 404
    assert client.get("/runs/evo/files", params={"path": "logs/r001"}).status_code == 200


def test_the_store_is_opened_read_only_and_never_written(runs: Path, client: TestClient) -> None:
    db = runs / "evo" / "run.db"
    before = (db.read_bytes(), sorted(p.name for p in (runs / "evo").iterdir()))
    for url in ("/", "/runs/evo", "/runs/evo/rounds/1", "/runs/evo/rounds/2?partial=1"):
        assert client.get(url).status_code == 200
    assert (db.read_bytes(), sorted(p.name for p in (runs / "evo").iterdir())) == before
    store = open_readonly(runs / "evo")
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.start_round(99)
    finally:
        store.close()


def test_a_token_is_needed_on_every_request_when_one_is_set(runs: Path) -> None:
    client = TestClient(create_app(RunSource(runs), token="s3cret"), base_url="http://192.0.2.7")
    for url in ("/", "/runs/evo", "/runs/evo/events", "/static/ui.js"):
        assert client.get(url).status_code == 401, url
    assert client.get("/?token=wrong").status_code == 403
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 403
    first = client.get("/runs/evo?token=s3cret")
    assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
    assert client.get("/runs/evo/rounds/1").status_code == 200  # the cookie from now on
    fresh = TestClient(create_app(RunSource(runs), token="s3cret"), base_url="http://192.0.2.7")
    assert fresh.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    # without a token, only loopback names are answered (a rebound DNS name is not)
    loopback = TestClient(create_app(RunSource(runs)), base_url="http://evil.example")
    assert loopback.get("/").status_code == 400
    assert TestClient(create_app(RunSource(runs)), base_url="http://localhost:8765").get("/").status_code == 200


def test_a_change_in_the_store_is_sent_as_an_event(run_copy: Path) -> None:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(RunSource(run_copy), poll_s=0.1), host="127.0.0.1",
                                           port=port, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    writer = None
    try:
        wait_up(base + "/")
        with httpx.stream("GET", base + "/runs/evo/events", timeout=10) as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            lines = events.iter_lines()
            assert "event: ready" in [next(lines), next(lines)]
            writer = RunStore.open(run_copy / "evo")  # a second process's writer, left open as a live run's is
            writer.start_round(4)
            deadline = time.monotonic() + 8
            seen = []
            while "event: change" not in seen and time.monotonic() < deadline:
                seen.append(next(lines))
            assert "event: change" in seen
        live = httpx.get(base + "/runs/evo?partial=1", timeout=10).text
        assert 'id="round-4"' in live and '<span class="status running">running</span>' in live
        assert "<html" not in live  # only the live part, which the page swaps in
    finally:
        if writer is not None:
            writer.close()
        server.should_exit = True
        thread.join(10)


HEADLESS = ("--headless", "--no-sandbox", "--disable-gpu")


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@contextmanager
def serving(runs: Path) -> Iterator[str]:
    """The real `vibeserve ui` on a free loopback port, as a subprocess; yields its address."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vibeserve", "ui", "--runs-dir", str(runs), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_up(f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)


def test_the_cli_server_binds_loopback_and_renders_in_a_browser(runs: Path, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium installed (apt-get install chromium) to render the page with")
    png = tmp_path / "run.png"
    with serving(runs) as base:
        assert httpx.get(base + "/runs/evo", timeout=10).status_code == 200
        subprocess.run([browser, *HEADLESS, f"--screenshot={png}", "--window-size=1280,900", base + "/runs/evo"],
                       capture_output=True, timeout=120, check=True, cwd=tmp_path)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000
    shutil.copy(png, Path(os.environ.get("VIBESERVE_UI_SHOT", tmp_path / "kept.png")))


def test_the_cli_prints_a_token_when_bound_beyond_loopback(runs: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vibeserve", "ui", "--runs-dir", str(runs), "--host", "0.0.0.0",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert "?token=" in line, line
        token = line.rsplit("?token=", 1)[1].strip()
        base = f"http://127.0.0.1:{port}"
        wait_up(base + "/")
        assert httpx.get(base + "/").status_code == 401
        assert httpx.get(base + "/?token=" + token).status_code == 200
        assert len(token) >= 24
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)


def test_the_page_applies_a_change_in_the_store_without_a_reload(run_copy: Path, tmp_path: Path) -> None:
    if _browser() is None:
        pytest.skip("no chromium installed (apt-get install chromium) to run the page's script in")
    from browser import open_page

    # The page is open and loaded before the store changes; a second writer then changes the store until the
    # page shows the change (its script sets data-updated each time it swaps new rows in), or a minute passes.
    shown = "document.getElementById('round-4') !== null && !!document.querySelector('[data-updated]')"
    with serving(run_copy) as base, open_page(base + "/runs/evo") as page:
        assert page.evaluate("document.getElementById('round-4') === null")
        writer = RunStore.open(run_copy / "evo")
        try:
            writer.start_round(4)
            deadline = time.monotonic() + 60
            k = 0
            while not page.evaluate(shown) and time.monotonic() < deadline:
                k += 1
                writer.update_round(4, attempts=k)
                time.sleep(0.5)
        finally:
            writer.close()
        assert page.evaluate(shown), "the page never showed round 4 without a reload"
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
        assert page.problems() == []
