"""The Odyssey report: markdown and PNG figures from a bench's stored trials (pure, deterministic).

:func:`build_report` returns the markdown text and the figure files as bytes; the command
(:mod:`cellc.commands.report`) writes them to ``reports/<bench>.md`` and ``reports/<bench>/``.
Nothing here reads the clock or the environment: the same storage and context give the same
bytes (forests are seeded, figures carry no metadata, iteration orders are fixed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tabulate import tabulate

from cellc.analysis import figures as fig
from cellc.analysis.context import ReportContext
from cellc.analysis.fanova import METHOD_TEXT, ForestSettings
from cellc.analysis.hyperspace import AXES
from cellc.analysis.load import StudyData
from cellc.analysis.paper import (
    DIFFERENT_SETUP, PAPER, FindingRow, best_row, comparable, different_setup, importance_rows, mark,
    setup_differences, verdict_rows,
)
from cellc.analysis.significance import ALPHA, SUBSET_SHORT, SUBSET_TEXT, CellTest, Subset
from cellc.analysis.task_analysis import BASELINE, MIN_FANOVA_SAMPLES, TaskAnalysis, analyse_task, group_by_task

MARGINAL_POINTS = 60
HEAT_CELLS = 40
# How a task's metric counts frames, where papers differ (stated so numbers are compared like with like).
METRIC_CONVENTIONS = {
    "jsb": " Frames scored: a piece of T frames gives T - 1 predictions (frame t + 1 from frames 1..t); the "
           "first frame is never predicted and never scored, and the NLL is averaged over all predicted frames "
           "of the split.",
}


@dataclass
class ReportBundle:
    """The report: markdown text and figure files (name relative to the figure folder -> PNG bytes)."""

    markdown: str
    figures: dict[str, bytes] = field(default_factory=dict)
    figure_dir: str = ""


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


def _p_cell(test: CellTest) -> str:
    if test.verdict == "baseline":
        return "baseline"
    if test.welch is None:
        return "n/a"
    text = f"{test.welch.p:.3g}"
    return f"**{text}**" if test.significant else text


def _verdict_cell(test: CellTest) -> str:
    return f"**{test.verdict}**" if test.significant else test.verdict


def _mean_ci(test: CellTest) -> str:
    if test.mean is None:
        return "n/a"
    if test.mean_ci is None:
        return _num(test.mean)
    return f"{test.mean:.3f} [{test.mean_ci.low:.3f}, {test.mean_ci.high:.3f}]"


def _diff(test: CellTest) -> str:
    if test.welch is None:
        return "n/a"
    w = test.welch
    return f"{w.diff:+.3f} [{w.diff_ci.low:+.3f}, {w.diff_ci.high:+.3f}]"


def _secondary_cell(task: TaskAnalysis, cell: str, name: str) -> str:
    m = task.secondary.get(cell, {}).get(name)
    if m is None or m.mean is None:
        return "n/a"
    return _num(m.mean) if m.ci is None else f"{m.mean:.3f} [{m.ci.low:.3f}, {m.ci.high:.3f}]"


def _diverged_cell(task: TaskAnalysis, cell: str) -> str:
    d = task.divergence.get(cell)
    if d is None:
        return "n/a"
    return f"{d.diverged}/{d.trials}" + ("" if d.rate is None else f" ({100 * d.rate:.0f} %)")


def _divergence_test_cell(task: TaskAnalysis, cell: str) -> str:
    d = task.divergence.get(cell)
    if cell == BASELINE:
        return "baseline"
    if d is None or d.p is None:
        return "n/a"
    return f"**differs, p = {d.p:.3g}**" if d.differs else f"p = {d.p:.3g}"


def comparison_table(task: TaskAnalysis) -> str:
    """All tested trials per cell; a task's secondary metrics (e.g. TIMIT's FER39 %) follow the main mean."""
    names = list(task.secondary_metrics)
    headers = ["cell", "trials", "diverged (rate)", "tested", "mean params", "mean [95 % CI]",
               *[f"mean {name} [95 % CI]" for name in names], "median", "std",
               "best", f"Δ mean vs {BASELINE} [95 % CI]", "Hedges' g", "Welch p", "verdict",
               f"divergence vs {BASELINE} (Fisher)"]
    rows = []
    for test in task.tests[Subset.ALL]:
        counts = task.counts[test.cell]
        rows.append([
            test.cell, counts.finished, _diverged_cell(task, test.cell), test.n,
            "n/a" if counts.mean_params is None else f"{counts.mean_params:,.0f}",
            _mean_ci(test), *[_secondary_cell(task, test.cell, name) for name in names],
            _num(test.median), _num(test.std), _num(test.best), _diff(test),
            _signed(test.hedges_g, 2), _p_cell(test), _verdict_cell(test), _divergence_test_cell(task, test.cell),
        ])
    return _table(headers, rows)


def best_table(task: TaskAnalysis) -> str:
    headers = ["cell", "trials", "mean [95 % CI]", "best", f"Δ mean vs {BASELINE} [95 % CI]", "Hedges' g",
               "Welch p", "verdict"]
    rows = [[t.cell, t.n, _mean_ci(t), _num(t.best), _diff(t), _signed(t.hedges_g, 2), _p_cell(t), _verdict_cell(t)]
            for t in task.tests[Subset.BEST10]]
    return _table(headers, rows)


def comparison_figure(task: TaskAnalysis) -> bytes:
    from cellc.analysis.significance import best_by_validation, trials_under_test

    panels = []
    for subset in Subset:
        series = []
        for test in task.tests[subset]:
            records = task.records[test.cell]
            chosen = trials_under_test(records) if subset is Subset.ALL else best_by_validation(records, task.lower_is_better)
            series.append(fig.BoxSeries(test.cell, [float(r.test_at_best) for r in chosen],  # type: ignore[arg-type]
                                        test.verdict, None if test.welch is None else test.welch.p))
        panels.append(fig.BoxPanel(f"{SUBSET_SHORT[subset]}: Welch's t-test vs {BASELINE} above each box", series))
    title = f"{fig.data_title(task.title, task.source)}: test {task.metric_short} per cell"
    figure = fig.variant_boxplot(title, f"test {task.metric_short}", panels,
                                 [task.counts[c].mean_params for c in task.cells], task.lower_is_better)
    return fig.png_bytes(figure)


# ---------------------------------------------------------------------------------------------
# 2-4. Hyper-parameter importance, marginals, interactions


def importance_table(task: TaskAnalysis) -> str:
    result = task.importance
    assert result is not None
    rows = [[c.name, "main effect" if len(c.dims) == 1 else "interaction", f"{100 * c.fraction:.1f}",
             f"{100 * c.std:.1f}"] for c in sorted(result.components, key=lambda c: (-c.fraction, c.dims))]
    rows.append(["all higher-order interactions", "remainder", f"{100 * result.higher_order:.1f}", ""])
    return _table(["component", "kind", "% of variance (mean over trees)", "std over trees"], rows)


def importance_figure(task: TaskAnalysis, forest: ForestSettings) -> bytes:
    result = task.importance
    assert result is not None
    bars = [fig.Bar(c.name, c.fraction, c.std, "main" if len(c.dims) == 1 else "interaction")
            for c in result.components]
    bars.append(fig.Bar("higher-order remainder", result.higher_order, 0.0, "rest"))
    title = (f"{fig.data_title(task.title, task.source)}: hyper-parameter importance "
             f"(fANOVA, {_fit_size(task)})")
    note = (f"Random forest of {forest.trees} trees (min. {forest.min_samples_leaf} settings per leaf, seed "
            f"{forest.seed}); error bars: std over trees.")
    return fig.png_bytes(fig.importance_bars(title, bars, note))


def _fit_size(task: TaskAnalysis) -> str:
    return f"{task.fit.trial_count} trials at {len(task.fit)} settings"


def _display(dim: int, model_values: np.ndarray) -> np.ndarray:
    return 10.0**model_values if AXES[dim].log else model_values


def marginal_figure(task: TaskAnalysis) -> bytes:
    assert task.metric_forest is not None and task.time_forest is not None
    rows = []
    for forest, values, label, colour in (
        (task.metric_forest, task.fit.metric, f"predicted test {task.metric_short}", fig.BLUE),
        (task.time_forest, task.fit.seconds, "predicted training\ntime per trial (s)", fig.GREEN),
    ):
        curves = []
        for dim in range(len(AXES)):
            grid = np.linspace(task.box[dim, 0], task.box[dim, 1], MARGINAL_POINTS)
            mean, std = forest.curve(dim, grid)
            curves.append(fig.Curve(_display(dim, grid), mean, std, _display(dim, task.fit.x[:, dim]), values))
        rows.append(fig.MarginalRow(label, curves, colour))
    title = f"{fig.data_title(task.title, task.source)}: marginal predictions (random forest, {_fit_size(task)})"
    note = ("Each panel averages the forest's prediction over the other three hyper-parameters under the search "
            "distribution; grey dots are the settings (median over the trials at each).")
    return fig.png_bytes(fig.marginal_grid(title, [a.label for a in AXES], [a.log for a in AXES], rows, note))


def interaction_figure(task: TaskAnalysis) -> bytes:
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
    title = f"{fig.data_title(task.title, task.source)}: predicted test {task.metric_short} over two hyper-parameters"
    return fig.png_bytes(fig.heat_maps(title, maps, f"predicted test {task.metric_short}", task.lower_is_better))


def _best_region(task: TaskAnalysis) -> str:
    """Where the marginal prediction is best on each axis, in words (from the forest, not retyped)."""
    assert task.metric_forest is not None
    parts = []
    for dim, axis in enumerate(AXES):
        grid = np.linspace(task.box[dim, 0], task.box[dim, 1], MARGINAL_POINTS)
        mean, _ = task.metric_forest.curve(dim, grid)
        k = int(np.argmin(mean) if task.lower_is_better else np.argmax(mean))
        value = _display(dim, grid[k : k + 1])[0]
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


def _header(bench: str, studies: Sequence[StudyData], tasks: Sequence[TaskAnalysis]) -> list[str]:
    settings = studies[0].attrs.get("settings", {})
    per_task = _task_settings(studies, tasks)
    proxies = [t.title for t in tasks if t.is_proxy]
    lines = [
        f"# LSTM Odyssey report: `{bench}`",
        "",
        "A rerun of the analysis of Greff et al., \"LSTM: A Search Space Odyssey\" (2017) on the trials stored for "
        f"bench `{bench}`: every number, table and figure below is computed from that storage by `cellc report`.",
        "",
    ]
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


def _summary(tasks: Sequence[TaskAnalysis]) -> list[str]:
    lines = ["## Summary", ""]
    for task in tasks:
        tests = task.tests[Subset.ALL]
        worse = [t.cell for t in tests if t.verdict == "worse"]
        better = [t.cell for t in tests if t.verdict == "better"]
        same = [t.cell for t in tests if t.verdict == "no difference"]
        untested = [t.cell for t in tests if t.verdict == "not tested"]
        parts = [f"significantly worse than {BASELINE}: {', '.join(worse) or 'none'}",
                 f"significantly better: {', '.join(better) or 'none'}",
                 f"no significant difference: {', '.join(same) or 'none'}"]
        if untested:  # fewer than two scored trials on a side, or no spread: no verdict either way
            parts.append(f"not tested: {', '.join(untested)}")
        if task.importance is not None:
            top = max(task.importance.main, key=lambda c: c.fraction)
            parts.append(f"most important hyper-parameter: {top.name} ({100 * top.fraction:.0f} % of variance)")
        lines.append(f"- **{fig.data_title(task.title, task.source)}**: " + "; ".join(parts) + ".")
    lines += ["", f"(Welch's t-test on {SUBSET_TEXT[Subset.ALL]}, p < {ALPHA}.)", ""]
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
            "same weights (best validation epoch) over the same tested trials, mean with its t-based 95 % confidence "
            "interval; reported only, not used for early stopping or the tests.")


def _comparison_section(tasks: Sequence[TaskAnalysis], bundle: ReportBundle) -> list[str]:
    lines = [
        "## 1. Variant comparison", "",
        f"Tested trials: {SUBSET_TEXT[Subset.ALL]}; and separately {SUBSET_TEXT[Subset.BEST10]}. Each cell is "
        f"compared with {BASELINE} by a two-sided Welch's t-test (significant at p < {ALPHA}). Δ mean is the cell's "
        f"mean minus {BASELINE}'s with its Welch 95 % confidence interval; Hedges' g is the bias-corrected "
        "standardised mean difference (positive: higher metric than the baseline); the confidence interval of each "
        "mean is t-based (95 %). In the figures, box colour gives the verdict, the p-value is printed above each "
        "box, white diamonds mark means, dots are trials, and the bars below give the mean parameter count of the "
        "whole network.", "",
        "Design: trial number k of every (task, cell) study uses the same hyper-parameters and the same seed (search "
        "seed + k), so the cells are compared on paired trials; Welch's t-test ignores that pairing (it is an unpaired "
        "test, so it gives up the power pairing would add where a setting that suits one cell suits the others; it "
        "is no paired test, and diverged trials break pairs). Diverged trials have no test score and are left out of the test, so "
        f"each cell's divergence rate (diverged / finished trials) is shown beside the verdict, with a two-sided "
        f"Fisher's exact test of the counts against {BASELINE}'s; *differs* marks p < {ALPHA}: the cell's scores "
        "then come from a differently selected set of trials.", "",
    ]
    for task in tasks:
        name = f"compare_{task.task}.png"
        bundle.figures[name] = comparison_figure(task)
        lines += [
            f"### {fig.data_title(task.title, task.source)}", "",
            f"Data: **{task.source}**. Metric: {task.metric}; {'lower' if task.lower_is_better else 'higher'} is "
            "better." + METRIC_CONVENTIONS.get(task.task, "") + " *trials*: finished trials (ok and diverged); "
            "*tested*: non-diverged trials with a test score." + _secondary_note(task), "",
            f"![{task.title}: box plots of the test metric per cell, all trials and best 10 %]"
            f"({bundle.figure_dir}/{name})", "",
            "All tested trials:", "", comparison_table(task), "",
            "Best 10 % by validation score:", "", best_table(task), "",
        ]
    return lines


def _importance_section(tasks: Sequence[TaskAnalysis], bundle: ReportBundle, forest: ForestSettings) -> list[str]:
    lines = [
        "## 2. Hyper-parameter importance", "",
        f"Method: {METHOD_TEXT} Inputs: log10 learning rate, log10 hidden size, log10(1 - momentum) and input "
        "noise std (uniform under the search distribution in these coordinates); output: the test metric at the "
        "best validation epoch. Every finished trial with a test score is used (including trials that diverged "
        "after their best epoch); the search gives trial k the same setting in every cell, so the trials of a "
        "task's cells are taken together as one point per setting, the median over the trials at it (a forest "
        "would count repeats as evidence; with three or more trials at a setting, the median also keeps one cell's "
        "runaway trial from carrying the variance). "
        f"Forest: {forest.trees} trees, at least {forest.min_samples_leaf} settings per leaf, seed {forest.seed}.", "",
    ]
    for task in tasks:
        lines += [f"### {fig.data_title(task.title, task.source)}", ""]
        if task.constant_metric:
            lines += [f"The test metric does not vary over the {len(task.fit)} settings (the forest's trees find "
                      "no variance): there is nothing for a hyper-parameter to explain.", ""]
            continue
        if task.importance is None:
            lines += [f"Too few distinct settings with a scored trial ({len(task.fit)} < {MIN_FANOVA_SAMPLES}; "
                      f"{task.samples.trial_count} trials) for a forest fit.", ""]
            continue
        name = f"importance_{task.task}.png"
        bundle.figures[name] = importance_figure(task, forest)
        lines += [f"![{task.title}: fraction of variance per hyper-parameter and pair]({bundle.figure_dir}/{name})",
                  "", importance_table(task), ""]
    return lines


def _marginal_section(tasks: Sequence[TaskAnalysis], bundle: ReportBundle) -> list[str]:
    lines = [
        "## 3. Marginals", "",
        "Predicted test metric (top row) and predicted training time per trial (bottom row, wall-clock seconds in "
        "one worker, early stopping included) over each hyper-parameter, averaged over the other three under the "
        "search distribution: mean over the forest's trees ± one standard deviation (as in Hutter et al. 2014).", "",
    ]
    for task in tasks:
        if task.metric_forest is None:
            continue
        name = f"marginals_{task.task}.png"
        bundle.figures[name] = marginal_figure(task)
        lines += [f"### {fig.data_title(task.title, task.source)}", "",
                  f"![{task.title}: predicted test metric and training time per hyper-parameter]"
                  f"({bundle.figure_dir}/{name})", "",
                  f"Best marginal predictions at: {_best_region(task)}.", ""]
    return lines


def _interaction_section(tasks: Sequence[TaskAnalysis], bundle: ReportBundle) -> list[str]:
    lines = [
        "## 4. Interactions", "",
        "Predicted test metric over learning rate x hidden size and learning rate x input noise (mean over trees, "
        "the other two hyper-parameters averaged out). Parallel bands mean the two can be tuned independently; "
        "the interaction's share of variance is in the importance tables above.", "",
    ]
    for task in tasks:
        if task.metric_forest is None or task.importance is None:
            continue
        name = f"interactions_{task.task}.png"
        bundle.figures[name] = interaction_figure(task)
        pairs = {c.dims: c for c in task.importance.pairs}
        lines += [f"### {fig.data_title(task.title, task.source)}", "",
                  f"![{task.title}: heat maps of the predicted test metric]({bundle.figure_dir}/{name})", "",
                  f"Share of variance: learning rate x hidden size {100 * pairs[(0, 1)].fraction:.1f} %, "
                  f"learning rate x input noise {100 * pairs[(0, 3)].fraction:.1f} %.", ""]
    return lines


def _cells_section(cells: Sequence[str], context: ReportContext) -> list[str]:
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
        f"{PAPER}'s findings (see `odyssey.md`) beside this study's, for tasks run on the paper's data. The paper "
        f"tested 200 trials per cell and task; this study's trial counts are in section 7, and a study with few "
        f"trials per cell finds fewer significant differences. Significance: Welch's t-test on all trials, p < {ALPHA}.",
        "",
    ]
    shown = [t for t in tasks if comparable(t)]
    skipped = [t for t in tasks if not comparable(t)]
    for task in shown:
        rows = verdict_rows(task)
        best = best_row(task)
        if best:
            rows.append(best)
        rows += importance_rows(task)
        differences = setup_differences(task.settings)
        marks = [mark(r.agreement).strip("*") for r in rows if r.agreement is not None]
        counts = (f"{marks.count('agree')} agree, {marks.count('disagree')} disagree, "
                  f"{marks.count('not confirmed')} not confirmed (the paper found a significant difference, this "
                  "study none; with fewer trials than the paper's that can be a lack of power)")
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


def _reproducibility_section(bench: str, studies: Sequence[StudyData], tasks: Sequence[TaskAnalysis],
                             context: ReportContext, forest: ForestSettings) -> list[str]:
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
        f"- Report generated by cellc {context.version}, code commit `{context.commit}`, with `{context.command}`; "
        f"it reads only the stored trials (no retraining) and is byte-identical when regenerated.",
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
    lines += [
        f"- Total CPU time of all trials: {_hours(total_cpu)}; summed trial wall time {_hours(total_wall)}.",
        f"- Analysis: Welch's t-test via scipy.stats.ttest_ind(equal_var=False); fANOVA forest {forest.trees} trees, "
        f"min. {forest.min_samples_leaf} per leaf, seed {forest.seed}.", "",
        "Trials per cell and task (finished / target; diverged trials are finished, failed ones were rerun):", "",
        _table(["cell", *[t.title for t in tasks]], count_rows), "",
        "```bash", *commands, context.command, "```", "",
    ]
    return lines


def build_report(bench: str, studies: Sequence[StudyData], context: ReportContext, figure_dir: str,
                 forest: ForestSettings = ForestSettings()) -> ReportBundle:
    """The whole report for ``bench``; figures are referenced as ``<figure_dir>/<name>.png``."""
    tasks = [analyse_task(task, group, forest) for task, group in group_by_task(studies).items()]
    bundle = ReportBundle(markdown="", figure_dir=figure_dir)
    cells = list(dict.fromkeys(c for t in tasks for c in t.cells))
    lines = _header(bench, studies, tasks) + _contents() + _summary(tasks)
    lines += _comparison_section(tasks, bundle)
    lines += _importance_section(tasks, bundle, forest)
    lines += _marginal_section(tasks, bundle)
    lines += _interaction_section(tasks, bundle)
    lines += _cells_section(cells, context)
    lines += _paper_section(tasks)
    lines += _reproducibility_section(bench, studies, tasks, context, forest)
    bundle.markdown = "\n".join(lines).rstrip("\n") + "\n"
    return bundle
