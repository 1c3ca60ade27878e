"""The report shows a task's secondary metric (TIMIT's FER39 %) and each task's own profile sizing."""

from __future__ import annotations

import statistics

import optuna

from cellc.analysis.context import gather_context
from cellc.analysis.document import build_report, outcome_table
from cellc.analysis.fanova import ForestSettings
from cellc.analysis.load import load_bench
from cellc.analysis.task_analysis import analyse_task, group_by_task
from cellc.analysis.task_analysis import usable

from planted_bench import BENCH, plant_bench

FAST = ForestSettings(trees=4, min_samples_leaf=2, seed=0, resamples=20)


def test_secondary_metric_column_and_per_task_settings(tmp_path):
    url = plant_bench(tmp_path, trials=8, cells=("vanilla", "nfg"))
    storage = optuna.storages.RDBStorage(url)
    for summary in optuna.get_all_study_summaries(storage):
        if "/timit/" in summary.study_name:  # TIMIT sized the profile for itself
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            study.set_user_attr("settings", {**study.user_attrs["settings"], "max_epochs": 40, "warmup": 20})
    studies = load_bench(url, BENCH)
    tasks = {t: analyse_task(t, g, FAST) for t, g in group_by_task(studies).items()}

    timit, jsb = tasks["timit"], tasks["jsb"]
    assert list(timit.secondary_metrics) == ["FER39 %"] and jsb.secondary_metrics == {}
    tested = usable(timit.records["nfg"], timit.facts)
    expected = statistics.median(r.test_at_best - 5.0 for r in tested)  # planted: FER39 = metric - 5
    median = timit.secondary["nfg"]["FER39 %"]
    assert median.n == len(tested) and abs(median.median - expected) < 1e-9
    assert median.ci.low <= median.median <= median.ci.high
    assert "median FER39 % [95 % CI]" in outcome_table(timit).splitlines()[0]
    assert f"{expected:.3f} [" in outcome_table(timit)
    assert "FER39" not in outcome_table(jsb)

    text = build_report(BENCH, studies, gather_context(["vanilla", "nfg"], "cellc report"), "fig", FAST).markdown
    assert "as each task sized it for itself" in text
    assert "  - TIMIT: 8 random-search trials per (task, cell), at most 40 epochs" in text and "warm-up 20" in text
    assert "  - JSB Chorales: 8 random-search trials per (task, cell), at most 12 epochs" in text
    assert "*FER39 %*: frame error % after folding 61 -> 39 phones" in text
