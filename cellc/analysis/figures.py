"""The report's figures, in one style: matplotlib Agg, PNG bytes, deterministic.

Every function takes plain numbers and returns a :class:`matplotlib.figure.Figure`; nothing
here touches pyplot's global state or the file system. :func:`png_bytes` renders a figure
byte-for-byte reproducibly (no software/date metadata), so a report regenerated from the same
storage is identical. Sizes and fonts are chosen for a GitHub markdown column (about 900 px
wide) and for print: 8-10 inch figures at 110 dpi, 10 pt text, labelled axes with units,
colour-blind-safe colours (Okabe-Ito) that also differ in lightness for grey-scale print.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg  # drawn by Agg directly: no pyplot, no backend switch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

DPI = 110
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    "path.simplify": False,
    "svg.hashsalt": "cellc",
}
# Okabe-Ito: distinguishable with colour-vision deficiency and in grey-scale.
BLUE, VERMILLION, ORANGE, SKY, GREEN, GREY, DARK = (
    "#0072B2", "#D55E00", "#E69F00", "#56B4E9", "#009E73", "#BBBBBB", "#444444")
VERDICT_COLOURS = {
    "baseline": "#FFFFFF",
    "worse": VERMILLION,
    "better": BLUE,
    "equivalent": GREEN,
    "inconclusive": GREY,
    "not tested": "#FFFFFF",
}
VERDICT_LEGEND = {
    "baseline": "baseline",
    "worse": "worse (Holm-adjusted paired Wilcoxon p < 0.05)",
    "better": "better (Holm-adjusted paired Wilcoxon p < 0.05)",
    "equivalent": "equivalent (TOST within the margin)",
    "inconclusive": "inconclusive (neither)",
    "not tested": "not testable (fewer than 2 shared trials)",
}


BASELINE_HATCH = "///"


def set_log_axis(ax, which: str, low: float, high: float) -> None:
    """Log scale with plain tick labels: powers of ten over wide ranges, 1-2-5 steps over narrow ones."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    if high / low >= 100:
        ticks = [10.0**k for k in range(math.ceil(math.log10(low) - 1e-9), math.floor(math.log10(high) + 1e-9) + 1)]
        text = lambda v, _: f"$10^{{{round(math.log10(v))}}}$"  # noqa: E731
    else:
        ticks = [m * 10.0**k for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                 for m in (1, 2, 5) if low * (1 - 1e-9) <= m * 10.0**k <= high * (1 + 1e-9)]
        if len(ticks) < 3:  # a narrow range (e.g. hidden 8..16): evenly spaced round numbers
            ticks = [t for t in MaxNLocator(5).tick_values(low, high) if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
        text = lambda v, _: f"{v:g}"  # noqa: E731
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(text))
    axis.set_minor_locator(NullLocator())


def new_figure(width: float, height: float) -> Figure:
    """A figure detached from pyplot (no global registry), drawn by the Agg canvas."""
    with rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """Render to PNG without metadata that would change between runs."""
    buffer = io.BytesIO()
    with rc_context(STYLE):
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def data_title(title: str, source: str) -> str:
    """Task title with the data source when it is not the real corpus ('proxy' must show)."""
    return title if source == "real" else f"{title} ({source} data)"


# ---------------------------------------------------------------------------------------------
# Variant comparison: box plots per cell, significance drawn in, mean parameter count below.


@dataclass(frozen=True)
class BoxSeries:
    cell: str
    values: Sequence[float]
    verdict: str  # a key of VERDICT_COLOURS
    p: float | None = None
    failures: int = 0  # trials counted at the trivial predictor's score (drawn as crosses there)


@dataclass(frozen=True)
class BoxPanel:
    title: str
    series: Sequence[BoxSeries]


