"""Small PNG plots for the HTML report, drawn on matplotlib's Agg canvas.

No pyplot and no global backend switch: each plot builds its own `Figure` on a
`FigureCanvasAgg`, so nothing needs a display and nothing leaks between calls. Every plot
function takes already-read metric records, writes one PNG and returns its path, or returns
None when there is nothing to draw (so the report never shows an empty plot).

Metric values may be missing, non-numeric, or the strings "nan"/"inf" (how `MetricsWriter`
stores non-finite floats): such points are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.metric_names import M

FIGSIZE = (5.5, 3.2)  # inches: at 100 dpi a plot is ~550×320 px and 20–40 kB
DPI = 100
SMOOTH_FROM = 25  # with this many points or more, draw the raw series faint plus a rolling mean
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
EVENT_COLOR = "#7f7f7f"

Series = tuple[list[float], list[float]]


# --------------------------------------------------------------------------- data helpers
def to_float(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, "nan", "inf", text, bools, lists)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def series(records: Iterable[Any], key: str, x_key: str = "step") -> Series:
    """(x, y) of every record where both `x_key` and `key` are finite numbers, sorted by x."""
    pairs = []
    for record in records:
        if not isinstance(record, dict):
            continue
        x, y = to_float(record.get(x_key)), to_float(record.get(key))
        if x is not None and y is not None:
            pairs.append((x, y))
    pairs.sort(key=lambda p: p[0])
    return [p[0] for p in pairs], [p[1] for p in pairs]


def events(records: Iterable[Any]) -> list[tuple[float, str]]:
    """(step, text) of every record with an "event"; a line without a step takes the last step seen."""
    out, last_step = [], None
    for record in records:
        if not isinstance(record, dict):
            continue
        step = to_float(record.get("step"))
        if step is not None:
            last_step = step
        if "event" in record and record["event"] not in (None, ""):
            where = step if step is not None else last_step
            if where is not None:
                out.append((where, str(record["event"])))
    return out


def _rolling_mean(values: Sequence[float], window: int) -> list[float]:
    half = window // 2
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - half) : i + half + 1]
        out.append(sum(chunk) / len(chunk))
    return out


# --------------------------------------------------------------------------- drawing helpers
def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path, legend_rows: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(pad=0.6, rect=(0, 0.065 * legend_rows, 1, 1))
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8.5)
    ax.set_ylabel(ylabel, fontsize=8.5)
    ax.tick_params(labelsize=7.5)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def _draw(ax, xs: list[float], ys: list[float], label: str, color: str):
    """One series: a line (dots when short), or faint raw + rolling mean when long. Returns the legend handle."""
    n = len(xs)
    if n >= SMOOTH_FROM:
        ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
        (handle,) = ax.plot(xs, _rolling_mean(ys, max(3, n // 15)), color=color, linewidth=1.6,
                            label=f"{label} (smoothed)")
    else:
        (handle,) = ax.plot(xs, ys, color=color, linewidth=1.4, marker="o" if n <= 15 else None,
                            markersize=3, label=label)
    return handle


def _short_event(text: str, width: int = 24) -> str:
    """An event's label on a plot: whole when short, else its head before the first colon
    ("RM refresh 2: 241 new pairs ..." -> "RM refresh 2"), else cut with an ellipsis."""
    if len(text) <= width:
        return text
    head = text.split(":", 1)[0]
    return head if len(head) <= width else text[: width - 1] + "…"


def _draw_events(ax, marks: Sequence[tuple[float, str]]):
    """Dashed vertical lines at event steps (labelled when few). Returns a legend handle or None."""
    handle = None
    names = sorted({text for _, text in marks})
    label = f"event: {', '.join(names)}" if len(names) <= 2 else "events"
    for step, text in marks:
        handle = ax.axvline(step, color=EVENT_COLOR, linestyle="--", linewidth=0.9, alpha=0.9, label=label, zorder=4)
        if len(marks) <= 8:
            ax.text(step, 0.98, f" {_short_event(text)}", transform=ax.get_xaxis_transform(), rotation=90, va="top",
                    ha="right", fontsize=6.5, color="#555555", zorder=5,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5})
    return handle


def _legend(ax, handles) -> None:
    """Legend inside the axes, where matplotlib finds the least data."""
    handles = [h for h in handles if h is not None]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)


def _legend_below(fig, handles) -> int:
    """Legend under the axes, for twin-axis and stacked plots where no inside spot is free of data.

    Returns how many legend rows it takes (for `_save` to leave room)."""
    handles = [h for h in handles if h is not None]
    if not handles:
        return 0
    ncol = len(handles) if len(handles) <= 3 else 2
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=ncol, frameon=False,
               bbox_to_anchor=(0.5, 0.0), handlelength=1.6, columnspacing=1.2)
    return math.ceil(len(handles) / ncol)


# --------------------------------------------------------------------------- plots
def plot_lines(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    lines: Sequence[tuple[str, Series]],
    marks: Sequence[tuple[float, str]] = (),
) -> Path | None:
    """Several series on one axis (e.g. train and eval loss). None when every series is empty."""
    lines = [(label, s) for label, s in lines if s[0]]
    if not lines:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    handles = [_draw(ax, xs, ys, label, COLORS[i % len(COLORS)]) for i, (label, (xs, ys)) in enumerate(lines)]
    handles.append(_draw_events(ax, marks))
    _style(ax, title, xlabel, ylabel)
    _legend(ax, handles)
    return _save(fig, path)


def plot_twin(
    path: Path,
    title: str,
    xlabel: str,
    left: tuple[str, str, Series],
    right: tuple[str, str, Series],
    marks: Sequence[tuple[float, str]] = (),
) -> Path | None:
    """Two series with their own y-axes, (label, y-axis label, series) each; one axis if one is empty."""
    present = [s for s in (left, right) if s[2][0]]
    if not present:
        return None
    if len(present) == 1:
        label, ylabel, data = present[0]
        return plot_lines(path, title, xlabel, ylabel, [(label, data)], marks)
    fig = _figure()
    ax = fig.add_subplot()
    h_left = _draw(ax, *left[2], left[0], COLORS[0])
    _style(ax, title, xlabel, left[1])
    ax.set_ylabel(left[1], fontsize=8.5, color=COLORS[0])
    twin = ax.twinx()
    h_right = _draw(twin, *right[2], right[0], COLORS[1])
    twin.set_ylabel(right[1], fontsize=8.5, color=COLORS[1])
    twin.tick_params(labelsize=7.5)
    h_event = _draw_events(ax, marks)
    return _save(fig, path, _legend_below(fig, [h_left, h_right, h_event]))


TIMING_KEYS = ((M.TIME_GENERATION, "generation"), (M.TIME_SCORING, "forward passes + scoring"),
               (M.TIME_TRAINING, "PPO update"))
EVAL_TIMING = (M.TIME_EVAL, "held-out evaluation")  # drawn only when a run has ppo.eval.every


def plot_timing(path: Path, records: Sequence[Any], marks: Sequence[tuple[float, str]] = ()) -> Path | None:
    """Seconds per PPO iteration split into generation / scoring / update (/ held-out evaluation), stacked."""
    keys = TIMING_KEYS + ((EVAL_TIMING,) if any(isinstance(r, dict) and EVAL_TIMING[0] in r for r in records) else ())
    rows = []
    for record in records:
        if not isinstance(record, dict):
            continue
        x = to_float(record.get("step"))
        parts = [to_float(record.get(key)) for key, _ in keys]
        if x is not None and any(p is not None for p in parts):
            rows.append((x, [max(p, 0.0) if p is not None else 0.0 for p in parts]))
    if not rows:
        return None
    rows.sort(key=lambda r: r[0])
    xs = [r[0] for r in rows]
    columns = [[r[1][i] for r in rows] for i in range(len(keys))]
    total = sum(sum(c) for c in columns) or 1.0
    labels = [f"{name} ({100 * sum(c) / total:.0f}%)" for (_, name), c in zip(keys, columns)]
    fig = _figure()
    ax = fig.add_subplot()
    colors = [COLORS[0], COLORS[3], COLORS[2], COLORS[4]]
    handles = []
    if len(xs) <= 60:
        width = 0.8 * (min(b - a for a, b in zip(xs, xs[1:])) if len(xs) > 1 and len(set(xs)) == len(xs) else 1.0)
        bottom = [0.0] * len(xs)
        for column, label, color in zip(columns, labels, colors):
            handles.append(ax.bar(xs, column, width=width, bottom=bottom, label=label, color=color, linewidth=0))
            bottom = [b + c for b, c in zip(bottom, column)]
    else:
        handles += ax.stackplot(xs, *columns, labels=labels, colors=colors, alpha=0.85, linewidth=0)
    handles.append(_draw_events(ax, marks))
    _style(ax, "Time per PPO iteration", "PPO iteration", "seconds")
    ax.set_ylim(bottom=0)
    return _save(fig, path, _legend_below(fig, handles))


def plot_overoptimisation(path: Path, records: Sequence[Any]) -> Path | None:
    """Gold and proxy score against √KL, one point per PPO iteration (Gao et al. 2022)."""
    proxy, gold = [], []
    for record in records:
        if not isinstance(record, dict):
            continue
        kl = to_float(record.get(M.KL))
        if kl is None:
            continue
        x = math.sqrt(max(kl, 0.0))
        p, g = to_float(record.get(M.SCORES)), to_float(record.get(M.GOLD_SCORE))
        if p is not None:
            proxy.append((x, p))
        if g is not None:
            gold.append((x, g))
    if not proxy and not gold:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    handles = []

    def draw(axis, points, label, color):
        points = sorted(points)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        axis.scatter(xs, ys, s=10, color=color, alpha=0.35, linewidths=0)
        if len(points) >= 5:
            (h,) = axis.plot(xs, _rolling_mean(ys, max(3, len(points) // 8)), color=color, linewidth=1.6,
                             label=f"{label} (line: running mean)")
        else:
            (h,) = axis.plot(xs, ys, color=color, linewidth=1.2, marker="o", markersize=3, label=label)
        return h

    first = proxy or gold
    first_label = "proxy score (RM)" if proxy else "gold score"
    handles.append(draw(ax, first, first_label, COLORS[0] if proxy else COLORS[1]))
    _style(ax, "Over-optimisation: score vs √KL", "√KL(policy ‖ reference)   [√nats]", first_label)
    ax.set_ylabel(first_label, fontsize=8.5, color=COLORS[0] if proxy else COLORS[1])
    if proxy and gold:
        twin = ax.twinx()
        handles.append(draw(twin, gold, "gold score", COLORS[1]))
        twin.set_ylabel("gold score", fontsize=8.5, color=COLORS[1])
        twin.tick_params(labelsize=7.5)
    return _save(fig, path, _legend_below(fig, handles))
