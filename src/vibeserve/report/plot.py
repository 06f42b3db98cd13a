"""The trajectory plot: the ranked metric per round, kept vs rejected, with baseline and peer lines."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from vibeserve.report.formats import fmt_metric, versus
from vibeserve.report.tables import RoundRow, round_rows, run_summary
from vibeserve.store import RunStore
from vibeserve.types import RoundStatus

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KEPT_COLOR = "#1f6fb4"
REJECTED_COLOR = "#d62728"
FAILED_COLOR = "#8c8c8c"
PEER_COLORS = ("#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
LOG_SPAN = 10.0  # values spanning more than this factor get a log axis


def tick(v: float, _pos: object = None) -> str:
    """An axis tick in plain notation: 20000, 2.5, 0.001 (never 2e+04)."""
    text = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def minor_tick(v: float, _pos: object = None) -> str:
    """On a log axis, label the 2s and 5s between the powers of ten as well."""
    if v <= 0:
        return ""
    return tick(v) if round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""


def wants_log_axis(values: list[float]) -> bool:
    """A log axis when the plotted values are all positive and span more than ``LOG_SPAN`` times."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SPAN


def _best_so_far(rows: list[RoundRow], baseline: float | None, direction: str) -> tuple[list[float], list[float]]:
    """Points of the step line: the baseline at round 0, then the running best over kept rounds."""
    xs: list[float] = []
    ys: list[float] = []
    best = baseline
    if best is not None:
        xs, ys = [0], [best]
    for r in rows:
        if r.status != RoundStatus.KEPT or r.metric is None:
            continue
        if best is None or (r.metric > best if direction == "max" else r.metric < best):
            best = r.metric
        xs.append(r.round)
        ys.append(best)
    if xs and rows and rows[-1].round > xs[-1]:  # carry the best to the last round
        xs.append(rows[-1].round)
        ys.append(ys[-1])
    return xs, ys


def trajectory_png(store: RunStore, path: Path) -> Path:
    """Draw the metric per round to ``path`` (PNG) and return it; works with no rounds and with no baseline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    trajectory_figure(store).savefig(path, format="png")
    return path


def trajectory_figure(store: RunStore) -> Figure:
    """The trajectory as a matplotlib ``Figure`` on an Agg canvas of its own.

    Kept rounds are filled markers joined by a best-so-far step line; accepted-but-not-kept rounds are
    hollow markers; rejected rounds are red crosses at their metric (or on the bottom edge when they have
    none); failed rounds are grey markers on the bottom edge. The baseline is a dashed line and each
    ``config["peers"]`` entry a dotted one. The y axis is logarithmic when the values span more than 10x.
    """
    # Imported here so that importing vibeserve stays cheap, and drawn on an Agg canvas of our own so
    # that no global pyplot state or backend is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    summary, rows = run_summary(store), round_rows(store)
    bench = summary.benchmark
    fig = Figure(figsize=(9, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    edge = ax.get_xaxis_transform()  # x in data, y in axes fraction: y=0 is the bottom edge

    baseline = summary.baseline_metric
    if baseline is not None:
        ax.axhline(baseline, color="black", linestyle="--", linewidth=1.2, label=f"baseline ({fmt_metric(baseline)})")
    for i, peer in enumerate(summary.peers):
        ax.axhline(peer.metric, color=PEER_COLORS[i % len(PEER_COLORS)], linestyle=":", linewidth=1.6,
                   label=f"{peer.name} ({fmt_metric(peer.metric)})")

    xs, ys = _best_so_far(rows, baseline, bench.direction)
    if xs:
        ax.step(xs, ys, where="post", color=KEPT_COLOR, linewidth=1.8, alpha=0.8, label="best so far")

    def pick(status: RoundStatus, measured: bool) -> list[RoundRow]:
        return [r for r in rows if r.status == status and (r.metric is not None) == measured]

    kept = pick(RoundStatus.KEPT, True)
    if kept:
        ax.scatter([r.round for r in kept], [r.metric for r in kept], s=55, color=KEPT_COLOR, zorder=3,
                   label="kept")
    accepted = pick(RoundStatus.ACCEPTED, True)
    if accepted:
        ax.scatter([r.round for r in accepted], [r.metric for r in accepted], s=55, facecolors="none",
                   edgecolors=KEPT_COLOR, linewidths=1.5, zorder=3, label="accepted, not kept")
    rejected, rejected_bare = pick(RoundStatus.REJECTED, True), pick(RoundStatus.REJECTED, False)
    if rejected:
        ax.scatter([r.round for r in rejected], [r.metric for r in rejected], s=60, marker="x",
                   color=REJECTED_COLOR, linewidths=2, zorder=3, label="rejected")
    if rejected_bare:
        ax.scatter([r.round for r in rejected_bare], [0.0] * len(rejected_bare), s=60, marker="x",
                   color=REJECTED_COLOR, linewidths=2, zorder=4, transform=edge, clip_on=False,
                   label=None if rejected else "rejected")
    failed = [r for r in rows if r.status == RoundStatus.FAILED]
    if failed:
        ax.scatter([r.round for r in failed], [0.0] * len(failed), s=45, marker="v", color=FAILED_COLOR,
                   zorder=4, transform=edge, clip_on=False, label="failed (no metric)")

    if rejected_bare or failed:  # keep measured points clear of the markers on the bottom edge
        ax.margins(y=0.12)
    values = [v for v in [baseline, *(p.metric for p in summary.peers), *(r.metric for r in rows)] if v is not None]
    if wants_log_axis(values):
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(FuncFormatter(minor_tick))
    ax.yaxis.set_major_formatter(FuncFormatter(tick))
    has_metric = bool(values)
    if not has_metric:
        ax.text(0.5, 0.5, "no measurements yet", transform=ax.transAxes, ha="center", va="center",
                color=FAILED_COLOR, fontsize=12)
        ax.set_yticks([])
    last = max((r.round for r in rows), default=1)
    ax.set_xlim(-0.5, last + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (0 = baseline)")
    better = "higher" if bench.direction == "max" else "lower"
    unit = f" ({bench.unit})" if bench.unit else ""
    ax.set_ylabel(f"{bench.metric}{unit}, {better} is better")
    title = f"{summary.target}: {bench.metric} per round"
    if summary.speedup is not None and summary.best_metric is not None:
        title += f" (best {fmt_metric(summary.best_metric)}, {versus(summary.speedup, 'the baseline')})"
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="best", fontsize=9, framealpha=0.9)
    return fig
