"""Write a run's report: ``summary.md``, ``trajectory.png`` and ``index.html`` into one folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from vibeserve.report.plot import trajectory_png
from vibeserve.report.tables import (
    issue_rows,
    role_table,
    role_total,
    round_rows,
    run_summary,
    short_sha,
)
from vibeserve.store import RunStore

TEMPLATES = Path(__file__).parent / "templates"
MISSING = "—"


def fmt_metric(v: float | None) -> str:
    """A metric with as many decimals as its size needs: 1,234 / 123.4 / 12.34 / 0.123."""
    if v is None or not math.isfinite(v):
        return MISSING
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_duration(s: float | None) -> str:
    """Seconds as ``4.2s``, ``45s``, ``1m 23s`` or ``2h 05m``."""
    if s is None:
        return MISSING
    if s < 10:
        return f"{s:.1f}s"
    s = round(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def fmt_share(x: float) -> str:
    """A fraction as a percentage with one decimal."""
    return f"{100 * x:.1f}%"


def fmt_gain(g: float | None) -> str:
    """A relative gain as a signed percentage."""
    return MISSING if g is None else f"{100 * g:+.1f}%"


def fmt_speedup(x: float | None) -> str:
    """A speedup factor such as ``1.84x``."""
    return MISSING if x is None else f"{x:.2f}x"


def fmt_tokens(n: int) -> str:
    """A token count, compact: ``812``, ``45.6k``, ``1.23M``."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.2f}M"
    if n >= 10_000:
        return f"{n / 1000:.1f}k"
    return f"{n:,}"


def fmt_cost(c: float | None) -> str:
    """Dollars, or ``n/a`` when no call reported a cost."""
    return "n/a" if c is None else f"${c:,.2f}"


def md_cell(text: Any) -> str:
    """Text made safe for one Markdown table cell: one line, pipes and raw HTML escaped."""
    s = " ".join(str(text).split())
    for ch in ("\\", "|", "<", ">", "`"):
        s = s.replace(ch, "\\" + ch)
    return s


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        metric=fmt_metric, duration=fmt_duration, share=fmt_share, gain=fmt_gain, speedup=fmt_speedup,
        tokens=fmt_tokens, cost=fmt_cost, md=md_cell, short=lambda c: short_sha(c) or MISSING,
    )
    return env


def report_context(store: RunStore) -> dict[str, Any]:
    """Everything the report templates show, as typed rows."""
    summary = run_summary(store)
    roles = role_table(store)
    return {
        "s": summary,
        "b": summary.benchmark,
        "better": "higher is better" if summary.benchmark.direction == "max" else "lower is better",
        "rounds": round_rows(store),
        "roles": roles,
        "role_total": role_total(roles),
        "issues": issue_rows(store),
        "image": "trajectory.png",
    }


def write_report(store: RunStore, out_dir: Path) -> Path:
    """Write ``summary.md``, ``trajectory.png`` and ``index.html`` into ``out_dir``; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = report_context(store)
    trajectory_png(store, out_dir / ctx["image"])
    env = _env()
    (out_dir / "summary.md").write_text(env.get_template("summary.md.j2").render(ctx), encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(env.get_template("index.html.j2").render(ctx), encoding="utf-8")
    return index
