"""The moonshine-streaming-cpu kit: its audio set-up (real speech from the moonshine-voice wheel, offline and
idempotent), its model built from the moonshine_streaming config, the reference's partial transcripts, the GPU
variant's offline validation, and (long) each trajectory attempt's gate outcome: the causal-only encoder cache
fails the checker, the one aligned with the sliding window and the batched one pass the checker and the probes.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import wave
import zipfile
from pathlib import Path

import pytest

import kit_server
from conftest import cli

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "examples" / "targets" / "moonshine-streaming-cpu"
GPU_KIT = REPO / "examples" / "targets" / "moonshine-streaming-medium-l4"
TRAJECTORY = REPO / "examples" / "trajectories" / "moonshine-streaming-cpu"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _has_recordings() -> bool:
    if os.environ.get("MOONSHINE_VOICE_WHEEL"):
        return True
    try:
        return importlib.metadata.version("moonshine-voice") == "0.1.5"
    except importlib.metadata.PackageNotFoundError:
        return False


needs_audio = pytest.mark.skipif(not _has_recordings(), reason="the moonshine-voice recordings are not installed "
                                 "(scripts/setup.sh installs them: pip install --no-deps moonshine-voice==0.1.5)")


def run(args: list[str], cwd: Path = KIT, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("moonshine") / "audio"
    done = run(["setup_audio.py", "--out", str(out)])
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("moonshine") / "model"
    done = run(["setup_model.py", "--out", str(out)])
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@needs_audio
def test_setup_makes_short_16k_clips_of_real_speech_offline_and_only_once(audio_dir, tmp_path):
    listing = json.loads((audio_dir / "clips.json").read_text())
    assert len(listing) >= 6
    for entry in listing:
        assert entry["source"].startswith("moonshine-voice==0.1.5:moonshine_voice/assets/")
        with wave.open(str(audio_dir / entry["clip"])) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
            n = w.getnframes()
            pcm = w.readframes(n)
        assert n == entry["chunks"] * 5120 and n / 16000 <= 20  # whole 320 ms chunks, short enough for 2 cores
        assert len(set(pcm)) > 200  # speech, not silence
    # Idempotent, and the same bytes every time (the 48 kHz sources are filtered deterministically).
    again = run(["setup_audio.py", "--out", str(audio_dir)])
    assert again.returncode == 0 and "already complete" in again.stdout
    other = tmp_path / "audio"
    assert run(["setup_audio.py", "--out", str(other)]).returncode == 0
    for entry in listing:
        assert (other / entry["clip"]).read_bytes() == (audio_dir / entry["clip"]).read_bytes(), entry["clip"]


def test_setup_refuses_recordings_that_are_not_the_pinned_ones(tmp_path):
    wheel = tmp_path / "moonshine_voice-0.1.5-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name in ("beckett.wav", "clone-test.wav", "two_cities.wav"):
            z.writestr(f"moonshine_voice/assets/{name}", b"RIFF not these")
    done = run(["setup_audio.py", "--out", str(tmp_path / "audio")], env={**ENV, "MOONSHINE_VOICE_WHEEL": str(wheel)})
    assert done.returncode == 2 and "SHA-256" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "audio").exists()
    done = run(["setup_audio.py", "--out", str(tmp_path / "audio")],
               env={**ENV, "MOONSHINE_VOICE_WHEEL": str(tmp_path / "missing.whl")})
    assert done.returncode == 2 and "MOONSHINE_VOICE_WHEEL" in done.stderr


@needs_audio
def test_reference_gives_a_partial_transcript_after_every_chunk(model_dir, audio_dir, tmp_path):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "moonshine_streaming"
    windows = config["encoder_config"]["sliding_windows"]
    assert any(right > 1 for _left, right in windows), "the encoder should look ahead in some layers"
    again = run(["setup_model.py", "--out", str(model_dir)])
    assert again.returncode == 0 and "already complete" in again.stdout
    out = tmp_path / "out.jsonl"
    done = run(["reference/generate.py", "--model", str(model_dir), "--audio", str(audio_dir), "--in",
                str(KIT / "reference" / "sample.jsonl"), "--out", str(out)])
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [len(x["partials"]) for x in lines] == [4, 2]
    assert all(len(p) == 8 for p in lines[0]["partials"]) and all(len(p) == 4 for p in lines[1]["partials"])
    # The transcript follows the audio: each chunk's partial transcript differs from the one before.
    first = lines[0]["partials"]
    assert all(a != b for a, b in zip(first, first[1:], strict=False)), first


@needs_audio
def test_benchmark_streams_reach_the_frameworks_audit_as_reference_requests(model_dir, audio_dir, tmp_path):
    # checks/bench.py writes each stream as a request in the reference's own format: the reference, given
    # those requests, writes exactly the rows' texts when the answers were right (a nonce dither included).
    sys.path.insert(0, str(KIT / "checks"))
    try:
        from bench import stream_rows
    finally:
        sys.path.remove(str(KIT / "checks"))
    sample = tmp_path / "sample.jsonl"
    sample.write_text(json.dumps({"id": "s", "clip": "clip-01.wav", "chunk_ms": 320, "chunks": 3, "max_tokens": 4,
                                  "nonce": 11}) + "\n")
    want = tmp_path / "want.jsonl"
    done = run(["reference/generate.py", "--model", str(model_dir), "--audio", str(audio_dir), "--in", str(sample),
                "--out", str(want)])
    assert done.returncode == 0, done.stderr
    partials = json.loads(want.read_text())["partials"]
    chunk_rows = [{"stream": 0, "clip": str(audio_dir / "clip-01.wav"), "nonce": 11, "chunk_ms": 320, "seq": k,
                   "samples": 5120 * (k + 1), "max_tokens": 4, "tokens": partials[k], "ok": True, "error": None}
                  for k in (2, 0, 1)]  # in any order: the rows are sorted by seq
    (row,) = stream_rows(chunk_rows)
    assert row["ok"] and row["partials"] == partials
    asked = tmp_path / "asked.jsonl"
    asked.write_text(json.dumps({**row["reference_request"], "id": "audit-0"}) + "\n")
    again = tmp_path / "again.jsonl"
    done = run(["reference/generate.py", "--model", str(model_dir), "--audio", str(audio_dir), "--in", str(asked),
                "--out", str(again)])
    assert done.returncode == 0, done.stderr
    assert json.loads(again.read_text())["text"] == row["text"]
    chunk_rows[1] = {**chunk_rows[1], "ok": False, "error": "timeout"}
    (failed,) = stream_rows(chunk_rows)
    assert not failed["ok"] and failed["error"] == "timeout"


def test_gpu_variant_shares_the_kit_validates_offline_and_names_the_missing_weights(tmp_path):
    # No file of the CPU kit is copied: the GPU variant reaches its reference, checks and benchmark through
    # [artifacts].kit.
    names = {p.relative_to(GPU_KIT).as_posix() for p in GPU_KIT.rglob("*") if p.is_file()}
    names = {n for n in names if not n.startswith("artifacts/") and "__pycache__" not in n}
    assert names <= {".gitignore", "target.toml", "INSTRUCTIONS.md", "README.md", "setup_model.py"}, names
    toml = (GPU_KIT / "target.toml").read_text()
    for script in ("reference/generate.py", "checks/accuracy.py", "checks/probe.py", "checks/bench.py"):
        assert "{artifacts.kit}/" + script in toml, script
    root = tmp_path / "targets"
    shutil.copytree(KIT, root / KIT.name, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    shutil.copytree(GPU_KIT, root / GPU_KIT.name, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    done = cli("validate", str(root / GPU_KIT.name), "--sandbox", "none", timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in out, out
    assert "moonshine-streaming-medium" in out and "artifacts/model" in out, out


# -- the trajectory, replayed with the kit's own checker and probe command ------------------------------------
def serving(tree: Path, model: Path) -> contextlib.AbstractContextManager[str]:
    return kit_server.serving(tree, model, ENV)


def gates(url: str, model: Path, audio: Path, cases: Path, tmp: Path, name: str) -> tuple[int, dict, int]:
    """The checker's exit code and report, and the probe command's exit code (seeded as a round would be)."""
    report = tmp / f"{name}.json"
    done = run(["checks/accuracy.py", "--url", url, "--model", str(model), "--audio", str(audio), "--cases",
                str(cases), "--report", str(report)])
    probe = run(["checks/probe.py", "--url", url, "--seed", "20261207", "--model", str(model), "--audio", str(audio),
                 "--report", str(tmp / f"{name}-probe.json")])
    assert probe.returncode in (0, 1), probe.stderr
    return done.returncode, json.loads(report.read_text()), probe.returncode


def apply_patch(tree: Path, name: str) -> None:
    done = subprocess.run(["git", "apply", str(TRAJECTORY / "patches" / name)], cwd=tree, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"{name} does not apply: {done.stderr}"


@pytest.mark.long
@needs_audio
def test_trajectory_attempts_meet_their_gate_outcomes(model_dir, audio_dir, tmp_path):
    """Each patch on the tree its round starts from: the seed passes; 01a (every computed encoder frame kept,
    as if the windows only looked back) fails the checker from the second chunk on, never on the first; 01b
    (each layer's lookahead recomputed) passes the checker and the probes; 02 (batched) and 03 (no Nagle) pass
    both."""
    cases = tmp_path / "cases.jsonl"
    all_cases = [json.loads(x) for x in (KIT / "checks" / "cases.jsonl").read_text().splitlines()]
    cases.write_text("".join(json.dumps(c) + "\n" for c in all_cases if c["id"] in ("clock-320", "uneven",
                                                                                     "one-token")))
    tree = tmp_path / "deliverable"
    shutil.copytree(KIT / "seed", tree, ignore=shutil.ignore_patterns("__pycache__"))
    with serving(tree, model_dir) as url:
        code, report, probe = gates(url, model_dir, audio_dir, cases, tmp_path, "seed")
    assert code == 0 and report["passed"] and probe == 0, report

    apply_patch(tree, "01a-encoder-cache.patch")
    with serving(tree, model_dir) as url:
        code, report, _ = gates(url, model_dir, audio_dir, cases, tmp_path, "01a")
    bad = [c for c in report["cases"] if c["status"] != "ok"]
    assert code == 1 and not report["passed"] and {c["status"] for c in bad} == {"mismatch"}, report
    assert all(c["chunk"] > 0 for c in bad), "the first chunk has no cached frames and should be right"

    apply_patch(tree, "01b-recompute-the-lookahead.patch")
    with serving(tree, model_dir) as url:
        code, report, probe = gates(url, model_dir, audio_dir, cases, tmp_path, "01b")
    assert code == 0 and report["passed"] and probe == 0, report

    apply_patch(tree, "02-batch-across-streams.patch")
    with serving(tree, model_dir) as url:
        code, report, probe = gates(url, model_dir, audio_dir, cases, tmp_path, "02")
    assert code == 0 and report["passed"] and probe == 0, report

    apply_patch(tree, "03-no-nagle.patch")
    with serving(tree, model_dir) as url:
        code, report, probe = gates(url, model_dir, audio_dir, cases, tmp_path, "03")
    assert code == 0 and report["passed"] and probe == 0, report


@pytest.mark.long
@needs_audio
def test_the_trajectory_runs_through_the_loop(model_dir, audio_dir, tmp_path):
    """`vibeserve run` with the scripted trajectory, every gate real (the sandbox off: the artifacts are under
    /tmp): round 1's first attempt fails the accuracy gate, its second and rounds 2 and 3 pass every gate, and
    every benchmark answer equals the reference (the kit's own audit of every chunk, and the framework's of
    the streams of one timed repeat)."""
    kit = tmp_path / KIT.name
    shutil.copytree(KIT, kit, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    (kit / "artifacts").mkdir()
    (kit / "artifacts" / "model").symlink_to(model_dir)
    (kit / "artifacts" / "audio").symlink_to(audio_dir)
    runs = tmp_path / "runs"
    out = cli("run", str(kit), "--trajectory", str(TRAJECTORY), "--runs-dir", str(runs), "--run-id", "moon",
              "--rounds", "3", "--sandbox", "none", timeout=3600, check=True)
    assert "round budget reached (3 rounds)" in out.stdout
    db = sqlite3.connect(runs / "moon" / "run.db")
    rounds = db.execute("SELECT round, status, metric FROM rounds ORDER BY round").fetchall()
    assert [r[0] for r in rounds] == [0, 1, 2, 3]
    assert all(status in ("kept", "accepted") for _, status, _ in rounds), rounds
    assert all(metric > 0 for *_, metric in rounds)
    gates = db.execute("SELECT round, attempt, gate, passed FROM gates WHERE round > 0 ORDER BY id").fetchall()
    assert gates == [(1, 1, "accuracy", 0), (1, 2, "accuracy", 1), (1, 2, "probes", 1), (1, 2, "benchmark", 1),
                     (2, 1, "accuracy", 1), (2, 1, "probes", 1), (2, 1, "benchmark", 1),
                     (3, 1, "accuracy", 1), (3, 1, "probes", 1), (3, 1, "benchmark", 1)], gates
    for (report,) in db.execute("SELECT report FROM gates WHERE gate = 'benchmark'"):
        audit = json.loads(report)["audit"]
        assert audit["passed"] and audit["checked"] == audit["of"] == 4, audit  # four streams, each recomputed
        for run_report in json.loads(report)["runs"]:
            assert run_report["audit"]["mismatched"] == 0 and run_report["audit"]["checked"] == 48, run_report
