"""The ``vibeserve`` commands that look at and steer existing runs: ``status``, ``steer``, ``pause``,
``report`` and ``ui`` (registered on the app by ``vibeserve.cli``), and what the commands share."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vibeserve.errors import RunNotFound, VibeserveError

# Logs and CI capture output: give tables room instead of 80 columns when not on a terminal.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

RunsDir = Annotated[Path, typer.Option("--runs-dir", metavar="DIR", help="The folder holding the runs, one subfolder each.",
                                       envvar="VIBESERVE_RUNS")]


def run_dir_of(runs_dir: Path, run_id: str | None) -> Path:
    if run_id is None:
        runs = sorted((p for p in runs_dir.glob("*/run.db")), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise RunNotFound(f"no runs in {runs_dir}; start one with `vibeserve run TARGET`")
        return runs[-1].parent
    path = runs_dir / run_id
    if not (path / "run.db").is_file():
        known = ", ".join(sorted(p.parent.name for p in runs_dir.glob("*/run.db"))[-5:]) or "none"
        raise RunNotFound(f"no run {run_id!r} in {runs_dir} (runs there: {known})")
    return path


def status(run_id: Annotated[str | None, typer.Argument(metavar="RUN_ID", help="The run (default: the newest).")] = None,
           runs_dir: RunsDir = Path("runs")) -> None:
    """Show a run's rounds, best metric and costs (the newest run if none is named)."""
    from vibeserve.store import RunStore

    store = RunStore.open(run_dir_of(runs_dir, run_id))
    try:
        print_status_of(store)
    finally:
        store.close()


def steer(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to steer (running, paused or stopped).")],
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The instruction the next round's brief carries.")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Add an instruction to the brief of RUN_ID's next round (while it runs, or before `resume`)."""
    from vibeserve.store.steering import add_instruction

    entry, run_status = add_instruction(run_dir_of(runs_dir, run_id), text)
    when = "the next round whose task is chosen" if run_status == "running" else \
        f"the first round after `vibeserve resume {run_id}`"
    console.print(f"instruction {entry.id} recorded for {run_id}; {when} carries it in its brief", markup=False)


def pause(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The running run to pause.")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Ask the process running RUN_ID to stop between rounds: the rounds in flight finish, the run is marked
    paused and its process exits 0; `vibeserve resume RUN_ID` goes on."""
    from vibeserve.store.steering import CONTROL_ARM, request_pause

    _, policy = request_pause(run_dir_of(runs_dir, run_id))
    if policy == CONTROL_ARM:
        console.print(f"stop requested: control arm {run_id} ends once its trial in flight is recorded (a control "
                      "arm does not resume; start another with `vibeserve baseline`)", markup=False)
        return
    console.print(f"pause requested: {run_id} stops once its rounds in flight are recorded; continue it with "
                  f"`vibeserve resume {run_id}`", markup=False)


def print_status_of(store) -> None:
    from vibeserve.report.console import print_status

    print_status(store, console)


def report(
    run_ids: Annotated[list[str] | None, typer.Argument(
        metavar="RUN_ID", help="The run (default: the newest); several runs are compared on one page.")] = None,
    runs_dir: RunsDir = Path("runs"),
    out: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Where a comparison of several runs goes [default: <runs-dir>/compare-RUN1-vs-RUN2...].")]
        = None,
    screenshot: Annotated[bool, typer.Option(help="Save screenshot.png of the page, drawn by headless chromium.")]
        = True,
) -> None:
    """Write RUN's report (summary.md, trajectory.png, index.html under runs/<id>/report/), or compare several
    runs on one page: best metric vs agent cost and wall time, per-role tables side by side."""
    from vibeserve.report import write_report
    from vibeserve.report.render import write_comparison
    from vibeserve.report.screenshot import screenshot as shoot
    from vibeserve.store import RunStore

    dirs = [run_dir_of(runs_dir, r) for r in (run_ids or [None])]
    stores: list[RunStore] = []
    try:
        for d in dirs:
            stores.append(RunStore.open(d))
        if len(stores) == 1:
            index = write_report(stores[0], dirs[0] / "report")
            written = "summary.md, trajectory.png and index.html"
        else:
            folder = out or runs_dir / ("compare-" + "-vs-".join(d.name for d in dirs))
            index = write_comparison(stores, folder)
            written = "summary.md, comparison.png and index.html"
    finally:
        for store in stores:
            store.close()
    console.print(f"wrote {index.parent}/{written}", markup=False)
    if screenshot:
        console.print(shoot(index, index.parent / "screenshot.png"), markup=False)


def ui(
    runs: Annotated[list[str] | None, typer.Argument(
        metavar="RUN", help="Runs to show: ids under --runs-dir or run folders (default: every run there).")] = None,
    runs_dir: RunsDir = Path("runs"),
    host: Annotated[str, typer.Option(
        metavar="ADDRESS", help="Address to listen on; any address but loopback needs the access token printed at start.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, metavar="PORT", help="Port to listen on.")] = 8765,
) -> None:
    """A read-only web dashboard over the runs that updates itself while they go on: trajectory, rounds,
    gates, diffs, logs, transcripts and costs."""
    from vibeserve.ui import RunSource, serve

    named: dict[str, Path] = {}
    for name in runs or []:
        path = Path(name)
        run_dir = path if (path / "run.db").is_file() else run_dir_of(runs_dir, name)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_dir.name):
            raise VibeserveError(f"{run_dir}: a run folder's name uses letters, digits, '.', '_' and '-'")
        if named.get(run_dir.name, run_dir).resolve() != run_dir.resolve():
            raise VibeserveError(f"two runs named {run_dir.name!r}: {named[run_dir.name]} and {run_dir}")
        named[run_dir.name] = run_dir
    serve(RunSource(runs_dir, named), host=host, port=port, say=lambda s: console.print(s, markup=False))
