"""The ``vibeserve`` command line: wires target, store, policy, harnesses and loop together."""

from __future__ import annotations

import errno
import logging
import re
import sqlite3
import sys
import time
import tomllib
from pathlib import Path
from typing import Annotated

import typer
from typer._click.exceptions import ClickException  # typer's bundled click: its usage errors

from vibeserve.cli_runs import RunsDir, console, err, pause, report, status, steer, ui
from vibeserve.cli_runs import print_status_of as _print_status
from vibeserve.cli_runs import run_dir_of as _run_dir
from vibeserve.errors import RunInterrupted, Terminated, VibeserveError
from vibeserve.policies import POLICIES
from vibeserve.sandbox import SandboxMode
from vibeserve.skills.cli import app as skills_app


def _usage_name(self: typer.core.TyperArgument) -> str:
    """An argument in the usage line as users type it: NAME, or [NAME] when optional (not {NAME})."""
    name = self.display_name_raw + ("..." if self.nargs != 1 else "")
    return name if self.required else f"[{name}]"


typer.core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
# Plain help (no boxes, no markup to eat a [table] name) and plain tracebacks for bugs.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Build a bespoke LLM serving system with agents.")
app.add_typer(skills_app, name="skills")
POLICY_NAMES = ", ".join(POLICIES)
SANDBOX_HELP = ("Isolation for agents and candidates: bwrap (bubblewrap; the run stops if it cannot start) "
                "or none (no isolation).")


TEMPLATE_HELP = ("toy (the default: a stdlib toy that validates in seconds) or llm-chat (an OpenAI-compatible "
                 "LLM server, HF Transformers reference, exact checker, vibeserve.bench load).")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(metavar="DIRECTORY", help="An empty or new folder to write the target into.")],
    template: Annotated[str, typer.Option(metavar="NAME", help=TEMPLATE_HELP)] = "toy",
) -> None:
    """Write a small working target into DIRECTORY to edit into your own."""
    from vibeserve.target.scaffold import write_target

    write_target(directory, template=template)
    console.print(f"wrote a target to {directory}; check it with `vibeserve validate {directory}`")


@app.command()
def validate(
    target: Annotated[Path, typer.Argument(metavar="TARGET", help="The target directory (holding target.toml).")],
    sandbox: Annotated[SandboxMode, typer.Option(help=SANDBOX_HELP)] = SandboxMode.BWRAP,
) -> None:
    """Check TARGET as round 0 of a run would: schema, paths, the reference, then the accuracy gate, the probe
    gate and the benchmark with its output audit on the seed, under the same sandbox."""
    from vibeserve.target.validate import validate_target

    validate_target(target, log=lambda s: console.print(s, markup=False), sandbox_mode=sandbox)
    console.print(f"{target} is a valid target", style="green", markup=False)


