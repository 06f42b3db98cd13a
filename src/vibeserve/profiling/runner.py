"""``profile_candidate``: one profile of a candidate under its target's benchmark load, written to a folder.

On a CUDA target the candidate also starts under Nsight Systems where ``nsys`` is on PATH
(``vibeserve.profiling.nsys``), which records the GPU's side of the same load.

The session (``vibeserve.profiling.session``) starts the candidate and drives the load, in the judges'
sandbox when the run has one; py-spy runs here, outside every sandbox, and attaches to the candidate's
process as the host sees it, so it needs no capability inside the sandboxes and the candidate never sees
it. The whole profile holds the machine-wide benchmark lock: it never runs beside a benchmark gate, and
no benchmark gate starts while it runs. Its numbers are never measurements.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vibeserve.process import (
    CommandNotRunnable,
    Spawned,
    clean_env,
    group_alive,
    kill_group,
    read_tail,
    spawn,
)
from vibeserve.profiling.nsys import (
    NSYS_HINT,
    REPORT,
    GpuSummary,
    NsysCommands,
    NsysRecorder,
    find_nsys,
    install_root,
)
from vibeserve.profiling.session import GO, HANDSHAKE_S, LOAD_DONE, READY, STOPPED, ProfileJob, SessionResult
from vibeserve.profiling.stacks import WAITING, Stacks, torch_ops
from vibeserve.sandbox import Sandbox, SandboxMode, toolchain
from vibeserve.target.spec import load_target

PYSPY_HINT = "install it with `pip install py-spy` (scripts/setup.sh does)"


class ProfileFailed(Exception):
    """No profile could be made; the message says why and what to do."""


@dataclass
class Profile:
    """A finished profile: its folder, the summary an agent reads, and the artifacts in the folder."""

    out_dir: Path
    summary: str
    artifacts: list[str]


def py_spy() -> str:
    """The py-spy binary: beside this interpreter, else on PATH."""
    near = Path(sys.executable).parent / "py-spy"
    found = str(near) if near.is_file() else shutil.which("py-spy")
    if not found:
        raise ProfileFailed(f"py-spy is not installed: {PYSPY_HINT}")
    return found


@contextmanager
def benchmark_lock(path: Path, wait_s: float) -> Iterator[None]:
    """Hold the machine-wide benchmark lock (the one benchmark gates take), waiting at most ``wait_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ProfileFailed(f"a benchmark held the machine for {wait_s:.0f} s (lock {path}); profiles "
                                        "never run beside one: call profile again later") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def descendants(root: int) -> list[int]:
    """The host's processes under ``root``, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo += sorted(children.get(pid, []))
    return out[1:]


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def candidate_pid(session_pid: int, argv: list[str]) -> int | None:
    """The candidate's process among the session's: the first whose command line is the deliverable's
    (its program may be named differently once a sandbox has run it), else the first that names its port."""
    procs = [(pid, cmdline(pid)) for pid in descendants(session_pid)]
    for pid, cmd in procs:
        if len(cmd) == len(argv) and cmd[1:] == argv[1:]:
            return pid
    port = next((a for a in argv if a.isdigit()), None)
    return next((pid for pid, cmd in procs if port and port in cmd and "python" in Path(cmd[0]).name), None)


def _session_argv(job: ProfileJob, sandbox: Sandbox | None) -> list[str]:
    job_path, result_path = job.out_dir / "session-job.json", job.out_dir / "session-result.json"
    job_path.write_text(job.model_dump_json())
    inner = [sys.executable, "-P", "-m", "vibeserve.profiling.session", str(job_path), str(result_path)]
    if sandbox is None or not sandbox.active:
        return inner
    return sandbox.judge_argv(inner, job.out_dir, writable=[job.out_dir, *job.jail.limits.cgroup],
                              readonly=[job.workdir])


def _wait_marker(out: Path, name: str, session: Spawned, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (out / name).exists():
            return True
        if session.poll() is not None:
            return (out / name).exists()
        time.sleep(0.05)
    return False


def _session_result(out: Path, session: Spawned) -> SessionResult:
    try:
        return SessionResult.model_validate_json((out / "session-result.json").read_text())
    except (OSError, ValueError):
        return SessionResult(ok=False, reason=f"the profile session ended with exit code {session.poll()} and wrote "
                             f"no result; see {session.stderr_path}", detail=read_tail(session.stderr_path, 2000))


def plan_nsys(job: ProfileJob, backend: str) -> tuple[ProfileJob, NsysCommands | None, str]:
    """The job as it runs, the nsys session's commands when there is one, and a note for the summary.

    Only a CUDA target is recorded with nsys; without nsys on PATH the note says so and the profile is
    py-spy's (and the candidate's own PyTorch profile, when it offers one)."""
    if backend != "cuda":
        return job, None, ""
    binary = find_nsys()
    if binary is None:
        return job, None, (f"Nsight Systems: `nsys` is not on PATH, so no GPU timeline was recorded for this CUDA "
                           f"target ({NSYS_HINT}); below is the host side only (py-spy), plus the candidate's own "
                           "PyTorch profile if it offers /start_profile.")
    cmds = NsysCommands.for_profile(binary, job.out_dir)
    jail, root = job.jail, install_root(binary)
    # The candidate's sandbox must show it nsys's own files: most installs are under /usr or /opt, which it
    # sees already; never a folder as wide as / or /home.
    if jail.mode is SandboxMode.BWRAP and len(root.parts) > 2 and not any(root.is_relative_to(t) for t in toolchain()):
        jail = jail.model_copy(update={"readable": [*jail.readable, root]})
    return job.model_copy(update={"wrap": cmds.launch([]), "jail": jail, "stop_wait_s": HANDSHAKE_S + 420}), cmds, ""


def profile_candidate(job: ProfileJob, sandbox: Sandbox | None, bench_lock: Path, *, native: bool = False,
                      rate: int = 100, lock_wait_s: float = 600.0) -> Profile:
    """Profile the candidate at ``job.workdir`` into ``job.out_dir``; ``ProfileFailed`` says why not."""
    binary = py_spy()
    out = job.out_dir
    out.mkdir(parents=True, exist_ok=True)
    spec = load_target(job.target_root).spec
    job, nsys_cmds, gpu_note = plan_nsys(job, spec.hardware.backend)
    gpu: GpuSummary | None = None
    recorder: NsysRecorder | None = None
    with benchmark_lock(bench_lock, lock_wait_s):
        t0 = time.monotonic()
        try:
            session = spawn(_session_argv(job, sandbox), out, out, "session", env=clean_env())
        except CommandNotRunnable as e:
            raise ProfileFailed(str(e)) from None
        spy: subprocess.Popen | None = None
        note = ""
        try:
            ready_s = spec.deliverable.ready_timeout_s * (2 if job.wrap else 1) + HANDSHAKE_S
            if not _wait_marker(out, READY, session, ready_s):
                session.wait(HANDSHAKE_S)
                res = _session_result(out, session)
                raise ProfileFailed(f"the candidate did not start: {res.reason}"
                                    + (f"\n{res.detail.strip()}" if res.detail.strip() else ""))
            ready = json.loads((out / READY).read_text())
            argv = ready["argv"]
            pid = candidate_pid(session.pgid, argv)
            if pid is None:
                raise ProfileFailed(f"the candidate's process ({' '.join(argv)}) was not found under the session")
            if nsys_cmds is not None and not ready.get("wrapped"):
                gpu_note = (f"Nsight Systems: the candidate did not start under `nsys launch` "
                            f"({ready.get('unwrapped_because', '')}); it was started without it, so no GPU timeline "
                            "was recorded (see server-wrapped.stderr).")
            elif nsys_cmds is not None:
                recorder = NsysRecorder(nsys_cmds, pid, out)
                if not recorder.start():
                    gpu_note, recorder = f"Nsight Systems: {recorder.error}; no GPU timeline was recorded.", None
            # While nsys records, py-spy samples without stopping the candidate, which would show as gaps
            # in the GPU timeline.
            spy, note = _start_py_spy(binary, pid, out, native, rate, nonblocking=recorder is not None)
            (out / GO).touch()
            _wait_marker(out, LOAD_DONE, session, job.seconds + 2 * HANDSHAKE_S + 300)
            _stop_py_spy(spy)
            if recorder is not None and not recorder.stop():
                gpu_note, recorder = f"Nsight Systems: {recorder.error}; no GPU timeline was kept.", None
            (out / STOPPED).touch()
            session.wait(HANDSHAKE_S)
        finally:
            if spy is not None and group_alive(spy.pid):
                kill_group(spy.pid, grace_s=0)
            session.stop()
        if recorder is not None:  # still under the lock: exporting a report keeps a core busy
            gpu = recorder.summarise()
            if gpu is None:
                gpu_note = f"Nsight Systems recorded {REPORT}.nsys-rep, but `nsys stats` could not read it: {recorder.error}"
        res = _session_result(out, session)
        wall = time.monotonic() - t0
    if not res.ok:
        raise ProfileFailed(res.reason + (f"\n{res.detail.strip()}" if res.detail.strip() else ""))
    window = recorder.window_s if recorder is not None else 0.0
    return _write_artifacts(out, job.workdir, res, native, rate, wall, note,
                            gpu=(gpu.text(window) if gpu else gpu_note, gpu.as_json() if gpu else {}),
                            nonblocking=recorder is not None)


def _start_py_spy(binary: str, pid: int, out: Path, native: bool, rate: int,
                  nonblocking: bool = False) -> tuple[subprocess.Popen, str]:
    """Attach py-spy to ``pid`` (a host pid); returns it and a note for the summary ('' when none).

    py-spy tells an idle thread (blocked on a lock or a socket) from a busy one by the thread's id as the
    kernel knows it, which a candidate in its own PID namespace reports in that namespace's numbering; from
    the host every thread would look busy. So py-spy runs inside the candidate's PID and mount namespaces
    (``nsenter``, as root), where its numbers agree; its output goes to a file it inherits.
    """
    data = open(out / "stacks.txt", "wb")  # noqa: SIM115 - handed to py-spy, closed below
    argv = [binary, "record", "--subprocesses", "--format", "raw", "--rate", str(rate),
            "--output", f"/dev/fd/{data.fileno()}", *(["--native"] if native else []),
            *(["--nonblocking"] if nonblocking else [])]
    note, ns_pid = "", _pid_in_own_namespace(pid)
    if ns_pid is not None and os.geteuid() == 0 and shutil.which("nsenter"):
        argv = ["nsenter", "--target", str(pid), "--pid", "--mount", "--", *argv, "--pid", str(ns_pid)]
    else:
        argv += ["--pid", str(pid)]
        if ns_pid is not None:
            note = ("Threads waiting on a lock or a socket count as busy here (the candidate has its own PID "
                    "namespace and py-spy could not enter it, which needs root).")
    (out / "py-spy.argv").write_text(" ".join(argv) + "\n")
    log = out / "py-spy.log"
    with data, open(log, "wb") as said:
        spy = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=said, stderr=said, start_new_session=True,
                               pass_fds=(data.fileno(),))
    deadline = time.monotonic() + 30
    while spy.poll() is None and "Sampling process" not in read_tail(log, 4000) and time.monotonic() < deadline:
        time.sleep(0.05)
    if spy.poll() is not None:
        said = read_tail(log, 1500).strip()
        hint = (" (py-spy needs ptrace: run vibeserve as root, or allow it with "
                "`sysctl kernel.yama.ptrace_scope=0` or `setcap cap_sys_ptrace+ep` on py-spy)"
                if "ermission" in said or "EPERM" in said else "")
        raise ProfileFailed(f"py-spy could not attach to the candidate (pid {pid}): {said or 'exit ' + str(spy.poll())}"
                            f"{hint}")
    return spy, note


def _stop_py_spy(spy: subprocess.Popen, wait_s: float = 60.0) -> None:
    """Interrupt py-spy (and nsenter, its parent) so that it writes its output, and wait until it has."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(spy.pid, signal.SIGINT)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and group_alive(spy.pid):
        spy.poll()
        time.sleep(0.05)


