"""The Odyssey report: markdown and PNG figures from a bench's stored trials (pure, deterministic).

:func:`build_report` returns the markdown text and the figure files as bytes; the command
(:mod:`cellc.commands.report`) writes them to ``reports/<bench>.md`` and ``reports/<bench>/``.
Nothing here reads the clock or the environment: the same storage and context give the same
bytes (forests are seeded, figures carry no metadata, iteration orders are fixed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from tabulate import tabulate

from cellc.analysis import figures as fig
from cellc.analysis.context import ReportContext
from cellc.analysis.fanova import METHOD_TEXT, ForestSettings
from cellc.analysis.hyperspace import AXES
from cellc.analysis.load import StudyData
from cellc.analysis.outcomes import TaskFacts
from cellc.analysis.paired import ALPHA, MAX_TRIALS_SHOWN, MIN_EQUIVALENCE_PAIRS, POWER, PairedTest, benjamini_hochberg
from cellc.analysis.paper import (
    AGREE, DIFFERENT_SETUP, DISAGREE, INCONCLUSIVE, PAPER, UNDETERMINED, FindingRow, best_row, comparable,
    different_setup, importance_rows, mark, published_rows, ranking, setup_differences, verdict_rows,
)
from cellc.analysis.significance import BOOTSTRAP_RESAMPLES
from cellc.analysis.task_analysis import (
    BASELINE, MIN_FANOVA_SAMPLES, MIN_INTERACTION_SETTINGS, TaskAnalysis, analyse_task, group_by_task,
)
from cellc.harness.trials_file import TRIALS_FILE, compression

HEAT_CELLS = 40
# How a task's metric counts frames, where papers differ (stated so numbers are compared like with like).
METRIC_CONVENTIONS = {
    "jsb": " Frames scored: a piece of T frames gives T - 1 predictions (frame t + 1 from frames 1..t); the "
           "first frame is never predicted and never scored, and the NLL is averaged over all predicted frames "
           "of the split.",
}


class Section(NamedTuple):
    """A section of the report: its markdown lines and the figures they show (name -> PNG bytes)."""

    lines: list[str]
    figures: dict[str, bytes]


@dataclass
class ReportBundle:
    """The report: markdown text and figure files (name relative to the figure folder -> PNG bytes)."""

    markdown: str
    figures: dict[str, bytes] = field(default_factory=dict)
    figure_dir: str = ""
    partial: str = ""  # "partial: k of n trials" for a study still running (said in every title), else ""
    q_values: dict[tuple[str, str], float] = field(default_factory=dict)  # (task, cell) -> BH q across the report

    def titled(self, title: str) -> str:
        """A figure title, marked partial where the study is (on a line of its own when the title is long)."""
        if not self.partial:
            return title
        return f"{title}{chr(10) if len(title) > 60 else ' '}({self.partial})"


def partial_note(studies: Sequence[StudyData]) -> str:
    """'partial: k of n trials' when the studies hold fewer finished trials than their targets, else ''."""
    done = sum(1 for s in studies for r in s.records if r.finished)
    target = sum(int((s.attrs.get("settings") or {}).get("trials", 0)) for s in studies)
    return f"partial: {done} of {target} trials" if done < target else ""


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return tabulate(rows, headers=list(headers), tablefmt="github", disable_numparse=True)


def _anchor(text: str) -> str:
    return "".join(ch for ch in text.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


# ---------------------------------------------------------------------------------------------
# 1. Variant comparison


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _interval(value: float | None, low: float | None, high: float | None, digits: int = 3, signed: bool = False
              ) -> str:
    if value is None:
        return "n/a"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    if low is None or high is None:
        return f.format(value)
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


def _verdict_cell(test: PairedTest) -> str:
    if not test.significant:
        return test.verdict
    return f"**{test.verdict}**, within the margin" if test.within_margin else f"**{test.verdict}**"


def _secondary_cell(task: TaskAnalysis, cell: str, name: str) -> str:
    m = task.secondary.get(cell, {}).get(name)
    if m is None or m.median is None:
        return "n/a"
    return _interval(m.median, m.ci.low if m.ci else None, m.ci.high if m.ci else None)


def _failures_cell(task: TaskAnalysis, cell: str) -> str:
    c = task.summaries[cell]
    if not c.finished:
        return "0/0"
    return f"{c.failures}/{c.finished} ({100 * c.failures / c.finished:.0f} %; {c.diverged} div., {c.trivial} triv.)"


def _fisher_cell(task: TaskAnalysis, cell: str) -> str:
    d = task.divergence.get(cell)
    if cell == BASELINE:
        return "baseline"
    if d is None or d.p is None:
        return "n/a"
    return f"**differs, p = {d.p:.3g}**" if d.differs else f"p = {d.p:.3g}"


def outcome_table(task: TaskAnalysis) -> str:
    """Per cell: finished trials, failures, the median outcome with its bootstrap interval, the best by validation."""
    names = list(task.secondary_metrics)
    headers = ["cell", "trials", "failed (div. + trivial)", "mean params", "median [95 % CI]",
               *[f"median {name} [95 % CI]" for name in names], "best by validation",
               f"failures vs {BASELINE} (Fisher)"]
    rows = []
    for cell in task.cells:
        c = task.summaries[cell]
        counts = task.counts[cell]
        rows.append([
            cell, c.finished, _failures_cell(task, cell),
            "n/a" if counts.mean_params is None else f"{counts.mean_params:,.0f}",
            _interval(c.median, c.median_ci.low if c.median_ci else None, c.median_ci.high if c.median_ci else None),
            *[_secondary_cell(task, cell, name) for name in names], _num(c.best_by_validation),
            _fisher_cell(task, cell),
        ])
    return _table(headers, rows)


def _needed(test: PairedTest) -> str:
    if test.verdict not in ("inconclusive",) or test.needed is None:
        return ""
    return f"> {MAX_TRIALS_SHOWN:,}" if test.needed > MAX_TRIALS_SHOWN else f"{test.needed}"


def _mde(test: PairedTest) -> str:
    if test.mde is not None:
        return f"{test.mde:.3f}"
    return "none (too few pairs)" if test.shift_ci is None else ""


def paired_table(task: TaskAnalysis, q_values: dict[tuple[str, str], float]) -> str:
    headers = ["cell", "pairs", f"shift vs {BASELINE} [95 % CI]", "Wilcoxon p", "Holm p", "BH q",
               "TOST p (Holm)", "verdict", "detectable shift (80 % power)", "pairs to decide",
               "Welch p (the paper's test)", "Hedges' g"]
    rows = []
    for test in task.paired:
        if test.verdict == "baseline":
            rows.append([test.cell, test.pairs, "baseline", "", "", "", "", "baseline", "", "", "", ""])
            continue
        w = task.welch.get(test.cell)
        rows.append([
            test.cell, test.pairs,
            _interval(test.shift, test.shift_ci.low if test.shift_ci else None,
                      test.shift_ci.high if test.shift_ci else None, signed=True),
            _p(test.p), _p(test.p_holm), _p(q_values.get((task.task, test.cell))), _p(test.tost_holm),
            _verdict_cell(test), _mde(test), _needed(test),
            "n/a" if w is None else f"{w.p:.3g}", _signed(task.hedges.get(test.cell), 2),
        ])
    return _table(headers, rows)


K_SHOWN = (1, 2, 3, 5, 10, 20, 50, 100, 200)


def best_of_k_table(task: TaskAnalysis) -> str:
    n_max = max((len(c.expected) for c in task.best_of_k.values()), default=0)
    ks = [k for k in K_SHOWN if k < n_max] + ([n_max] if n_max else [])
    rows = []
    for cell in task.cells:
        curve = task.best_of_k[cell]
        row: list[object] = [cell]
        for k in ks:
            row.append("n/a" if k > len(curve.expected) else
                       _interval(curve.expected[k - 1], curve.low[k - 1], curve.high[k - 1]))
        rows.append(row)
    return _table(["cell", *[f"k = {k}" for k in ks]], rows)


def best_of_k_figure(task: TaskAnalysis, bundle: ReportBundle) -> bytes:
    curves = [fig.KCurve(cell, c.expected, c.low, c.high, cell == BASELINE) for cell, c in task.best_of_k.items()]
    title = bundle.titled(f"{fig.data_title(task.title, task.source)}: best of k trials, chosen by validation")
    note = f"Band: {BASELINE}'s 95 % bootstrap interval. Failures count as the trivial predictor's score."
    return fig.png_bytes(fig.best_of_k_lines(title, f"expected test {task.metric_short}", curves, note))


def comparison_figure(task: TaskAnalysis, bundle: ReportBundle) -> bytes:
    series = []
    for test in task.paired:
        values = [task.outcomes[test.cell][k] for k in sorted(task.outcomes[test.cell])]
        series.append(fig.BoxSeries(test.cell, values, test.verdict, test.p_holm,
                                    task.summaries[test.cell].failures))
    panel = fig.BoxPanel(f"all finished trials, failures at the trivial score; above: Holm p vs {BASELINE} (paired)",
                         series)
    title = bundle.titled(f"{fig.data_title(task.title, task.source)}: test {task.metric_short} per cell")
    figure = fig.variant_boxplot(title, f"test {task.metric_short}", [panel],
                                 [task.counts[c].mean_params for c in task.cells], task.lower_is_better)
    return fig.png_bytes(figure)


# ---------------------------------------------------------------------------------------------
# 2-4. Hyper-parameter importance, marginals, interactions


def importance_table(task: TaskAnalysis) -> str:
    result = task.importance
    assert result is not None
    rows = []
    for c in sorted(result.components, key=lambda c: (-c.fraction, c.dims)):
        interval = task.interval(c.dims)
        shown = "n/a" if interval is None else f"[{100 * interval.low:.1f}, {100 * interval.high:.1f}]"
        kind = "main effect" if len(c.dims) == 1 else "interaction"
        if len(c.dims) == 2 and not task.interactions_determined:
            kind += " (undetermined)"
        rows.append([c.name, kind, f"{100 * c.fraction:.1f}", shown])
    rest = task.interval(())
    rows.append(["all higher-order interactions", "remainder", f"{100 * result.higher_order:.1f}",
                 "n/a" if rest is None else f"[{100 * rest.low:.1f}, {100 * rest.high:.1f}]"])
    return _table(["component", "kind", "% of variance (fit to all settings)",
                   f"95 % bootstrap interval ({task.importance_resamples} resamples of the settings)"], rows)


def importance_figure(task: TaskAnalysis, forest: ForestSettings, bundle: ReportBundle) -> bytes:
    result = task.importance
    assert result is not None
    bars = []
    for c in result.components:
        interval = task.interval(c.dims)
        bars.append(fig.Bar(c.name, c.fraction, interval.low if interval else c.fraction,
                            interval.high if interval else c.fraction, "main" if len(c.dims) == 1 else "interaction"))
    rest = task.interval(())
    bars.append(fig.Bar("higher-order remainder", result.higher_order, rest.low if rest else result.higher_order,
                        rest.high if rest else result.higher_order, "rest"))
    title = bundle.titled(f"{fig.data_title(task.title, task.source)}: hyper-parameter importance "
                          f"(fANOVA of {task.transform.name}, {fit_size(task)})")
    note = (f"Random forest of {forest.trees} trees (min. {forest.min_samples_leaf} settings per leaf, seed "
            f"{forest.seed}); error bars: 95 % bootstrap interval over the settings ({task.importance_resamples} "
            "resamples).")
    return fig.png_bytes(fig.importance_bars(title, bars, note))


def fit_size(task: TaskAnalysis) -> str:
    return f"{task.fit.trial_count} trials at {len(task.fit)} settings"


def _display(dim: int, model_values: np.ndarray) -> np.ndarray:
    return 10.0**model_values if AXES[dim].log else model_values


def marginal_figure(task: TaskAnalysis, bundle: ReportBundle) -> bytes:
    assert task.metric_forest is not None and task.time_forest is not None
    rows = []
    for curves, values, label, colour in (
        (task.metric_marginals, task.fit.metric, f"predicted\n{task.transform.name}", fig.BLUE),
        (task.time_marginals, task.fit.seconds, "predicted training\ntime per trial (s)", fig.GREEN),
    ):
        rows.append(fig.MarginalRow(label, [fig.Curve(_display(m.dim, m.grid), m.mean, m.std,
                                                      _display(m.dim, task.fit.x[:, m.dim]), values)
                                            for m in curves], colour))
    title = bundle.titled(f"{fig.data_title(task.title, task.source)}: marginal predictions (random forest, "
                          f"{fit_size(task)})")
    note = ("Each panel averages the forest's prediction over the other three hyper-parameters under the search "
            "distribution; grey dots are the settings (median over the trials at each).")
    return fig.png_bytes(fig.marginal_grid(title, [a.label for a in AXES], [a.log for a in AXES], rows, note))


def interaction_figure(task: TaskAnalysis, bundle: ReportBundle) -> bytes:
    assert task.metric_forest is not None
    maps = []
    for a, b in ((0, 1), (0, 3)):
        edges_a = np.linspace(task.box[a, 0], task.box[a, 1], HEAT_CELLS + 1)
        edges_b = np.linspace(task.box[b, 0], task.box[b, 1], HEAT_CELLS + 1)
        centres_a, centres_b = (edges_a[:-1] + edges_a[1:]) / 2, (edges_b[:-1] + edges_b[1:]) / 2
        values = task.metric_forest.surface((a, b), centres_a, centres_b)
        maps.append(fig.HeatMap(_display(a, edges_a), _display(b, edges_b), values, AXES[a].label, AXES[b].label,
                                AXES[a].log, AXES[b].log, _display(a, task.fit.x[:, a]),
                                _display(b, task.fit.x[:, b]), f"{AXES[a].short} x {AXES[b].short}"))
    title = bundle.titled(f"{fig.data_title(task.title, task.source)}: predicted {task.transform.name} over two "
                          "hyper-parameters")
    return fig.png_bytes(fig.heat_maps(title, maps, f"predicted {task.transform.name}", task.lower_is_better))


def _best_region(task: TaskAnalysis) -> str:
    """Where the marginal prediction is best on each axis, in words (from the forest, not retyped)."""
    assert task.metric_forest is not None
    parts = []
    for axis, marginal in zip(AXES, task.metric_marginals):
        value = _display(marginal.dim, np.array([marginal.best(task.lower_is_better)]))[0]
        if axis.key == "one_minus_momentum":
            parts.append(f"momentum {1 - value:.3g}")
        elif axis.key == "hidden":
            parts.append(f"hidden size {value:.0f}")
        else:
            parts.append(f"{axis.short} {value:.3g}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Report assembly


def _task_settings(studies: Sequence[StudyData], tasks: Sequence[TaskAnalysis]) -> list[tuple[str, dict]]:
    """(task title, stored settings) per task: tasks size a profile for themselves (Task.profile_overrides)."""
    first = {}
    for study in studies:
        first.setdefault(study.task, study.attrs.get("settings", {}))
    return [(t.title, first.get(t.task, {})) for t in tasks]


def _schedule_text(settings: dict) -> str:
    return (f"{settings.get('trials', '?')} random-search trials per (task, cell), at most "
            f"{settings.get('max_epochs', '?')} epochs, early-stopping patience {settings.get('patience', '?')}, "
            f"warm-up {settings.get('warmup', 0)}, training sequences per epoch: {settings.get('train_subset') or 'all'}")


def _search_text(settings: dict) -> str:
    space = settings.get("space", {})

    def rng(key: str) -> str:
        r = space.get(key, {})
        return f"[{r.get('low', '?'):g}, {r.get('high', '?'):g}]" if r else "[?]"

    return (f"hidden size log-uniform integer {rng('hidden')}, learning rate log-uniform {rng('lr')}, "
            f"1 - momentum log-uniform {rng('one_minus_momentum')}, input noise std uniform {rng('noise')}; "
            f"search seed {settings.get('seed', '?')}")


def _header(bench: str, studies: Sequence[StudyData], tasks: Sequence[TaskAnalysis], bundle: ReportBundle,
            trials_path: str) -> list[str]:
    settings = studies[0].attrs.get("settings", {})
    per_task = _task_settings(studies, tasks)
    proxies = [t.title for t in tasks if t.is_proxy]
    lines = [
        f"# LSTM Odyssey report: `{bench}`" + (f" ({bundle.partial})" if bundle.partial else ""),
        "",
        "A rerun of the analysis of Greff et al., \"LSTM: A Search Space Odyssey\" (2017) on the trials of bench "
        f"`{bench}`: every number, table and figure below is computed by `cellc report` from those trials alone, "
        f"which ship beside this report as `{trials_path}` (one JSON line per trial, schema `cellc-trials`"
        + (f"; {packed[0]}-compressed" if (packed := compression(trials_path)) else "") + ").",
        "",
    ]
    if bundle.partial:
        lines += [f"**Partial study ({bundle.partial})**: the bench has not finished; every number below describes "
                  "the trials stored so far and will change when it completes.", ""]
    if all(s == per_task[0][1] for _, s in per_task):
        lines += [f"- Profile **{settings.get('profile', '?')}**: {_schedule_text(settings)}.",
                  f"- Search: {_search_text(settings)}."]
    else:
        lines.append(f"- Profile **{settings.get('profile', '?')}**, as each task sized it for itself:")
        lines += [f"  - {title}: {_schedule_text(s)}; search: {_search_text(s)}." for title, s in per_task]
    lines += [
        "- Warm-up: leading epochs whose validation metric still equals the first epoch's (e.g. CTC emitting only "
        "blanks, exactly 100 % CER) do not count toward the patience, up to the warm-up.",
        "- Tasks: " + "; ".join(f"{t.title} ({t.source} data, {t.metric})" for t in tasks) + ".",
    ]
    for task in tasks:
        if task.mixed_sources:
            lines.append(f"- **Mixed data**: the cells of {task.title} ran on different data ({task.source}); "
                         "their comparison mixes corpora.")
    if proxies:
        lines.append(f"- **Proxy data**: {', '.join(proxies)} ran on generated proxy corpora, not the licensed "
                     "originals; their numbers say how the cells compare on the proxy task only and are not "
                     "comparable with the paper.")
    lines.append("")
    return lines


VERDICTS = ("worse", "better", "equivalent", "inconclusive", "not tested")


def _top_parameter(task: TaskAnalysis) -> str:
    assert task.importance is not None
    order, separated = ranking(task)
    top = next(c for c in task.importance.main if AXES[c.dims[0]].key == order[0])
    interval = task.interval(top.dims)
    share = f"{100 * top.fraction:.0f} %" + ("" if interval is None else
                                             f" [{100 * interval.low:.0f}, {100 * interval.high:.0f}]")
    if separated:
        return f"most important hyper-parameter: {top.name} ({share} of variance)"
    return f"no single most important hyper-parameter (the top intervals overlap; {top.name} {share})"


def summary_section(tasks: Sequence[TaskAnalysis], bundle: ReportBundle) -> list[str]:
    lines = ["## Summary", ""]
    if bundle.partial:
        lines += [f"*{bundle.partial[0].upper()}{bundle.partial[1:]}*: a summary of the trials so far.", ""]
    for task in tasks:
        tests = [t for t in task.paired if t.verdict != "baseline"]
        parts = []
        for verdict in VERDICTS:
            cells = [t.cell for t in tests if t.verdict == verdict]
            if cells or verdict in ("worse", "better", "equivalent"):
                label = {"worse": f"worse than {BASELINE}", "better": "better", "equivalent": "equivalent",
                         "inconclusive": "inconclusive", "not tested": "not tested"}[verdict]
                parts.append(f"{label}: {', '.join(cells) or 'none'}")
        failures = sum(c.failures for c in task.summaries.values())
        finished = sum(c.finished for c in task.summaries.values())
        parts.append(f"failed trials: {failures} of {finished}")
        if task.importance is not None:
            parts.append(_top_parameter(task))
        lines.append(f"- **{fig.data_title(task.title, task.source)}**: " + "; ".join(parts) + ".")
    lines += ["", f"(Paired Wilcoxon signed-rank tests against {BASELINE} on shared trials, Holm-adjusted within each "
              f"task, p < {ALPHA}; *equivalent*: a two-one-sided test within the task's margin; *inconclusive*: "
              "neither, which is not \"no difference\". Section 1 gives the margins and the shifts each test could "
              "have detected.)", ""]
    return lines


def _contents() -> list[str]:
    names = ["Variant comparison", "Hyper-parameter importance", "Marginals", "Interactions", "Cells",
             "Versus the paper", "Reproducibility"]
    return ["Contents: " + " · ".join(f"[{k}. {n}](#{k}-{_anchor(n)})" for k, n in enumerate(names, 1)), ""]


def _secondary_note(task: TaskAnalysis) -> str:
    if not task.secondary_metrics:
        return ""
    described = "; ".join(f"*{name}*: {text}" for name, text in task.secondary_metrics.items())
    return (f" Secondary metric{'s' if len(task.secondary_metrics) > 1 else ''} ({described}): test score with the "
            "same weights (best validation epoch) over the usable trials, median with its bootstrap 95 % interval; "
            "reported only, not used for early stopping or the tests.")


def _facts_note(task: TaskAnalysis) -> str:
    f = task.facts
    if f.trivial_score is None:
        trivial = (f"The trivial predictor's score is unknown ({f.note or 'not recorded'}): only diverged trials "
                   "count as failures, and a failure counts as the worst usable score"
                   + ("" if task.worst is None else f" ({task.worst:.3f})") + ".")
    else:
        predictor = f" ({f.trivial_predictor}, fitted on the training split)" if f.trivial_predictor else ""
        trivial = (f"Trivial predictor{predictor}: test {task.metric_short} **{f.trivial_score:.3f}**; a trial "
                   "that diverged or ended no better than that failed, and counts as exactly that score.")
    margin = ("No equivalence margin is defined for this task, so no cell can be shown *equivalent*."
              if f.margin is None else f"Equivalence margin: ±{f.margin:g} ({f.margin_reason}).")
    return f"{trivial} {margin}"


def _friedman_note(task: TaskAnalysis) -> str:
    f = task.friedman
    if f.p is None:
        return (f"Friedman test across the {f.cells} cells: not computed ({f.blocks} trials finished in every cell; "
                "it needs three cells and two such trials).")
    return (f"Friedman test across all {f.cells} cells, the trial (setting and seed) as block, on the {f.blocks} "
            f"trials every cell finished: χ² = {f.statistic:.2f}, p = {f.p:.3g} (the omnibus: do the cells differ "
            "at all).")


def _comparison_section(tasks: Sequence[TaskAnalysis], bundle: ReportBundle) -> Section:
    figures: dict[str, bytes] = {}  # name -> PNG bytes, returned with the text
    lines = [
        "## 1. Variant comparison", "",
        "Outcomes: a trial *fails* when it diverged (NaN/inf, no test score) or ended no better than the task's "
        "trivial predictor, computed from the training data by the task's module. Failures are counted and tested "
        f"against {BASELINE}'s with Fisher's exact test; they never enter a mean. For the rank-based tests and the "
        "medians a failure counts as the trivial predictor's score: worse than every usable trial, all failures "
        "tied, and no runaway score (an NLL of 3e9) weighs more than another failure.", "",
        f"Primary analysis, paired: trial k of every cell runs the same setting with the same seed, so each cell is "
        f"compared with {BASELINE} on the trials both finished (*pairs*) by a two-sided Wilcoxon signed-rank test "
        "(scipy.stats.wilcoxon) of the paired differences. *Shift* is the Hodges–Lehmann estimate (median of the "
        "Walsh averages; cell minus baseline, in metric units) with the 95 % interval found by inverting the same "
        "test, so it never leaves the observed differences. *Holm p*: Holm's correction within the task (the "
        f"family: every cell against {BASELINE}); *BH q*: Benjamini–Hochberg q-values across every primary test in "
        "this report (all tasks). *TOST p*: a paired two-one-sided test (statsmodels ttost_paired) that the shift "
        "lies within the task's equivalence margin, Holm-adjusted within the task; not run (blank) under "
        f"{MIN_EQUIVALENCE_PAIRS} pairs or where every pair differs by the same amount (no spread: e.g. both "
        "cells failed every trial alike, which shows nothing).", "",
        f"Verdicts: *worse* / *better* when the Holm-adjusted Wilcoxon p < {ALPHA}; *equivalent* when the "
        f"Holm-adjusted TOST p < {ALPHA}; *worse* / *better* *within the margin* when both hold (a shift the paired "
        "test detects, and the TOST shows smaller than the margin: negligible, and counted as no difference of "
        "practical size in section 6); "
        f"otherwise *inconclusive*, never \"no difference\": the table then gives the "
        f"shift the paired test could have detected with {100 * POWER:.0f} % power at these pairs and the pairs that "
        "would decide (detect the observed shift, or show equivalence were the true shift zero; paired-t "
        "approximation, statsmodels TTestPower, α = 0.05 unadjusted). *Welch p* is the paper's unpaired test on the "
        "usable trials, kept for comparison only; no verdict rests on it, nor on Hedges' g.", "",
        f"Medians of the outcomes (failures at the trivial score) with percentile-bootstrap 95 % intervals "
        f"({BOOTSTRAP_RESAMPLES} resamples, seeded); *best by validation*: the test outcome of the trial with the "
        "best validation score. No \"best\" anywhere in this report is chosen on the test set.", "",
        "Best of k: the expected test outcome of the trial a user would keep *by validation* among k trials drawn "
        "at random from the cell's finished trials, exactly for every k (k = 1: a random trial; the last column: "
        "all of them), with a 95 % bootstrap interval over the trials: which cell is best for the search a user "
        "can afford.", "",
    ]
    for task in tasks:
        lines += [f"### {fig.data_title(task.title, task.source)}", "",
                  f"Data: **{task.source}**. Metric: {task.metric}; {'lower' if task.lower_is_better else 'higher'} "
                  "is better." + METRIC_CONVENTIONS.get(task.task, "") + " " + _facts_note(task)
                  + _secondary_note(task), ""]
        if not any(c.finished for c in task.summaries.values()):
            lines += ["No finished trials yet.", ""]
            continue
        name = f"compare_{task.task}.png"
        figures[name] = comparison_figure(task, bundle)
        kname = f"best_of_k_{task.task}.png"
        figures[kname] = best_of_k_figure(task, bundle)
        lines += [
            f"![{task.title}: box plots of the test outcome per cell]({bundle.figure_dir}/{name})", "",
            "Outcomes per cell:", "", outcome_table(task), "",
            f"Paired tests against {BASELINE}:", "", paired_table(task, bundle.q_values), "",
            _friedman_note(task), "",
            f"Best of k (expected test {task.metric_short} of the best-by-validation trial among k, [95 % CI]):", "",
            best_of_k_table(task), "",
            f"![{task.title}: expected best-by-validation test outcome against trials searched]"
            f"({bundle.figure_dir}/{kname})", "",
        ]
    return Section(lines, figures)


def importance_section(tasks: Sequence[TaskAnalysis], bundle: ReportBundle, forest: ForestSettings) -> Section:
    figures: dict[str, bytes] = {}  # name -> PNG bytes, returned with the text
    lines = [
        "## 2. Hyper-parameter importance", "",
        f"Method: {METHOD_TEXT} Inputs: log10 learning rate, log10 hidden size, log10(1 - momentum) and input "
        "noise std (uniform under the search distribution in these coordinates). Output: a stated transform of "
        "each finished trial's outcome (log10 of an NLL; the logit of an error rate), failures at the trivial "
        "predictor's score like everywhere else. The search gives trial k the same setting in every cell, so the "
        "trials of a task's cells are taken together as one point per setting, the median over the trials at it. "
        f"Forest: {forest.trees} trees, at least {forest.min_samples_leaf} settings per leaf, seed {forest.seed}.", "",
        f"Uncertainty: every fraction comes with a 95 % percentile-bootstrap interval over the settings (up to "
        f"{forest.resamples} resamples with replacement, each refit and decomposed; a resample of identical scores "
        "is left out); the spread over one forest's trees is no confidence interval. Components are ranked, and set "
        "beside the paper, only where their intervals separate. A pairwise interaction's share is undetermined below "
        f"{MIN_INTERACTION_SETTINGS} distinct settings: a planted 30 % interaction (beside a 70 % main effect) came "
        "out at 9 % from 30 settings, 17 % from 60 and 28-29 % from 100 and 200, and its bootstrap interval held "
        "the planted value at 500 (the forest shrinks interactions; the interval does not correct that).", "",
    ]
    for task in tasks:
        lines += [f"### {fig.data_title(task.title, task.source)}", ""]
        if task.constant_metric:
            lines += [f"The outcome does not vary over the {len(task.fit)} settings: there is nothing for a "
                      "hyper-parameter to explain.", ""]
            continue
        if task.importance is None:
            lines += [f"Too few distinct settings with a finished trial ({len(task.fit)} < {MIN_FANOVA_SAMPLES}; "
                      f"{task.samples.trial_count} trials) for a forest fit.", ""]
            continue
        name = f"importance_{task.task}.png"
        figures[name] = importance_figure(task, forest, bundle)
        lines += [f"![{task.title}: fraction of variance per hyper-parameter and pair]({bundle.figure_dir}/{name})",
                  "", importance_table(task), ""]
        if not task.interactions_determined:
            lines += [f"Interactions are undetermined here: {len(task.fit)} settings, fewer than the "
                      f"{MIN_INTERACTION_SETTINGS} an interaction claim needs.", ""]
    return Section(lines, figures)


def _marginal_section(tasks: Sequence[TaskAnalysis], bundle: ReportBundle) -> Section:
    figures: dict[str, bytes] = {}  # name -> PNG bytes, returned with the text
    lines = [
        "## 3. Marginals", "",
        "Predicted outcome (top row, on the importance fit's scale) and predicted training time per trial (bottom "
        "row, wall-clock seconds in one worker, early stopping included) over each hyper-parameter, averaged over "
        "the other three under the search distribution: mean over the forest's trees ± one standard deviation (as "
        "in Hutter et al. 2014).", "",
    ]
    for task in tasks:
        lines += [f"### {fig.data_title(task.title, task.source)}", ""]
        if task.metric_forest is None:
            lines += ["No forest was fit for this task (see section 2).", ""]
            continue
        name = f"marginals_{task.task}.png"
        figures[name] = marginal_figure(task, bundle)
        lines += [f"![{task.title}: predicted outcome and training time per hyper-parameter]"
                  f"({bundle.figure_dir}/{name})", "",
                  f"Best marginal predictions at: {_best_region(task)}.", ""]
    return Section(lines, figures)


def interaction_section(tasks: Sequence[TaskAnalysis], bundle: ReportBundle) -> Section:
    figures: dict[str, bytes] = {}  # name -> PNG bytes, returned with the text
    lines = [
        "## 4. Interactions", "",
        "Predicted outcome (the importance fit's scale) over learning rate x hidden size and learning rate x input "
        "noise (mean over trees, the other two hyper-parameters averaged out). Parallel bands mean the two can be "
        "tuned independently; the interaction's share of variance and its interval are in the importance tables.", "",
    ]
    for task in tasks:
        lines += [f"### {fig.data_title(task.title, task.source)}", ""]
        if task.metric_forest is None or task.importance is None:
            lines += ["No forest was fit for this task (see section 2).", ""]
            continue
        name = f"interactions_{task.task}.png"
        figures[name] = interaction_figure(task, bundle)
        shares = []
        for dims, label in (((0, 1), "learning rate x hidden size"), ((0, 3), "learning rate x input noise")):
            c = next(c for c in task.importance.pairs if c.dims == dims)
            interval = task.interval(dims)
            shares.append(f"{label} {100 * c.fraction:.1f} %" + (
                "" if interval is None else f" [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"))
        verdict = "" if task.interactions_determined else (
            f" Undetermined: {len(task.fit)} settings, fewer than the {MIN_INTERACTION_SETTINGS} an interaction "
            "claim needs.")
        lines += [f"![{task.title}: heat maps of the predicted outcome]({bundle.figure_dir}/{name})", "",
                  f"Share of variance: {'; '.join(shares)}.{verdict}", ""]
    return Section(lines, figures)


def cells_section(cells: Sequence[str], context: ReportContext) -> list[str]:
    lines = [
        "## 5. Cells", "",
        "Each cell's equations as compiled (rendered from the cell IR after edits and passes), for one step t with "
        "input x, N blocks and M inputs; ⊙ is the element-wise product. The parameter formula counts one layer "
        "and direction (weights, recurrent weights, peepholes and biases). The equations are those stored with "
        "the cell's studies when they were created (what the trials ran), unless noted otherwise.", "",
    ]
    for cell in cells:
        info = context.cells.get(cell)
        lines += [f"### {cell}", ""]
        if info is None or info.error:
            lines += [f"Not stored with the studies and not compiled now: {info.error if info else 'unknown cell'}.",
                      ""]
            continue
        if not info.stored:
            lines += ["*Recompiled from the current spec*: this cell's studies predate stored equations, so what "
                      "follows may differ from what the trials ran.", ""]
        if info.description:
            lines += [f"{info.description}. Parameters: **{info.formula}**.", ""]
        else:
            lines += [f"Parameters: **{info.formula}**.", ""]
        lines += ["```math", r"\begin{aligned}"]
        lines += [eq.replace(" = ", " &= ", 1) + r" \\" for eq in info.equations_latex]
        lines += [r"\end{aligned}", "```", ""]
        lines += ["<details><summary>spec syntax</summary>", "", "```text", *info.equations_text, "```", "",
                  "</details>", ""]
    return lines


def _findings_table(rows: Sequence[FindingRow]) -> str:
    return _table(["finding", PAPER, "this study", "agreement"],
                  [[r.finding, r.paper, r.ours, mark(r.agreement)] for r in rows])


def _paper_section(tasks: Sequence[TaskAnalysis]) -> list[str]:
    lines = [
        "## 6. Versus the paper", "",
        f"{PAPER}'s findings (see `odyssey.md`) beside this study's, for tasks run on the paper's data. A verdict "
        "agrees only when this study's paired test is significant in the paper's direction, or shows equivalence "
        "where the paper found no difference (the TOST within the task's margin; beside a significant shift too, which "
        f"is then negligible: *within ±margin*); an *{INCONCLUSIVE}* verdict (neither) is not counted as agreement, "
        f"whatever the paper found. Importance findings are compared only where the bootstrap intervals decide "
        f"(else *{UNDETERMINED}*). The paper tested 200 trials per cell and task; this study's counts are in "
        "section 7.",
        "",
    ]
    shown = [t for t in tasks if comparable(t)]
    skipped = [t for t in tasks if not comparable(t)]
    for task in shown:
        rows = verdict_rows(task)
        best = best_row(task)
        if best:
            rows.append(best)
        rows += published_rows(task)
        rows += importance_rows(task)
        differences = setup_differences(task.settings)
        marks = [mark(r.agreement).strip("*") for r in rows if r.agreement != "-"]
        counts = (f"{marks.count(AGREE)} agree, {marks.count(DISAGREE)} disagree, {marks.count(INCONCLUSIVE)} "
                  f"inconclusive, {marks.count(UNDETERMINED)} undetermined (intervals too wide)")
        if differences:
            rows = different_setup(rows)
            summary = (f"**Different search setup**: this task ran with {'; '.join(differences)}, so its rows are "
                       f"marked *{DIFFERENT_SETUP}* rather than agree / disagree; the plain comparison, for "
                       f"orientation only, in brackets. Of {len(marks)} findings: {counts}.")
        else:
            summary = f"Of {len(marks)} comparable findings: {counts}."
        lines += [f"### {fig.data_title(task.title, task.source)}", "", _findings_table(rows), "", summary, ""]
    if skipped:
        lines += ["Not compared: " + "; ".join(
            f"{t.title} ({t.source} data)" if t.is_proxy else f"{t.title} (not one of the paper's tasks)"
            for t in skipped) + ".", ""]
    if not shown:
        lines += ["No task of this bench ran on the paper's data.", ""]
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds:,.0f} s)"


def _estimate_lines(studies: Sequence[StudyData]) -> list[str]:
    """The start-up estimates the bench runs recorded (the same in every study of a run): cost predicted
    before each chunk ran, beside the cost spent above."""
    runs = max((s.attrs.get("estimates") or [] for s in studies), key=len, default=[])
    if not runs:
        return []
    shown = [f"{e.get('date', '?')} on {e.get('host', '?')}: {e.get('trials', '?'):,} trials to run, "
             f"{'?' if e.get('cpu_hours') is None else format(e['cpu_hours'], '.3g')} CPU-hours, "
             f"{'?' if e.get('wall_hours') is None else format(e['wall_hours'], '.3g')} h wall on "
             f"{e.get('workers', '?')} worker(s)" for e in runs]
    return [f"- Start-up estimates recorded by the bench runs (before their trials ran): {'; '.join(shown)}."]


def trial_numbering(studies: Sequence[StudyData]) -> tuple[int, int, int]:
    """(trial rows, trial numbers stored more than once within a study, trials interrupted or failed and run
    again under a new number): the study's record that each trial number ran once."""
    rows = sum(len(s.records) for s in studies)
    repeated = sum(len(s.records) - len({r.number for r in s.records}) for s in studies)
    rerun = sum(1 for s in studies for r in s.records if r.state == "FAIL")
    return rows, repeated, rerun


