"""The ``profile`` tool: real MCP server, real sandboxes, real py-spy, driven by the scripted harness."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sqlite3
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from conftest import REPO, cli
from vibeserve.gates.server import ServerNotReady
from vibeserve.harness.scripted import ScriptedHarness
from vibeserve.jail import candidate_jail
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.profiling.listing import round_profiles
from vibeserve.profiling.nsys import GpuSummary, in_namespaces, install_root, read_stats
from vibeserve.profiling.profile_mcp import ProfileContext, for_call
from vibeserve.profiling.runner import ProfileFailed, benchmark_lock, plan_nsys
from vibeserve.profiling.session import ProfileJob, WrappedServer, start_server
from vibeserve.profiling.stacks import HTTP, MODEL, TOKENIZER, WAITING, Stacks
from vibeserve.sandbox import Sandbox
from vibeserve.target.scaffold import SERVER
from vibeserve.target.spec import load_target
from vibeserve.testing.toy_target import write_trajectory
from vibeserve.types import AgentCall, Role
from vibeserve.ui import RunSource, create_app

TINY = REPO / "examples" / "targets" / "tiny-llama"
NSYS_OUTPUT = Path(__file__).parent / "fixtures" / "nsys"  # real `nsys stats` output; README.md names its sources
EVAL = {"analysis": "see the profile", "hints": ["profiles/evaluator-1: look at the forward"]}
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


def tool_results(transcript: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in transcript.read_text().splitlines()]
    return [e for e in events if e.get("type") == "tool_result" and e.get("name") == "profile"]


def scripted_profile(tmp_path: Path, target_root: Path, tree: Path, arguments: dict, sandboxed: bool = True,
                     ) -> tuple[dict[str, Any], Path]:
    """One scripted evaluator call whose only action is ``profile``; its tool result and the run folder."""
    target = load_target(target_root)
    run_dir = tmp_path / "runs" / "p1"
    run_dir.mkdir(parents=True)
    sandbox = Sandbox.for_run("bwrap" if sandboxed else "none", run_dir, target.root,
                              target.artifact_paths().values())
    spec = for_call("evaluator", target.root, tree, run_dir / "logs" / "r001" / "a1", run_dir.parent / ".bench.lock",
                    sandbox, candidate_jail(sandbox, target, run_dir))
    harness = ScriptedHarness(write_trajectory(tmp_path / "traj", [
        {"key": "r001/a1/evaluator", "mcp": [{"tool": "profile", "arguments": arguments}], "reply": EVAL}]))
    transcript = run_dir / "transcripts" / "r001-a1-evaluator.jsonl"
    result = harness.run(AgentCall(key="r001/a1/evaluator", role=Role.EVALUATOR, prompt="p", workdir=tree,
                                   reply_schema={}, timeout_s=240, mcp_servers=[spec], transcript_path=transcript))
    assert result.reply == EVAL, result.error
    (res,) = tool_results(transcript)
    return res, run_dir


def test_stacks_are_summarised_by_part_and_written_as_speedscope_and_svg(tmp_path: Path) -> None:
    raw = tmp_path / "stacks.txt"
    raw.write_text(
        'process 7:"python -m server";Thread.run (threading.py:982);do_POST (server/api.py:96);'
        "generate (server/engine.py:54);LlamaForCausalLM.forward (transformers/models/llama/modeling_llama.py:10);"
        "Linear.forward (torch/nn/modules/linear.py:125) 60\n"
        "Thread.run (threading.py:982);do_POST (server/api.py:96);encode (tokenizers/__init__.py:3) 10\n"
        "Thread.run (threading.py:982);handle_one_request (http/server.py:424);readline (socket.py:9) 20\n"
        "serve_forever (socketserver.py:233);_PollLikeSelector.select (selectors.py:415) 5\n"
        "main (server/__main__.py:3);setup (server/engine.py:9) 5\n")
    stacks = Stacks.read(raw)
    assert stacks.total == 100
    assert stacks.parts() == {WAITING: 5, MODEL: 60, TOKENIZER: 10, HTTP: 20, "other": 5}
    text = stacks.summary()
    assert "60.0%  model forward" in text and "10.0%  tokenizer" in text
    assert "60.0%  Linear.forward (torch/nn/modules/linear.py)" in text  # top by self time
    assert "70.0%  do_POST (server/api.py)" in text  # by total time; thread plumbing left out
    assert "Thread.run" not in text.split("by total time")[1]
    # A thread blocked at the candidate's own `with self.lock:` is waiting, though py-spy puts it on that line
    (tmp_path / "tree" / "server").mkdir(parents=True)
    (tmp_path / "tree" / "server" / "engine.py").write_text("def generate():\n    with self.lock, torch.no_grad():\n")
    locked = tmp_path / "locked.txt"
    locked.write_text("do_POST (server/api.py:96);generate (server/engine.py:2) 3\ngenerate (server/engine.py:1) 1\n"
                      "generate (server/engine.py:2);PyThread_acquire_lock_timed (libpython3.11.so);0x7f01 (libc.so.6) 2\n")
    assert Stacks.read(locked, tmp_path / "tree").parts()[WAITING] == 5  # with native frames below it too
    assert Stacks.read(locked).parts()[WAITING] == 0
    stacks.write_speedscope(tmp_path / "p.json", "p")
    doc = json.loads((tmp_path / "p.json").read_text())
    prof = doc["profiles"][0]
    assert sum(prof["weights"]) == 100 and len(prof["samples"]) == 5
    assert {f["name"] for f in doc["shared"]["frames"]} >= {"Linear.forward", "encode", "setup"}
    stacks.write_flamegraph(tmp_path / "f.svg", "t <&>")
    svg = ET.parse(tmp_path / "f.svg").getroot()  # well-formed, escaped
    titles = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert "Linear.forward (torch/nn/modules/linear.py) (60 samples)" in titles
    assert not list(svg.iter("{http://www.w3.org/2000/svg}script"))


@pytest.mark.slow
@needs_bwrap
def test_evaluator_profiles_tiny_llama_in_its_sandbox_and_finds_the_model_forward(tmp_path: Path) -> None:
    ensure_artifacts(load_target(TINY), tmp_path / "setup-logs")
    tree = shutil.copytree(TINY / "seed", tmp_path / "tree", ignore=shutil.ignore_patterns("__pycache__"))
    res, run_dir = scripted_profile(tmp_path, TINY, tree, {"seconds": 3, "native": False})
    assert not res["is_error"], res["text"]
    out = run_dir / "logs" / "r001" / "a1" / "profiles" / "evaluator-1"
    text = res["text"]
    assert "Not a measurement" in text and str(out) in text
    meta = json.loads((out / "profile.json").read_text())
    assert meta["samples"] > 0 and meta["parts"][MODEL] > 0 and meta["runs"] >= 1
    share = re.search(rf"(\d+\.\d)%  {MODEL}\n", text)
    assert share and float(share[1]) > 0, text  # the summary names the model forward, with its share
    assert re.search(r"%  \w+\.forward \((transformers/models/llama|torch/nn)/", text), text  # and its frames
    assert (out / "summary.txt").read_text().strip() == text.strip()
    assert ET.parse(out / "flamegraph.svg").getroot().tag.endswith("svg")
    assert json.loads((out / "profile.speedscope.json").read_text())["profiles"][0]["type"] == "sampled"
    # py-spy ran in the candidate's namespaces (idle threads told apart), not from outside them
    assert (out / "py-spy.argv").read_text().startswith("nsenter ")


def test_a_profile_waits_for_the_benchmark_lock_and_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    lock = tmp_path / ".benchmark.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a benchmark gate of some run is measuring
        with pytest.raises(ProfileFailed, match="a benchmark held the machine for 0 s .* call profile again later"), \
                benchmark_lock(lock, 0.3):
            pass
        fcntl.flock(held, fcntl.LOCK_UN)
    # once it is free, the profile holds it, and a benchmark gate would wait
    with benchmark_lock(lock, 0.3), open(lock) as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_candidate_that_does_not_start_is_a_tool_error_not_a_hung_call(tmp_path: Path, toy: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(toy / "seed", tree)
    (tree / "server.py").write_text("import sys\nprint('no model here', file=sys.stderr)\nsys.exit(3)\n")
    t0 = time.monotonic()
    res, run_dir = scripted_profile(tmp_path, toy, tree, {"seconds": 3}, sandboxed=False)
    assert time.monotonic() - t0 < 60
    assert res["is_error"]
    assert "the candidate did not start: the deliverable exited with code 3 before it was ready" in res["text"]
    assert "no model here" in res["text"]
    error = run_dir / "logs" / "r001" / "a1" / "profiles" / "evaluator-1" / "error.txt"
    assert "exited with code 3" in error.read_text()


ESCAPE = '''\
import pathlib, sys
for p in sys.argv[sys.argv.index("--escape") + 1].split(","):
    try:
        pathlib.Path(p).write_text("escaped")
        print("WROTE", p, file=sys.stderr)
    except OSError as e:
        print("REFUSED", p, e.strerror, file=sys.stderr)
sys.argv = sys.argv[: sys.argv.index("--escape")]
'''


TORCH_HOOK = '''\
    def do_POST(self):
        if self.path == "/start_profile":
            return self.reply({"recording": True})
        if self.path == "/stop_profile":
            return self.reply({"traceEvents": [{"name": "aten::mm", "ph": "X", "ts": 0, "dur": 5000}]})
        self.send_error(404)

'''


@needs_bwrap
def test_a_sandboxed_candidate_under_the_profiler_writes_nothing_outside_its_logs(tmp_path: Path, toy: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(toy / "seed", tree)
    targets = [toy / "escaped", tmp_path / "runs" / "p1" / "escaped", tmp_path / "escaped", tree / "escaped",
               tmp_path / "runs" / "p1" / "logs" / "r001" / "a1" / "profiles" / "escaped"]
    (tree / "server.py").write_text(ESCAPE + SERVER.replace("    def do_GET(self):", TORCH_HOOK + "    def do_GET(self):"))
    toml = toy / "target.toml"
    toml.write_text(toml.read_text().replace('start = ["python", "server.py", "--port", "{port}"]',
                                             'start = ["python", "server.py", "--port", "{port}", "--escape", '
                                             f'"{",".join(map(str, targets))}"]'))
    before = {p for p in tmp_path.rglob("*")}
    res, run_dir = scripted_profile(tmp_path, toy, tree, {"seconds": 3, "native": False})
    assert not res["is_error"], res["text"]
    out = run_dir / "logs" / "r001" / "a1" / "profiles" / "evaluator-1"
    said = (out / "server.stderr").read_text()
    assert said.count("REFUSED") + said.count("WROTE") == len(targets), said  # it tried every one
    assert "REFUSED " + str(toy / "escaped") in said and "REFUSED " + str(tree / "escaped") in said
    assert not any(p.exists() for p in targets)  # what it "wrote" under /tmp went to its private /tmp
    # its opt-in PyTorch profile came back over loopback and is kept with the py-spy profile
    assert json.loads((out / "torch-trace.json").read_text())["traceEvents"][0]["name"] == "aten::mm"
    assert "operators by total time:" in res["text"] and "5.0 ms  aten::mm" in res["text"]
    # Everything the profile made is in its folder (and the harness's transcript, the run's context file).
    made = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    allowed = (out, run_dir / "transcripts", run_dir / "logs" / "r001" / "a1" / "profile-context-evaluator.json",
               tmp_path / "traj", tmp_path / "runs" / ".bench.lock")
    assert all(any(p == a or p.is_relative_to(a) for a in allowed) for p in made), sorted(map(str, made))


@needs_bwrap
def test_a_run_gives_the_implementer_and_evaluator_the_profiler_and_the_report_links_it(
        toy: Path, trajectory, tmp_path: Path) -> None:
    traj = trajectory([
        {"key": "r001/orchestrator", "mcp": [
            {"tool": "create_issue", "arguments": {"title": "t", "hypothesis": "h", "acceptance_criteria": ["a"],
                                                   "priority": 1}},
            {"tool": "pick_next", "arguments": {"issue_id": 1, "start_commit": "best"}}], "reply": {"summary": "go"}},
        {"key": "r001/a1/implementer", "files": {"score.txt": "2.0\n"}, "reply": {"summary": "score"}},
        {"key": "r001/a1/judge", "reply": {"verdict": "pass", "reasons": "ok", "reward_hacking": False,
                                           "criteria_met": True}},
        {"key": "r001/a1/evaluator", "mcp": [{"tool": "profile", "arguments": {"seconds": 3, "native": False}}],
         "reply": EVAL},
    ])
    runs = tmp_path / "runs"
    cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "t1", "--rounds", "1",
        check=True)
    attempt = runs / "t1" / "logs" / "r001" / "a1"
    (res,) = tool_results(runs / "t1" / "transcripts" / "r001-a1-evaluator.jsonl")
    assert not res["is_error"], res["text"]
    assert str(attempt / "profiles" / "evaluator-1") in res["text"]
    assert (attempt / "profiles" / "evaluator-1" / "flamegraph.svg").is_file()
    # the implementer was given the tool too, on its own tree as it was before the commit
    ctx = ProfileContext.model_validate_json((attempt / "profile-context-implementer.json").read_text())
    assert ctx.role == "implementer" and ctx.workdir == runs / "t1" / "worktrees" / "r001"
    summary = (runs / "t1" / "report" / "summary.md").read_text()
    assert "profiles (not measurements): [a1/evaluator-1: " in summary
    assert "../logs/r001/a1/profiles/evaluator-1/flamegraph.svg" in summary
    # the dashboard's round page lists it and draws its flame graph
    client = TestClient(create_app(RunSource(runs)), base_url="http://127.0.0.1")
    page = client.get("/runs/t1/rounds/1").text
    svg = "logs/r001/a1/profiles/evaluator-1/flamegraph.svg"
    assert "a1/evaluator-1: " in page and f"path={quote(svg)}&amp;raw=1" in page
    drawn = client.get("/runs/t1/files", params={"path": svg, "raw": "1"})
    assert drawn.headers["content-type"] == "image/svg+xml" and drawn.text.startswith("<svg")
    assert "script-src 'self'" in drawn.headers["content-security-policy"]
    # a profile is no gate: the store's gates are the round's own
    gates = sqlite3.connect(runs / "t1" / "run.db").execute("SELECT gate FROM gates WHERE round = 1").fetchall()
    assert [g for (g,) in gates] == ["accuracy", "benchmark"]


def declare_cuda(target_root: Path) -> Path:
    """The target as if written for a CUDA machine: only its `[hardware]` backend changes."""
    toml = target_root / "target.toml"
    text = toml.read_text()
    assert 'backend = "cpu"' in text
    toml.write_text(text.replace('backend = "cpu"', 'backend = "cuda"', 1))
    return target_root


def path_without_nsys() -> str:
    return ":".join(d for d in os.environ["PATH"].split(":") if not (Path(d) / "nsys").exists())


@needs_bwrap
def test_nsys_command_lines_for_a_cuda_target(tmp_path: Path, toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An Nsight Systems install laid out as NVIDIA's packages do; nothing here runs it, only its path is used.
    nsys = tmp_path / "opt" / "nvidia" / "nsight-systems" / "2024.5.1" / "bin" / "nsys"
    nsys.parent.mkdir(parents=True)
    nsys.write_text("#!/bin/sh\nexit 99\n")
    nsys.chmod(0o755)
    monkeypatch.setenv("PATH", f"{nsys.parent}:{path_without_nsys()}")
    target = load_target(toy)
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    out = tmp_path / "profiles" / "evaluator-2"
    sandbox = Sandbox.for_run("bwrap", run_dir, target.root, target.artifact_paths().values())
    job = ProfileJob(target_root=toy, workdir=toy / "seed", out_dir=out, jail=candidate_jail(sandbox, target, run_dir))
    # a CPU target: no nsys, no note
    assert plan_nsys(job, "cpu") == (job, None, "")
    planned, cmds, note = plan_nsys(job, "cuda")
    assert note == "" and cmds is not None and cmds.binary == str(nsys)
    session = cmds.session
    assert session.startswith("vibeserve-") and session.endswith("-evaluator-2")
    assert planned.wrap == [str(nsys), "launch", f"--session-new={session}", "--trace=cuda,nvtx,osrt",
                            "--trace-fork-before-exec=true", "--cuda-graph-trace=node", "--wait=all"]
    # the deliverable's own command follows the prefix; the profiler finds the candidate by that command
    server = WrappedServer(target, toy / "seed", out, "server", jail=planned.jail, wrap=planned.wrap)
    assert server.deliverable_argv == ["python", "server.py", "--port", str(server.port)]
    assert server.argv == [*planned.wrap, *server.deliverable_argv]
    # the candidate's sandbox shows it nsys's installation, read-only
    assert install_root(str(nsys)) == nsys.parents[1]
    boxed = planned.jail.argv(server.argv, toy / "seed")
    i = boxed.index("--")
    assert boxed[i + 1:] == server.argv
    assert any(boxed[j:j + 3] == ["--ro-bind", str(nsys.parents[1]), str(nsys.parents[1])] for j in range(i))
    assert planned.stop_wait_s > job.stop_wait_s  # nsys writes its report before the candidate stops
    # the recording is opened and closed in the candidate's namespaces, the report written in its /tmp
    assert cmds.output == f"/tmp/{session}"
    assert cmds.start() == [str(nsys), "start", f"--session={session}", f"--output=/tmp/{session}",
                            "--force-overwrite=true", "--sample=none", "--cpuctxsw=none"]
    assert cmds.stop() == [str(nsys), "stop", f"--session={session}"]
    assert in_namespaces(cmds.stop(), 4242) == ["nsenter", "--target", "4242", "--pid", "--mount", "--net", "--ipc",
                                                "--", *cmds.stop()]
    rep = out / "nsys.nsys-rep"
    assert cmds.stats("cuda_gpu_kern_sum", rep, export=True) == [
        str(nsys), "stats", "--report", "cuda_gpu_kern_sum", "--format", "csv", "--force-export=true", str(rep)]
    assert cmds.stats("cuda_api_sum", rep, export=False)[-2] == "--force-export=false"
    # without nsys on PATH a CUDA target is profiled as before, and the summary will say why
    monkeypatch.setenv("PATH", path_without_nsys())
    unplanned, none, said = plan_nsys(job, "cuda")
    assert unplanned == job and none is None
    assert "`nsys` is not on PATH, so no GPU timeline was recorded for this CUDA target" in said


def test_nsys_stats_output_is_read_and_summarised(tmp_path: Path) -> None:
    kernels = (NSYS_OUTPUT / "dotllm_cuda_gpu_kern_sum.csv").read_text()
    memops = (NSYS_OUTPUT / "vllm7599_cuda_gpu_mem_time_sum.txt").read_text()
    api = (NSYS_OUTPUT / "dotllm_cuda_api_sum.csv").read_text()
    header, rows = read_stats(memops)  # what nsys prints before and after the report is left out
    assert header[0] == "Time (%)" and header[-1] == "Operation" and len(rows) == 4
    assert rows[0]["Operation"] == "[CUDA memcpy Host-to-Device]" and rows[0]["Total Time (ns)"] == "2472025475"
    assert read_stats(memops.splitlines()[0]) == ([], [])  # no report in it: no rows
    gpu = GpuSummary.from_csv(kernels=kernels, memops=memops, api=api)
    assert [(r.name, r.total_ns, r.count) for r in gpu.kernels[:2]] == [
        ("flash_attention_prefill_f16", 99385786, 32), ("dequant_q4_k_f16", 37727461, 193)]
    assert len(gpu.kernels) == 15 and sum(r.count for r in gpu.kernels) == 679
    assert gpu.kernel_ns == 198511027
    assert gpu.memop_ns == 2472025475 + 66765576 + 16075754 + 4058353
    assert (gpu.api[0].name, gpu.api[0].count) == ("cuMemcpyHtoD_v2", 293)
    meta = gpu.as_json()
    assert meta["top_kernel"] == "flash_attention_prefill_f16"
    assert meta["top_kernel_share"] == pytest.approx(99385786 / 198511027)
    assert meta["kernel_share"] == pytest.approx(198511027 / (198511027 + gpu.memop_ns))
    text = gpu.text(window_s=20.0)
    assert "0.199 s of kernels (679 launches) and 2.559 s of memory operations" in text
    assert "GPU time: 7.2% in kernels, 92.8% in memory copies and sets (memcpy Host-to-Device 89.6%" in text
    assert "Kernels kept the GPU busy about 1% of the window (the rest of the time the GPU waited on the host" in text
    assert re.search(r"50\.1%\s+99\.39 ms\s+32 x  flash_attention_prefill_f16\n", text)
    assert re.search(r"65\.\d%\s+1417\.58 ms\s+293 calls  cuMemcpyHtoD_v2", text)
    assert "Nsight Systems recorded no kernel" in GpuSummary.from_csv().text(10.0)
    # the report's and dashboard's list of a round's profiles names the GPU's side too
    folder = tmp_path / "logs" / "r002" / "a1" / "profiles" / "evaluator-1"
    folder.mkdir(parents=True)
    (folder / "profile.json").write_text(json.dumps({"samples": 200, "parts": {MODEL: 120}, "gpu": meta}))
    (entry,) = round_profiles(tmp_path / "logs", 2)
    assert entry.ok and entry.headline == "model forward 60% of 200 samples; GPU 7% in kernels, top " \
        "flash_attention_prefill_f16 50%"


def test_a_candidate_that_does_not_start_under_its_profiler_is_started_without_it(tmp_path: Path, toy: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    job = ProfileJob(target_root=toy, workdir=toy / "seed", out_dir=out,
                     wrap=["sh", "-c", "echo cannot start the profiler here >&2; exit 7", "wrap"])
    server, why = start_server(job)
    try:
        assert server.wrap == [] and server.exited is None  # it runs, as itself
        assert "exited with code 7 before it was ready" in why and "cannot start the profiler here" in why
        assert "cannot start the profiler here" in (out / "server-wrapped.stderr").read_text()
    finally:
        server.stop()
    # a candidate that does not start either way is the candidate's own failure, said as such
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "server.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(ServerNotReady, match="exited with code 3 before it was ready"):
        start_server(job.model_copy(update={"workdir": tmp_path / "broken"}))


@needs_bwrap
def test_a_cuda_target_without_nsys_is_profiled_on_the_host_and_the_summary_says_so(
        tmp_path: Path, toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_without_nsys())
    tree = shutil.copytree(toy / "seed", tmp_path / "tree")
    res, run_dir = scripted_profile(tmp_path, declare_cuda(toy), tree, {"seconds": 3, "native": False})
    assert not res["is_error"], res["text"]
    out = run_dir / "logs" / "r001" / "a1" / "profiles" / "evaluator-1"
    assert "Nsight Systems: `nsys` is not on PATH, so no GPU timeline was recorded for this CUDA target" in res["text"]
    assert "install Nsight Systems' CLI" in res["text"]
    meta = json.loads((out / "profile.json").read_text())
    assert meta["gpu"] == {} and "not on PATH" in meta["gpu_note"] and meta["samples"] > 0
    assert (out / "flamegraph.svg").is_file() and not list(out.glob("nsys*"))
    assert "--nonblocking" not in (out / "py-spy.argv").read_text()  # nothing records a GPU timeline to spare


@pytest.mark.long
@needs_bwrap
def test_tiny_llama_declared_cuda_without_nsys_finds_the_model_forward_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_without_nsys())
    target_root = declare_cuda(shutil.copytree(TINY, tmp_path / "tiny-llama", ignore=shutil.ignore_patterns(
        "__pycache__", "artifacts")))
    (target_root / "artifacts").symlink_to(TINY / "artifacts")
    ensure_artifacts(load_target(TINY), tmp_path / "setup-logs")
    tree = shutil.copytree(TINY / "seed", tmp_path / "tree", ignore=shutil.ignore_patterns("__pycache__"))
    res, run_dir = scripted_profile(tmp_path, target_root, tree, {"seconds": 5, "native": False})
    assert not res["is_error"], res["text"]
    text = res["text"]
    assert "`nsys` is not on PATH, so no GPU timeline was recorded for this CUDA target" in text
    share = re.search(rf"(\d+\.\d)%  {MODEL}\n", text)
    assert share and float(share[1]) > 0, text