def _load_run_config(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise VibeserveError(f"{path}: cannot read the run config: {e}") from None


@app.command()
def run(
    target: Annotated[Path, typer.Argument(metavar="TARGET", help="The target directory (holding target.toml).")],
    runs_dir: RunsDir = Path("runs"),
    run_id: Annotated[str | None, typer.Option(help="Name of the run (default: time and target).")] = None,
    harness: Annotated[str | None, typer.Option(help="Harness for every role: scripted, codex, claude, openai.")] = None,
    harness_option: Annotated[list[str] | None, typer.Option(
        "--harness-option", "-O", metavar="KEY=VALUE", help="KEY=VALUE for the harness (base_url, binary, prices...); repeatable.")] = None,
    model: Annotated[str | None, typer.Option(help="Model for every role.")] = None,
    trajectory: Annotated[Path | None, typer.Option(
        help="Folder holding trajectory.toml, replayed by the scripted harness (format: docs/trajectories.md).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Rounds to run (overrides [budget].rounds).")] = None,
    plateau: Annotated[int | None, typer.Option(
        metavar="K", min=0, help="Stop after K rounds in a row without a kept candidate; 0: never "
                                 "(overrides [budget].plateau_rounds).")] = None,
    policy: Annotated[str | None, typer.Option(help=f"Outer-loop policy: {POLICY_NAMES}.")] = None,
    policy_option: Annotated[list[str] | None, typer.Option(
        "--policy-option", "-P", metavar="KEY=VALUE",
        help="KEY=VALUE for the policy (evolutionary: temperature, inspirations, similarity, migrate_every); "
             "repeatable.")] = None,
    config: Annotated[Path | None, typer.Option(help="Run config TOML (per-role harness and model).")] = None,
    report: Annotated[bool, typer.Option(help="Write the report when the run ends.")] = True,
    sandbox: Annotated[SandboxMode | None, typer.Option(help=SANDBOX_HELP + " [default: bwrap]")] = None,
    skills: Annotated[list[Path] | None, typer.Option(
        "--skills", metavar="DIR", help="A folder of your own skills for the agents, added to the bundled ones; repeatable.")] = None,
    parallel: Annotated[int | None, typer.Option(
        metavar="N", help="Rounds in flight at once, each in its own worktree (evolutionary policy); gates take "
                          "turns so a benchmark always runs alone.")] = None,
    ray: Annotated[str | None, typer.Option(
        metavar="ADDRESS", help="Run agents and gates as Ray tasks on the cluster at ADDRESS ('local' starts "
                                "one here); gates ask for [hardware].gate_resources.")] = None,
) -> None:
    """Start a new run on TARGET."""
    from vibeserve.loop.config import RunConfig, create_run
    from vibeserve.target.spec import load_target

    if parallel is not None and parallel < 1:
        raise VibeserveError(f"--parallel {parallel}: give at least 1 (the number of rounds in flight at once)")
    spec = load_target(target).spec
    data = _load_run_config(config)
    data.setdefault("run_id", run_id or time.strftime("%Y%m%d-%H%M%S-") + spec.name)
    data["target"] = str(target)
    for key, value in (("harness", harness), ("model", model), ("rounds", rounds), ("plateau", plateau),
                       ("policy", policy), ("sandbox", sandbox), ("parallel", parallel), ("ray", ray)):
        if value is not None:
            data[key] = value
    for opt in harness_option or []:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            raise VibeserveError(f"--harness-option {opt!r}: expected KEY=VALUE")
        data.setdefault("harness_options", {})[key.replace("-", "_")] = value
    for opt in policy_option or []:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            raise VibeserveError(f"--policy-option {opt!r}: expected KEY=VALUE")
        data.setdefault("policy_options", {})[key.replace("-", "_")] = value
    if trajectory is not None:
        data.setdefault("harness_options", {})["trajectory"] = str(trajectory.resolve())
    if skills:
        from vibeserve.skills.catalog import load_library

        load_library(skills)  # a malformed skill stops here, before the run exists
        data["skills"] = [str(p.resolve()) for p in skills]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", data["run_id"]):
        raise VibeserveError(f"run id {data['run_id']!r}: use letters, digits, '.', '_' and '-'")
    try:
        cfg = RunConfig.model_validate(data)
    except Exception as e:  # pydantic's message names the key
        raise VibeserveError(f"run config: {e}") from None
    run_dir = create_run(runs_dir, cfg)
    console.print(f"run [bold]{cfg.run_id}[/bold] in {run_dir}")
    _drive(run_dir, report)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to continue (a folder name under the runs directory).")],
    runs_dir: RunsDir = Path("runs"),
    report: Annotated[bool, typer.Option(help="Write the report when the run ends.")] = True,
    sandbox: Annotated[SandboxMode | None, typer.Option(
        help=SANDBOX_HELP + " [default: the mode the run started with]")] = None,
    accept_target_change: Annotated[bool, typer.Option(
        help="Go on although the target's files changed since the run started (for example a fixed checker); "
             "the new files are recorded.")] = False,
) -> None:
    """Continue RUN_ID after a crash, a kill or an interrupt, from its last finished step."""
    from vibeserve.store import RunStore

    path = _run_dir(runs_dir, run_id)
    store = RunStore.open(path)
    try:
        if store.run()["policy"] == "baseline":
            raise VibeserveError(f"run {run_id!r} is a control arm (vibeserve baseline), which does not resume; its "
                                 "recorded trials stay, and a new one starts with `vibeserve baseline TARGET`")
    finally:
        store.close()
    _drive(path, report, sandbox, accept_target_change)


@app.command()
def baseline(
    target: Annotated[Path, typer.Argument(metavar="TARGET", help="The target directory (with a [baseline] table).")],
    budget_h: Annotated[float, typer.Option("--budget-h", metavar="H", help="Wall-clock hours to spend (the agent "
                                            "run's, for a matched control arm).")],
    trials: Annotated[int | None, typer.Option(metavar="N", min=0, help="Stop after N trials of the stock engine "
                                               "(the seed runs not counted).")] = None,
    runs_dir: RunsDir = Path("runs"),
    run_id: Annotated[str | None, typer.Option(help="Name of the run (default: time, target, 'baseline').")] = None,
    engine: Annotated[str | None, typer.Option(metavar="NAME", help="Search [baseline.engines.NAME] instead of "
                                               "[baseline]'s own engine.")] = None,
    seed_runs: Annotated[int | None, typer.Option(metavar="N", help="Measure the seed N times first (default: "
                                                  "[baseline].seed_runs; the first is the baseline).")] = None,
    sandbox: Annotated[SandboxMode, typer.Option(help=SANDBOX_HELP)] = SandboxMode.BWRAP,
    report: Annotated[bool, typer.Option(help="Write the report when the run ends.")] = True,
) -> None:
    """Control arm: search a stock engine's settings ([baseline]) for a wall-clock budget, every trial through
    the gates, recorded as a run of its own (policy "baseline")."""
    from vibeserve.loop.baseline import BaselineRun, create_baseline_run
    from vibeserve.target.spec import load_target

    name = run_id or time.strftime("%Y%m%d-%H%M%S-") + load_target(target).spec.name + "-baseline"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise VibeserveError(f"run id {name!r}: use letters, digits, '.', '_' and '-'")
    run_dir = create_baseline_run(runs_dir, target, name, budget_h, trials, sandbox, engine, seed_runs)
    console.print(f"baseline run [bold]{name}[/bold] in {run_dir}")
    driver = BaselineRun(run_dir, progress=lambda s: console.print(s, markup=False))
    try:
        driver.run()
    except (KeyboardInterrupt, Terminated) as e:
        code = 130 if isinstance(e, KeyboardInterrupt) else 128 + e.signum
        raise RunInterrupted(f"interrupted; the trials recorded in {run_dir} stay", code) from None
    finally:
        try:
            if report:
                from vibeserve.report import write_report as render

                index = render(driver.store, run_dir / "report")
                console.print(f"report: {index.parent / 'summary.md'}", markup=False)
            _print_status(driver.store)
        finally:
            driver.close()


