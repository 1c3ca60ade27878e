"""Everything the report says about one task, computed once from its studies (pure, deterministic)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cellc.analysis.fanova import FanovaResult, Forest, ForestSettings, decompose
from cellc.analysis.hyperspace import Samples, per_setting, scored_samples, search_box
from cellc.analysis.load import StudyData
from cellc.analysis.significance import (
    CellTest, DivergenceTest, Interval, Subset, compare_divergence, compare_with_baseline, mean_ci, trials_under_test,
)
from cellc.harness.record import TrialRecord

BASELINE = "vanilla"
MIN_FANOVA_SAMPLES = 8  # distinct settings: below this a forest says nothing useful; the report says so instead


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
class SecondaryMean:
    """A secondary metric (e.g. TIMIT's FER39 %) of one cell over the trials under test."""

    n: int
    mean: float | None
    ci: Interval | None


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
    tests: dict[Subset, list[CellTest]]
    samples: Samples  # every scored trial
    fit: Samples  # what the forests are fit to: one row per distinct setting (hyperspace.per_setting)
    constant_metric: bool  # no variance over the settings (none a tree sees): nothing to attribute, no forest
    box: np.ndarray
    importance: FanovaResult | None
    metric_forest: Forest | None
    time_forest: Forest | None
    # Secondary test metrics (name -> description, from task_info) and their per-cell means.
    secondary_metrics: dict[str, str] = field(default_factory=dict)
    secondary: dict[str, dict[str, SecondaryMean]] = field(default_factory=dict)  # cell -> name -> mean
    divergence: dict[str, DivergenceTest] = field(default_factory=dict)  # cell -> rate and Fisher test vs baseline
    settings: dict = field(default_factory=dict)  # the stored StudySettings dump (the task's profile)

    @property
    def is_proxy(self) -> bool:
        """Any of its cells ran on a generated proxy corpus (a rebuilt JSB is the real music, re-derived)."""
        return "proxy" in self.source.split(", ")

    @property
    def mixed_sources(self) -> bool:
        """Its cells ran on different data (the comparison then mixes corpora)."""
        return len(self.source.split(", ")) > 1

    def test(self, subset: Subset, cell: str) -> CellTest | None:
        return next((t for t in self.tests[subset] if t.cell == cell), None)


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


def secondary_means(records: Sequence[TrialRecord], names: Sequence[str]) -> dict[str, SecondaryMean]:
    """Mean and t-based 95 % CI of each secondary metric over the same trials as the main test."""
    out = {}
    for name in names:
        values = [r.test_secondary_at_best[name] for r in trials_under_test(records) if name in r.test_secondary_at_best]
        out[name] = SecondaryMean(len(values), statistics.fmean(values) if values else None, mean_ci(values))
    return out


def data_source(group: Sequence[StudyData]) -> str:
    sources = sorted({r.data_source for s in group for r in s.records if r.finished})
    if not sources:
        sources = sorted({str(s.attrs.get("data_source", "?")) for s in group})
    return ", ".join(sources)


def analyse_task(task: str, group: Sequence[StudyData], forest: ForestSettings = ForestSettings(),
                 baseline: str = BASELINE) -> TaskAnalysis:
    """Significance tests for both trial subsets and the fANOVA forests of one task's studies."""
    info = group[0].attrs.get("task_info", {})
    lower = bool(info.get("lower_is_better", True))
    records = {s.cell: list(s.records) for s in group}
    settings = group[0].attrs.get("settings", {})
    box = search_box(settings.get("space"))
    samples = scored_samples([r for s in group for r in s.records])
    fit = per_setting(samples)
    importance = metric_forest = time_forest = None
    constant = len(fit) >= MIN_FANOVA_SAMPLES and bool(np.ptp(fit.metric) == 0)
    if len(fit) >= MIN_FANOVA_SAMPLES and not constant:
        metric_forest = Forest.fit(fit.x, fit.metric, box, forest)
        time_forest = Forest.fit(fit.x, fit.seconds, box, forest)
        importance = decompose(metric_forest)
        if importance.trees == 0:  # no tree saw any variance: fractions of nothing, not findings
            importance = metric_forest = time_forest = None
            constant = True
    secondary = {str(k): str(v) for k, v in (info.get("secondary_metrics") or {}).items()}
    counts = {s.cell: cell_counts(s.records, int(s.attrs.get("settings", {}).get("trials", 0))) for s in group}
    base = counts.get(baseline)
    divergence = {
        cell: compare_divergence(c.diverged, c.finished, base.diverged if base else 0, base.finished if base else 0,
                                 cell == baseline)
        for cell, c in counts.items()
    }
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
        tests={subset: compare_with_baseline(records, lower, baseline, subset) for subset in Subset},
        samples=samples,
        fit=fit,
        constant_metric=constant,
        box=box,
        importance=importance,
        metric_forest=metric_forest,
        time_forest=time_forest,
        secondary_metrics=secondary,
        secondary={cell: secondary_means(rs, list(secondary)) for cell, rs in records.items()},
        divergence=divergence,
        settings=dict(settings),
    )


def group_by_task(studies: Sequence[StudyData]) -> dict[str, list[StudyData]]:
    """Studies per task, tasks in first-seen order, cells within a task in study order."""
    tasks: dict[str, list[StudyData]] = {}
    for study in studies:
        tasks.setdefault(study.task, []).append(study)
    return tasks