def _pid_in_own_namespace(pid: int) -> int | None:
    """``pid``'s number inside its own PID namespace when that is not ours, else None."""
    try:
        if os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid"):
            return None
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith("NSpid:")), "")
    return int(line.split()[-1]) if line.split()[1:] else None


def _write_artifacts(out: Path, tree: Path, res: SessionResult, native: bool, rate: int, wall: float,
                     note: str, gpu: tuple[str, dict] = ("", {}), nonblocking: bool = False) -> Profile:
    raw = out / "stacks.txt"
    if not raw.is_file() or (not raw.stat().st_size and "Wrote" not in read_tail(out / "py-spy.log", 4000)):
        raise ProfileFailed(f"py-spy wrote no profile; see {out / 'py-spy.log'}: "
                            f"{read_tail(out / 'py-spy.log', 800).strip()}")
    stacks = Stacks.read(raw, tree)
    stacks.write_speedscope(out / "profile.speedscope.json", out.name)
    stacks.write_flamegraph(out / "flamegraph.svg", f"{out.name}: {stacks.total} samples at {rate} Hz")
    load = (f"{res.load_s:.0f} s of the benchmark's load ({res.runs} run(s) of its command"
            + (f", {res.cut} cut at the time limit" if res.cut else "")
            + (f", {res.failed} failed" if res.failed else "") + ")")
    head = [f"Profile {out.name}: py-spy at {rate} Hz{', native frames' if native else ''}"
            f"{', not stopping the candidate (--nonblocking)' if nonblocking else ''}{', Nsight Systems' if gpu[1] else ''}, {load}; "
            f"started in {res.startup_s:.1f} s, {wall:.0f} s in all.",
            "Not a measurement: the profiler slows the candidate; only the benchmark gate's numbers count."]
    if note:
        head.append(note)
    if res.cut and stacks.parts()[WAITING] >= 0.9 * stacks.total:
        head.append("Nearly every sample waited: the benchmark command may have spent the time starting up (loading "
                    "a tokenizer, say) and sent little; call profile again with more seconds.")
    if res.torch and not res.torch.startswith("torch-"):
        head.append(f"PyTorch profiler: {res.torch}.")
    artifacts = [p.name for p in (out / "flamegraph.svg", out / "profile.speedscope.json", raw,
                                  out / "torch-trace.json", out / "torch-profile.txt", out / f"{REPORT}.nsys-rep",
                                  *sorted(out.glob(f"{REPORT}_*.csv"))) if p.is_file()]
    ops = []
    if (out / "torch-trace.json").is_file():
        try:
            ops = torch_ops(json.loads((out / "torch-trace.json").read_text()))
        except ValueError:
            ops = []
        ops = ["PyTorch profiler (the candidate's own trace), operators by total time:", *ops] if ops else []
    gpu_text = [gpu[0]] if gpu[0] else []
    text = "\n".join([*head, *gpu_text, stacks.summary(), *ops, f"Files in {out}: {', '.join(artifacts)}"])
    (out / "summary.txt").write_text(text + "\n")
    (out / "profile.json").write_text(json.dumps({
        "samples": stacks.total, "rate": rate, "native": native, "parts": stacks.parts(), "wall_s": round(wall, 2),
        "load_s": round(res.load_s, 2), "runs": res.runs, "cut": res.cut, "failed": res.failed,
        "torch": res.torch, "gpu": gpu[1], "gpu_note": "" if gpu[1] else gpu[0], "artifacts": artifacts,
        "finished_at": time.time()}))
    return Profile(out, text, artifacts)