def _numbering_line(studies: Sequence[StudyData]) -> str:
    rows, repeated, rerun = trial_numbering(studies)
    return (f"- Trial numbers: {rows:,} trial rows in {len(studies)} studies, "
            + ("each trial number stored once per study" if not repeated else f"**{repeated} stored twice**")
            + f"; {rerun} trial(s) failed or were interrupted and ran again under new numbers (their rows stay, "
            "marked FAIL; a finished trial is never run twice).")


def _python_reader(path: str) -> tuple[str, str]:
    """The import line and the expression that open the trials file at ``path`` as text, in Python."""
    packed = compression(path)
    if packed is None:
        return "import json", f"open({path!r}, encoding='utf-8')"
    return f"import {packed[1]}, json", f"{packed[1]}.open({path!r}, 'rt', encoding='utf-8')"


def _recomputation(tasks: Sequence[TaskAnalysis], trials_path: str) -> list[str]:
    """The closing note: one p-value of the report recomputed from the trials file with scipy, step by step."""
    task = next((t for t in tasks if any(p.p is not None for p in t.paired)), None)
    if task is None:
        return []
    test = next(p for p in task.paired if p.p is not None)
    numbers = sorted(set(task.outcomes[test.cell]) & set(task.outcomes[BASELINE]))
    d = [task.outcomes[test.cell][k] - task.outcomes[BASELINE][k] for k in numbers]
    shown = ", ".join(f"{x:+.3f}" for x in d[:8]) + (", ..." if len(d) > 8 else "")
    worst = "the task line's trivial_score" if task.facts.trivial_score is not None else "the worst usable score"
    return [
        "### Recomputing a p-value from the trials file", "",
        f"Every p-value above can be recomputed with scipy from `{trials_path}` alone. For example {test.cell} "
        f"against {BASELINE} on {task.title}: take the finished trials (state COMPLETE or PRUNED) of both cells, "
        f"replace the test score of every trial whose `failure` is set by {worst}, pair the two cells by trial "
        f"`number` ({len(numbers)} pairs), and test the differences (cell minus {BASELINE}: {shown}):", "",
        "```python",
        _python_reader(trials_path)[0],
        "from scipy import stats",
        f"rows = [json.loads(line) for line in {_python_reader(trials_path)[1]}]",
        "trivial = {r['task']: r['trivial_score'] for r in rows if r['record'] == 'task'}",
        "score = {(r['task'], r['cell'], r['number']): trivial[r['task']] if r['failure'] else r['test_at_best']",
        "         for r in rows if r['record'] == 'trial' and r['state'] in ('COMPLETE', 'PRUNED')}",
        f"pairs = [(v, score[({task.task!r}, {BASELINE!r}, n)]) for (t, c, n), v in score.items()",
        f"         if (t, c) == ({task.task!r}, {test.cell!r}) and ({task.task!r}, {BASELINE!r}, n) in score]",
        "print(stats.wilcoxon([a - b for a, b in pairs]).pvalue)",
        "```", "",
        f"prints {test.p!r}, the *Wilcoxon p* of {test.cell} in section 1 ({_p(test.p)}); Holm's adjustment of the "
        f"task's {sum(1 for p in task.paired if p.p is not None)} p-values gives its *Holm p* ({_p(test.p_holm)}), "
        "e.g. with statsmodels.stats.multitest.multipletests(p, method='holm').", "",
    ]


