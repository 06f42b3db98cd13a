"""``comparison.png``: each run's best metric over agent cost and over wall time, one line per run."""

from __future__ import annotations

from pathlib import Path

from vibeserve.report.compare import RunColumn
from vibeserve.report.plot import FAILED_COLOR, KEPT_COLOR, PEER_COLORS, tick, wants_log_axis

COLORS = (KEPT_COLOR, "#d62728", *PEER_COLORS)


def _wall_unit(cols: list[RunColumn]) -> tuple[float, str]:
    longest = max((p.wall_s for c in cols for p in c.curve), default=0.0)
    if longest >= 2 * 3600:
        return 3600.0, "hours"
    return (60.0, "minutes") if longest >= 120 else (1.0, "seconds")


def comparison_png(cols: list[RunColumn], path: Path) -> Path:
    """Draw the comparison to ``path`` (PNG): best-so-far vs agent cost (left) and vs wall time (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    bench = cols[0].summary.benchmark
    fig = Figure(figsize=(12, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    by_cost, by_time = fig.subplots(1, 2, sharey=True)
    scale, unit = _wall_unit(cols)
    any_cost = any(c.costs_known for c in cols)
    for i, c in enumerate(cols):
        if not c.curve:
            continue
        color, label = COLORS[i % len(COLORS)], f"{c.summary.run_id} ({c.summary.policy})"
        if c.costs_known:
            by_cost.step([p.cost_usd for p in c.curve], [p.best for p in c.curve], where="post", color=color,
                         linewidth=1.8, marker="o", markersize=4, label=label)
        by_time.step([p.wall_s / scale for p in c.curve], [p.best for p in c.curve], where="post", color=color,
                     linewidth=1.8, marker="o", markersize=4, label=label)
    if not any_cost:
        by_cost.text(0.5, 0.5, "no agent call reported a cost", transform=by_cost.transAxes, ha="center",
                     va="center", color=FAILED_COLOR, fontsize=12)
    values = [p.best for c in cols for p in c.curve]
    if wants_log_axis(values):
        by_cost.set_yscale("log")
    by_cost.yaxis.set_major_formatter(FuncFormatter(tick))
    better = "higher" if bench.direction == "max" else "lower"
    by_cost.set_ylabel(f"best {bench.metric}{f' ({bench.unit})' if bench.unit else ''}, {better} is better")
    by_cost.set_xlabel("agent cost (USD)")
    by_time.set_xlabel(f"wall time ({unit})")
    by_cost.set_title("best so far vs agent cost")
    by_time.set_title("best so far vs wall time")
    for ax in (by_cost, by_time):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9, framealpha=0.9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
