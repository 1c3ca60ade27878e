"""Pure functions from stored trials to comparison tables (no I/O, no plotting).

Statistics use the test metric at the best validation epoch of every finished trial that has
one (``ok`` trials, and ``diverged`` trials that had a best epoch before diverging). "Best 10 %"
means the ceil(10 %) of those trials with the best validation score, as in the paper's figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pydantic import BaseModel
from scipy import stats

from cellc.harness.record import TrialRecord

SIGNIFICANCE = 0.05


class CellSummary(BaseModel):
    cell: str
    trials: int  # finished (ok + diverged)
    diverged: int
    failed: int  # crashed / interrupted, not counted
    scored: int  # trials with a test score
    mean_params: float | None
    mean: float | None
    median: float | None
    std: float | None
    best10_mean: float | None
    best_test: float | None
    cpu_time_s: float
    wall_time_s: float


class ComparisonRow(BaseModel):
    summary: CellSummary
    p_value: float | None  # Welch's t-test of test scores against the baseline cell
    significant: bool
    direction: str  # "better" / "worse" / "" relative to the baseline mean


def test_scores(records: Sequence[TrialRecord]) -> list[float]:
    return [r.test_at_best for r in records if r.finished and r.test_at_best is not None]


def best_fraction(records: Sequence[TrialRecord], lower_is_better: bool, fraction: float = 0.1) -> list[TrialRecord]:
    scored = [r for r in records if r.finished and r.test_at_best is not None and r.best_valid is not None]
    scored.sort(key=lambda r: r.best_valid if lower_is_better else -r.best_valid)
    return scored[: max(1, math.ceil(fraction * len(scored)))] if scored else []


def summarise_cell(cell: str, records: Sequence[TrialRecord], lower_is_better: bool) -> CellSummary:
    finished = [r for r in records if r.finished]
    scores = test_scores(records)
    params = [r.param_count for r in finished if r.param_count is not None]
    best = best_fraction(records, lower_is_better)
    return CellSummary(
        cell=cell,
        trials=len(finished),
        diverged=sum(1 for r in finished if r.status == "diverged"),
        failed=sum(1 for r in records if r.state == "FAIL"),
        scored=len(scores),
        mean_params=statistics.fmean(params) if params else None,
        mean=statistics.fmean(scores) if scores else None,
        median=statistics.median(scores) if scores else None,
        std=statistics.stdev(scores) if len(scores) > 1 else None,
        best10_mean=statistics.fmean(r.test_at_best for r in best) if best else None,
        best_test=(min(scores) if lower_is_better else max(scores)) if scores else None,
        cpu_time_s=sum(r.cpu_time_s for r in records),
        wall_time_s=sum(r.wall_time_s for r in records),
    )


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Welch's t-test p-value, or None when either side has fewer than two scores."""
    if len(a) < 2 or len(b) < 2:
        return None
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def compare_cells(
    records_by_cell: dict[str, Sequence[TrialRecord]], lower_is_better: bool, baseline: str = "vanilla"
) -> list[ComparisonRow]:
    """One row per cell (input order), each compared with ``baseline`` by Welch's t-test."""
    base_scores = test_scores(records_by_cell.get(baseline, []))
    rows = []
    for cell, records in records_by_cell.items():
        summary = summarise_cell(cell, records, lower_is_better)
        p = None if cell == baseline else welch_p(test_scores(records), base_scores)
        direction = ""
        if p is not None and summary.mean is not None and base_scores:
            better = summary.mean < statistics.fmean(base_scores)
            direction = "better" if better == lower_is_better else "worse"
        rows.append(ComparisonRow(summary=summary, p_value=p, significant=p is not None and p < SIGNIFICANCE,
                                  direction=direction))
    return rows
