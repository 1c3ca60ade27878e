"""A trial's outcome for the statistics: its score, or a failure counted as the worst score.

A finished trial (ok or diverged) *fails* when

- it diverged: status ``diverged``, or no finite test score (NaN/inf, or beyond :data:`MAX_METRIC`);
- or it ended no better than the task's trivial predictor (:meth:`cellc.tasks.base.Task.trivial_score`,
  fitted on the training data: a network that learnt nothing the training frequencies do not say).

Failures are counted (and tested with Fisher's exact test) and never enter a mean. For the rank-based
tests a trial's *outcome* is its test score *censored* at the trivial predictor's score: a failure
counts exactly as the trivial predictor, which is worse than every trial that did not fail, so all
failures tie for the worst rank and no runaway score (an NLL of 3e9) weighs more than any other
failure. This applies to trials stored by any version of cellc: it needs only the stored status and
scores, and the task's trivial score (stored with newer studies, else computed from the task's data,
see :mod:`cellc.analysis.load`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cellc.harness.record import TrialRecord

# A score beyond this is treated like a non-finite one: its square would overflow a variance.
MAX_METRIC = 1e100

DIVERGED = "diverged"
TRIVIAL = "no better than trivial"


@dataclass(frozen=True)
class TaskFacts:
    """What the analysis needs about a task beyond its trials (one per task, from its task module)."""

    task: str
    lower_is_better: bool
    trivial_score: float | None  # test metric of the trivial predictor (None: unknown)
    trivial_predictor: str = ""
    margin: float | None = None  # equivalence margin, metric units
    margin_reason: str = ""
    note: str = ""  # why the trivial score is unknown, when it is

    def better(self, a: float, b: float) -> bool:
        """``a`` is strictly better than ``b`` on this task's metric."""
        return a < b if self.lower_is_better else a > b


def failure_kind(record: TrialRecord, facts: TaskFacts) -> str | None:
    """``"diverged"``, ``"no better than trivial"`` or None (usable, or not finished)."""
    if not record.finished:
        return None
    score = record.test_at_best
    if record.status == "diverged" or score is None or not math.isfinite(score) or abs(score) > MAX_METRIC:
        return DIVERGED
    if facts.trivial_score is not None and not facts.better(score, facts.trivial_score):
        return TRIVIAL
    return None


def worst_score(records: list[TrialRecord], facts: TaskFacts) -> float | None:
    """The score a failure counts as: the trivial predictor's, else (unknown) the worst usable score seen."""
    if facts.trivial_score is not None:
        return facts.trivial_score
    usable = [float(r.test_at_best) for r in records if r.finished and failure_kind(r, facts) is None]  # type: ignore[arg-type]
    if not usable:
        return None
    return max(usable) if facts.lower_is_better else min(usable)


def outcome(record: TrialRecord, facts: TaskFacts, worst: float | None) -> float | None:
    """The censored score of a finished trial (None for an unfinished one, or with nothing to censor at)."""
    if not record.finished:
        return None
    if failure_kind(record, facts) is not None:
        return worst
    return float(record.test_at_best)  # type: ignore[arg-type]