def _reproducibility_section(bench: str, studies: Sequence[StudyData], tasks: Sequence[TaskAnalysis],
                             context: ReportContext, forest: ForestSettings, trials_path: str) -> list[str]:
    settings = studies[0].attrs.get("settings", {})
    commands = sorted({str(s.attrs.get("command")) for s in studies if s.attrs.get("command")})
    environments = sorted({", ".join(f"{k}: {v}" for k, v in sorted(s.attrs["environment"].items()))
                           for s in studies if isinstance(s.attrs.get("environment"), dict)})
    cells = list(dict.fromkeys(c for t in tasks for c in t.cells))
    count_rows = []
    for cell in cells:
        row: list[object] = [cell]
        for task in tasks:
            c = task.counts.get(cell)
            row.append("-" if c is None else f"{c.finished}/{c.target} ({c.diverged} div., {c.failed} failed)")
        count_rows.append(row)
    total_cpu = sum(r.cpu_time_s for s in studies for r in s.records)
    total_wall = sum(r.wall_time_s for s in studies for r in s.records)
    m = context.machine
    lines = [
        "## 7. Reproducibility", "",
        f"- Report generated by cellc {context.version}, code commit `{context.commit}`. It reads only the trials "
        f"(no retraining): `{context.command}` rebuilds it byte for byte from `{trials_path}` alone, as "
        f"`cellc report --name {bench}` does from the bench's storage (which also rewrites that file).",
        f"- Bench command{'s' if len(commands) > 1 else ''}: " + (", ".join(f"`{c}`" for c in commands) or "not recorded"),
        f"- Profile: {settings.get('profile', '?')} (max epochs {settings.get('max_epochs', '?')}, patience "
        f"{settings.get('patience', '?')}, warm-up {settings.get('warmup', 0)}, train subset "
        f"{settings.get('train_subset') or 'all'}, batch size "
        f"{settings.get('batch_size', '?')}, init std {settings.get('init_std', '?')}, backend "
        f"{settings.get('backend', '?')}, search seed {settings.get('seed', '?')})"
        + ("." if all(st == settings for _, st in _task_settings(studies, tasks))
           else f"; these are {tasks[0].title}'s, the header lists each task's own sizing."),
        "- Data sources: " + "; ".join(f"{t.title}: {t.source}" for t in tasks) + ".",
    ]
    if environments:
        lines.append("- Bench environment (recorded with the studies): " + "; ".join(environments) + ".")
    else:
        lines.append(f"- Hardware: not recorded with the studies; the report was generated on {m.cpu}, {m.cores} "
                     f"cores, {m.system}, Python {m.python}.")
    lines += placement_lines(studies)
    lines += [
        f"- Total CPU time of all trials: {_hours(total_cpu)}; summed trial wall time {_hours(total_wall)}.",
        *_estimate_lines(studies),
        _numbering_line(studies),
        "- Analysis: scipy.stats (wilcoxon, friedmanchisquare, fisher_exact, ttest_ind(equal_var=False), bootstrap) "
        "and statsmodels (multipletests holm / fdr_bh, ttost_paired, TTestPower); fANOVA forest "
        f"{forest.trees} trees, min. {forest.min_samples_leaf} per leaf, seed {forest.seed}, {forest.resamples} "
        "bootstrap resamples of the settings.", "",
        "Trials per cell and task (finished / target; diverged trials are finished, failed ones were rerun):", "",
        _table(["cell", *[t.title for t in tasks]], count_rows), "",
        "```bash", *commands, context.command, "```", "",
    ]
    return lines + _recomputation(tasks, trials_path)


