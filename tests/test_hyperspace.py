"""Trials as points of the search box: the coordinates functional ANOVA and the figures are computed in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellc.analysis.hyperspace import AXES, DEFAULT_SPACE, scored_samples, search_box, trial_point
from cellc.harness.record import TrialRecord


def record(number=0, cell="vanilla", state="COMPLETE", status="ok", test=10.0, **hyperparams) -> TrialRecord:
    hp = {"lr": 1e-3, "hidden": 100, "momentum": 0.9, "noise": 0.25, **hyperparams}
    return TrialRecord(number=number, state=state, task="jsb", cell=cell, status=status, hyperparams=hp,
                       param_count=1, train_curve=[1.0], valid_curve=[1.0], best_valid=1.0, best_epoch=1,
                       test_at_best=test, epochs=1, wall_time_s=2.0, cpu_time_s=2.0, data_source="real", error=None)


def test_axes_are_lr_hidden_one_minus_momentum_noise_in_model_coordinates():
    assert [a.key for a in AXES] == ["lr", "hidden", "one_minus_momentum", "noise"]
    point = trial_point(record(lr=1e-3, hidden=100, momentum=0.9, noise=0.25))
    assert point == pytest.approx([-3.0, 2.0, -1.0, 0.25])  # momentum 0.9 is 1 - 0.9 = 0.1 on its log axis
    assert trial_point(record(momentum=1.0)) is None  # 1 - momentum = 0 has no log
    assert trial_point(record(lr=0.0)) is None


def test_search_box_rows_follow_the_axes():
    box = search_box({"lr": {"low": 1e-5, "high": 1e-1}, "hidden": {"low": 10, "high": 1000},
                      "one_minus_momentum": {"low": 0.001, "high": 1.0}, "noise": {"low": 0.0, "high": 2.0}})
    np.testing.assert_allclose(box, [[-5, -1], [1, 3], [-3, 0], [0, 2]])
    default = search_box(None)  # a study that did not record its space: the paper's
    assert default[1].tolist() == pytest.approx([math.log10(DEFAULT_SPACE["hidden"]["low"]), math.log10(200)])


def test_scored_samples_keep_finished_scored_trials_in_a_stable_order():
    records = [
        record(number=1, cell="nfg", test=20.0, lr=1e-4),
        record(number=0, cell="vanilla", test=10.0),
        record(number=2, cell="vanilla", state="PRUNED", status="diverged", test=99.0),  # reached a best epoch
        record(number=3, cell="vanilla", state="FAIL", status="failed", test=5.0),  # not finished
        record(number=4, cell="vanilla", test=None),  # no test score
        record(number=5, cell="vanilla", test=math.inf),
        record(number=6, cell="vanilla", momentum=1.0),  # invalid point
    ]
    samples = scored_samples(list(reversed(records)))
    assert samples.cells == ("nfg", "vanilla", "vanilla")
    assert samples.metric.tolist() == [20.0, 10.0, 99.0]
    assert samples.x[0].tolist() == pytest.approx([-4.0, 2.0, -1.0, 0.25])
    assert np.all(samples.seconds == 2.0)
    assert len(scored_samples([])) == 0 and scored_samples([]).x.shape == (0, len(AXES))
