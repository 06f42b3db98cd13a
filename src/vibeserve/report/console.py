"""``vibeserve status``: a run in a few plain lines, one per round, readable at a glance.

Everything a user, a target or an agent wrote (titles, reasons, stop reasons) is printed with markup off, so a
reason that mentions ``[filename]`` shows ``[filename]``; every reason is one line.
"""

from __future__ import annotations

from rich.console import Console

from vibeserve.report.formats import MISSING, fmt_gain, fmt_metric, versus
from vibeserve.report.round_detail import round_details
from vibeserve.report.tables import notices, one_line, round_rows, run_summary, short_sha
from vibeserve.store import RunStore

STATUS_STYLE = {"kept": "green", "rejected": "red", "failed": "red", "running": "yellow"}


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines with every column but the last padded to its widest cell."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip() for r in rows]


def print_status(store: RunStore, console: Console) -> None:
    """Print the run's state, its baseline and best, one line per round, and its agent calls and cost."""
    s, rounds = run_summary(store), round_rows(store)
    details = round_details(store, store.dir / "report", diffs=False)
    b = s.benchmark
    unit = f" {b.unit}" if b.unit else ""

    def say(text: str, style: str | None = None) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True, style=style)

    stop = one_line(s.stop_reason)
    say(f"run {s.run_id} ({s.target}, {s.policy}): {s.status}{': ' + stop if stop else ''}",
        "bold red" if s.status in ("interrupted", "failed") else "bold")
    for notice in notices(s):
        if not notice.startswith("run "):  # the run's own state is the line above
            say(f"warning: {notice}", "yellow")
    better = "higher" if b.direction == "max" else "lower"
    if s.baseline_metric is None:
        say(f"{b.metric}: no baseline measured yet ({better} is better)")
    else:
        say(f"{b.metric}: baseline {fmt_metric(s.baseline_metric)}{unit}, best {fmt_metric(s.best_metric)}{unit} "
            f"at {short_sha(s.best_commit) or MISSING} ({versus(s.speedup, 'the baseline')}; {better} is better)")
    if rounds:
        head = ["round", "status", f"{b.metric}{f' ({b.unit})' if b.unit else ''}", "vs baseline", "vs best before",
                *(f"{o.metric}{f' ({o.unit})' if o.unit else ''}" for o in b.objectives),
                "tries", "gates (last try)", "task: reason"]
        cells = [head] + [
            [str(r.round), r.status, fmt_metric(r.metric), fmt_gain(r.vs_baseline), fmt_gain(r.vs_best),
             *(fmt_metric(r.objectives.get(o.metric)) for o in b.objectives), str(r.attempts),
             details[r.round].gates or MISSING, r.title + (f": {r.reason}" if r.reason else "")]
            for r in rounds
        ]
        lines = _columns(cells)
        say(lines[0], "dim")
        for r, line in zip(rounds, lines[1:], strict=True):
            say(line, STATUS_STYLE.get(r.status))
    else:
        say("no rounds yet")
    warned = [(n, w) for n, d in details.items() for w in d.warnings]
    for n, w in warned:
        say(f"round {n} warning: {w}", "yellow")
    calls = store.agent_calls()
    say(f"{len(calls)} agent calls, ${store.total_cost():.2f}")
