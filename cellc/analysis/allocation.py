"""Spending a study's next budget where it buys the most decisions: ``cellc plan``.

From a bench that ran (its trials file or storage), per task:

- **cost**: the seconds one trial number costs, i.e. each cell's mean wall time over its finished trials
  (measured as the bench ran, its workers side by side), summed over the task's cells; start-up (workers,
  data, compiling the cells) is not counted;
- **comparisons**: each cell against the baseline on the paired differences of their censored outcomes
  (:func:`cellc.analysis.task_analysis.task_outcomes`, the outcomes the report tests), with the pairs that
  would decide it (:func:`cellc.analysis.paired.trials_to_decide`: enough to detect the observed shift, or
  to show equivalence within the task's margin, each at 80 % power, paired-t approximation) and the
  differences' standard deviation.

The plan (:func:`allocate`) chooses trials per task to **maximise the comparisons expected to be decided**
within the budget, exactly (every task's candidate counts enumerated: its current count, the minimum, and
each of its comparisons' pairs to decide), ties going to the cheaper plan; the budget then left raises every
task's count by one common factor, since more pairs narrow every interval. Each task's detectable shift
(median over its comparisons, :func:`cellc.analysis.paired.detectable_shift`) is stated at both counts. All
of it is a paired-t approximation from the trials at hand: an estimate to plan with, not a result.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cellc.analysis.load import StudyData
from cellc.analysis.outcomes import TaskFacts
from cellc.analysis.paired import MAX_TRIALS_SHOWN, MIN_EQUIVALENCE_PAIRS, detectable_shift, paired_outcomes, trials_to_decide
from cellc.analysis.task_analysis import BASELINE, group_by_task, task_outcomes
from cellc.errors import UsageError


@dataclass(frozen=True)
class Comparison:
    cell: str
    sd: float | None  # of the paired differences (cell - baseline); None: fewer than two pairs
    needed: int | None  # pairs that would decide it (MAX_TRIALS_SHOWN + 1: more than that); None: unknown


@dataclass(frozen=True)
class TaskCost:
    task: str
    title: str
    metric: str
    margin: float | None
    trials: int  # trials per cell the bench ran (its target)
    seconds: float  # one trial number, every cell
    comparisons: tuple[Comparison, ...]

    def decided(self, n: int) -> int:
        """Comparisons expected to be decided with ``n`` pairs."""
        return sum(1 for c in self.comparisons if c.needed is not None and c.needed <= n)

    def detectable(self, n: int) -> float | None:
        """The median over the comparisons of the shift ``n`` pairs detect."""
        shifts = [s for c in self.comparisons if c.sd is not None and (s := detectable_shift(n, c.sd)) is not None]
        return statistics.median(shifts) if shifts else None


def task_costs(studies: Sequence[StudyData], facts: Mapping[str, TaskFacts], baseline: str = BASELINE
               ) -> list[TaskCost]:
    """Each task's cost per trial number and its comparisons against ``baseline``."""
    out = []
    for task, group in group_by_task(studies).items():
        info = group[0].attrs.get("task_info", {})
        fact = facts.get(task) or TaskFacts(task=task, lower_is_better=bool(info.get("lower_is_better", True)),
                                            trivial_score=None, note="not given")
        _, outcomes = task_outcomes(group, fact)
        seconds = 0.0
        for study in group:
            walls = [r.wall_time_s for r in study.records if r.finished]
            if not walls:
                raise UsageError(f"{study.name}: no finished trial, so no cost per trial to plan with")
            seconds += float(np.mean(walls))
        comparisons = []
        for cell in (s.cell for s in group if s.cell != baseline and baseline in outcomes):
            _, a, b = paired_outcomes(outcomes[cell], outcomes[baseline])
            d = a - b
            comparisons.append(Comparison(cell, float(np.std(d, ddof=1)) if len(d) > 1 else None,
                                          trials_to_decide(d, fact.margin)))
        out.append(TaskCost(task=task, title=str(info.get("title", task)), metric=str(info.get("metric_short", "")),
                            margin=fact.margin, trials=int(group[0].attrs.get("settings", {}).get("trials", 0)),
                            seconds=seconds, comparisons=tuple(comparisons)))
    return out


def allocate(tasks: Sequence[TaskCost], budget_s: float, minimum: int = MIN_EQUIVALENCE_PAIRS) -> dict[str, int]:
    """Trials per task: the most comparisons expected to be decided within ``budget_s`` seconds (exact), the
    cheaper of equals; then the budget left scales every count up by one factor."""
    floor_cost = sum(minimum * t.seconds for t in tasks)
    if floor_cost > budget_s:
        raise UsageError(f"the budget ({budget_s / 3600:.2f} worker-hours) affords fewer than {minimum} trials per "
                         f"task ({floor_cost / 3600:.2f} worker-hours); raise --hours or --workers")
    candidates = []
    for t in tasks:
        counts = {minimum, max(minimum, t.trials)} | {c.needed for c in t.comparisons
                                                       if c.needed is not None and minimum < c.needed <= MAX_TRIALS_SHOWN}
        candidates.append(sorted(n for n in counts if n * t.seconds <= budget_s))
    best: tuple[int, float, tuple[int, ...]] | None = None
    for counts in itertools.product(*candidates):
        cost = sum(n * t.seconds for n, t in zip(counts, tasks))
        if cost > budget_s:
            continue
        key = (-sum(t.decided(n) for n, t in zip(counts, tasks)), cost, counts)
        if best is None or key < best:
            best = key
    assert best is not None  # the minimum fits
    counts = best[2]
    factor = budget_s / best[1]
    return {t.task: max(n, math.floor(n * factor)) for n, t in zip(counts, tasks)}


def _shift(value: float | None, metric: str) -> str:
    return "n/a" if value is None else f"{value:.3g} {metric}".strip()


def plan_markdown(tasks: Sequence[TaskCost], plan: Mapping[str, int], hours: float, workers: int, source: str) -> str:
    """The plan as a markdown table with what it rests on."""
    budget = hours * workers * 3600
    spent = sum(plan[t.task] * t.seconds for t in tasks)
    rows = ["| task | trials now | seconds per trial number (all cells) | planned trials | comparisons decided: now → "
            "planned | median detectable shift: now → planned | margin |",
            "|---|---|---|---|---|---|---|"]
    for t in tasks:
        n = plan[t.task]
        rows.append(f"| {t.title} | {t.trials} | {t.seconds:.1f} | {n} | {t.decided(t.trials)} → {t.decided(n)} of "
                    f"{len(t.comparisons)} | {_shift(t.detectable(t.trials), t.metric)} → "
                    f"{_shift(t.detectable(n), t.metric)} | {_shift(t.margin, t.metric)} |")
    return "\n".join([
        f"Plan for {hours:g} h on {workers} worker(s) ({budget / 3600:.2f} worker-hours of trials; start-up not "
        f"counted), from the trials of `{source}`:", "", *rows, "",
        f"Planned trials cost {spent / 3600:.2f} worker-hours, {spent / workers / 60:.0f} min of wall time on "
        f"{workers} worker(s). A comparison counts as decided when its pairs reach those that would detect its "
        "observed shift or show equivalence within the margin at 80 % power; the detectable shift is the median "
        "over the task's cells against vanilla at 80 % power, alpha 0.05, unadjusted (paired-t approximation, "
        "statsmodels' TTestPower, on the censored outcomes' paired differences): estimates to plan with, not "
        "results.", ""])
