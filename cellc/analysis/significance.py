"""Comparing each cell's test scores with the baseline cell: Welch's t-test, effect sizes, intervals.

Pure functions over :class:`~cellc.harness.record.TrialRecord` lists; no I/O, no plotting.

Which trials are tested (the report says this in words, from :data:`SUBSET_TEXT`):

- ``all``: every non-diverged trial (status ``ok``) with a finite test score; the score is the
  test metric at the trial's best validation epoch (``test_at_best``). Diverged trials are
  counted in the tables but not tested, even when they had a best epoch before diverging.
- ``best10``: of those, the ceil(10 %) with the best validation score (``best_valid``), as in
  the paper's lower box-plot panel.

Design: trial number k of every (task, cell) study draws the same hyper-parameters and seed
(see :mod:`cellc.harness.search`), so the cells are compared on paired trials; the Welch test
below ignores that pairing (an unpaired test: it gives up the power pairing would add where scores at a
setting are correlated across cells, and a diverged trial would break its pair anyway).

Divergence: a diverged trial has no test score, so a cell that diverges more often is tested on
fewer (and possibly easier) trials. :func:`compare_divergence` gives each cell's divergence rate
(diverged / finished trials) and a two-sided Fisher's exact test of the counts against the
baseline's, flagged at p < 0.05.

Statistics: two-sided Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``) of the cell's
scores against the baseline's, significant at p < 0.05; Hedges' g (Cohen's d with the pooled
standard deviation, times the small-sample correction 1 - 3 / (4 (n1 + n2) - 9)), positive when
the cell's mean metric is higher; the t-based 95 % confidence interval of each mean and the
Welch 95 % confidence interval of the difference of means.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from enum import Enum

from pydantic import BaseModel, ConfigDict
from scipy import stats

from cellc.harness.record import TrialRecord

ALPHA = 0.05
CONFIDENCE = 0.95
BEST_FRACTION = 0.1


class Subset(str, Enum):
    ALL = "all"
    BEST10 = "best10"


SUBSET_TEXT = {
    Subset.ALL: "all non-diverged trials (test score at each trial's best validation epoch)",
    Subset.BEST10: "the best 10 % of those trials by validation score (at least one)",
}
SUBSET_SHORT = {Subset.ALL: "all trials", Subset.BEST10: "best 10 % by validation"}


# A score beyond this is left out like a non-finite one: its square would overflow a variance.
MAX_METRIC = 1e100


def trials_under_test(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Non-diverged finished trials with a finite test score (at most MAX_METRIC), in trial-number order."""
    chosen = [
        r for r in records
        if r.state == "COMPLETE" and r.status == "ok" and r.test_at_best is not None
        and abs(r.test_at_best) <= MAX_METRIC
    ]
    return sorted(chosen, key=lambda r: r.number)


def best_by_validation(records: Sequence[TrialRecord], lower_is_better: bool,
                       fraction: float = BEST_FRACTION) -> list[TrialRecord]:
    """The ceil(``fraction``) of the tested trials with the best validation score (ties by number)."""
    ranked = [r for r in trials_under_test(records) if r.best_valid is not None and math.isfinite(r.best_valid)]
    ranked.sort(key=lambda r: ((r.best_valid if lower_is_better else -r.best_valid), r.number))
    return ranked[: math.ceil(fraction * len(ranked))] if ranked else []


def subset_scores(records: Sequence[TrialRecord], subset: Subset, lower_is_better: bool) -> list[float]:
    chosen = trials_under_test(records) if subset is Subset.ALL else best_by_validation(records, lower_is_better)
    return [float(r.test_at_best) for r in chosen]  # type: ignore[arg-type]


class Interval(BaseModel):
    model_config = ConfigDict(frozen=True)
    low: float
    high: float


class WelchResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    t: float
    df: float
    p: float
    diff: float  # mean(a) - mean(b)
    diff_ci: Interval  # Welch confidence interval of diff


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """t-based confidence interval of the mean (None for fewer than two values)."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return Interval(low=mean - half, high=mean + half)


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> WelchResult | None:
    """Two-sided Welch's t-test of ``a`` against ``b`` (None when a side has < 2 values or no spread)."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a), statistics.variance(b)
    if va == 0 and vb == 0:
        return None
    result = stats.ttest_ind(a, b, equal_var=False)
    se2a, se2b = va / len(a), vb / len(b)
    df = (se2a + se2b) ** 2 / (se2a**2 / (len(a) - 1) + se2b**2 / (len(b) - 1))
    diff = statistics.fmean(a) - statistics.fmean(b)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2a + se2b)
    return WelchResult(t=float(result.statistic), df=df, p=float(result.pvalue), diff=diff,
                       diff_ci=Interval(low=diff - half, high=diff + half))


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float | None:
    """(mean(a) - mean(b)) / pooled standard deviation (None when undefined)."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return None
    pooled = ((na - 1) * statistics.variance(a) + (nb - 1) * statistics.variance(b)) / (na + nb - 2)
    if pooled == 0:
        return None
    return (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(pooled)


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cohen's d with Hedges' small-sample bias correction."""
    d = cohens_d(a, b)
    return None if d is None else d * (1 - 3 / (4 * (len(a) + len(b)) - 9))


class CellTest(BaseModel):
    """One cell's scores in one subset, compared with the baseline's scores in the same subset."""

    model_config = ConfigDict(frozen=True)

    cell: str
    subset: Subset
    n: int
    mean: float | None
    mean_ci: Interval | None
    median: float | None
    std: float | None
    best: float | None
    welch: WelchResult | None  # None for the baseline itself and when not testable
    hedges_g: float | None
    significant: bool
    verdict: str  # "baseline", "better", "worse", "no difference", "not tested"


def verdict_of(result: WelchResult | None, lower_is_better: bool, is_baseline: bool) -> str:
    if is_baseline:
        return "baseline"
    if result is None or math.isnan(result.p):
        return "not tested"
    if result.p >= ALPHA:
        return "no difference"
    return "better" if (result.diff < 0) == lower_is_better else "worse"


def compare_cell(cell: str, scores: Sequence[float], base_scores: Sequence[float], subset: Subset,
              lower_is_better: bool, is_baseline: bool) -> CellTest:
    result = None if is_baseline else welch(scores, base_scores)
    verdict = verdict_of(result, lower_is_better, is_baseline)
    return CellTest(
        cell=cell, subset=subset, n=len(scores),
        mean=statistics.fmean(scores) if scores else None,
        mean_ci=mean_ci(scores),
        median=statistics.median(scores) if scores else None,
        std=statistics.stdev(scores) if len(scores) > 1 else None,
        best=(min(scores) if lower_is_better else max(scores)) if scores else None,
        welch=result,
        hedges_g=None if is_baseline else hedges_g(scores, base_scores),
        significant=verdict in ("better", "worse"),
        verdict=verdict,
    )


def compare_with_baseline(records_by_cell: Mapping[str, Sequence[TrialRecord]], lower_is_better: bool,
                          baseline: str, subset: Subset = Subset.ALL) -> list[CellTest]:
    """One :class:`CellTest` per cell, in the mapping's order (no baseline: every cell untested)."""
    base = subset_scores(records_by_cell.get(baseline, []), subset, lower_is_better)
    return [
        compare_cell(cell, subset_scores(records, subset, lower_is_better), base, subset, lower_is_better,
                  cell == baseline)
        for cell, records in records_by_cell.items()
    ]


class DivergenceTest(BaseModel):
    """How often a cell's trials diverged, against the baseline (Fisher's exact test)."""

    model_config = ConfigDict(frozen=True)

    diverged: int
    trials: int  # finished trials (ok + diverged)
    p: float | None  # None for the baseline and when either side has no trials
    differs: bool  # p < ALPHA

    @property
    def rate(self) -> float | None:
        return self.diverged / self.trials if self.trials else None


def compare_divergence(diverged: int, trials: int, base_diverged: int, base_trials: int,
                       is_baseline: bool) -> DivergenceTest:
    """Two-sided Fisher's exact test of (diverged, not diverged) against the baseline's counts."""
    p = None
    if not is_baseline and trials and base_trials:
        table = [[diverged, trials - diverged], [base_diverged, base_trials - base_diverged]]
        p = float(stats.fisher_exact(table).pvalue)
    return DivergenceTest(diverged=diverged, trials=trials, p=p, differs=p is not None and p < ALPHA)
