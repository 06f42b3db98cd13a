"""Write a run's report: ``summary.md``, ``trajectory.png`` and ``index.html`` into one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from vibeserve.report.formats import (
    template_env,
)
from vibeserve.report.plot import trajectory_png
from vibeserve.report.round_detail import round_details
from vibeserve.report.tables import (
    cell_rows,
    issue_rows,
    notices,
    role_table,
    role_total,
    round_rows,
    run_summary,
)
from vibeserve.store import RunStore, steering

TEMPLATES = Path(__file__).parent / "templates"


def _env() -> Environment:
    return template_env(TEMPLATES, select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
                        keep_trailing_newline=True)


def report_context(store: RunStore, out_dir: Path) -> dict[str, Any]:
    """Everything the report templates show, as typed rows; links are relative to ``out_dir``."""
    summary = run_summary(store)
    roles = role_table(store)
    return {
        "s": summary,
        "b": summary.benchmark,
        "better": "higher is better" if summary.benchmark.direction == "max" else "lower is better",
        "notices": notices(summary),
        "rounds": round_rows(store),
        "details": round_details(store, out_dir),
        "roles": roles,
        "role_total": role_total(roles),
        "issues": issue_rows(store),
        "cells": cell_rows(store, summary.benchmark.direction),
        "steering": steering.entries(store),
        "image": "trajectory.png",
    }


def write_report(store: RunStore, out_dir: Path) -> Path:
    """Write ``summary.md``, ``trajectory.png`` and ``index.html`` into ``out_dir``; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = report_context(store, out_dir)
    trajectory_png(store, out_dir / ctx["image"])
    env = _env()
    (out_dir / "summary.md").write_text(env.get_template("summary.md.j2").render(ctx), encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(env.get_template("index.html.j2").render(ctx), encoding="utf-8")
    return index


def write_comparison(stores: list[RunStore], out_dir: Path) -> Path:
    """Write several runs side by side (``summary.md``, ``comparison.png``, ``index.html``) into ``out_dir``;
    return the HTML path. Runs ranked on different metrics are refused (``NotComparable``)."""
    from vibeserve.report.compare import columns, role_names
    from vibeserve.report.compare_plot import comparison_png

    cols, notes = columns(stores)
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = cols[0].summary.benchmark
    ctx = {"cols": cols, "notices": notes, "b": bench, "roles": role_names(cols), "image": "comparison.png",
           "better": "higher is better" if bench.direction == "max" else "lower is better"}
    comparison_png(cols, out_dir / ctx["image"])
    env = _env()
    (out_dir / "summary.md").write_text(env.get_template("compare.md.j2").render(ctx), encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(env.get_template("compare.html.j2").render(ctx), encoding="utf-8")
    return index