def placements(studies: Sequence[StudyData]) -> dict[tuple[str, str], dict[tuple[str, str, str], int]]:
    """Per (task, cell): finished trials counted by where they trained, (device, its name, precision); trials
    stored before devices were recorded count as what they ran (the study's CPU, float32)."""
    out: dict[tuple[str, str], dict[tuple[str, str, str], int]] = {}
    for study in studies:
        environment = study.attrs.get("environment")
        cpu = environment.get("cpu") if isinstance(environment, dict) else None
        counts = out.setdefault((study.task, study.cell), {})
        for record in study.records:
            if record.finished:
                key = record.placement(cpu)
                counts[key] = counts.get(key, 0) + 1
    return out


def placement_lines(studies: Sequence[StudyData]) -> list[str]:
    found = placements(studies)
    totals: dict[tuple[str, str, str], int] = {}
    for counts in found.values():
        for key, n in counts.items():
            totals[key] = totals.get(key, 0) + n
    if not totals:
        return []
    shown = "; ".join(f"{n} on {device} ({name}) in {precision}" for (device, name, precision), n in sorted(totals.items()))
    lines = [f"- Trials trained on: {shown}."]
    mixed = {pair: counts for pair, counts in found.items() if len({(d, p) for d, _, p in counts}) > 1}
    if mixed:
        lines.append("- **Mixed devices or precisions within a study**: " + "; ".join(
            f"{task}/{cell}: " + ", ".join(f"{n} on {d} in {p}" for (d, _, p), n in sorted(counts.items()))
            for (task, cell), counts in sorted(mixed.items()))
            + ". Their timings are not comparable, and their results only as far as the devices compute alike.")
    return lines


