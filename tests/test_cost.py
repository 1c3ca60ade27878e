"""The bench's cost model (cellc/harness/cost.py) and the text built on it (cellc/harness/progress.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest

from cellc.harness.cost import (
    PRIOR_TRIALS,
    Calibrated,
    Calibration,
    CostModel,
    PlannedTrial,
    calibrate,
    calibration_sizes,
    planned_hidden,
    prior_epochs,
)
from cellc.harness.profiles import apply_overrides, get_profile
from cellc.harness.progress import UnitState, dispatch_order, duration, machines_needed
from cellc.harness.search import SeededRandomSampler, distributions

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROFILE = get_profile("quick")


def flat(task: str = "t", cell: str = "c", epoch: float = 1.0, test: float = 0.0) -> Calibration:
    """An epoch costs ``epoch`` CPU seconds (training only) at every size; wall = CPU."""
    return Calibration(task=task, cell=cell, hidden=[20, 200], train_s=[epoch] * 2, valid_s=[0.0] * 2,
                       test_s=[test] * 2, train_cpu_s=[epoch] * 2, valid_cpu_s=[0.0] * 2, test_cpu_s=[test] * 2)


def model(*cals: Calibration, workers: int = 1, profile=PROFILE) -> CostModel:
    return CostModel(Calibrated(pairs={(c.task, c.cell): c for c in cals}), {c.task: profile for c in cals}, workers)


def test_planned_hidden_sizes_are_the_ones_the_bench_sampler_draws():
    study = optuna.create_study(sampler=SeededRandomSampler(7))
    space = distributions(PROFILE.space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drawn = [study.ask(space).params["hidden"] for _ in range(6)]
    assert planned_hidden(PROFILE, 7, range(6)) == drawn
    assert planned_hidden(PROFILE, 7, [4]) == drawn[4:5]
    assert len(set(drawn)) > 1


def test_calibration_interpolates_linearly_in_hidden_size_like_numpy():
    cal = Calibration(task="t", cell="c", hidden=[20, 63, 200], train_s=[1, 2, 9], valid_s=[0, 0, 0], test_s=[0, 0, 0],
                      train_cpu_s=[1.0, 2.0, 9.0], valid_cpu_s=[0.5, 0.5, 1.5], test_cpu_s=[0.1, 0.1, 0.1])
    for hidden in (20, 40, 63, 150, 200):
        train, valid, test = cal.at(hidden)
        assert train == pytest.approx(np.interp(hidden, [20, 63, 200], [1, 2, 9]))
        assert valid == pytest.approx(np.interp(hidden, [20, 63, 200], [0.5, 0.5, 1.5])) and test == pytest.approx(0.1)
    assert calibration_sizes(PROFILE) == [20, 63, 200]
    assert calibration_sizes(get_profile("smoke")) == [11]  # 8..16: narrower than 3x, one size


def test_trial_seconds_use_epochs_from_the_profile_until_trials_finish():
    m = model(flat(epoch=2.0, test=1.0))
    prior = prior_epochs(PROFILE)
    assert PROFILE.patience + 1 <= prior <= PROFILE.max_epochs
    assert m.trial_seconds("t", "c", 50) == pytest.approx(prior * 2.0 + 1.0)
    # finished trials ran 5 epochs in twice the modelled time: estimates move toward both, weighted by count
    for _ in range(PRIOR_TRIALS):
        m.observe("t", "c", 50, 5, wall_s=2 * (5 * 2.0 + 1.0))
    assert m.epochs("t") == pytest.approx((prior + 5) / 2)
    assert m.scale("t") == pytest.approx(1.5)
    assert m.trial_seconds("t", "c", 50) == pytest.approx(1.5 * ((prior + 5) / 2 * 2.0 + 1.0))
    assert m.trial_seconds("t", "other", 50) is None  # no calibration, no estimate


def test_wall_time_schedules_trials_in_order_on_the_first_free_worker():
    m = model(flat(epoch=1.0), workers=2)
    e = m.epochs("t")
    trials = [PlannedTrial(task="t", cell="c", number=k, hidden=50) for k in range(3)]
    assert m.wall_seconds(trials) == pytest.approx(2 * e)  # two at once, then the third
    assert m.wall_seconds(trials[:2]) == pytest.approx(e)
    # a running trial that has spent half its estimate has half to go
    assert m.wall_seconds(trials[:1], running=[(trials[2], e / 2)]) == pytest.approx(e)
    assert m.cpu_seconds(trials) == pytest.approx(3 * e)
    assert m.wall_seconds([PlannedTrial(task="t", cell="nope", number=0, hidden=50)]) is None


def test_machines_needed_is_the_fewest_that_meet_the_target():
    m = model(flat(epoch=1.0), workers=2)
    e = m.epochs("t")
    trials = [PlannedTrial(task="t", cell="c", number=k, hidden=50) for k in range(10)]
    assert machines_needed(m, trials, 2, target_s=5 * e) == 1
    assert machines_needed(m, trials, 2, target_s=2 * e) == 3  # 10 trials on 6 workers: 2 rounds
    assert machines_needed(m, trials, 2, target_s=e) == 5
    assert machines_needed(m, trials, 2, target_s=e / 2) is None  # one trial alone is longer
    assert m.workers == 2  # left as it was


def test_dispatch_order_is_round_robin_over_studies_and_a_failure_is_planned_again():
    small = apply_overrides(PROFILE, {"space": {"hidden": {"low": 20, "high": 30}}})
    a = UnitState("t", "a", small, 0, next_number=0, wanted=2)
    b = UnitState("t", "b", small, 0, next_number=3, wanted=1)
    order = [(t.cell, t.number) for t in dispatch_order([a, b])]
    assert order == [("a", 0), ("b", 3), ("a", 1)]
    a.again()
    assert [t.number for t in a.pending] == [0, 1, 2]
    assert all(20 <= t.hidden <= 30 for t in a.pending)


def test_duration_text():
    assert duration(None) == "unknown" and duration(40) == "40 s" and duration(12 * 60) == "12 min"
    assert duration(3900) == "1 h 05 min" and duration(3 * 86400) == "3.0 days" and duration(0.2) == "under 1 s"
    from cellc.harness.progress import cpu_hours_text

    assert [cpu_hours_text(s) for s in (0.28, 90, 5868, 486_000)] == ["< 0.01", "0.025", "1.63", "135"]


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_ROOT / "jsb-chorales").is_dir(), reason="../shared/data missing")
def test_calibration_measures_each_cell_and_leaves_out_one_that_fails():
    smoke = apply_overrides(get_profile("smoke"), {"space": {"hidden": {"low": 8, "high": 32}}})
    errors: list[str] = []
    got = calibrate([("jsb", "vanilla"), ("jsb", "no-such-cell")], {"jsb": smoke}, workers=0,
                    data_dir=str(DATA_ROOT), backend="eager", layer_factory="cellc.harness.cells:layer_class",
                    on_error=errors.append)
    assert list(got.pairs) == [("jsb", "vanilla")]
    cal = got.pairs["jsb", "vanilla"]
    assert cal.hidden == [8, 16, 32]
    assert all(v > 0 for v in cal.train_cpu_s + cal.valid_cpu_s + cal.test_cpu_s + cal.train_s)
    assert len(errors) == 1 and "jsb/no-such-cell" in errors[0]
    m = CostModel(got, {"jsb": smoke}, 1)
    assert m.contention() >= 1.0 and m.startup_seconds() > 0
    assert m.trial_seconds("jsb", "vanilla", 32) > 0


def test_plan_names_tasks_cells_data_storage_workers_report_and_what_is_kept():
    from cellc.harness.progress import plan_text

    text = plan_text(name="quick", finished={("jsb", "a"): 3, ("jsb", "b"): 1}, targets={"jsb": 4}, cells=["a", "b"],
                     profiles={"jsb": PROFILE}, profile_name="quick", data={"jsb": ("real", "/data/jsb.json")},
                     storage="postgresql://me:***@db/cellc", workers=2, report="reports/quick.md")
    lines = text.splitlines()
    assert lines[0] == "bench quick: profile quick; 1 task(s) x 2 cell(s) (a, b); 8 trials"
    row = next(line for line in lines if line.strip().startswith("jsb"))
    assert row.split()[:6] == ["jsb", "2", "x", "4", "4", "4"] and "real: /data/jsb.json" in row
    assert "  storage: postgresql://me:***@db/cellc" in lines and "  report: reports/quick.md once every trial has finished" in lines
    assert "  resuming: 4 of 8 trials kept, 4 to run" in lines


def test_progress_bar_names_running_cells_counts_outcomes_and_updates_the_eta(capsys):
    from cellc.harness.progress import BenchProgress

    m = model(flat(cell="a", epoch=1.0), flat(cell="b", epoch=1.0), workers=2)
    units = [UnitState("t", c, PROFILE, 0, next_number=0, wanted=2) for c in ("a", "b")]
    bar = BenchProgress("quick", units, finished=0, total=4, model=m, workers=2, log=print)
    first = bar.eta()
    assert first == pytest.approx(2 * m.epochs("t"))
    bar.started(0, "t", "a", 0, units[0].pending[0].hidden)
    bar.started(1, "t", "b", 0, units[1].pending[0].hidden)
    assert "bench quick [t/a, t/b]" in bar.bar.desc
    bar.finished(0, "ok", epochs=2, wall_s=2.0)
    bar.finished(1, "diverged", epochs=1, wall_s=1.0)
    assert bar.counts == {"ok": 1, "diverged": 1, "failed": 0}
    assert bar.eta() < first  # two of four done, and they ran fewer epochs than assumed
    bar.started(2, "t", "a", 1, units[0].pending[0].hidden)
    bar.failed(2)
    assert [t.number for t in units[0].pending] == [2]  # the failed slot is planned again under a new number
    bar.close()
    assert "ok 1, diverged 1, crashed 1, ETA " in capsys.readouterr().err
