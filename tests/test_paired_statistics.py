"""The primary analysis on planted trials: pairing finds what Welch misses, failures are worst ranks, a runaway
trial flips nothing, and every adjusted p-value, TOST, interval and power figure equals the library's."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from cellc.analysis.document import report_q_values
from cellc.analysis.fanova import ForestSettings
from cellc.analysis.load import StudyData
from cellc.analysis.outcomes import DIVERGED, TRIVIAL, TaskFacts, failure_kind
from cellc.analysis.paired import hodges_lehmann, minimum_detectable, shift_interval, wilcoxon_p
from cellc.analysis.task_analysis import analyse_task
from cellc.harness.record import TrialRecord

FOREST = ForestSettings(trees=4, resamples=5)
TRIVIAL_SCORE = 20.0
FACTS = TaskFacts(task="jsb", lower_is_better=True, trivial_score=TRIVIAL_SCORE, margin=0.1)
INFO = {"title": "JSB Chorales", "metric": "NLL", "metric_short": "NLL", "lower_is_better": True}


def settings(k: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"lr": 10 ** rng.uniform(-6, -2), "hidden": int(10 ** rng.uniform(1.3, 2.3)),
             "momentum": 1 - 10 ** rng.uniform(-2, 0), "noise": rng.uniform(0, 1)} for _ in range(k)]


def record(number: int, cell: str, hp: dict, test: float | None, status: str = "ok") -> TrialRecord:
    return TrialRecord(number=number, state="PRUNED" if status == "diverged" else "COMPLETE", task="jsb", cell=cell,
                       status=status, hyperparams=hp, param_count=10, train_curve=[1.0], valid_curve=[1.0],
                       best_valid=test, best_epoch=1, test_at_best=test, epochs=1, wall_time_s=1.0, cpu_time_s=1.0,
                       data_source="real", error=None)


def study(cell: str, records: list[TrialRecord]) -> StudyData:
    return StudyData(f"b/jsb/{cell}", "jsb", cell, {"task_info": INFO, "settings": {"trials": len(records)}}, records)


def task_of(scores: dict[str, list[float | None]], statuses: dict[str, list[str]] | None = None, facts=FACTS):
    points = settings(len(next(iter(scores.values()))))
    statuses = statuses or {}
    group = [study(cell, [record(k, cell, points[k], s, (statuses.get(cell) or ["ok"] * len(values))[k])
                          for k, s in enumerate(values)]) for cell, values in scores.items()]
    return analyse_task("jsb", group, FOREST, facts=facts)


RNG = np.random.default_rng(3)
# Scores spread widely over the settings (the setting matters far more than the cell), as in a random search.
BASE = 8.0 + 4.0 * RNG.random(16)


@pytest.fixture(autouse=True)
def _own_draws(request):
    """Each test draws from its own stream (seeded by its name): with xdist, which tests ran before it in a
    worker would otherwise decide its data."""
    global RNG
    RNG = np.random.default_rng(zlib.crc32(request.node.name.encode()))


def test_a_paired_shift_that_welch_misses_is_found_by_the_paired_test():
    shifted = BASE + 0.3 + 0.05 * RNG.standard_normal(16)
    task = task_of({"vanilla": list(BASE), "nig": list(shifted)})
    test, welch = task.test("nig"), task.welch["nig"]
    assert welch.p > 0.3  # unpaired: the settings' spread swamps the shift
    assert test.p == stats.wilcoxon(shifted - BASE).pvalue and test.p < 0.001
    assert test.verdict == "worse" and test.shift == pytest.approx(hodges_lehmann(shifted - BASE))


def test_one_runaway_trial_does_not_flip_a_verdict():
    shifted = list(BASE + 0.3 + 0.05 * RNG.standard_normal(16))
    better = list(BASE - 0.3 + 0.05 * RNG.standard_normal(16))
    before = task_of({"vanilla": list(BASE), "nig": shifted, "cifg": better})
    runaway = list(better)
    runaway[5] = 3e9  # recorded "ok", as a real JSB trial was
    after = task_of({"vanilla": list(BASE), "nig": shifted, "cifg": runaway})
    assert before.test("cifg").verdict == after.test("cifg").verdict == "better"
    assert before.test("nig").verdict == after.test("nig").verdict == "worse"
    assert after.summaries["cifg"].trivial == 1 and after.outcomes["cifg"][5] == TRIVIAL_SCORE  # counted, censored
    assert abs(after.welch["cifg"].diff) < 1  # the failure never enters a mean (3e9 would dominate it)


def test_a_cell_that_only_diverges_is_worse_and_its_failures_are_counted():
    task = task_of({"vanilla": list(BASE), "noaf": [None] * 16},
                   statuses={"noaf": ["diverged"] * 16})
    test = task.test("noaf")
    assert test.verdict == "worse" and test.pairs == 16
    assert task.summaries["noaf"].diverged == 16 and task.summaries["noaf"].median == TRIVIAL_SCORE
    assert task.divergence["noaf"].differs  # Fisher's exact test of the failure counts
    assert task.welch["noaf"] is None  # nothing to average


def test_failure_kinds_follow_the_trivial_predictor_and_the_metric_direction():
    hp = settings(1)[0]
    assert failure_kind(record(0, "v", hp, 19.9), FACTS) is None
    assert failure_kind(record(0, "v", hp, 20.0), FACTS) == TRIVIAL  # no better than trivial
    assert failure_kind(record(0, "v", hp, float("nan")), FACTS) == DIVERGED
    assert failure_kind(record(0, "v", hp, 5.0, status="diverged"), FACTS) == DIVERGED
    higher = TaskFacts(task="acc", lower_is_better=False, trivial_score=50.0)
    assert failure_kind(record(0, "v", hp, 49.0), higher) == TRIVIAL and failure_kind(record(0, "v", hp, 51.0), higher) is None


def test_holm_and_bh_adjusted_p_values_equal_statsmodels():
    cells = {"vanilla": list(BASE), "nig": list(BASE + 0.2 + 0.3 * RNG.standard_normal(16)),
             "nfg": list(BASE + 1.0 + 0.3 * RNG.standard_normal(16)), "np": list(BASE + 0.3 * RNG.standard_normal(16))}
    task = task_of(cells)
    tested = [t for t in task.paired if t.p is not None]
    expected = multipletests([t.p for t in tested], method="holm")[1]
    assert [t.p_holm for t in tested] == pytest.approx(list(expected), abs=0, rel=1e-12)
    other = task_of({"vanilla": list(BASE), "cifg": list(BASE - 0.4 + 0.3 * RNG.standard_normal(16))})
    q = report_q_values([task, other])
    ps = [t.p for t in tested] + [other.test("cifg").p]
    assert list(q.values()) == pytest.approx(list(multipletests(ps, method="fdr_bh")[1]), rel=1e-12)
    assert list(q) == [("jsb", "nig"), ("jsb", "nfg"), ("jsb", "np"), ("jsb", "cifg")]


def test_tost_equals_statsmodels_and_shows_equivalence_within_the_margin():
    rng = np.random.default_rng(7)  # its own draws: the module's RNG depends on which tests ran before (xdist)
    near = BASE + 0.01 * rng.standard_normal(16)
    task = task_of({"vanilla": list(BASE), "np": list(near)})
    test = task.test("np")
    assert test.tost == ttost_paired(near, BASE, -0.1, 0.1)[0]
    assert test.verdict == "equivalent"
    spread = 0.5 * np.array([1.0, -1.0] * 8) * np.linspace(0.5, 1.5, 16)  # zero-centred, far wider than the margin
    wide = task_of({"vanilla": list(BASE), "np": list(BASE + spread)}).test("np")
    assert wide.verdict == "inconclusive"  # neither significant nor shown equivalent: not "no difference"
    assert wide.mde is not None and wide.needed is not None and wide.needed > 16


def test_hodges_lehmann_and_its_interval_invert_scipys_wilcoxon():
    d = np.array([0.8, -0.2, 1.5, 0.3, 0.9, 2.2, -0.5, 1.1, 0.4, 0.7, 1.9, 0.05])
    walsh = [(a + b) / 2 for a, b in itertools.combinations_with_replacement(d, 2)]
    assert hodges_lehmann(d) == pytest.approx(float(np.median(walsh)))
    ci = shift_interval(d)
    assert ci.low <= hodges_lehmann(d) <= ci.high
    eps = 1e-9
    assert stats.wilcoxon(d - (ci.low + eps)).pvalue >= 0.05 > stats.wilcoxon(d - (ci.low - eps)).pvalue
    assert stats.wilcoxon(d - (ci.high - eps)).pvalue >= 0.05 > stats.wilcoxon(d - (ci.high + eps)).pvalue
    assert d.min() <= ci.low and ci.high <= d.max()  # never outside the observed differences
    assert shift_interval([1.0, 2.0, 3.0]) is None  # three pairs can reject nothing at 5 %: no bounded interval
    assert wilcoxon_p(np.zeros(5)) == 1.0


def test_minimum_detectable_shift_is_statsmodels_power_solution():
    d = np.array([0.3, -0.1, 0.4, 0.2, 0.0, 0.5, -0.2, 0.1])
    effect = TTestPower().solve_power(effect_size=None, nobs=8, alpha=0.05, power=0.8, alternative="two-sided")
    assert minimum_detectable(d) == pytest.approx(effect * np.std(d, ddof=1))


def test_friedman_is_scipys_on_the_trials_every_cell_finished():
    cells = {"vanilla": list(BASE), "nig": list(BASE + 0.2), "nfg": list(BASE + RNG.standard_normal(16))}
    task = task_of(cells)
    expected = stats.friedmanchisquare(*[np.asarray(v) for v in cells.values()])
    assert task.friedman.blocks == 16 and task.friedman.p == pytest.approx(expected.pvalue)


def test_no_interval_leaves_the_metric_range():
    rng = np.random.default_rng(5)  # its own draws: the module's RNG depends on which tests ran before (xdist)
    scores = list(0.2 + 2.0 * rng.random(16))  # a positive metric near zero, with runaway and failed trials
    other = list(0.3 + 2.0 * rng.random(16))
    other[3], other[4] = 1e9, None
    task = task_of({"vanilla": scores, "nig": other}, statuses={"nig": ["ok"] * 4 + ["diverged"] + ["ok"] * 11},
                   facts=TaskFacts(task="jsb", lower_is_better=True, trivial_score=3.0, margin=0.1))
    for cell, summary in task.summaries.items():
        values = list(task.outcomes[cell].values())
        assert 0 < summary.median_ci.low and summary.median_ci.high <= 3.0
        assert min(values) <= summary.median_ci.low <= summary.median_ci.high <= max(values)
        curve = task.best_of_k[cell]
        ulp = 1e-12 * max(map(abs, values))  # best-of-k values are weighted means: a rounding off the ends
        assert min(values) - ulp <= min(curve.low) and max(curve.high) <= max(values) + ulp
    d = [task.outcomes["nig"][k] - task.outcomes["vanilla"][k] for k in range(16)]
    ci = task.test("nig").shift_ci
    assert min(d) <= ci.low <= ci.high <= max(d)


def test_equivalence_is_never_claimed_from_too_few_pairs_or_from_no_spread():
    """Two cells that failed every trial alike differ by 0 on every pair: a t-based TOST has no standard
    error there, and 'equivalent' would say something the trials cannot show. Under MIN_EQUIVALENCE_PAIRS
    pairs no equivalence test either (the signed-rank test cannot reject anything there: symmetric)."""
    from cellc.analysis.paired import MIN_EQUIVALENCE_PAIRS

    same = task_of({"vanilla": list(BASE), "nfg": list(BASE)}).test("nfg")
    assert same.tost is None and same.verdict == "inconclusive"
    few = BASE[:MIN_EQUIVALENCE_PAIRS - 1]
    near = task_of({"vanilla": list(few), "np": list(few + 0.001 * RNG.standard_normal(len(few)))}).test("np")
    assert near.tost is None and near.verdict == "inconclusive"
    enough = BASE[:MIN_EQUIVALENCE_PAIRS]
    near = enough + 0.001 * RNG.standard_normal(len(enough))
    test = task_of({"vanilla": list(enough), "np": list(near)}).test("np")
    assert test.tost == ttost_paired(near, enough, -0.1, 0.1)[0] and test.verdict == "equivalent"


@pytest.mark.parametrize("pairs", [72, 73, 87, 92])
def test_detectable_shift_at_sizes_where_statsmodels_answers_with_an_array(pairs):
    """solve_power returns a one-element array at some sizes (73, 87, 92 pairs): the report must not fail there."""
    from statsmodels.stats.power import TTestPower

    from cellc.analysis.paired import minimum_detectable

    d = np.random.default_rng(pairs).normal(0.1, 1.0, pairs)
    expected = np.asarray(TTestPower().solve_power(effect_size=None, nobs=pairs, alpha=0.05, power=0.8,
                                                   alternative="two-sided")).reshape(-1)[0] * np.std(d, ddof=1)
    assert minimum_detectable(d) == pytest.approx(expected)
