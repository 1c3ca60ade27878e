"""Secondary statistics: Welch p equals scipy's, Hedges' g, the bootstrap median interval, Fisher on failures."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from cellc.analysis.significance import cohens_d, hedges_g, median_ci, welch


def test_p_values_equal_scipys_welch_test():
    a, b = [8.0, 8.4, 8.1, 8.9, 8.3], [9.0, 9.6, 9.1, 8.8]
    result = welch(a, b)
    expected = stats.ttest_ind(a, b, equal_var=False)
    assert result.p == expected.pvalue
    assert result.t == pytest.approx(expected.statistic)
    # Welch's df and the confidence interval of the difference agree with scipy's own.
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (result.diff_ci.low, result.diff_ci.high) == pytest.approx((ci.low, ci.high))


def expected_p(a, b) -> float:
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_effect_sizes_and_interval():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0, 6.0]
    pooled = math.sqrt((3 * statistics.variance(a) + 4 * statistics.variance(b)) / 7)
    assert cohens_d(a, b) == pytest.approx((2.5 - 4.0) / pooled)
    assert hedges_g(a, b) == pytest.approx(cohens_d(a, b) * (1 - 3 / (4 * 9 - 9)))
    assert welch([1.0], b) is None and cohens_d([1.0], b) is None
    assert welch([1.0, 1.0], [1.0, 1.0]) is None


def test_median_interval_is_scipys_percentile_bootstrap_and_stays_in_the_data_range():
    values = [0.5, 0.7, 0.9, 1.1, 4.0, 60.0, 0.6, 0.8]  # a positive metric with a runaway value
    ci = median_ci(values)
    expected = stats.bootstrap((np.asarray(values),), np.median, n_resamples=2000, method="percentile",
                               random_state=np.random.default_rng(0)).confidence_interval
    assert (ci.low, ci.high) == (expected.low, expected.high)
    assert min(values) <= ci.low <= ci.high <= max(values)  # a t-interval of the mean would go below zero
    assert median_ci([1.0]) is None and median_ci([2.0, 2.0]).low == 2.0


def test_divergence_rate_and_fisher_test_against_the_baseline():
    from cellc.analysis.significance import compare_divergence

    same = compare_divergence(2, 20, 2, 20, is_baseline=False)
    assert same.rate == 0.1 and same.p == pytest.approx(1.0) and not same.differs
    many = compare_divergence(15, 20, 1, 20, is_baseline=False)
    assert many.differs and many.p < 1e-4 and many.rate == 0.75
    assert compare_divergence(1, 20, 1, 20, is_baseline=True).p is None
    assert compare_divergence(0, 0, 1, 20, is_baseline=False).p is None
