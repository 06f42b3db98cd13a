"""One profile session: start the candidate, wait for the profiler to attach, drive it with the target's own
benchmark load for a bounded time, stop it.

It runs as ``python -P -m vibeserve.profiling.session JOB.json RESULT.json``, inside the judges' sandbox
when the run has one (the candidate in its own sandbox inside it, exactly as in a gate session), and writes
nothing but its own output folder. The profiler itself runs outside, in the framework (``runner``), which
sees the candidate's process from the host; the two speak through marker files in the output folder:
``ready.json`` (the candidate answers, here is its command and whether it runs under ``job.wrap``), ``go``
(the profiler is sampling),
``load-done`` (the load is over), ``stopped`` (the profiler has written its output).

The candidate may opt in to the PyTorch profiler (``docs/profiling.md``): it answers ``POST /start_profile``
with 200 and starts recording, and ``POST /stop_profile`` with the recording (a Chrome trace JSON, or a
text table), which is kept as ``torch-trace.json`` or ``torch-profile.txt``.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from vibeserve.gates.server import CandidateServer, ServerNotReady
from vibeserve.jail import CandidateJail
from vibeserve.process import CommandNotRunnable, clean_env, last_line, spawn
from vibeserve.sandbox import SandboxMode
from vibeserve.target.spec import load_target

READY, GO, LOAD_DONE, STOPPED = "ready.json", "go", "load-done", "stopped"
HANDSHAKE_S = 60.0  # how long either side waits for the other's next marker


class ProfileJob(BaseModel):
    """Everything one profile session needs; paths are absolute."""

    model_config = ConfigDict(extra="forbid")

    target_root: Path
    workdir: Path  # the candidate's tree
    out_dir: Path  # this profile's folder (the only place the session writes)
    jail: CandidateJail = CandidateJail(mode=SandboxMode.NONE)
    seconds: float = 20.0  # of load, after the candidate is ready
    torch: bool = True  # ask the candidate for a PyTorch profile (used only if it answers /start_profile)
    # A command the deliverable is started under (``nsys launch ...``); if the candidate does not start under
    # it, it is started once more without it, and ready.json says so.
    wrap: list[str] = []
    stop_wait_s: float = HANDSHAKE_S  # how long the session waits for the profilers to finish after the load


class SessionResult(BaseModel):
    """What the session saw: whether the candidate ran, and the load it was given."""

    ok: bool
    reason: str = ""  # when not ok: one line
    detail: str = ""  # log tails
    startup_s: float = 0.0
    load_s: float = 0.0
    runs: int = 0  # benchmark runs started
    cut: int = 0  # of which cut at the time limit
    failed: int = 0  # of which ended with a non-zero exit (a profile still shows where the time went)
    torch: str = ""  # what the PyTorch hook gave: a file name, or why there is none


def wait_for(path: Path, seconds: float) -> bool:
    """Whether ``path`` appears within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