def _drive(run_dir: Path, write_report: bool, sandbox: SandboxMode | None = None,
           accept_target_change: bool = False) -> None:
    from vibeserve.loop.engine import Engine

    engine = Engine(run_dir, progress=lambda s: console.print(s, markup=False), sandbox=sandbox,
                    accept_target_change=accept_target_change)
    try:
        engine.run()
    except (KeyboardInterrupt, Terminated) as e:
        code = 130 if isinstance(e, KeyboardInterrupt) else 128 + e.signum
        raise RunInterrupted(f"interrupted; continue with `vibeserve resume {run_dir.name}`", code) from None
    finally:
        try:
            if write_report:
                from vibeserve.report import write_report as render

                index = render(engine.store, run_dir / "report")
                console.print(f"report: {index.parent / 'summary.md'}", markup=False)
            _print_status(engine.store)
        finally:
            engine.close()
    _outcome(engine.store.dir)


def _outcome(run_dir: Path) -> None:
    """A run that ended with nothing to show exits non-zero, with one line saying why."""
    from vibeserve.errors import NoResult
    from vibeserve.store import RunStore

    store = RunStore.open(run_dir)
    try:
        run, rounds = store.run(), store.rounds()
    finally:
        store.close()
    first = (run["stop_reason"] or "").splitlines()[0] if run["stop_reason"] else ""
    if run["baseline_metric"] is None and run["baseline_commit"] is None:
        raise NoResult(f"run {run['id']} ended without a measured baseline: {first}")
    # a round the cost cap ended before its next agent call failed nothing: it is the budget's stop
    later = [r for r in rounds if r["round"] > 0 and '"reason":"stopped: ' not in (r["result"] or "")]
    if later and all(r["status"] == "failed" for r in later):
        raise NoResult(f"run {run['id']}: every round failed ({len(later)} of {len(later)}); see `vibeserve status "
                       f"{run['id']}` and the report")


for command in (status, steer, pause, report, ui):
    app.command()(command)


def _mount_bench() -> None:
    # Mounted as a plain command (not a sub-app) so `vibeserve bench --url ...` takes its flags directly.
    from vibeserve.bench.cli import CONTEXT_SETTINGS
    from vibeserve.bench.cli import bench as bench_command

    app.command("bench", context_settings=CONTEXT_SETTINGS, help="Open-loop load generator for an "
                "OpenAI-compatible server (see `python -m vibeserve.bench --help`).")(bench_command)


_mount_bench()


def _on_signal(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def main() -> None:
    import signal

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        app(standalone_mode=False, prog_name="vibeserve")
    except RunInterrupted as e:
        err.print(str(e), markup=False, highlight=False)
        sys.exit(e.exit_code)
    except VibeserveError as e:
        err.print("error: ", style="red", end="", markup=False)
        err.print(str(e), markup=False, highlight=False)
        sys.exit(e.exit_code)
    except Terminated as e:  # before a run existed: nothing to mark
        err.print("interrupted", markup=False)
        sys.exit(128 + e.signum)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        err.print(f"error: the disk is full ({e.strerror}{': ' + str(e.filename) if e.filename else ''}); free "
                  "some space, then continue with `vibeserve resume RUN`; what was recorded is kept", markup=False)
        sys.exit(1)
    except sqlite3.OperationalError as e:
        if "full" not in str(e):
            raise
        err.print(f"error: the disk is full (the run store says: {e}); free some space, then continue with "
                  "`vibeserve resume RUN`; what was recorded is kept", markup=False)
        sys.exit(1)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except ClickException as e:
        # A usage error (unknown option, a value out of range, a missing argument): click's own message
        # and usage line, exit 2, as in standalone mode; never a traceback.
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; continue with `vibeserve resume RUN`")
        sys.exit(130)