def _axis_limits(groups: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """y-limits that show every box and whisker but not far outliers (those are counted)."""
    values = [v for g in groups for v in g]
    if not values:
        return None
    lows, highs = [], []
    for g in groups:
        if not g:
            continue
        q1, q3 = np.percentile(g, [25, 75])
        spread = max(q3 - q1, 1e-12)
        lows.append(max(min(g), q1 - 3 * spread))
        highs.append(min(max(g), q3 + 3 * spread))
    low, high = min(lows), max(highs)
    # At least 2 % of the magnitude, so that near-equal values do not get 6-digit tick labels.
    pad = max(0.08 * (high - low), 0.02 * max(abs(high), abs(low)), 1e-6)
    return low - pad, high + pad


def _draw_boxes(ax, panel: BoxPanel, metric_label: str) -> None:
    series = panel.series
    positions = np.arange(1, len(series) + 1)
    filled = [(pos, s) for pos, s in zip(positions, series) if s.values]
    if filled:
        parts = ax.boxplot([list(s.values) for _, s in filled], positions=[p for p, _ in filled],
                           widths=0.6, patch_artist=True, showmeans=False, showfliers=False,
                           medianprops={"color": "black", "linewidth": 1.4},
                           whiskerprops={"color": DARK}, capprops={"color": DARK})
        for patch, (_, s) in zip(parts["boxes"], filled):
            patch.set_facecolor(VERDICT_COLOURS[s.verdict])
            patch.set_alpha(0.8 if s.verdict in ("worse", "better", "equivalent", "inconclusive") else 1.0)
            patch.set_edgecolor(DARK)
            if s.verdict == "baseline":
                patch.set_hatch(BASELINE_HATCH)
    limits = _axis_limits([s.values for s in series])
    if limits:
        ax.set_ylim(*limits)
    jitter = np.random.default_rng(0)
    for pos, s in zip(positions, series):
        values = np.asarray(s.values, dtype=float)
        if len(values) == 0:
            ax.text(pos, 0.5, "no\ntrials", transform=ax.get_xaxis_transform(), ha="center", va="center",
                    fontsize=8, color=DARK)
            continue
        shown = values if not limits else values[(values >= limits[0]) & (values <= limits[1])]
        ax.scatter(pos + jitter.uniform(-0.18, 0.18, len(shown)), shown, s=9, color="black", alpha=0.45,
                   linewidths=0, zorder=3)
        if limits:
            above, below = int((values > limits[1]).sum()), int((values < limits[0]).sum())
            if above:
                ax.annotate(f"+{above} above", (pos, 0.985), xycoords=("data", "axes fraction"), ha="center",
                            va="top", fontsize=7.5, color=DARK)
            if below:
                ax.annotate(f"+{below} below", (pos, 0.015), xycoords=("data", "axes fraction"), ha="center",
                            va="bottom", fontsize=7.5, color=DARK)
        label = "baseline" if s.verdict == "baseline" else ("untested" if s.p is None else _p_text(s.p))
        ax.annotate(label, (pos, 1.01), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                    fontsize=8, color=VERDICT_COLOURS[s.verdict] if s.verdict in ("worse", "better") else DARK,
                    fontweight="bold" if s.verdict in ("worse", "better") else "normal")
    ax.set_xlim(0.4, len(series) + 0.6)
    ax.set_xticks(positions)
    ax.set_xticklabels([s.cell + (f"\n{s.failures} failed" if s.failures else "") for s in series])
    ax.set_ylabel(metric_label)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))
    ax.set_title(panel.title, loc="left", pad=16)
    ax.grid(axis="x", visible=False)


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def variant_boxplot(title: str, metric_label: str, panels: Sequence[BoxPanel],
                    mean_params: Sequence[float | None], lower_is_better: bool) -> Figure:
    """The paper's central figure: one box-plot panel per trial subset, parameter counts below."""
    cells = [s.cell for s in panels[0].series]
    width = max(8.0, 0.75 * len(cells) + 2.0)
    fig = new_figure(width, 3.1 * len(panels) + 2.4)
    with rc_context(STYLE):
        grid = fig.add_gridspec(len(panels) + 1, 1, height_ratios=[3.0] * len(panels) + [1.2], hspace=0.55)
        axes = [fig.add_subplot(grid[k, 0]) for k in range(len(panels))]
        direction = "lower is better" if lower_is_better else "higher is better"
        for ax, panel in zip(axes, panels):
            _draw_boxes(ax, panel, f"{metric_label}\n({direction})")
        bars = fig.add_subplot(grid[len(panels), 0], sharex=axes[0])
        counts = [0.0 if p is None else p / 1000 for p in mean_params]
        positions = np.arange(1, len(cells) + 1)
        bars.bar(positions, counts, width=0.6, color=SKY, edgecolor=DARK, linewidth=0.6)
        top = max(counts) if counts and max(counts) > 0 else 1.0
        for pos, count, raw in zip(positions, counts, mean_params):
            bars.text(pos, count + 0.04 * top, "n/a" if raw is None else f"{count:,.1f}k", ha="center",
                      va="bottom", fontsize=8)
        bars.set_ylim(0, top * 1.35)
        bars.set_ylabel("mean\nparameters\n(thousands)")
        bars.set_xlabel("cell")
        bars.grid(axis="x", visible=False)
        bars.set_xticks(positions)
        bars.set_xticklabels([s.cell + (f"\n{s.failures} failed" if s.failures else "") for s in panels[0].series])
        used = sorted({s.verdict for p in panels for s in p.series}, key=list(VERDICT_COLOURS).index)
        handles = [Patch(facecolor=VERDICT_COLOURS[v], edgecolor=DARK, label=VERDICT_LEGEND[v],
                         hatch=BASELINE_HATCH if v == "baseline" else None) for v in used]
        handles.append(Line2D([], [], color="black", linewidth=1.4, label="median"))
        fig.legend(handles=handles, loc="upper center", ncol=3, frameon=False,
                   bbox_to_anchor=(0.5, 0.965))
        fig.suptitle(title, y=0.995)
        fig.subplots_adjust(left=0.12, right=0.98, top=0.86, bottom=0.07)
        fig.align_ylabels([*axes, bars])
    return fig


