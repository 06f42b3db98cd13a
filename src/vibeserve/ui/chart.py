"""The trajectory drawn as inline SVG on the server: best metric against round or wall time, every round
marked by how it ended, baseline and peer lines, and the evolutionary lineage as thin parent-to-child lines.

Drawn here rather than by a browser chart library so that the dashboard ships no JavaScript dependency, the
picture is in the HTML the tests read, and a live update is one HTML fragment swapped in. Colours and
shapes follow ``report/plot.py``; hovering a mark shows its round, status, metric and task.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from vibeserve.report.formats import fmt_duration, fmt_metric
from vibeserve.report.plot import (
    FAILED_COLOR,
    KEPT_COLOR,
    PEER_COLORS,
    REJECTED_COLOR,
    _best_so_far,
    tick,
    wants_log_axis,
)
from vibeserve.report.tables import RunSummary
from vibeserve.types import RoundStatus
from vibeserve.ui.data import Edge, RoundView

W, H = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 14, 40  # the legend sits in the right margin


@dataclass(frozen=True)
class Axis:
    """A linear or log mapping from data to pixels."""

    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi
    log: bool = False

    def __call__(self, v: float) -> float:
        f = (lambda x: math.log10(x)) if self.log else (lambda x: x)
        lo, hi = f(self.lo), f(self.hi)
        t = 0.5 if hi == lo else (f(v) - lo) / (hi - lo)
        return self.a + t * (self.b - self.a)

    def ticks(self) -> list[float]:
        if self.log:
            out = []
            for e in range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1):
                out += [m * 10.0 ** e for m in (1, 2, 5) if self.lo <= m * 10.0 ** e <= self.hi]
            return out
        span = self.hi - self.lo
        if span <= 0:
            return [self.lo]
        step = 10 ** math.floor(math.log10(span / 5))
        step *= next(m for m in (1, 2, 5, 10) if span / (step * m) <= 6)
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step + 1e-9) + 1)]


def _y_axis(values: list[float]) -> Axis:
    if not values:
        return Axis(0, 1, H - BOTTOM, TOP)
    lo, hi = min(values), max(values)
    if wants_log_axis(values):
        return Axis(lo / 1.25, hi * 1.25, H - BOTTOM, TOP, log=True)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return Axis(lo - pad, hi + pad, H - BOTTOM, TOP)


def _mark(status: str, x: float, y: float, title: str) -> str:
    tip = f"<title>{escape(title)}</title>"
    if status == RoundStatus.KEPT:
        return f'<circle class="mark kept" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{KEPT_COLOR}">{tip}</circle>'
    if status == RoundStatus.ACCEPTED:
        return (f'<circle class="mark accepted" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="white" stroke="{KEPT_COLOR}" '
                f'stroke-width="1.8">{tip}</circle>')
    if status == RoundStatus.REJECTED:
        d = f"M{x - 5:.1f},{y - 5:.1f}L{x + 5:.1f},{y + 5:.1f}M{x - 5:.1f},{y + 5:.1f}L{x + 5:.1f},{y - 5:.1f}"
        return f'<path class="mark rejected" d="{d}" stroke="{REJECTED_COLOR}" stroke-width="2.2">{tip}</path>'
    if status == RoundStatus.RUNNING:
        return (f'<circle class="mark running" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="none" stroke="#b8860b" '
                f'stroke-dasharray="2 2" stroke-width="1.8">{tip}</circle>')
    d = f"M{x - 5:.1f},{y - 4:.1f}L{x + 5:.1f},{y - 4:.1f}L{x:.1f},{y + 4:.1f}Z"
    return f'<path class="mark failed" d="{d}" fill="{FAILED_COLOR}">{tip}</path>'


def trajectory_svg(s: RunSummary, views: list[RoundView], edges: list[Edge], by: str = "round",
                   link: str = "") -> Markup:
    """The trajectory against ``by`` = ``"round"`` or ``"wall"`` (wall time since the run started); each mark
    links to ``{link}/rounds/{n}``."""
    b = s.benchmark
    xs_of: Callable[[RoundView], float | None] = (
        (lambda v: float(v.row.round)) if by == "round" else (lambda v: v.wall_s))
    placed = [(v, xs_of(v)) for v in views if xs_of(v) is not None]
    metrics = [v.row.metric for v, _ in placed if v.row.metric is not None and math.isfinite(v.row.metric)]
    values = [m for m in [s.baseline_metric, *(p.metric for p in s.peers), *metrics] if m is not None]
    y = _y_axis(values)
    x_hi = max([x for _, x in placed] + [1.0])
    x = Axis(0.0 if by == "wall" else -0.5, x_hi * (1.03 if by == "wall" else 1) + (0 if by == "wall" else 0.5),
             LEFT, W - RIGHT)
    bottom = H - BOTTOM
    out = [f'<svg class="trajectory" viewBox="0 0 {W} {H}" role="img" xmlns="http://www.w3.org/2000/svg" '
           f'font-size="11" font-family="system-ui, sans-serif">',
           f'<rect x="{LEFT}" y="{TOP}" width="{W - RIGHT - LEFT}" height="{bottom - TOP}" fill="#fbfbfc" '
           'stroke="#ccc"/>']
    for t in y.ticks() if values else []:
        py = y(t)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end" fill="#555">{escape(tick(t))}</text>')
    for t in x.ticks():
        if by == "round" and t != int(t):
            continue
        px = x(t)
        label = str(int(t)) if by == "round" else fmt_duration(t)
        out.append(f'<text x="{px:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">{escape(label)}</text>')
    xlabel = "round (0 = baseline)" if by == "round" else "wall time since the run started"
    unit = f" ({b.unit})" if b.unit else ""
    better = "higher" if b.direction == "max" else "lower"
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2:.0f}" y="{H - 6}" text-anchor="middle" fill="#333">'
               f"{escape(xlabel)}</text>")
    out.append(f'<text transform="translate(14 {(TOP + bottom) / 2:.0f}) rotate(-90)" text-anchor="middle" '
               f'fill="#333">{escape(f"{b.metric}{unit}, {better} is better")}</text>')
    legend: list[tuple[str, str]] = []
    if not values:
        out.append(f'<text x="{(LEFT + W - RIGHT) / 2:.0f}" y="{(TOP + bottom) / 2:.0f}" text-anchor="middle" '
                   f'fill="{FAILED_COLOR}" font-size="14">no measurements yet</text>')
    if s.baseline_metric is not None:
        py = y(s.baseline_metric)
        out.append(f'<line class="baseline" x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" '
                   'stroke="black" stroke-dasharray="6 4"/>')
        legend.append(('<line x1="0" x2="18" y1="0" y2="0" stroke="black" stroke-dasharray="6 4"/>',
                       f"baseline {fmt_metric(s.baseline_metric)}"))
    for i, p in enumerate(s.peers):
        color, py = PEER_COLORS[i % len(PEER_COLORS)], y(p.metric)
        out.append(f'<line class="peer" x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="{color}" '
                   'stroke-dasharray="2 3" stroke-width="1.6"/>')
        legend.append((f'<line x1="0" x2="18" y1="0" y2="0" stroke="{color}" stroke-dasharray="2 3" '
                       'stroke-width="1.6"/>', f"{p.name} {fmt_metric(p.metric)}"))
    pos = {v.row.round: (x(px), y(v.row.metric)) for v, px in placed
           if v.row.metric is not None and math.isfinite(v.row.metric)}
    for e in edges:  # lineage first, so the marks sit on top
        if e.parent_round in pos and e.round in pos:
            (x1, y1), (x2, y2) = pos[e.parent_round], pos[e.round]
            out.append(f'<line class="lineage" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                       'stroke="#9aa7b4" stroke-width="1"/>')
    if edges:
        legend.append(('<line x1="0" x2="18" y1="0" y2="0" stroke="#9aa7b4"/>', "parent → child"))
    rows = [v.row for v, _ in placed]
    when = {v.row.round: px for v, px in placed}
    sx, sy = _best_so_far(rows, s.baseline_metric, b.direction)
    if sx:
        pts = []
        for i, (r, m) in enumerate(zip(sx, sy, strict=True)):
            px = x(when.get(int(r), 0.0) if by == "wall" else r)
            if i:
                pts.append(f"{px:.1f},{y(sy[i - 1]):.1f}")
            pts.append(f"{px:.1f},{y(m):.1f}")
        out.append(f'<polyline class="best" points="{" ".join(pts)}" fill="none" stroke="{KEPT_COLOR}" '
                   'stroke-width="1.8" opacity="0.8"/>')
        legend.append((f'<line x1="0" x2="18" y1="0" y2="0" stroke="{KEPT_COLOR}" stroke-width="1.8"/>',
                       "best so far"))
    seen = set()
    for v, px in placed:
        r = v.row
        measured = r.metric is not None and math.isfinite(r.metric)
        cy = y(r.metric) if measured else bottom - 6
        tip = f"round {r.round}: {r.status}, {fmt_metric(r.metric)}{unit}" + (f" — {r.title}" if r.title else "")
        out.append(f'<a href="{escape(link)}/rounds/{r.round}">{_mark(r.status, x(px), cy, tip)}</a>')
        seen.add(r.status)
    for status in ("kept", "accepted", "rejected", "failed", "running"):
        if status in seen:
            legend.append((_mark(status, 9, 0, status), "accepted, not kept" if status == "accepted" else status))
    for i, (glyph, label) in enumerate(legend):
        ly = TOP + 10 + 18 * i
        out.append(f'<g transform="translate({W - RIGHT + 10} {ly})">{glyph}'
                   f'<text x="24" y="4" fill="#333">{escape(label)}</text></g>')
    out.append("</svg>")
    return Markup("".join(out))