def report_q_values(tasks: Sequence[TaskAnalysis]) -> dict[tuple[str, str], float]:
    """Benjamini-Hochberg q-values over every primary (Wilcoxon) test of the report, all tasks together."""
    keys = [(t.task, p.cell) for t in tasks for p in t.paired if p.p is not None]
    ps = [p.p for t in tasks for p in t.paired if p.p is not None]
    return dict(zip(keys, benjamini_hochberg(ps)))  # type: ignore[arg-type]


def build_report(bench: str, studies: Sequence[StudyData], context: ReportContext, figure_dir: str,
                 forest: ForestSettings = ForestSettings(), facts: dict[str, TaskFacts] | None = None,
                 trials_path: str = TRIALS_FILE) -> ReportBundle:
    """The whole report for ``bench``; figures are referenced as ``<figure_dir>/<name>.png``.

    ``facts``: per task, the trivial predictor's score and the equivalence margin (see
    :func:`cellc.analysis.load.facts_from_studies`); ``trials_path``: where the trials file ships, as shown."""
    facts = facts or {}
    tasks = [analyse_task(task, group, forest, facts=facts.get(task)) for task, group in group_by_task(studies).items()]
    bundle = ReportBundle(markdown="", figure_dir=figure_dir, partial=partial_note(studies))
    bundle.q_values = report_q_values(tasks)
    cells = list(dict.fromkeys(c for t in tasks for c in t.cells))
    lines = _header(bench, studies, tasks, bundle, trials_path) + _contents() + summary_section(tasks, bundle)
    for section in (_comparison_section(tasks, bundle), importance_section(tasks, bundle, forest),
                    _marginal_section(tasks, bundle), interaction_section(tasks, bundle)):
        lines += section.lines
        bundle.figures.update(section.figures)
    lines += cells_section(cells, context)
    lines += _paper_section(tasks)
    lines += _reproducibility_section(bench, studies, tasks, context, forest, trials_path)
    bundle.markdown = "\n".join(lines).rstrip("\n") + "\n"
    return bundle
