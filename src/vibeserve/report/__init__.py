"""Run reports: the per-role and per-round tables, the trajectory plot, and summary.md / index.html."""

from vibeserve.report.plot import trajectory_png
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
    "run_summary",
    "trajectory_png",
    "write_report",
]
