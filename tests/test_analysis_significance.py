"""Significance against the baseline: Welch p equals scipy's, planted shifts are found, CIs and g."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from cellc.analysis.significance import (
    Subset, best_by_validation, cohens_d, compare_with_baseline, hedges_g, mean_ci, trials_under_test, welch,
)
from cellc.harness.record import TrialRecord


def record(number: int, test: float | None, valid: float | None = None, state: str = "COMPLETE",
           status: str = "ok", cell: str = "x") -> TrialRecord:
    return TrialRecord(
        number=number, state=state, task="jsb", cell=cell, status=status,
        hyperparams={"hidden": 20, "lr": 1e-3, "momentum": 0.9, "noise": 0.1}, param_count=1000,
        train_curve=[], valid_curve=[], best_valid=test if valid is None else valid, best_epoch=1,
        test_at_best=test, epochs=1, wall_time_s=1.0, cpu_time_s=1.0, data_source="real", error=None,
    )


def cell(scores, cell_name: str = "x") -> list[TrialRecord]:
    return [record(i, float(s), cell=cell_name) for i, s in enumerate(scores)]


RNG = np.random.default_rng(0)
BASE = 8.5 + 0.3 * RNG.standard_normal(40)


def test_p_values_equal_scipys_welch_test():
    a, b = [8.0, 8.4, 8.1, 8.9, 8.3], [9.0, 9.6, 9.1, 8.8]
    result = welch(a, b)
    expected = stats.ttest_ind(a, b, equal_var=False)
    assert result.p == expected.pvalue
    assert result.t == pytest.approx(expected.statistic)
    rows = compare_with_baseline({"vanilla": cell(b), "v2": cell(a)}, True, "vanilla")
    assert rows[1].welch.p == expected_p(a, b)
    # Welch's df and the confidence interval of the difference agree with scipy's own.
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (result.diff_ci.low, result.diff_ci.high) == pytest.approx((ci.low, ci.high))


def expected_p(a, b) -> float:
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_planted_shift_is_significant_and_identical_cell_is_not():
    shifted = BASE + 0.5
    same = BASE.copy()
    rows = compare_with_baseline({"vanilla": cell(BASE), "worse": cell(shifted), "same": cell(same),
                                  "better": cell(BASE - 0.5)}, lower_is_better=True, baseline="vanilla")
    verdicts = {r.cell: r.verdict for r in rows}
    assert verdicts == {"vanilla": "baseline", "worse": "worse", "same": "no difference", "better": "better"}
    by = {r.cell: r for r in rows}
    assert by["worse"].significant and not by["same"].significant and not by["vanilla"].significant
    assert by["same"].welch.p == pytest.approx(1.0)
    assert by["worse"].hedges_g > 1.0 and by["better"].hedges_g < -1.0
    higher = compare_with_baseline({"vanilla": cell(BASE), "up": cell(shifted)}, lower_is_better=False,
                                   baseline="vanilla")
    assert higher[1].verdict == "better"


def test_effect_sizes_and_interval():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0, 6.0]
    pooled = math.sqrt((3 * statistics.variance(a) + 4 * statistics.variance(b)) / 7)
    assert cohens_d(a, b) == pytest.approx((2.5 - 4.0) / pooled)
    assert hedges_g(a, b) == pytest.approx(cohens_d(a, b) * (1 - 3 / (4 * 9 - 9)))
    ci = mean_ci(a)
    half = stats.t.ppf(0.975, 3) * statistics.stdev(a) / 2
    assert (ci.low, ci.high) == pytest.approx((2.5 - half, 2.5 + half))
    assert mean_ci([1.0]) is None and welch([1.0], b) is None and cohens_d([1.0], b) is None
    assert welch([1.0, 1.0], [1.0, 1.0]) is None


def test_diverged_failed_and_running_trials_are_not_tested():
    records = [record(0, 8.0), record(1, 8.5, state="PRUNED", status="diverged"),
               record(2, 1.0, state="FAIL", status="failed"), record(3, None), record(4, float("nan")),
               record(5, 9.0)]
    assert [r.number for r in trials_under_test(records)] == [0, 5]


def test_best_ten_percent_is_chosen_by_validation():
    records = [record(i, test=100.0 + i if i < 2 else float(i), valid=float(i)) for i in range(20)]
    assert [r.number for r in best_by_validation(records, lower_is_better=True)] == [0, 1]
    assert [r.number for r in best_by_validation(records, lower_is_better=False)] == [19, 18]
    rows = compare_with_baseline({"vanilla": records, "y": records}, True, "vanilla", Subset.BEST10)
    assert rows[0].n == 2 and rows[0].mean == pytest.approx(100.5)


def test_missing_baseline_leaves_cells_untested():
    rows = compare_with_baseline({"a": cell([1.0, 2.0, 3.0])}, True, "vanilla")
    assert rows[0].verdict == "not tested" and rows[0].welch is None and rows[0].n == 3


def test_divergence_rate_and_fisher_test_against_the_baseline():
    from cellc.analysis.significance import compare_divergence

    same = compare_divergence(2, 20, 2, 20, is_baseline=False)
    assert same.rate == 0.1 and same.p == pytest.approx(1.0) and not same.differs
    many = compare_divergence(15, 20, 1, 20, is_baseline=False)
    assert many.differs and many.p < 1e-4 and many.rate == 0.75
    assert compare_divergence(1, 20, 1, 20, is_baseline=True).p is None
    assert compare_divergence(0, 0, 1, 20, is_baseline=False).p is None
