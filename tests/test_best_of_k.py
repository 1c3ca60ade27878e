"""Best of k: the exact expectation equals enumerating every k-subset; the choice is by validation, never test."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cellc.analysis.best_of_k import best_of_k, expected_best


def brute_force(valid, test, k, lower=True):
    picks = []
    for subset in itertools.combinations(range(len(test)), k):
        key = [(valid[i] if lower else -valid[i], i) for i in subset]
        picks.append(test[min(key)[1]])
    return float(np.mean(picks))


def test_expectation_equals_every_subset_enumerated():
    rng = np.random.default_rng(0)
    valid, test = rng.random(9), rng.random(9)
    valid[4] = np.inf  # a diverged trial: last by validation
    valid[2] = valid[6]  # a tie, broken by trial order
    for lower in (True, False):
        v = valid if lower else np.where(np.isfinite(valid), valid, -np.inf)
        curve = expected_best(v, test, lower)
        assert curve == pytest.approx([brute_force(list(v), list(test), k, lower) for k in range(1, 10)])
    assert expected_best(valid, test, True)[0] == pytest.approx(test.mean())  # k = 1: a random trial


def test_the_best_is_chosen_by_validation_not_by_test():
    valid = [1.0, 2.0, 3.0]
    test = [9.0, 5.0, 1.0]  # the lowest test score has the worst validation
    curve = best_of_k("x", valid, test, lower_is_better=True, resamples=20)
    assert curve.expected[-1] == 9.0  # all three searched: the best-validation trial's test
    assert min(test) <= min(curve.low) and max(curve.high) <= max(test)
