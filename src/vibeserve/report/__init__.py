"""Run reports: the per-role and per-round tables, the trajectory plot, summary.md / index.html, and the
`vibeserve status` lines."""

from vibeserve.report.console import print_status
from vibeserve.report.plot import trajectory_figure, trajectory_png
from vibeserve.report.render import write_report
from vibeserve.report.tables import (
    BenchmarkInfo,
    IssueRow,
    Peer,
    RoleRow,
    RoundRow,
    RunSummary,
    issue_rows,
    role_table,
    round_rows,
    run_summary,
)

__all__ = [
    "BenchmarkInfo",
    "IssueRow",
    "Peer",
    "RoleRow",
    "RoundRow",
    "RunSummary",
    "issue_rows",
    "role_table",
    "round_rows",
    "print_status",
    "run_summary",
    "trajectory_figure",
    "trajectory_png",
    "write_report",
]
