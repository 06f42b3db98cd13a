"""End-to-end test of the tiny-llama target kit: setup, reference, seed server, accuracy gate, benchmark."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import kit_server

pytestmark = pytest.mark.slow

TARGET = Path(__file__).resolve().parents[1] / "examples" / "targets" / "tiny-llama"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
# The line the broken server copy changes; if the seed is rewritten, update the negative test with it.
GENERATION_LOOP = "for _ in range(max_tokens):"


def run_script(*argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a target script the way the framework does: the target's python, the target as cwd."""
    return subprocess.run(
        [sys.executable, *map(str, argv)],
        cwd=TARGET,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_seed(dest: Path) -> Path:
    shutil.copytree(TARGET / "seed", dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def serving(deliverable: Path, model: Path):
    """The deliverable started like the framework does; it must stop cleanly on SIGTERM."""
    return kit_server.serving(deliverable, model, ENV, clean_exit=True)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("artifacts") / "model"
    done = run_script("setup_model.py", "--out", out, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def seed_url(model_dir, tmp_path_factory) -> Iterator[str]:
    with serving(copy_seed(tmp_path_factory.mktemp("deliverable") / "seed"), model_dir) as url:
        yield url


def test_setup_is_complete_and_idempotent(model_dir):
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model_dir.iterdir()}
    assert not list(model_dir.parent.glob("model.tmp-*"))
    again = run_script("setup_model.py", "--out", model_dir)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout


def test_reference_generate(model_dir, tmp_path):
    requests = [
        {"id": "a", "kind": "completion", "prompt": "the quick brown fox", "max_tokens": 8},
        {
            "id": "b",
            "kind": "chat",
            "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 5,
        },
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in requests))
    done = run_script("reference/generate.py", "--model", model_dir, "--in", inp, "--out", out)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    for row, request in zip(rows, requests, strict=True):
        assert isinstance(row["text"], str) and row["text"]
        assert 1 <= len(row["token_ids"]) <= request["max_tokens"]
        assert all(isinstance(t, int) for t in row["token_ids"])


def test_seed_rejects_bad_requests(seed_url):
    assert httpx.get(seed_url + "/health").json() == {"status": "ok"}
    assert httpx.get(seed_url + "/v1/models").json()["data"][0]["id"] == "tiny-llama"
    bad = httpx.post(seed_url + "/v1/completions", content=b"{not json")
    assert bad.status_code == 400 and "error" in bad.json()
    too_long = httpx.post(seed_url + "/v1/completions", json={"prompt": "the " * 500, "max_tokens": 16})
    assert too_long.status_code == 400


def test_accuracy_passes_on_seed(seed_url, model_dir, tmp_path):
    report = tmp_path / "accuracy.json"
    done = run_script("checks/accuracy.py", "--url", seed_url, "--model", model_dir, "--report", report)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["failures"] == 0 and data["errors"] == 0
    assert data["total"] == len(data["cases"]) > 10
    assert any(c["stream"] for c in data["cases"]) and any(
        c["expected_finish_reason"] == "stop" for c in data["cases"]
    )


def test_bench_reports_throughput(seed_url, model_dir, tmp_path):
    report = tmp_path / "bench.json"
    done = run_script("checks/bench.py", "--url", seed_url, "--model", model_dir, "--out", report, "--requests", "12")
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert math.isfinite(data["output_throughput"]) and data["output_throughput"] > 0
    assert data["completed"] == data["num_requests"] and data["failed"] == 0
    assert data["total_output_tokens"] > 0 and data["median_ttft_ms"] > 0


def test_accuracy_fails_on_a_server_that_drops_the_last_token(model_dir, tmp_path):
    broken = copy_seed(tmp_path / "seed")
    engine = broken / "server" / "engine.py"
    source = engine.read_text()
    assert source.count(GENERATION_LOOP) == 1
    engine.write_text(source.replace(GENERATION_LOOP, "for _ in range(max_tokens - 1):"))
    report = tmp_path / "accuracy.json"
    with serving(broken, model_dir) as url:
        done = run_script("checks/accuracy.py", "--url", url, "--model", model_dir, "--report", report)
    assert done.returncode == 1, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["errors"] == 0 and data["failures"] > 0
    mismatch = next(c for c in data["cases"] if c["status"] == "mismatch" and c["max_tokens"] == 16)
    assert mismatch["first_divergent_token"] == 15


def test_accuracy_reports_an_unreachable_server_as_error(model_dir, tmp_path):
    report = tmp_path / "accuracy.json"
    done = run_script(
        "checks/accuracy.py",
        "--url",
        f"http://127.0.0.1:{kit_server.free_port()}",
        "--model",
        model_dir,
        "--report",
        report,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # the server's failure, not the checker's
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["errors"] > 0
    assert "ConnectError" in data["cases"][0]["error"]
