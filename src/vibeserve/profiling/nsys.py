"""Nsight Systems (``nsys``) in a profile of a CUDA target: a GPU timeline of the same bounded load.

The candidate starts under ``nsys launch``, which opens an interactive session that records nothing yet;
the framework opens the recording with ``nsys start`` when the load begins and closes it with ``nsys
stop`` when the load ends, so the report holds the load and not the model's loading. ``nsys stats`` then
summarises the report: the top kernels by GPU time, the GPU's time in kernels against memory copies and
sets, and the CUDA API calls by host time.

nsys finds a session through files under ``$TMPDIR``, and a sandboxed candidate's ``/tmp`` is its own
(a private tmpfs). So ``nsys start`` and ``nsys stop`` run inside the candidate's namespaces (``nsenter``,
as root, as py-spy does), the report is written in the candidate's ``/tmp``, and the framework copies it
out through ``/proc/PID/root`` into the profile's folder before the candidate stops.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from vibeserve.process import clean_env, last_line, read_tail, run

NSYS_HINT = ("install Nsight Systems' CLI (e.g. `apt-get install nsight-systems-cli` from NVIDIA's CUDA "
             "repository, or the one a CUDA toolkit ships in `nsight-systems-*/bin`) and put `nsys` on PATH")
TRACE = "cuda,nvtx,osrt"
REPORT = "nsys"  # nsys.nsys-rep and nsys_<report>.csv in the profile's folder
# The reports summarised, by today's name and by the name nsys before 2023 gave them.
REPORTS = {"kernels": ("cuda_gpu_kern_sum", "gpukernsum"), "memops": ("cuda_gpu_mem_time_sum", "gpumemtimesum"),
           "api": ("cuda_api_sum", "cudaapisum")}
_HEADER = re.compile(r'^"?Time ?\(%\)"?,')
START_SETTLE_S = 1.0  # `nsys start` returns before the recording is armed


def find_nsys() -> str | None:
    """The ``nsys`` binary on PATH, or None."""
    return shutil.which("nsys")


def install_root(binary: str) -> Path:
    """The Nsight Systems installation ``binary`` belongs to (``.../nsight-systems-X/bin/nsys`` gives
    ``.../nsight-systems-X``): what a sandboxed candidate must be able to read to start under it."""
    return Path(binary).resolve().parents[1]


@dataclass(frozen=True)
class NsysCommands:
    """The command lines of one profile's nsys session. ``output`` is the report's path without its
    extension, as the candidate sees its file system (nsys adds ``.nsys-rep``)."""

    binary: str
    session: str
    output: str

    @classmethod
    def for_profile(cls, binary: str, out_dir: Path, tmpdir: str = "/tmp") -> NsysCommands:
        session = f"vibeserve-{os.getpid()}-{out_dir.name}"
        return cls(binary, session, f"{tmpdir.rstrip('/')}/{session}")

    def launch(self, argv: list[str]) -> list[str]:
        """The deliverable's command under an nsys session that records nothing until ``start``; CUDA
        graphs are traced kernel by kernel, and processes the candidate forks are followed."""
        return [self.binary, "launch", f"--session-new={self.session}", f"--trace={TRACE}",
                "--trace-fork-before-exec=true", "--cuda-graph-trace=node", "--wait=all", *argv]

    def start(self) -> list[str]:
        """Open the recording; no CPU sampling (a sandboxed candidate has no perf events, and py-spy
        samples the host side)."""
        return [self.binary, "start", f"--session={self.session}", f"--output={self.output}",
                "--force-overwrite=true", "--sample=none", "--cpuctxsw=none"]

    def stop(self) -> list[str]:
        """Close the recording; nsys writes the report while the candidate keeps running."""
        return [self.binary, "stop", f"--session={self.session}"]

    def stats(self, report_name: str, rep: Path, export: bool) -> list[str]:
        """One ``nsys stats`` report of ``rep`` as CSV on stdout; ``export`` makes its SQLite file afresh."""
        return [self.binary, "stats", "--report", report_name, "--format", "csv",
                f"--force-export={'true' if export else 'false'}", str(rep)]

    def help_reports(self) -> list[str]:
        return [self.binary, "stats", "--help-reports"]


def in_namespaces(argv: list[str], pid: int) -> list[str]:
    """``argv`` run in the PID, mount, network and IPC namespaces of ``pid`` (needs root and nsenter)."""
    return ["nsenter", "--target", str(pid), "--pid", "--mount", "--net", "--ipc", "--", *argv]


def _number(text: str) -> float:
    """A number as nsys prints it: ``1234``, ``1234.5`` or, in some versions, ``"1,234"``."""
    return float(text.replace(",", "").strip() or 0)


def read_stats(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of one ``nsys stats --format csv`` report as nsys printed it.

    What it prints before the header (``Generating SQLite file ...``, ``Processing [...] with [...]``,
    ``NOTICE: ...``, a `` ** ... Summary (...)`` title) is skipped; a report with no data (``SKIPPED:
    ... does not contain CUDA kernel data.``) has no header and gives no rows. The rows end at a blank
    line or at what nsys prints before the next report, when several were asked for.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _HEADER.match(line.strip())), None)
    if start is None:
        return [], []
    block = []
    for line in lines[start:]:
        if not line.strip() or line.startswith(("Processing [", "Generating ", " **", "SKIPPED:", "NOTICE:", "WARNING:")):
            break
        block.append(line.strip())
    rows = list(csv.reader(io.StringIO("\n".join(block))))
    header = [h.strip() for h in rows[0]]
    return header, [dict(zip(header, (c.strip() for c in row), strict=False)) for row in rows[1:] if row]


@dataclass
class StatRow:
    name: str
    total_ns: float
    count: int


def _rows(rows: list[dict[str, str]], name_key: str, count_keys: tuple[str, ...]) -> list[StatRow]:
    out = []
    for row in rows:
        total = next((row[k] for k in row if k.startswith("Total Time")), None)
        count = next((row[k] for k in count_keys if k in row), "0")
        if total is None or name_key not in row:
            continue
        scale = {"(ns)": 1, "(us)": 1e3, "(ms)": 1e6, "(s)": 1e9}
        unit = next((scale[u] for k in row if k.startswith("Total Time") for u in scale if k.endswith(u)), 1)
        out.append(StatRow(row[name_key], _number(total) * unit, int(_number(count))))
    return sorted(out, key=lambda r: -r.total_ns)


@dataclass
class GpuSummary:
    """What ``nsys stats`` said about one recording."""

    kernels: list[StatRow] = field(default_factory=list)
    memops: list[StatRow] = field(default_factory=list)
    api: list[StatRow] = field(default_factory=list)

    @classmethod
    def from_csv(cls, kernels: str = "", memops: str = "", api: str = "") -> GpuSummary:
        """From the text of the three reports (``cuda_gpu_kern_sum``, ``cuda_gpu_mem_time_sum``,
        ``cuda_api_sum``), each as nsys printed it."""
        return cls(_rows(read_stats(kernels)[1], "Name", ("Instances",)),
                   _rows(read_stats(memops)[1], "Operation", ("Count", "Instances", "Operations")),
                   _rows(read_stats(api)[1], "Name", ("Num Calls", "Calls")))

    @property
    def kernel_ns(self) -> float:
        return sum(r.total_ns for r in self.kernels)

    @property
    def memop_ns(self) -> float:
        return sum(r.total_ns for r in self.memops)

    def as_json(self) -> dict:
        gpu = self.kernel_ns + self.memop_ns
        return {"kernel_s": self.kernel_ns / 1e9, "memop_s": self.memop_ns / 1e9,
                "kernel_share": self.kernel_ns / gpu if gpu else 0.0,
                "launches": sum(r.count for r in self.kernels),
                "top_kernel": self.kernels[0].name if self.kernels else "",
                "top_kernel_share": self.kernels[0].total_ns / self.kernel_ns if self.kernels else 0.0}

    def text(self, window_s: float, top: int = 8) -> str:
        """The lines an agent reads: where the GPU's time went in a window of ``window_s`` seconds."""
        gpu = self.kernel_ns + self.memop_ns
        if not gpu:
            return ("Nsight Systems recorded no kernel and no memory operation on the GPU during the load: the "
                    "candidate did not use CUDA (is the model on the GPU?), or it ran in a process nsys did not "
                    "follow.")
        lines = [f"Nsight Systems, {window_s:.0f} s of the load: {self.kernel_ns / 1e9:.3f} s of kernels "
                 f"({sum(r.count for r in self.kernels)} launches) and {self.memop_ns / 1e9:.3f} s of memory "
                 f"operations on the GPU, summed over streams.",
                 f"GPU time: {100 * self.kernel_ns / gpu:.1f}% in kernels, {100 * self.memop_ns / gpu:.1f}% in memory "
                 "copies and sets" + (" (" + ", ".join(f"{r.name.strip('[]').removeprefix('CUDA ')} "
                                                        f"{100 * r.total_ns / gpu:.1f}%" for r in self.memops[:4])
                                      + ")" if self.memops else "") + "."]
        if window_s > 0:
            busy = min(100.0, 100 * self.kernel_ns / 1e9 / window_s)
            lines.append(f"Kernels kept the GPU busy about {busy:.0f}% of the window" + (
                " (the rest of the time the GPU waited on the host: Python, scheduling, kernel launches, the HTTP "
                "path; the host side is below)." if busy < 50 else "."))
        if self.kernels:
            lines.append("Top kernels by GPU time:")
            lines += [f"  {100 * r.total_ns / self.kernel_ns:5.1f}%  {r.total_ns / 1e6:9.2f} ms  {r.count:7d} x  "
                      f"{_short(r.name)}" for r in self.kernels[:top]]
        if self.api:
            total = sum(r.total_ns for r in self.api)
            lines.append("CUDA API calls by host time:")
            lines += [f"  {100 * r.total_ns / total:5.1f}%  {r.total_ns / 1e6:9.2f} ms  {r.count:7d} calls  {r.name}"
                      for r in self.api[:5]]
        return "\n".join(lines)


