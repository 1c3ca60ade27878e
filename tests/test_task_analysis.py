"""One task's analysis on synthetic trials: the forest sees one point per setting (median over the cells),
a constant metric attributes nothing, the best single result is chosen by validation, data sources label
the task, and absurd scores are left out rather than crashing the report."""

from __future__ import annotations

import math

import numpy as np

from cellc.analysis import document
from cellc.analysis.fanova import ForestSettings
from cellc.analysis.load import StudyData
from cellc.analysis.paper import best_row, comparable
from cellc.analysis.task_analysis import analyse_task
from cellc.harness.record import TrialRecord

INFO = {"title": "JSB Chorales", "metric": "NLL", "metric_short": "NLL", "lower_is_better": True}
FOREST = ForestSettings(trees=16, resamples=20)


def settings(k: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"lr": 10 ** rng.uniform(-6, -2), "hidden": int(10 ** rng.uniform(1.3, 2.3)),
             "momentum": 1 - 10 ** rng.uniform(-2, 0), "noise": rng.uniform(0, 1)} for _ in range(k)]


def record(number, cell, hp, test, valid=None, source="real") -> TrialRecord:
    return TrialRecord(number=number, state="COMPLETE", task="jsb", cell=cell, status="ok", hyperparams=hp,
                       param_count=10, train_curve=[1.0], valid_curve=[1.0], best_valid=test if valid is None else valid,
                       best_epoch=1, test_at_best=test, epochs=1, wall_time_s=1.0 + hp["hidden"] / 100,
                       cpu_time_s=1.0, data_source=source, error=None)


def study(cell, records) -> StudyData:
    return StudyData(f"b/jsb/{cell}", "jsb", cell, {"task_info": INFO, "settings": {"trials": len(records)}}, records)


def lr_metric(hp) -> float:
    return 10 + 2 * (math.log10(hp["lr"]) + 4) ** 2  # only the learning rate matters


def test_the_forest_sees_each_setting_once_and_one_runaway_trial_does_not_carry_it():
    points = settings(30)
    group = []
    for cell in ("vanilla", "nfg", "noaf"):
        records = [record(k, cell, hp, lr_metric(hp)) for k, hp in enumerate(points)]
        if cell == "noaf":
            records[7] = record(7, cell, points[7], 3700.0)  # one runaway trial, as a real NOAF run had
        group.append(study(cell, records))
    task = analyse_task("jsb", group, FOREST)
    assert len(task.samples) == 90 and len(task.fit) == 30 and task.fit.trial_count == 90
    assert list(task.fit.trials) == [3] * 30
    lr = next(c for c in task.importance.main if c.dims == (0,))
    assert lr.fraction > 0.8, task.importance  # the outlier (a mean would follow it) does not move the finding
    assert document.fit_size(task) == "90 trials at 30 settings"  # what the figure titles say
    text = "\n".join(document.importance_section([task], document.ReportBundle("", figure_dir="f"), FOREST).lines)
    assert "one point per setting" in text


def test_a_constant_metric_attributes_nothing():
    points = settings(12)
    task = analyse_task("jsb", [study(c, [record(k, c, hp, 100.0) for k, hp in enumerate(points)])
                                for c in ("vanilla", "nfg")], FOREST)
    assert task.constant_metric and task.importance is None and task.metric_forest is None
    text = "\n".join(document.importance_section([task], document.ReportBundle("", figure_dir="f"), FOREST).lines)
    assert "does not vary over the 12 settings" in text
    bundle = document.ReportBundle("", figure_dir="f")
    assert "most important hyper-parameter" not in "\n".join(document.summary_section([task], bundle))


def test_best_single_result_is_the_best_validation_trials_test():
    points = settings(4)
    vanilla = [record(k, "vanilla", hp, test=9.0 + k, valid=9.0 + k) for k, hp in enumerate(points)]
    lucky = [record(k, "nfg", hp, test=5.0 if k == 3 else 9.5, valid=20.0 if k == 3 else 9.5)
             for k, hp in enumerate(points)]  # its lowest test score has a poor validation score
    row = best_row(analyse_task("jsb", [study("vanilla", vanilla), study("nfg", lucky)], FOREST))
    assert row.ours == "9.000 (VANILLA)"


def test_sources_label_the_task():
    points = settings(3)
    real = study("vanilla", [record(k, "vanilla", hp, 10.0 + k) for k, hp in enumerate(points)])
    rebuilt = study("nfg", [record(k, "nfg", hp, 11.0 + k, source="rebuilt from music21") for k, hp in enumerate(points)])
    proxy = study("nig", [record(k, "nig", hp, 11.0 + k, source="proxy") for k, hp in enumerate(points)])
    task = analyse_task("jsb", [real, rebuilt], FOREST)
    assert not task.is_proxy and task.mixed_sources  # the real music, twice derived: not a proxy, but mixed
    assert not comparable(task)  # not set beside the paper's findings
    assert comparable(analyse_task("jsb", [real], FOREST))
    assert analyse_task("jsb", [real, proxy], FOREST).is_proxy


def test_absurd_scores_are_left_out_not_a_crash():
    points = settings(10)
    records = [record(k, "vanilla", hp, lr_metric(hp)) for k, hp in enumerate(points)]
    records[2] = record(2, "vanilla", points[2], 1e155)
    other = [record(k, "nfg", hp, lr_metric(hp) + 1) for k, hp in enumerate(points)]
    task = analyse_task("jsb", [study("vanilla", records), study("nfg", other)], FOREST)
    assert len(task.samples) == 20 and task.test("nfg") is not None  # the absurd score is a failure, not a crash
    assert task.summaries["vanilla"].diverged == 1
