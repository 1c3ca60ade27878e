"""Best of k: the expected test outcome of the trial a user would pick *by validation* among k random trials.

For a cell with n finished trials, a random search of k of them (without replacement) keeps the one with
the best validation score and reports its test outcome. Sorting the n trials by validation (best first;
a trial without a validation score last; ties by trial number), the i-th (0-based) is the one kept when it
is in the subset and none before it is: probability C(n - 1 - i, k - 1) / C(n, k). The expectation is
exact, for every k = 1..n: the cost-aware view of "which cell is best if I can afford k trials"
(k = 1: a random trial; k = n: the best-by-validation trial of the study). Outcomes are censored
(:mod:`cellc.analysis.outcomes`): a failure counts as the trivial predictor. A percentile bootstrap
over the trials (seeded) gives each expectation an interval, which stays within the outcomes' range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict

RESAMPLES = 200
SEED = 0


def selection_weights(n: int, k: int) -> np.ndarray:
    """P(the i-th best by validation is the one kept) among k of n, for i = 0..n-1."""
    total = math.comb(n, k)
    return np.array([math.comb(n - 1 - i, k - 1) / total for i in range(n)])


@lru_cache(maxsize=64)
def _weight_matrix(n: int) -> np.ndarray:
    """Row k - 1: :func:`selection_weights` (n, k)."""
    return np.stack([selection_weights(n, k) for k in range(1, n + 1)])


def _order(valid: np.ndarray, lower_is_better: bool) -> np.ndarray:
    key = np.where(np.isfinite(valid), valid if lower_is_better else -valid, np.inf)
    return np.lexsort((np.arange(len(valid)), key))  # by validation, ties by position (trial order)


def expected_best(valid: Sequence[float], test: Sequence[float], lower_is_better: bool) -> np.ndarray:
    """E[test outcome of the best-by-validation trial among k random trials], k = 1..n."""
    valid_a, test_a = np.asarray(valid, dtype=float), np.asarray(test, dtype=float)
    ordered = test_a[_order(valid_a, lower_is_better)]
    return _weight_matrix(len(ordered)) @ ordered


class BestOfK(BaseModel):
    model_config = ConfigDict(frozen=True)

    cell: str
    expected: list[float]  # k = 1..n
    low: list[float]
    high: list[float]


def best_of_k(cell: str, valid: Sequence[float], test: Sequence[float], lower_is_better: bool,
              resamples: int = RESAMPLES, seed: int = SEED) -> BestOfK:
    """The expected curve and its 95 % percentile-bootstrap band (trials resampled with replacement)."""
    valid_a, test_a = np.asarray(valid, dtype=float), np.asarray(test, dtype=float)
    n = len(test_a)
    if n == 0:
        return BestOfK(cell=cell, expected=[], low=[], high=[])
    expected = expected_best(valid_a, test_a, lower_is_better)
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, n))
    for b in range(resamples):
        idx = np.sort(rng.integers(0, n, n))  # sorted: ties in validation keep trial order
        draws[b] = expected_best(valid_a[idx], test_a[idx], lower_is_better)
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    return BestOfK(cell=cell, expected=expected.tolist(), low=low.tolist(), high=high.tolist())
