"""Report v1: pure table functions on hand-made trial records, and the rendered markdown."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from cellc.analysis.load import StudyData
from cellc.analysis.report import render_report
from cellc.analysis.tables import best_fraction, compare_cells, summarise_cell, welch_p
from cellc.harness.record import TrialRecord


def record(number: int, test: float | None, valid: float | None = None, state: str = "COMPLETE",
           status: str = "ok", params: int = 1000, cpu: float = 10.0) -> TrialRecord:
    return TrialRecord(
        number=number, state=state, task="jsb", cell="x", status=status,
        hyperparams={"hidden": 20, "lr": 1e-3, "momentum": 0.9, "noise": 0.1}, param_count=params,
        train_curve=[], valid_curve=[], best_valid=valid if valid is not None else test, best_epoch=1,
        test_at_best=test, epochs=1, wall_time_s=cpu, cpu_time_s=cpu, data_source="real", error=None,
    )


def test_summary_statistics_and_exclusions():
    records = [record(i, t, params=p) for i, (t, p) in enumerate([(9.0, 100), (10.0, 200), (11.0, 300)])]
    records += [record(3, None, state="PRUNED", status="diverged", params=400),
                record(4, 1.0, state="FAIL", status="interrupted")]
    s = summarise_cell("x", records, lower_is_better=True)
    assert (s.trials, s.diverged, s.failed, s.scored) == (4, 1, 1, 3)
    assert s.mean == pytest.approx(10.0) and s.median == 10.0 and s.std == pytest.approx(1.0)
    assert s.mean_params == pytest.approx(250.0)  # finished trials only, diverged included
    assert s.best_test == 9.0  # the failed trial's 1.0 is not counted
    assert s.cpu_time_s == pytest.approx(50.0)


def test_best_ten_percent_is_chosen_by_validation_not_test():
    # 20 trials: validation ranks trials 0 and 1 best, although their test scores are poor.
    records = [record(i, test=100.0 + i if i < 2 else float(i), valid=float(i)) for i in range(20)]
    best = best_fraction(records, lower_is_better=True)
    assert [r.number for r in best] == [0, 1]
    assert summarise_cell("x", records, True).best10_mean == pytest.approx(100.5)
    higher = best_fraction(records, lower_is_better=False)
    assert [r.number for r in higher] == [19, 18]


def test_welch_p_matches_scipy_and_marks_significance():
    a, b = [8.0, 8.1, 8.2, 8.05], [9.0, 9.2, 9.1, 9.3]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p([1.0], b) is None
    rows = compare_cells({"vanilla": [record(i, t) for i, t in enumerate(a)],
                          "nfg": [record(i, t) for i, t in enumerate(b)],
                          "np": [record(i, t) for i, t in enumerate([8.0, 8.2, 8.1, 8.06])]}, True)
    by_cell = {r.summary.cell: r for r in rows}
    assert by_cell["vanilla"].p_value is None
    assert by_cell["nfg"].significant and by_cell["nfg"].direction == "worse"
    assert not by_cell["np"].significant


def test_rendered_report_has_table_source_settings_and_command():
    settings = {"profile": "quick", "trials": 4, "max_epochs": 12, "patience": 4, "train_subset": 60,
                "batch_size": 1, "init_std": 0.1, "backend": "auto", "seed": 0,
                "space": {k: {"low": 1.0, "high": 2.0} for k in ("hidden", "lr", "one_minus_momentum", "noise")}}
    info = {"title": "JSB Chorales", "metric": "NLL per time step", "lower_is_better": True}
    studies = [
        StudyData(f"quick/jsb/{cell}", "jsb", cell,
                  {"settings": settings, "task_info": info, "data_source": "real",
                   "command": "cellc bench --tasks jsb --cells vanilla,nfg --profile quick"},
                  [record(i, t + shift, cpu=1800.0) for i, t in enumerate([8.0, 8.1, 8.2, 8.05])])
        for cell, shift in (("vanilla", 0.0), ("nfg", 1.0))
    ]
    text = render_report("quick", studies)
    assert "## JSB Chorales" in text and "**real**" in text and "lower is better" in text
    assert "8 finished of 8 targeted" in text and "4.00 h" in text
    assert "cellc bench --tasks jsb --cells vanilla,nfg --profile quick" in text
    lines = [line for line in text.splitlines() if line.startswith("| nfg")]
    assert len(lines) == 1 and "* (worse)" in lines[0] and "9.088" in lines[0]
    assert not math.isnan(float(lines[0].split("|")[5]))