def _post(url: str, timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(64 << 20)
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def drive_load(job: ProfileJob, server: CandidateServer) -> SessionResult:
    """Run the target's benchmark command again and again until ``job.seconds`` have passed."""
    target = load_target(job.target_root)
    spec = target.spec.benchmark
    t0 = time.monotonic()
    deadline = t0 + job.seconds
    res = SessionResult(ok=True, startup_s=server.startup_s)
    while time.monotonic() < deadline:
        name = f"load{res.runs}"
        argv = target.render(spec.command, url=server.url, port=server.port, report=job.out_dir / f"{name}.json",
                             responses=job.out_dir / f"{name}.responses.jsonl")
        left = max(deadline - time.monotonic(), 1.0)
        try:
            done = spawn(argv, target.root, job.out_dir, name, env=clean_env()).wait(left)
        except CommandNotRunnable as e:
            return res.model_copy(update={"ok": False, "reason": f"the benchmark command cannot run: {e}"})
        res.runs += 1
        if (code := server.exited_within(0.5 if done.returncode else 0.0)) is not None:
            return res.model_copy(update={
                "ok": False, "load_s": time.monotonic() - t0, "detail": server.tail(2000),
                "reason": f"the deliverable exited with code {code} during the profile's load{server.limit_hit()}"})
        if done.timed_out:
            res.cut += 1
        elif done.returncode != 0:
            res.failed += 1
            if done.wall_s < 1.0:  # failing at once, again and again, is no load at all
                return res.model_copy(update={
                    "ok": False, "load_s": time.monotonic() - t0, "detail": done.tail(2000),
                    "reason": f"the benchmark command failed at once (exit {done.returncode}): {last_line(done.tail())}"})
    res.load_s = time.monotonic() - t0
    return res


class WrappedServer(CandidateServer):
    """A candidate started under a command prefix (``nsys launch ...``); its own command is ``deliverable_argv``."""

    def __init__(self, *args, wrap: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.wrap = list(wrap)

    @property
    def deliverable_argv(self) -> list[str]:
        return super().argv

    @property
    def argv(self) -> list[str]:
        return [*self.wrap, *self.deliverable_argv]


def start_server(job: ProfileJob) -> tuple[WrappedServer, str]:
    """The candidate, started and ready (under ``job.wrap`` when it starts so); and, when it did not start
    under ``job.wrap`` but did without, why not. ``ServerNotReady`` when it does not start at all."""
    target = load_target(job.target_root)
    attempts = [job.wrap, []] if job.wrap else [[]]
    failed = ""
    for wrap in attempts:
        server = WrappedServer(target, job.workdir, job.out_dir, "server-wrapped" if wrap else "server", jail=job.jail,
                               wrap=wrap)
        try:
            server.start()
            return server, failed
        except (ServerNotReady, CommandNotRunnable) as e:
            server.stop()
            if not wrap:
                raise
            detail = getattr(e, "detail", "")
            failed = f"{e}{': ' + last_line(detail) if detail.strip() and last_line(detail) not in str(e) else ''}"
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")


def run_session(job: ProfileJob) -> SessionResult:
    """Never raises for the candidate's faults: a server that does not start is a result that says so."""
    out = job.out_dir
    try:
        server, unwrapped = start_server(job)
    except ServerNotReady as e:
        return SessionResult(ok=False, reason=str(e), detail=e.detail)
    except CommandNotRunnable as e:
        return SessionResult(ok=False, reason=str(e))
    try:
        (out / READY).write_text(json.dumps({"argv": server.deliverable_argv, "port": server.port,
                                             "wrapped": bool(server.wrap), "unwrapped_because": unwrapped}))
        if not wait_for(out / GO, HANDSHAKE_S):
            return SessionResult(ok=False, reason=f"the profiler did not start within {HANDSHAKE_S:.0f} s "
                                 "of the candidate being ready")
        torch = ""
        if job.torch:
            code, _ = _post(server.url + "/start_profile", 10)
            torch = "on" if code == 200 else "the candidate does not offer /start_profile"
        res = drive_load(job, server)
        if torch == "on":
            torch = _collect_torch(server.url, out)
        res = res.model_copy(update={"torch": torch})
        (out / LOAD_DONE).touch()
        wait_for(out / STOPPED, job.stop_wait_s)  # the profilers' last samples are of the live server
        return res
    except CommandNotRunnable as e:
        return SessionResult(ok=False, reason=str(e))
    finally:
        server.stop()


def _collect_torch(url: str, out: Path) -> str:
    code, body = _post(url + "/stop_profile", 120)
    if code != 200 or not body:
        return f"/stop_profile answered {code or 'nothing'}"
    try:
        json.loads(body)
    except ValueError:
        (out / "torch-profile.txt").write_bytes(body)
        return "torch-profile.txt"
    (out / "torch-trace.json").write_bytes(body)
    return "torch-trace.json"


def main(argv: list[str]) -> int:
    """``python -P -m vibeserve.profiling.session JOB.json RESULT.json``: exit 0 once the result is written."""
    if len(argv) != 2:
        print("usage: python -P -m vibeserve.profiling.session JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = ProfileJob.model_validate_json(Path(argv[0]).read_text())
    Path(argv[1]).write_text(run_session(job).model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