def _short(name: str, width: int = 100) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


class NsysRecorder:
    """Drives one profile's nsys session from outside the candidate's sandbox: ``start`` and ``stop``
    around the load, then ``summarise``. Never raises for nsys's faults: ``error`` says what went wrong,
    and the profile goes on without the GPU timeline."""

    def __init__(self, commands: NsysCommands, pid: int, out_dir: Path):
        self.cmd, self.pid, self.out = commands, pid, out_dir
        self.error = ""
        self.report: Path | None = None
        self.started_at = 0.0
        self.window_s = 0.0
        self._enter = _needs_entering(pid)
        self._env = clean_env({"TMPDIR": _environ(pid).get("TMPDIR", "/tmp")})

    def _run(self, argv: list[str], name: str, timeout_s: float) -> bool:
        argv = in_namespaces(argv, self.pid) if self._enter else argv
        (self.out / f"{name}.argv").write_text(" ".join(argv) + "\n")
        done = run(argv, self.out, self.out, name, timeout_s, env=self._env)
        if done.returncode != 0:
            said = last_line(done.tail()) or ("timed out" if done.timed_out else f"exit {done.returncode}")
            self.error = f"`nsys {argv[argv.index(self.cmd.binary) + 1]}` failed: {said} (see {self.out / name}.*)"
            return False
        return True

    def start(self) -> bool:
        if self._enter and (os.geteuid() != 0 or not shutil.which("nsenter")):
            self.error = ("the candidate has its own /tmp, where its nsys session lives, and reaching it needs "
                          "root and nsenter")
            return False
        ok = self._run(self.cmd.start(), "nsys-start", 60)
        if ok:
            time.sleep(START_SETTLE_S)
            self.started_at = time.monotonic()
        return ok

    def stop(self, wait_s: float = 180.0) -> bool:
        """Close the recording and copy the report out of the candidate's file system (it must still run)."""
        if not self.started_at or not self._run(self.cmd.stop(), "nsys-stop", wait_s):
            return False
        self.window_s = time.monotonic() - self.started_at
        src = Path(f"/proc/{self.pid}/root{self.cmd.output}.nsys-rep")
        if not _settled(src, wait_s):
            self.error = f"nsys wrote no report at {self.cmd.output}.nsys-rep (in the candidate's view) within {wait_s:.0f} s"
            return False
        self.report = self.out / f"{REPORT}.nsys-rep"
        shutil.copyfile(src, self.report)
        for leftover in src.parent.glob(f"{Path(self.cmd.output).name}.*"):  # not ours to keep in its /tmp
            leftover.unlink(missing_ok=True)
        return True

    def summarise(self, timeout_s: float = 300.0) -> GpuSummary | None:
        """Run ``nsys stats`` on the copied report (here, outside every sandbox), keep each report's CSV as
        ``nsys_<report>.csv``, and read them; None (and ``error``) when nsys could make none of them."""
        if self.report is None:
            return None
        self._enter = False  # the copy is ours
        names = self._report_names(timeout_s)
        texts: dict[str, str] = {}
        for i, (part, name) in enumerate(names.items()):
            log = f"nsys-stats-{name}"
            if not self._run(self.cmd.stats(name, self.report, export=i == 0), log, timeout_s):
                continue
            texts[part] = (self.out / f"{log}.stdout").read_text(errors="replace")
            header, rows = read_stats(texts[part])
            if header:  # the report's own CSV, without what nsys printed around it
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows([header, *([r.get(h, "") for h in header] for r in rows)])
                (self.out / f"{REPORT}_{name}.csv").write_text(buf.getvalue())
        self.report.with_suffix(".sqlite").unlink(missing_ok=True)  # made again from the report when needed
        if not texts:
            return None
        self.error = ""  # a report with no data in it (SKIPPED) is no error
        return GpuSummary.from_csv(**texts)

    def _report_names(self, timeout_s: float) -> dict[str, str]:
        """Each summarised report by the name this nsys knows it by (they were renamed in 2023)."""
        argv = self.cmd.help_reports()
        run(argv, self.out, self.out, "nsys-help-reports", timeout_s, env=self._env)
        known = read_tail(self.out / "nsys-help-reports.stdout", 200_000)
        return {part: next((n for n in names if re.search(rf"\b{n}\b", known)), names[0])
                for part, names in REPORTS.items()}


def _settled(path: Path, wait_s: float) -> bool:
    """Whether ``path`` exists and has stopped growing, within ``wait_s``."""
    deadline, last = time.monotonic() + wait_s, -1
    while time.monotonic() < deadline:
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        if size > 0 and size == last:
            return True
        last = size
        time.sleep(1.0)
    return False


def _needs_entering(pid: int) -> bool:
    """Whether ``pid`` sees another file system than ours (its own mount namespace): then its /tmp may be
    its own, and nsys commands must run in its namespaces to find its session."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
