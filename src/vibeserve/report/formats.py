"""How the report and ``vibeserve status`` write numbers and text: plain notation, factors a reader takes in
at a glance, durations, and Markdown-safe cells."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from vibeserve.gates.gain import fmt, fmt_factor

MISSING = "—"


def fmt_metric(v: float | None) -> str:
    """A metric in plain notation with about four significant digits (``gates.gain.fmt``): 17476, 566.2."""
    if v is None or not math.isfinite(v):
        return MISSING
    return fmt(v)


def fmt_gain(f: float | None) -> str:
    """An improvement factor as a cell: ``30.9x better``, ``4.1% worse``, ``same``."""
    if f is None or math.isnan(f):
        return MISSING
    if f == 1.0:
        return "same"
    return fmt_factor(f).removesuffix(" than")


def versus(f: float | None, what: str) -> str:
    """An improvement factor against ``what`` in words: ``30.9x better than the baseline``."""
    if f is None or math.isnan(f):
        return f"not comparable with {what}"
    if f == 1.0:
        return f"the same as {what}"
    return f"{fmt_factor(f)} {what}"


def fmt_samples(samples: list[float]) -> str:
    """The timed repeats, in the order they ran."""
    return ", ".join(fmt_metric(v) for v in samples) or MISSING


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


def fmt_share(x: float | None) -> str:
    """A fraction as a percentage with one decimal."""
    return MISSING if x is None else f"{100 * x:.1f}%"


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
    """Text made safe for one Markdown table cell: one line; pipes, raw HTML and link brackets escaped."""
    s = " ".join(str(text).split())
    for ch in ("\\", "|", "<", ">", "`", "[", "]"):
        s = s.replace(ch, "\\" + ch)
    return s


def template_env(folder: Path, autoescape: bool | Callable[[str | None], bool], **options: Any) -> Environment:
    """Jinja for a folder of templates with the filters both the report and the dashboard format by."""
    from vibeserve.report.tables import short_sha
    env = Environment(loader=FileSystemLoader(folder), undefined=StrictUndefined, autoescape=autoescape,
                      trim_blocks=True, lstrip_blocks=True, **options)
    env.filters.update(
        metric=fmt_metric, duration=fmt_duration, share=fmt_share, gain=fmt_gain, versus=versus,
        samples=fmt_samples, tokens=fmt_tokens, cost=fmt_cost, md=md_cell, short=lambda c: short_sha(c) or MISSING,
    )
    return env
