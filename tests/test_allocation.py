"""`cellc plan`: the trials a budget affords, spent where they decide the most comparisons.

The allocation is checked against brute force over every count, the detectable shift against statsmodels
directly, and a task's comparisons against the report's own paired tests (one computation, two readers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellc.analysis.allocation import Comparison, TaskCost, allocate, task_costs
from cellc.analysis.load import load_bench, facts_from_studies
from cellc.analysis.paired import detectable_shift, minimum_detectable
from cellc.analysis.task_analysis import analyse_task, group_by_task
from cellc.cli import main
from cellc.errors import UsageError

from planted_bench import BENCH, plant_bench


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    plant_bench(root, trials=12)
    return root


def test_the_detectable_shift_is_statsmodels_paired_t_power():
    from statsmodels.stats.power import TTestPower

    for pairs, sd in ((6, 1.0), (30, 0.37), (73, 2.5), (200, 0.01)):
        effect = TTestPower().solve_power(effect_size=None, nobs=pairs, alpha=0.05, power=0.8, alternative="two-sided")
        assert detectable_shift(pairs, sd) == pytest.approx(float(np.ravel(effect)[0]) * sd, rel=1e-9)
    d = np.random.default_rng(0).normal(size=25)
    assert minimum_detectable(d) == detectable_shift(25, float(np.std(d, ddof=1)))
    assert detectable_shift(1, 1.0) is None and detectable_shift(10, 0.0) is None


def _task(name: str, seconds: float, needed: list[int | None], trials: int = 10) -> TaskCost:
    return TaskCost(task=name, title=name, metric="", margin=1.0, trials=trials, seconds=seconds,
                    comparisons=tuple(Comparison(f"c{k}", 1.0, n) for k, n in enumerate(needed)))


needs = st.lists(st.one_of(st.none(), st.integers(2, 80)), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(5, 40), needs), min_size=1, max_size=3), st.floats(30, 1200))
def test_the_plan_decides_as_many_comparisons_as_any_affordable_plan(spec, budget):
    tasks = [_task(f"t{k}", seconds, needed) for k, (seconds, needed) in enumerate(spec)]
    minimum = 6
    if sum(minimum * t.seconds for t in tasks) > budget:
        with pytest.raises(UsageError, match="affords fewer than 6 trials per task"):
            allocate(tasks, budget, minimum)
        return
    plan = allocate(tasks, budget, minimum)
    assert sum(plan[t.task] * t.seconds for t in tasks) <= budget + 1e-9  # within the budget
    assert all(plan[t.task] >= minimum for t in tasks)
    # brute force: every affordable count of every task (numpy grids over the counts)
    counts = [np.arange(minimum, int(budget // t.seconds) + 1) for t in tasks]
    axes = np.ix_(*[np.arange(len(c)) for c in counts])  # one broadcast axis per task
    cost = sum(c[axis] * t.seconds for c, axis, t in zip(counts, axes, tasks))
    decided = sum(np.array([t.decided(int(n)) for n in c])[axis] for c, axis, t in zip(counts, axes, tasks))
    assert sum(t.decided(plan[t.task]) for t in tasks) == decided[cost <= budget].max()
    # what is left would not buy one more trial of every task: the budget is spent
    assert budget - sum(plan[t.task] * t.seconds for t in tasks) < sum(t.seconds for t in tasks) + 1e-9


def test_a_task_s_comparisons_are_the_report_s_paired_tests(planted):
    studies = load_bench(f"sqlite:///{planted / 'studies.db'}", BENCH)
    facts = facts_from_studies(studies)
    costs = {t.task: t for t in task_costs(studies, facts)}
    for task, group in group_by_task(studies).items():
        analysis = analyse_task(task, group, facts=facts[task])
        tested = {p.cell: p for p in analysis.paired if p.verdict != "baseline"}
        assert {c.cell: c.needed for c in costs[task].comparisons} == {c: p.needed for c, p in tested.items()}
        mean_walls = [np.mean([r.wall_time_s for r in s.records if r.finished]) for s in group]
        assert costs[task].seconds == pytest.approx(sum(mean_walls))
        assert costs[task].trials == 12


def test_cellc_plan_prints_the_plan_and_refuses_bad_budgets(planted, tmp_path, capsys):
    trials = tmp_path / "trials.jsonl.xz"
    assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(trials)]) == 0
    capsys.readouterr()
    assert main(["plan", "--trials", str(trials), "--hours", "1", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "Plan for 1 h on 2 worker(s)" in out and "| JSB Chorales | 12 |" in out and "| TIMIT | 12 |" in out
    for argv, message in ((["--hours", "0"], "--hours 0.0: must be a positive number"),
                          (["--hours", "nan"], "must be a positive number"),
                          (["--workers", "0"], "--workers 0: must be at least 1"),
                          (["--hours", "0.00001"], "affords fewer than 6 trials per task")):
        assert main(["plan", "--trials", str(trials), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err
