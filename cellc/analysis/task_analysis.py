"""Everything the report says about one task, computed once from its studies (pure, deterministic).

Every statistic works on the trials' *outcomes* (:mod:`cellc.analysis.outcomes`: failures counted, and
censored at the trivial predictor's score for the rank-based tests and the importance fit); the paired
tests are :mod:`cellc.analysis.paired`, the secondary ones :mod:`cellc.analysis.significance`."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cellc.analysis.best_of_k import BestOfK, best_of_k
from cellc.analysis.fanova import (
    ComponentInterval, FanovaResult, Forest, ForestSettings, bootstrap_importance, decompose,
)
from cellc.analysis.hyperspace import Samples, per_setting, scored_samples, search_box
from cellc.analysis.load import StudyData
from cellc.analysis.outcomes import DIVERGED, TRIVIAL, TaskFacts, failure_kind, outcome, worst_score
from cellc.analysis.paired import FriedmanTest, PairedTest, adjust, friedman, paired_test
from cellc.analysis.significance import (
    DivergenceTest, Interval, WelchResult, compare_divergence, hedges_g, median_ci, welch,
)
from cellc.harness.record import TrialRecord

BASELINE = "vanilla"
MIN_FANOVA_SAMPLES = 8  # distinct settings: below this a forest says nothing useful; the report says so instead
# A pairwise interaction's share is only claimed from this many distinct settings on: a planted 30 %
# interaction (tests/test_importance_bootstrap.py plants it) came out at 9 % from 30 settings, 17 % from 60,
# 28-29 % from 100 and 200; its bootstrap interval held the planted value at 500.
MIN_INTERACTION_SETTINGS = 100
LOGIT_CLIP = 0.001  # error rates are fit as logit(rate), the rate clipped to [0.1 %, 99.9 %]


@dataclass(frozen=True)
class Transform:
    """What the importance forest is fit to: a stated transform of the censored outcome."""

    name: str  # shown in the report
    kind: str  # "log" | "logit"

    def __call__(self, value: float) -> float:
        if self.kind == "logit":
            p = min(max(value / 100.0, LOGIT_CLIP), 1 - LOGIT_CLIP)
            return float(np.log(p / (1 - p)))
        return float(np.log10(max(value, 1e-12)))


def metric_transform(metric_short: str) -> Transform:
    """Error rates in % are fit on the logit scale; other (positive, unbounded) metrics on log10."""
    if metric_short.endswith("%"):
        return Transform(f"logit({metric_short.rstrip(' %')} / 100)", "logit")
    return Transform(f"log10({metric_short})", "log")


@dataclass(frozen=True)
class CellCounts:
    finished: int  # ok + diverged (counted toward the target)
    ok: int
    diverged: int
    failed: int  # crashed or interrupted (not counted; rerun)
    target: int
    mean_params: float | None
    cpu_time_s: float


@dataclass(frozen=True)
class SecondaryMedian:
    """A secondary metric (e.g. TIMIT's FER39 %) of one cell over its usable (non-failed) trials."""

    n: int
    median: float | None
    ci: Interval | None


@dataclass(frozen=True)
class CellSummary:
    """One cell's trials: failures counted, the usable scores' median, the best trial by validation."""

    finished: int
    diverged: int
    trivial: int  # no better than the trivial predictor
    usable: int
    median: float | None  # of the censored outcomes of all finished trials (failures at the trivial score)
    median_ci: Interval | None
    best_by_validation: float | None  # test outcome of the trial with the best validation score

    @property
    def failures(self) -> int:
        return self.diverged + self.trivial


MARGINAL_POINTS = 60  # points of each hyper-parameter's marginal curve (the box's ends included)


@dataclass(frozen=True)
class Marginal:
    """A forest's marginal prediction over one hyper-parameter (the others averaged under the search
    distribution): ``grid`` (the search box's coordinates, its two ends included), the trees' mean and std."""

    dim: int
    grid: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def best(self, lower_is_better: bool) -> float:
        """The grid point where the mean prediction is best."""
        return float(self.grid[int(np.argmin(self.mean) if lower_is_better else np.argmax(self.mean))])

    @property
    def end_to_end(self) -> float:
        """The prediction at the box's top minus at its bottom."""
        return float(self.mean[-1] - self.mean[0])


def marginals(forest: Forest | None, box: np.ndarray) -> tuple[Marginal, ...]:
    """Every dimension's :class:`Marginal` of ``forest`` (none without a forest)."""
    if forest is None:
        return ()
    out = []
    for dim in range(box.shape[0]):
        grid = np.linspace(box[dim, 0], box[dim, 1], MARGINAL_POINTS)
        mean, std = forest.curve(dim, grid)
        out.append(Marginal(dim, grid, mean, std))
    return tuple(out)


@dataclass(frozen=True)
class TaskAnalysis:
    task: str
    title: str
    metric: str  # long name with units, e.g. "NLL per time step (nats, ...)"
    metric_short: str
    lower_is_better: bool
    source: str  # "real", "proxy", "rebuilt from music21", or several joined by ", "
    cells: tuple[str, ...]  # in study order
    records: dict[str, list[TrialRecord]]
    counts: dict[str, CellCounts]
    facts: TaskFacts
    worst: float | None  # what a failure counts as (the trivial score, else the worst usable score)
    outcomes: dict[str, dict[int, float]]  # cell -> trial number -> censored outcome
    summaries: dict[str, CellSummary]
    paired: list[PairedTest]  # every cell in study order; the baseline's verdict is "baseline"
    friedman: FriedmanTest
    welch: dict[str, WelchResult | None]  # the paper's test, on usable scores (secondary)
    hedges: dict[str, float | None]
    best_of_k: dict[str, BestOfK]
    transform: Transform
    samples: Samples  # every finished trial, transformed censored outcome
    fit: Samples  # what the forests are fit to: one row per distinct setting (hyperspace.per_setting)
    constant_metric: bool  # no variance over the settings (none a tree sees): nothing to attribute, no forest
    box: np.ndarray
    importance: FanovaResult | None
    importance_ci: list[ComponentInterval]  # bootstrap over settings, in decompose's order + the remainder
    importance_resamples: int
    metric_forest: Forest | None
    time_forest: Forest | None
    # Secondary test metrics (name -> description, from task_info) and their per-cell means.
    secondary_metrics: dict[str, str] = field(default_factory=dict)
    secondary: dict[str, dict[str, SecondaryMedian]] = field(default_factory=dict)  # cell -> name -> median
    divergence: dict[str, DivergenceTest] = field(default_factory=dict)  # cell -> failures, Fisher test vs baseline
    settings: dict = field(default_factory=dict)  # the stored StudySettings dump (the task's profile)
    # the forests' marginal curves, one per hyper-parameter, computed once (figures, the best region, findings)
    metric_marginals: tuple[Marginal, ...] = ()
    time_marginals: tuple[Marginal, ...] = ()

    @property
    def is_proxy(self) -> bool:
        """Any of its cells ran on a generated proxy corpus (a rebuilt JSB is the real music, re-derived)."""
        return "proxy" in self.source.split(", ")

    @property
    def mixed_sources(self) -> bool:
        """Its cells ran on different data (the comparison then mixes corpora)."""
        return len(self.source.split(", ")) > 1

    def test(self, cell: str) -> PairedTest | None:
        return next((t for t in self.paired if t.cell == cell), None)

    def interval(self, dims: tuple[int, ...]) -> ComponentInterval | None:
        return next((c for c in self.importance_ci if c.dims == dims), None)

    @property
    def interactions_determined(self) -> bool:
        """Enough distinct settings for a pairwise interaction's share to mean anything."""
        return len(self.fit) >= MIN_INTERACTION_SETTINGS


def cell_counts(records: Sequence[TrialRecord], target: int) -> CellCounts:
    finished = [r for r in records if r.finished]
    params = [r.param_count for r in finished if r.param_count is not None]
    return CellCounts(
        finished=len(finished),
        ok=sum(1 for r in finished if r.status == "ok"),
        diverged=sum(1 for r in finished if r.status == "diverged"),
        failed=sum(1 for r in records if r.state == "FAIL"),
        target=target,
        mean_params=statistics.fmean(params) if params else None,
        cpu_time_s=sum(r.cpu_time_s for r in records),
    )


def usable(records: Sequence[TrialRecord], facts: TaskFacts) -> list[TrialRecord]:
    """Finished trials that did not fail, in trial-number order."""
    return sorted((r for r in records if r.finished and failure_kind(r, facts) is None), key=lambda r: r.number)


def secondary_medians(records: Sequence[TrialRecord], names: Sequence[str], facts: TaskFacts
                      ) -> dict[str, SecondaryMedian]:
    """Median and bootstrap 95 % interval of each secondary metric over the usable trials."""
    out = {}
    for name in names:
        values = [r.test_secondary_at_best[name] for r in usable(records, facts) if name in r.test_secondary_at_best]
        out[name] = SecondaryMedian(len(values), float(np.median(values)) if values else None, median_ci(values))
    return out


def summarise(records: Sequence[TrialRecord], facts: TaskFacts, outcomes: dict[int, float]) -> CellSummary:
    finished = [r for r in records if r.finished]
    kinds = [failure_kind(r, facts) for r in finished]
    values = [outcomes[r.number] for r in finished if r.number in outcomes]
    return CellSummary(
        finished=len(finished), diverged=kinds.count(DIVERGED), trivial=kinds.count(TRIVIAL),
        usable=kinds.count(None), median=float(np.median(values)) if values else None, median_ci=median_ci(values),
        best_by_validation=_best_by_validation(finished, facts, outcomes),
    )


def _validation_key(r: TrialRecord, facts: TaskFacts) -> float:
    v = r.best_valid
    if v is None or not np.isfinite(v):
        return float("inf")
    return v if facts.lower_is_better else -v


def _best_by_validation(finished: Sequence[TrialRecord], facts: TaskFacts, outcomes: dict[int, float]) -> float | None:
    """The test outcome of the finished trial with the best validation score (ties: lowest number)."""
    ranked = sorted((r for r in finished if r.number in outcomes), key=lambda r: (_validation_key(r, facts), r.number))
    return outcomes[ranked[0].number] if ranked else None


def data_source(group: Sequence[StudyData]) -> str:
    sources = sorted({r.data_source for s in group for r in s.records if r.finished})
    if not sources:
        sources = sorted({str(s.attrs.get("data_source", "?")) for s in group})
    return ", ".join(sources)


def task_outcomes(group: Sequence[StudyData], facts: TaskFacts) -> tuple[float | None, dict[str, dict[int, float]]]:
    """What a failure counts as (:func:`cellc.analysis.outcomes.worst_score` of the task's trials) and, per cell,
    trial number -> censored outcome (:func:`cellc.analysis.outcomes.outcome`): what every paired statistic of
    the task reads."""
    worst = worst_score([r for s in group for r in s.records], facts)
    return worst, {s.cell: {r.number: o for r in s.records if (o := outcome(r, facts, worst)) is not None}
                   for s in group}


def analyse_task(task: str, group: Sequence[StudyData], forest: ForestSettings = ForestSettings(),
                 baseline: str = BASELINE, facts: TaskFacts | None = None) -> TaskAnalysis:
    """Paired tests, failures, best-of-k and the fANOVA forests (with bootstrap intervals) of one task."""
    info = group[0].attrs.get("task_info", {})
    lower = bool(info.get("lower_is_better", True))
    facts = facts or TaskFacts(task=task, lower_is_better=lower, trivial_score=None, note="not given")
    records = {s.cell: list(s.records) for s in group}
    everything = [r for s in group for r in s.records]
    worst, outcomes = task_outcomes(group, facts)
    settings = group[0].attrs.get("settings", {})
    box = search_box(settings.get("space"))
    transform = metric_transform(str(info.get("metric_short", "metric")))

    def fitted(r: TrialRecord) -> float | None:
        o = outcome(r, facts, worst)
        return None if o is None else transform(o)

    samples = scored_samples(everything, fitted)
    fit = per_setting(samples)
    importance = metric_forest = time_forest = None
    intervals: list[ComponentInterval] = []
    kept = 0
    constant = len(fit) >= MIN_FANOVA_SAMPLES and bool(np.ptp(fit.metric) == 0)
    if len(fit) >= MIN_FANOVA_SAMPLES and not constant:
        metric_forest = Forest.fit(fit.x, fit.metric, box, forest)
        time_forest = Forest.fit(fit.x, fit.seconds, box, forest)
        importance = decompose(metric_forest)
        if importance.trees == 0:  # no tree saw any variance: fractions of nothing, not findings
            importance = metric_forest = time_forest = None
            constant = True
        else:
            intervals, kept = bootstrap_importance(fit.x, fit.metric, box, forest)
    secondary = {str(k): str(v) for k, v in (info.get("secondary_metrics") or {}).items()}
    counts = {s.cell: cell_counts(s.records, int(s.attrs.get("settings", {}).get("trials", 0))) for s in group}
    summaries = {cell: summarise(rs, facts, outcomes[cell]) for cell, rs in records.items()}
    base = summaries.get(baseline)
    divergence = {
        cell: compare_divergence(c.failures, c.finished, base.failures if base else 0, base.finished if base else 0,
                                 cell == baseline)
        for cell, c in summaries.items()
    }
    base_outcomes = outcomes.get(baseline)
    tests = [paired_test(cell, outcomes[cell], base_outcomes, facts.margin) for cell in records
             if cell != baseline and base_outcomes is not None]
    adjusted = {t.cell: t for t in adjust(tests, lower)}
    paired = [PairedTest(cell=cell, pairs=len(outcomes[cell]), shift=None, shift_ci=None, p=None, verdict="baseline")
              if cell == baseline else adjusted.get(cell, PairedTest(cell=cell, pairs=0, shift=None, shift_ci=None, p=None))
              for cell in records]
    base_scores = [float(r.test_at_best) for r in usable(records.get(baseline, []), facts)]  # type: ignore[arg-type]
    scores = {cell: [float(r.test_at_best) for r in usable(rs, facts)] for cell, rs in records.items()}  # type: ignore[arg-type]
    kcurves = {}
    for cell, rs in records.items():
        chosen = sorted((r for r in rs if r.number in outcomes[cell]), key=lambda r: r.number)
        valid = [np.inf if r.best_valid is None or failure_kind(r, facts) == DIVERGED else r.best_valid for r in chosen]
        kcurves[cell] = best_of_k(cell, valid, [outcomes[cell][r.number] for r in chosen], lower)
    return TaskAnalysis(
        task=task,
        title=str(info.get("title", task)),
        metric=str(info.get("metric", "test metric")),
        metric_short=str(info.get("metric_short", "metric")),
        lower_is_better=lower,
        source=data_source(group),
        cells=tuple(s.cell for s in group),
        records=records,
        counts=counts,
        facts=facts,
        worst=worst,
        outcomes=outcomes,
        summaries=summaries,
        paired=paired,
        friedman=friedman(outcomes),
        welch={cell: None if cell == baseline else welch(scores[cell], base_scores) for cell in records},
        hedges={cell: None if cell == baseline else hedges_g(scores[cell], base_scores) for cell in records},
        best_of_k=kcurves,
        transform=transform,
        samples=samples,
        fit=fit,
        constant_metric=constant,
        box=box,
        importance=importance,
        importance_ci=intervals,
        importance_resamples=kept,
        metric_forest=metric_forest,
        time_forest=time_forest,
        secondary_metrics=secondary,
        secondary={cell: secondary_medians(rs, list(secondary), facts) for cell, rs in records.items()},
        divergence=divergence,
        settings=dict(settings),
        metric_marginals=marginals(metric_forest, box),
        time_marginals=marginals(time_forest, box),
    )


def group_by_task(studies: Sequence[StudyData]) -> dict[str, list[StudyData]]:
    """Studies per task, tasks in first-seen order, cells within a task in study order."""
    tasks: dict[str, list[StudyData]] = {}
    for study in studies:
        tasks.setdefault(study.task, []).append(study)
    return tasks
