"""Importance with uncertainty: a planted 70 % main effect / 30 % interaction lies inside the bootstrap intervals
at 500 settings; at 30 settings the forest underestimates the interaction and the report calls it undetermined."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cellc.analysis import document
from cellc.analysis.fanova import ForestSettings, bootstrap_importance, fanova
from cellc.analysis.hyperspace import search_box
from cellc.analysis.load import StudyData
from cellc.analysis.outcomes import TaskFacts
from cellc.analysis.paper import importance_rows
from cellc.analysis.task_analysis import analyse_task
from cellc.harness.record import TrialRecord

BOX = search_box(None)


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """y = a u + b u v, u and v the learning rate and hidden size scaled to [-1, 1]: var(a u) = 0.7, var(b u v) = 0.3."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(lo, hi, n) for lo, hi in BOX])
    u = 2 * (x[:, 0] - BOX[0, 0]) / (BOX[0, 1] - BOX[0, 0]) - 1
    v = 2 * (x[:, 1] - BOX[1, 0]) / (BOX[1, 1] - BOX[1, 0]) - 1
    return x, np.sqrt(0.7 * 3) * u + np.sqrt(0.3 * 9) * u * v


@pytest.mark.slow
def test_planted_70_30_lies_inside_the_bootstrap_intervals_at_500_settings():
    x, y = planted(500)
    settings = ForestSettings()
    result, _ = fanova(x, y, BOX, settings)
    intervals, kept = bootstrap_importance(x, y, BOX, settings)
    assert kept == settings.resamples == 200
    by = {c.dims: c for c in intervals}
    assert by[(0,)].low <= 0.7 <= by[(0,)].high
    assert by[(0, 1)].low <= 0.3 <= by[(0, 1)].high
    assert by[(1,)].high < 0.05 and by[(0, 2)].high < 0.05  # nothing else claims a share


def _trial(number: int, hp: dict, metric: float) -> TrialRecord:
    return TrialRecord(number=number, state="COMPLETE", task="jsb", cell="vanilla", status="ok", hyperparams=hp,
                       param_count=1, train_curve=[], valid_curve=[], best_valid=metric, best_epoch=1,
                       test_at_best=metric, epochs=1, wall_time_s=1.0, cpu_time_s=1.0, data_source="real", error=None)


@pytest.mark.slow
def test_at_30_settings_the_report_says_the_interaction_is_undetermined():
    x, y = planted(30)
    records = [_trial(k, {"lr": 10 ** p[0], "hidden": 10 ** p[1], "momentum": 1 - 10 ** p[2], "noise": p[3]},
                      float(10 ** y[k])) for k, p in enumerate(x)]  # fit on log10 of the metric: y again
    study = StudyData("b/jsb/vanilla", "jsb", "vanilla", {"task_info": {"title": "JSB Chorales", "metric_short": "NLL"},
                                                          "settings": {"trials": 30}}, records)
    facts = TaskFacts(task="jsb", lower_is_better=True, trivial_score=None)
    task = analyse_task("jsb", [study], ForestSettings(resamples=50), facts=facts)
    pair = next(c for c in task.importance.pairs if c.dims == (0, 1))
    assert pair.fraction < 0.2  # the forest sees far less than the planted 30 %
    assert not task.interactions_determined
    row = {r.finding: r for r in importance_rows(task)}["learning rate x hidden size interaction"]
    assert row.agreement is None and "undetermined below 100 settings (30 here)" in row.ours
    bundle = document.ReportBundle("", figure_dir="f")
    importance = document.importance_section([task], bundle, ForestSettings(resamples=50))
    interaction = document.interaction_section([task], bundle)
    text = "\n".join(importance.lines + interaction.lines)
    # a section returns the figures its text shows; the bundle is left alone
    assert list(importance.figures) == ["importance_jsb.png"] and not bundle.figures
    assert all(f"(f/{name})" in text for name in [*importance.figures, *interaction.figures])
    assert re.search(r"\| learning rate x hidden size +\| interaction \(undetermined\)", text)
    assert "Interactions are undetermined here: 30 settings, fewer than the 100 an interaction claim needs." in text
    assert "Undetermined: 30 settings" in text