# ---------------------------------------------------------------------------------------------
# Hyper-parameter importance: fractions of variance as horizontal bars.


@dataclass(frozen=True)
class Bar:
    label: str
    value: float  # fraction in [0, 1]
    low: float  # interval (fractions)
    high: float
    kind: str = "main"  # "main" | "interaction" | "rest"


def importance_bars(title: str, bars: Sequence[Bar], note: str = "") -> Figure:
    fig = new_figure(8.0, 0.36 * len(bars) + 1.8)
    colours = {"main": BLUE, "interaction": ORANGE, "rest": GREY}
    with rc_context(STYLE):
        ax = fig.add_subplot(1, 1, 1)
        y = np.arange(len(bars))[::-1]
        values = [100 * b.value for b in bars]
        # The bootstrap interval need not contain the full-data estimate: the bar's ends are the interval's.
        err_lo = [max(v - 100 * b.low, 0.0) for b, v in zip(bars, values)]
        err_hi = [max(100 * b.high - v, 0.0) for b, v in zip(bars, values)]
        ax.barh(y, values, xerr=[err_lo, err_hi], color=[colours[b.kind] for b in bars], edgecolor=DARK,
                linewidth=0.6, error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": DARK})
        top = max([v + e for v, e in zip(values, err_hi)] + [1.0])
        right = min(100.0, top) * 1.12 + 2
        for yy, v, e in zip(y, values, err_hi):
            if v + e + 0.14 * right > right:  # no room to the right: label inside the bar
                ax.text(v - 0.01 * right, yy + 0.18, f"{v:.1f} %", va="center", ha="right", fontsize=8.5,
                        color="white", fontweight="bold")
            else:
                ax.text(v + e + 0.012 * right, yy, f"{v:.1f} %", va="center", fontsize=8.5)
        ax.set_yticks(y)
        ax.set_yticklabels([b.label for b in bars])
        ax.set_xlim(0, right)
        ax.set_xlabel("fraction of variance of the predicted test metric (%)")
        ax.grid(axis="y", visible=False)
        kinds = [k for k in ("main", "interaction", "rest") if any(b.kind == k for b in bars)]
        names = {"main": "main effect", "interaction": "pairwise interaction", "rest": "higher-order remainder"}
        ax.legend(handles=[Patch(facecolor=colours[k], edgecolor=DARK, label=names[k]) for k in kinds],
                  loc="lower right", frameon=True)
        ax.set_title(title, loc="left")
        if note:
            fig.text(0.01, 0.01, note, fontsize=8, color=DARK, ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    return fig


# ---------------------------------------------------------------------------------------------
# Best of k: the expected test outcome of the best-by-validation trial among k, per cell.


@dataclass(frozen=True)
class KCurve:
    cell: str
    expected: Sequence[float]  # k = 1..n
    low: Sequence[float]
    high: Sequence[float]
    baseline: bool = False


def best_of_k_lines(title: str, ylabel: str, curves: Sequence[KCurve], note: str = "") -> Figure:
    fig = new_figure(8.0, 4.6)
    palette = [VERMILLION, BLUE, ORANGE, SKY, GREEN, "#CC79A7", "#F0E442", GREY, DARK]
    with rc_context(STYLE):
        ax = fig.add_subplot(1, 1, 1)
        others = iter(palette)
        for c in curves:
            k = np.arange(1, len(c.expected) + 1)
            colour = "black" if c.baseline else next(others, DARK)
            ax.plot(k, c.expected, color=colour, linewidth=2.0 if c.baseline else 1.2, label=c.cell)
            if c.baseline:
                ax.fill_between(k, c.low, c.high, color=GREY, alpha=0.35, linewidth=0)
        ax.set_xscale("log")
        n = max((len(c.expected) for c in curves), default=1)
        ax.set_xticks([k for k in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500) if k < n] + [n])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xlabel("trials searched, k (log scale)")
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right", ncol=3, frameon=True, fontsize=8)
        ax.set_title(title, loc="left")
        if note:
            fig.text(0.01, 0.01, note, fontsize=8, color=DARK, ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    return fig


# ---------------------------------------------------------------------------------------------
# Marginals: predicted metric and training time over each hyper-parameter.


@dataclass(frozen=True)
class Curve:
    x: np.ndarray  # values in display units (e.g. the learning rate itself)
    mean: np.ndarray
    std: np.ndarray
    points_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    points_y: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class MarginalRow:
    ylabel: str
    curves: Sequence[Curve]  # one per axis
    colour: str = BLUE


def marginal_grid(title: str, xlabels: Sequence[str], xlog: Sequence[bool], rows: Sequence[MarginalRow],
                  note: str = "") -> Figure:
    cols = len(xlabels)
    fig = new_figure(10.0, 2.7 * len(rows) + 1.0)
    with rc_context(STYLE):
        axes = fig.subplots(len(rows), cols, squeeze=False, sharex="col")
        for r, row in enumerate(rows):
            for c, curve in enumerate(row.curves):
                ax = axes[r][c]
                lo, hi = curve.mean - curve.std, curve.mean + curve.std
                ax.fill_between(curve.x, lo, hi, color=row.colour, alpha=0.22, linewidth=0, label="± 1 std over trees")
                ax.plot(curve.x, curve.mean, color=row.colour, linewidth=1.8, label="mean prediction")
                span = float(np.max(hi) - np.min(lo)) if len(lo) else 1.0
                span = span if span > 0 else max(abs(float(np.max(hi))) * 0.05, 1e-3) if len(hi) else 1.0
                if len(curve.points_x):
                    ax.scatter(curve.points_x, curve.points_y, s=7, color="black", alpha=0.3, linewidths=0,
                               zorder=1, label="trials")
                if len(lo):
                    bottom = float(np.min(lo)) - 0.35 * span
                    if np.min(curve.mean) >= 0 and (len(curve.points_y) == 0 or np.min(curve.points_y) >= 0):
                        bottom = max(bottom, 0.0)  # times and error rates cannot be negative
                    ax.set_ylim(bottom, float(np.max(hi)) + 0.35 * span)
                if xlog[c]:
                    set_log_axis(ax, "x", curve.x[0], curve.x[-1])
                if r == len(rows) - 1:
                    ax.set_xlabel(xlabels[c])
                if c == 0:
                    ax.set_ylabel(row.ylabel)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 0.95))
        fig.suptitle(title, y=0.99)
        if note:
            fig.text(0.01, 0.005, note, fontsize=8, color=DARK, ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 0.93))
    return fig


