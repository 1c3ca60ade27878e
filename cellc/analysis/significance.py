"""Secondary statistics: the paper's Welch test, effect sizes, Fisher's test of failures, robust intervals.

Pure functions; no I/O, no plotting. The primary, paired analysis is :mod:`cellc.analysis.paired`.

- Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``) of a cell's usable (non-failed) test
  scores against the baseline's: *the paper's test*, shown as a secondary column. It ignores the
  pairing, and a mean of scores that survived is no summary of a cell that fails often, so no verdict
  rests on it. Hedges' g: Cohen's d with the pooled standard deviation times 1 - 3 / (4 (n1 + n2) - 9).
- Failures (:mod:`cellc.analysis.outcomes`): each cell's failure count against the baseline's,
  two-sided Fisher's exact test (``scipy.stats.fisher_exact``).
- Robust intervals: the median with a percentile bootstrap 95 % interval (``scipy.stats.bootstrap``,
  seeded): its ends are order statistics of the data, so it never leaves the metric's range.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats

from cellc.analysis.paired import Interval

ALPHA = 0.05
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


class WelchResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    t: float
    df: float
    p: float
    diff: float  # mean(a) - mean(b)
    diff_ci: Interval  # Welch confidence interval of diff


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


def median_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Percentile-bootstrap interval of the median (scipy, seeded); None for fewer than two values."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return None
    if np.ptp(data) == 0:
        return Interval(low=float(data[0]), high=float(data[0]))
    result = stats.bootstrap((data,), np.median, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                             method="percentile", random_state=np.random.default_rng(BOOTSTRAP_SEED))
    return Interval(low=float(result.confidence_interval.low), high=float(result.confidence_interval.high))


class DivergenceTest(BaseModel):
    """How often a cell's trials failed (diverged or no better than trivial), against the baseline (Fisher)."""

    model_config = ConfigDict(frozen=True)

    diverged: int  # failures: diverged or no better than the trivial predictor
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
