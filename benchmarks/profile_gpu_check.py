"""The ``profile`` tool's Nsight Systems path, end to end, on a small CUDA target: for a machine with a GPU.

Builds a CUDA variant of ``examples/targets/tiny-llama`` in a temporary folder (its ``[hardware]`` backend
``cuda``; its seed's model and tensors on the GPU; the seed answering ``/start_profile`` and
``/stop_profile`` with the PyTorch profiler recording CPU and CUDA activity), calls the real ``profile`` tool
on it once the way an agent does (MCP over stdio, the run's sandbox), and checks what came back: a
``.nsys-rep`` report, the ``nsys stats`` CSVs, kernels in the summary. Prints the summary and exits 0, or
names what is missing and exits 1; the profile's folder is kept (``--keep``) for a look in Nsight Systems.

    bash benchmarks/profile_gpu_check.sh            # checks nvidia-smi, nsys and CUDA torch, then this
    python benchmarks/profile_gpu_check.py [--seconds 10] [--sandbox bwrap|none] [--keep DIR]

Meant to finish in under 5 minutes on one GPU (most of it: the model's start, nsys writing its report and
``nsys stats`` exporting it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio

from vibeserve.harness.mcp_client import McpSession
from vibeserve.jail import candidate_jail
from vibeserve.loop.setup import ensure_artifacts
from vibeserve.profiling.profile_mcp import for_call
from vibeserve.sandbox import Sandbox
from vibeserve.target.spec import load_target

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "targets" / "tiny-llama"

# The seed on the GPU: each edit must apply, or the seed changed and this check must follow it.
ENGINE_EDITS = [
    ("dtype=torch.float32).eval()", 'dtype=torch.float32).eval().to("cuda")'),
    ("torch.tensor([prompt_ids])", 'torch.tensor([prompt_ids], device="cuda")'),
    ("torch.tensor([[next_id]])", 'torch.tensor([[next_id]], device="cuda")'),
]
TORCH_HOOK = '''
    # The PyTorch profiler between /start_profile and /stop_profile, on a thread of its own: it must be
    # started and stopped on one thread, and each request has its own; it records every thread's operators.
    _recording = None

    def _profile(self, start: bool) -> None:
        import threading

        import torch
        import torch.profiler as tp

        cls = type(self)
        if start:
            started, stop = threading.Event(), threading.Event()

            def record() -> None:
                every_thread = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
                with tp.profile(activities=[tp.ProfilerActivity.CPU, tp.ProfilerActivity.CUDA],
                                experimental_config=every_thread) as prof:
                    started.set()
                    stop.wait()
                prof.export_chrome_trace("/tmp/torch-trace.json")

            thread = threading.Thread(target=record, daemon=True)
            thread.start()
            started.wait(60)
            cls._recording = (thread, stop)
            self._json(200, {"recording": True})
            return
        if cls._recording is None:
            self._error(400, "not recording")
            return
        (thread, stop), cls._recording = cls._recording, None
        stop.set()
        thread.join(120)
        with open("/tmp/torch-trace.json", "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path in ("/start_profile", "/stop_profile"):
            self._profile(self.path == "/start_profile")
            return
'''


def edit(path: Path, edits: list[tuple[str, str]]) -> None:
    text = path.read_text()
    for old, new in edits:
        if old not in text:
            raise SystemExit(f"profile_gpu_check: {path.name} no longer has {old!r}; update ENGINE_EDITS")
        text = text.replace(old, new)
    path.write_text(text)


def cuda_target(work: Path) -> Path:
    """tiny-llama as a CUDA target, its seed on the GPU with the PyTorch profiler hook."""
    ensure_artifacts(load_target(TINY), work / "setup-logs")
    root = shutil.copytree(TINY, work / "tiny-llama-cuda", ignore=shutil.ignore_patterns("__pycache__", "artifacts"))
    (root / "artifacts").symlink_to(TINY / "artifacts")
    edit(root / "target.toml", [('backend = "cpu"', 'backend = "cuda"')])
    edit(root / "seed" / "server" / "engine.py", ENGINE_EDITS)
    edit(root / "seed" / "server" / "api.py", [("\n    def do_POST(self) -> None:\n", TORCH_HOOK)])
    return root


async def call_profile(spec, cwd: Path, log_dir: Path, arguments: dict) -> tuple[float, str, bool]:
    async with McpSession([spec], cwd, log_dir) as mcp:
        t0 = time.monotonic()
        res = await mcp.call("profile", arguments)
        return time.monotonic() - t0, res.text, res.is_error


def check(out: Path, text: str) -> list[str]:
    """What is missing from a profile that went through Nsight Systems; empty when nothing is."""
    problems = []
    rep = out / "nsys.nsys-rep"
    if not rep.is_file() or rep.stat().st_size == 0:
        problems.append(f"no report {rep}")
    kern = next(iter(sorted(out.glob("nsys_*kern*.csv"))), None)
    if kern is None or len(kern.read_text().splitlines()) < 2:
        problems.append("no kernel summary CSV (nsys_cuda_gpu_kern_sum.csv) with a row in it")
    for needed in ("Nsight Systems, ", "Top kernels by GPU time:", "CUDA API calls by host time:"):
        if needed not in text:
            problems.append(f"the summary lacks {needed!r}")
    meta = json.loads((out / "profile.json").read_text()) if (out / "profile.json").is_file() else {}
    if not (meta.get("gpu") or {}).get("kernel_s"):
        problems.append(f"profile.json has no GPU kernel time: {meta.get('gpu_note') or meta.get('gpu')}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sandbox", default="bwrap", choices=["bwrap", "none"])
    ap.add_argument("--keep", type=Path, default=Path(f"profile-gpu-check-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if shutil.which("nsys") is None:
        print("profile_gpu_check: `nsys` is not on PATH; install Nsight Systems' CLI first", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="vibeserve-profile-gpu-"))
    target = load_target(cuda_target(work))
    tree = shutil.copytree(target.seed_dir, work / "tree", ignore=shutil.ignore_patterns("__pycache__"))
    run_dir = work / "runs" / "gpu-check"
    run_dir.mkdir(parents=True)
    sandbox = Sandbox.for_run(args.sandbox, run_dir, target.root, target.artifact_paths().values())
    sandbox.check()
    attempt = run_dir / "logs" / "r001" / "a1"
    spec = for_call("evaluator", target.root, tree, attempt, run_dir.parent / ".benchmark.lock", sandbox,
                    candidate_jail(sandbox, target, run_dir))
    wall, text, error = anyio.run(call_profile, spec, tree, work / "mcp-logs",
                                  {"seconds": args.seconds, "native": False})
    out = attempt / "profiles" / "evaluator-1"
    shutil.copytree(out, args.keep, dirs_exist_ok=True)
    print(text)
    print(f"\nprofile call: {wall:.1f} s; whole check: {time.monotonic() - t0:.1f} s; folder kept in {args.keep}")
    torch_trace = out / "torch-trace.json"
    if torch_trace.is_file():
        events = json.loads(torch_trace.read_text()).get("traceEvents", [])
        kernels = sum(1 for e in events if e.get("cat") == "kernel")
        print(f"PyTorch profiler trace: {len(events)} events, {kernels} CUDA kernels (CUPTI takes one subscriber at a "
              "time: with nsys tracing CUDA, the PyTorch profiler may record none)")
    problems = [f"the profile call failed: {text}"] if error else check(out, text)
    shutil.rmtree(work, ignore_errors=True)
    if problems:
        print("\nNOT OK:\n- " + "\n- ".join(problems) + f"\nLogs: {args.keep}/nsys-*.stderr, server*.stderr, session.stderr",
              file=sys.stderr)
        return 1
    print("OK: the profile recorded the GPU with Nsight Systems and summarised it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