# ---------------------------------------------------------------------------------------------
# Interactions: heat maps of the predicted metric over two hyper-parameters.


@dataclass(frozen=True)
class HeatMap:
    x_edges: np.ndarray  # display units
    y_edges: np.ndarray
    values: np.ndarray  # (len(y_edges) - 1, len(x_edges) - 1)
    xlabel: str
    ylabel: str
    xlog: bool
    ylog: bool
    points_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    points_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    title: str = ""


def heat_maps(title: str, maps: Sequence[HeatMap], colour_label: str, lower_is_better: bool) -> Figure:
    fig = new_figure(5.0 * len(maps), 4.6)
    finite = [m.values[np.isfinite(m.values)] for m in maps]
    vmin = min((float(v.min()) for v in finite if v.size), default=0.0)
    vmax = max((float(v.max()) for v in finite if v.size), default=1.0)
    cmap = "viridis_r" if lower_is_better else "viridis"
    with rc_context(STYLE):
        axes = fig.subplots(1, len(maps), squeeze=False)[0]
        mesh = None
        for ax, m in zip(axes, maps):
            mesh = ax.pcolormesh(m.x_edges, m.y_edges, m.values, cmap=cmap, vmin=vmin, vmax=vmax, shading="flat",
                                 rasterized=True)
            if len(m.points_x):
                ax.scatter(m.points_x, m.points_y, s=10, facecolor="white", edgecolor="black", linewidths=0.5,
                           zorder=3, label="trials")
            if m.xlog:
                set_log_axis(ax, "x", m.x_edges[0], m.x_edges[-1])
            if m.ylog:
                set_log_axis(ax, "y", m.y_edges[0], m.y_edges[-1])
            ax.set_xlim(m.x_edges[0], m.x_edges[-1])
            ax.set_ylim(m.y_edges[0], m.y_edges[-1])
            ax.set_xlabel(m.xlabel)
            ax.set_ylabel(m.ylabel)
            ax.grid(False)
            if m.title:
                ax.set_title(m.title, loc="left")
        fig.suptitle(title, y=0.98)
        fig.subplots_adjust(left=0.08, right=0.83, bottom=0.14, top=0.85, wspace=0.32)
        if mesh is not None:
            direction = "lower is better" if lower_is_better else "higher is better"
            bar = fig.colorbar(mesh, cax=fig.add_axes((0.86, 0.14, 0.018, 0.71)))
            bar.set_label(f"{colour_label}\n({direction}; brighter is better)")
    return fig


def nice_number(value: float) -> str:
    """Compact text for tick-free annotations (3 significant digits)."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"
