"""The searched hyper-parameters as model inputs: (log10 lr, log10 hidden, log10(1 - momentum), noise).

In these coordinates the paper's random search is uniform over a box (log-uniform learning rate,
hidden size and 1 - momentum; uniform noise), so the uniform measure over :func:`search_box` is
the search distribution itself, which is what functional ANOVA integrates over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellc.analysis.outcomes import MAX_METRIC
from cellc.harness.record import TrialRecord


@dataclass(frozen=True)
class Axis:
    key: str  # search-space key in the study settings
    short: str  # column / table name
    label: str  # axis label, with units
    log: bool  # stored as log10 of the value

    def to_model(self, value: float) -> float:
        return math.log10(value) if self.log else value


AXES: tuple[Axis, ...] = (
    Axis("lr", "learning rate", "learning rate (log scale)", True),
    Axis("hidden", "hidden size", "hidden blocks per direction (log scale)", True),
    Axis("one_minus_momentum", "momentum", "1 - momentum (log scale)", True),
    Axis("noise", "input noise", "input noise std (input units)", False),
)
PAIRS: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(len(AXES)) for j in range(i + 1, len(AXES)))

# The paper's defaults (used when a study does not record its search space).
DEFAULT_SPACE: dict[str, dict[str, float]] = {
    "hidden": {"low": 20, "high": 200},
    "lr": {"low": 1e-6, "high": 1e-2},
    "one_minus_momentum": {"low": 0.01, "high": 1.0},
    "noise": {"low": 0.0, "high": 1.0},
}


def trial_point(record: TrialRecord) -> list[float] | None:
    """A trial's hyper-parameters in model coordinates (None if any is missing or invalid)."""
    hp = record.hyperparams
    raw = {
        "lr": hp.get("lr"),
        "hidden": hp.get("hidden"),
        "one_minus_momentum": None if hp.get("momentum") is None else 1.0 - float(hp["momentum"]),
        "noise": hp.get("noise"),
    }
    point = []
    for axis in AXES:
        value = raw[axis.key]
        if value is None or (axis.log and float(value) <= 0):
            return None
        point.append(axis.to_model(float(value)))
    return point


def search_box(space: Mapping[str, Any] | None) -> np.ndarray:
    """(len(AXES), 2) lower/upper bounds in model coordinates from a stored search space."""
    space = space or DEFAULT_SPACE
    rows = []
    for axis in AXES:
        rng = space.get(axis.key) or DEFAULT_SPACE[axis.key]
        rows.append([axis.to_model(float(rng["low"])), axis.to_model(float(rng["high"]))])
    return np.asarray(rows, dtype=float)


@dataclass(frozen=True)
class Samples:
    """Trials as arrays: X (n, 4) in model coordinates, the test metric and the training time. After
    :func:`per_setting`, one row per distinct setting and ``trials`` the number of trials behind each."""

    x: np.ndarray
    metric: np.ndarray
    seconds: np.ndarray
    cells: tuple[str, ...]
    trials: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.metric)

    @property
    def trial_count(self) -> int:
        return len(self) if self.trials is None else int(self.trials.sum())


def per_setting(samples: Samples) -> Samples:
    """One row per distinct hyper-parameter setting, holding the median over the trials that ran it.

    The search draws trial k's setting from k alone, so every cell of a task runs the same settings: pooled,
    the cells repeat each point, and a forest fit to the repeats counts copies as evidence (a leaf of two
    'trials' may be one setting twice). And the median, not the mean: one cell's runaway trial at a setting
    (an NLL in the thousands where the others score 10) would otherwise carry the task's variance. What is
    fit is then what a setting predicts for a cell of the family."""
    if not len(samples):
        return samples
    keys, inverse = np.unique(samples.x, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    metric = np.array([np.median(samples.metric[inverse == k]) for k in range(len(keys))])
    seconds = np.array([np.median(samples.seconds[inverse == k]) for k in range(len(keys))])
    return Samples(keys, metric, seconds, (), np.bincount(inverse, minlength=len(keys)))


def scored_samples(records: Sequence[TrialRecord],
                   score: Callable[[TrialRecord], float | None] | None = None) -> Samples:
    """Every finished trial (ok or diverged) with a score and valid hyper-parameters.

    ``score``: the value fit for a trial (None leaves it out); by default its finite test score, so that
    diverged trials that reached a best epoch are kept. Order: by (cell, trial number), so the arrays do
    not depend on storage order.
    """
    rows = []
    for r in sorted(records, key=lambda r: (r.cell, r.number)):
        if not r.finished:
            continue
        if score is None:
            value = r.test_at_best if r.test_at_best is not None and abs(r.test_at_best) <= MAX_METRIC else None
        else:
            value = score(r)
        point = trial_point(r)
        if value is None or point is None:
            continue
        rows.append((point, float(value), float(r.wall_time_s), r.cell))
    if not rows:
        return Samples(np.zeros((0, len(AXES))), np.zeros(0), np.zeros(0), ())
    return Samples(
        x=np.asarray([row[0] for row in rows], dtype=float),
        metric=np.asarray([row[1] for row in rows], dtype=float),
        seconds=np.asarray([row[2] for row in rows], dtype=float),
        cells=tuple(row[3] for row in rows),
    )
