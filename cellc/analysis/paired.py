"""The primary analysis: each cell against the baseline on the trials they share, rank-based and paired.

Pure functions; the tests come from scipy and statsmodels, cellc only arranges the data.

Pairing: trial number k of every (task, cell) study runs the same setting and the same seed (see
:mod:`cellc.harness.search`), so a cell and the baseline are compared on the trial numbers both
finished, on the paired differences d_k = outcome(cell, k) - outcome(baseline, k) of the censored
outcomes (:mod:`cellc.analysis.outcomes`: a failure is the trivial predictor's score, the worst rank).

- **Primary test**: two-sided Wilcoxon signed-rank test of the d_k (``scipy.stats.wilcoxon``, zero
  differences dropped), with the Hodges-Lehmann shift (median of the Walsh averages of the d_k) and its
  confidence interval by inverting that same scipy test (the shifts delta for which the d_k - delta are
  not rejected); the interval's ends are Walsh averages, so it never leaves the observed differences.
- **Multiplicity**: Holm within each task over its cells' primary p-values (the family: every cell
  against the baseline; ``statsmodels.stats.multitest.multipletests(method="holm")``); the report adds
  Benjamini-Hochberg q-values across all its primary tests.
- **Equivalence**: a paired two-one-sided test of the outcomes within +/- the task's margin
  (``statsmodels.stats.weightstats.ttost_paired``), Holm-adjusted within the task like the primary test;
  only from MIN_EQUIVALENCE_PAIRS pairs on and where the differences have any spread.
- **Verdict**: ``worse`` / ``better`` when the Holm-adjusted primary p < ALPHA (direction: the shift's
  sign); ``equivalent`` when the Holm-adjusted TOST p < ALPHA; otherwise ``inconclusive``, with the
  minimum detectable shift at 80 % power for the pairs at hand and the pairs that would decide (paired-t
  approximation, ``statsmodels.stats.power.TTestPower``; alpha unadjusted).
- **Omnibus**: Friedman's test across all cells with the trial (setting and seed) as block, on the
  trial numbers every cell finished (``scipy.stats.friedmanchisquare``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.8
MIN_PAIRS = 2  # fewer shared trials: no test at all (the report says so)
# An equivalence claim rests on at least as many pairs as the two-sided signed-rank test needs to reject
# anything at ALPHA (6: the smallest exact p with 5 pairs is 0.0625), so neither verdict is easier to reach.
MIN_EQUIVALENCE_PAIRS = 6
MAX_TRIALS_SHOWN = 10_000  # "trials to decide" beyond this reads "> 10000"


class Interval(BaseModel):
    model_config = ConfigDict(frozen=True)
    low: float
    high: float


def walsh_averages(d: np.ndarray) -> np.ndarray:
    """(d_i + d_j) / 2 for all i <= j, sorted."""
    i, j = np.triu_indices(len(d))
    return np.sort((d[i] + d[j]) / 2)


def hodges_lehmann(d: Sequence[float]) -> float:
    """The Hodges-Lehmann estimate of a one-sample shift: the median of the Walsh averages."""
    return float(np.median(walsh_averages(np.asarray(d, dtype=float))))


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p (scipy); 1.0 when every difference is zero."""
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def shift_interval(d: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Confidence interval of the Hodges-Lehmann shift by inverting scipy's Wilcoxon test.

    The interval is every shift delta whose d - delta the test does not reject at 1 - confidence. The
    p-value only changes at the Walsh averages and rises towards the estimate from either side, so it is
    evaluated on the Walsh averages and the midpoints between them (binary search on each side of the
    estimate); the ends are Walsh averages, inside the observed differences. None when no shift at all
    could be rejected with so few pairs (the interval would be unbounded)."""
    d = np.asarray(d, dtype=float)
    if len(d) < MIN_PAIRS:
        return None
    alpha = 1 - confidence
    w = np.unique(walsh_averages(d))
    if wilcoxon_p(d - (w[-1] + 1.0 + abs(w[-1]))) >= alpha:  # all differences negative: the strongest evidence
        return None
    if len(w) == 1:
        return Interval(low=float(w[0]), high=float(w[0]))
    grid = np.empty(2 * len(w) - 1)
    grid[0::2] = w
    grid[1::2] = (w[:-1] + w[1:]) / 2  # p is constant strictly between consecutive Walsh averages
    accept = lambda k: wilcoxon_p(d - grid[k]) >= alpha  # noqa: E731
    centre = int(np.clip(np.searchsorted(grid, hodges_lehmann(d)), 0, len(grid) - 1))
    near = [k for k in (centre, centre - 1, centre + 1) if 0 <= k < len(grid) and accept(k)]
    if not near:
        return Interval(low=float(grid[centre]), high=float(grid[centre]))  # only the estimate itself survives ties
    centre = near[0]
    lo, hi = 0, centre  # first accepted point in [0, centre]
    while lo < hi:
        mid = (lo + hi) // 2
        if accept(mid):
            hi = mid
        else:
            lo = mid + 1
    first = lo - (lo % 2)  # a midpoint's interval closes at the Walsh average before it
    lo, hi = centre, len(grid) - 1  # last accepted point in [centre, end]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if accept(mid):
            lo = mid
        else:
            hi = mid - 1
    last = lo + (lo % 2)
    return Interval(low=float(grid[first]), high=float(grid[last]))


def tost_p(cell: Sequence[float], base: Sequence[float], margin: float) -> float | None:
    """Paired two-one-sided test (statsmodels' ttost_paired) of cell - base within (-margin, +margin);
    None where it cannot support a claim: fewer than MIN_EQUIVALENCE_PAIRS pairs, or no spread in the
    differences (a t-test has no standard error then; e.g. two cells that failed every trial alike are
    not thereby shown equivalent)."""
    from statsmodels.stats.weightstats import ttost_paired

    d = np.asarray(cell, dtype=float) - np.asarray(base, dtype=float)
    if len(d) < MIN_EQUIVALENCE_PAIRS or np.ptp(d) == 0:
        return None
    p, _, _ = ttost_paired(np.asarray(cell, dtype=float), np.asarray(base, dtype=float), -margin, margin)
    return float(p)


def _scalar(value) -> float:
    """statsmodels' solve_power answers some sizes (nobs 73, 87, 92, ...) with a one-element array: its number."""
    return float(np.asarray(value).reshape(-1)[0])


def detectable_shift(pairs: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest shift a paired test of ``pairs`` differences with standard deviation ``sd`` detects with
    ``power`` (paired-t approximation, two-sided; statsmodels' TTestPower)."""
    from statsmodels.stats.power import TTestPower

    if pairs < MIN_PAIRS or not sd > 0:
        return None
    effect = TTestPower().solve_power(effect_size=None, nobs=pairs, alpha=alpha, power=power, alternative="two-sided")
    return _scalar(effect) * sd


def minimum_detectable(d: np.ndarray, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest shift the paired test detects with ``power`` at these pairs (paired-t approximation)."""
    return detectable_shift(len(d), float(np.std(d, ddof=1)) if len(d) > 1 else 0.0, alpha, power)


def trials_to_decide(d: np.ndarray, margin: float | None, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Pairs that would decide: enough to detect the observed shift, or to show equivalence within the margin
    were the true shift zero (each with ``power``, paired-t approximation); the smaller of the two."""
    from statsmodels.stats.power import TTestPower

    sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
    if len(d) < MIN_PAIRS or sd == 0:
        return None
    solver = TTestPower()
    candidates = []
    shift = abs(hodges_lehmann(d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for effect, alternative, want in ((shift / sd, "two-sided", power), (None if margin is None else margin / sd,
                                                                            "larger", 1 - (1 - power) / 2)):
            if not effect or effect <= 0:
                continue
            try:
                n = _scalar(solver.solve_power(effect_size=effect, nobs=None, alpha=alpha, power=want,
                                               alternative=alternative))
            except (ValueError, RuntimeError):
                continue
            if math.isfinite(n):
                candidates.append(math.ceil(n))
    return min(candidates) if candidates else MAX_TRIALS_SHOWN + 1


class PairedTest(BaseModel):
    """One cell against the baseline on their shared trials."""

    model_config = ConfigDict(frozen=True)

    cell: str
    pairs: int
    shift: float | None  # Hodges-Lehmann, cell - baseline, metric units
    shift_ci: Interval | None
    p: float | None  # Wilcoxon signed-rank, two-sided, unadjusted
    p_holm: float | None = None
    tost: float | None = None  # ttost_paired p within the margin, unadjusted
    tost_holm: float | None = None
    mde: float | None = None  # minimum detectable shift at 80 % power
    needed: int | None = None  # pairs that would decide
    verdict: str = "not tested"  # baseline / better / worse / equivalent / inconclusive / not tested

    @property
    def significant(self) -> bool:
        return self.verdict in ("better", "worse")

    @property
    def within_margin(self) -> bool:
        """The equivalence test (Holm-adjusted TOST) shows the shift lies within the task's margin, whatever
        the verdict: with many pairs a shift can be significant and still negligible."""
        return self.tost_holm is not None and self.tost_holm < ALPHA


def paired_outcomes(cell: Mapping[int, float], base: Mapping[int, float]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Trial numbers both finished (sorted) and the two cells' outcomes on them."""
    numbers = sorted(set(cell) & set(base))
    return numbers, np.array([cell[k] for k in numbers], dtype=float), np.array([base[k] for k in numbers], dtype=float)


def paired_test(name: str, cell: Mapping[int, float], base: Mapping[int, float], margin: float | None) -> PairedTest:
    """Unadjusted statistics of one cell against the baseline (see :func:`adjust` for the verdicts)."""
    numbers, a, b = paired_outcomes(cell, base)
    if len(numbers) < MIN_PAIRS:
        return PairedTest(cell=name, pairs=len(numbers), shift=None, shift_ci=None, p=None)
    d = a - b
    interval = shift_interval(d)
    powered = interval is not None  # with fewer pairs (under 6) the signed-rank test can reject nothing
    return PairedTest(
        cell=name, pairs=len(numbers), shift=hodges_lehmann(d), shift_ci=interval, p=wilcoxon_p(d),
        tost=None if margin is None else tost_p(a, b, margin),
        mde=minimum_detectable(d) if powered else None, needed=trials_to_decide(d, margin),
    )


def holm(ps: Sequence[float]) -> list[float]:
    from statsmodels.stats.multitest import multipletests

    if not ps:
        return []
    return [float(p) for p in multipletests(list(ps), alpha=ALPHA, method="holm")[1]]


def benjamini_hochberg(ps: Sequence[float]) -> list[float]:
    from statsmodels.stats.multitest import multipletests

    if not ps:
        return []
    return [float(p) for p in multipletests(list(ps), alpha=ALPHA, method="fdr_bh")[1]]


def adjust(tests: Sequence[PairedTest], lower_is_better: bool) -> list[PairedTest]:
    """Holm within the family (these tests) for the primary and the equivalence p-values, and verdicts."""
    tested = [t for t in tests if t.p is not None]
    p_holm = dict(zip((t.cell for t in tested), holm([t.p for t in tested])))  # type: ignore[misc]
    with_tost = [t for t in tested if t.tost is not None]
    tost_holm = dict(zip((t.cell for t in with_tost), holm([t.tost for t in with_tost])))  # type: ignore[misc]
    out = []
    for t in tests:
        if t.p is None:
            out.append(t)
            continue
        ph, th = p_holm[t.cell], tost_holm.get(t.cell)
        if ph < ALPHA and t.shift:
            verdict = "better" if (t.shift < 0) == lower_is_better else "worse"
        elif th is not None and th < ALPHA:
            verdict = "equivalent"
        else:
            verdict = "inconclusive"
        out.append(t.model_copy(update={"p_holm": ph, "tost_holm": th, "verdict": verdict}))
    return out


class FriedmanTest(BaseModel):
    model_config = ConfigDict(frozen=True)

    cells: int
    blocks: int  # trial numbers every cell finished
    statistic: float | None
    p: float | None


def friedman(outcomes: Mapping[str, Mapping[int, float]]) -> FriedmanTest:
    """Friedman's test across the cells (columns) with the shared trial numbers as blocks."""
    cells = list(outcomes)
    shared = sorted(set.intersection(*(set(v) for v in outcomes.values()))) if cells else []
    if len(cells) < 3 or len(shared) < 2:
        return FriedmanTest(cells=len(cells), blocks=len(shared), statistic=None, p=None)
    columns = [[outcomes[c][k] for k in shared] for c in cells]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.friedmanchisquare(*columns)
    p = float(result.pvalue)
    return FriedmanTest(cells=len(cells), blocks=len(shared), statistic=float(result.statistic),
                        p=None if math.isnan(p) else p)
