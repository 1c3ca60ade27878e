"""Study profiles: how many trials and how long each may train.

- ``paper``: the LSTM Odyssey setting: 200 trials per (task, cell), at most 150 epochs, patience 15,
  the whole training set every epoch; warm-up 15 (see below).
- ``quick``: the README default, sized so that all tasks x the paper's nine cells finish in about an
  hour on a 2-core laptop with two workers and the default (compiled) backend, ~20 minutes per task.
  Its defaults: 16 trials, at most 25 epochs, patience 6, warm-up 6, and 80 random training
  sequences per epoch (validation and test always use the full splits). Each task sizes it for
  itself through ``Task.profile_overrides`` from its measured epoch cost; the arithmetic is in
  each task module (:mod:`cellc.tasks.jsb`, :mod:`cellc.tasks.timit`, :mod:`cellc.tasks.iam`).
- ``smoke``: about a minute in total; exercises every code path (used by the tests / CI).

``warmup``: leading epochs whose validation metric still equals the first epoch's (a CTC network
emitting only blanks scores exactly 100 % CER while its loss falls) do not count toward
``patience``, up to ``warmup`` of them; see :mod:`cellc.harness.train`. It is a no-op for metrics
that move from the second epoch on.

A task may size a profile for itself (``Task.profile_overrides``, e.g. fewer sequences per epoch
for long speech utterances); any field can then be overridden from the command line
(``--trials``, ``--max-epochs``, ...), which wins over both.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cellc.errors import UsageError


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float
    high: float


class SearchSpace(BaseModel):
    """The random-search distributions of the paper (ranges configurable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: Range = Range(low=20, high=200)  # log-uniform integer
    lr: Range = Range(low=1e-6, high=1e-2)  # log-uniform
    one_minus_momentum: Range = Range(low=0.01, high=1.0)  # log-uniform; momentum = 1 - this
    noise: Range = Range(low=0.0, high=1.0)  # uniform

    @model_validator(mode="after")
    def _within_domains(self) -> "SearchSpace":
        if self.hidden.low < 1:
            raise ValueError("hidden: LOW must be at least 1")
        if self.lr.low <= 0 or self.one_minus_momentum.low <= 0:
            raise ValueError("lr and one_minus_momentum are log-uniform: LOW must be positive")
        if self.one_minus_momentum.high > 1:
            raise ValueError("one_minus_momentum: HIGH must be at most 1 (momentum >= 0)")
        if self.noise.low < 0:
            raise ValueError("noise: LOW must not be negative")
        return self


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    trials: int = Field(ge=1, description="trials per (task, cell)")
    max_epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    warmup: int = Field(default=0, ge=0, description="leading epochs at the initial validation value not counted toward patience")
    train_subset: int | None = Field(default=None, ge=1, description="training sequences per epoch")
    batch_size: int = Field(default=1, ge=1)
    space: SearchSpace = SearchSpace()


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        trials=2,
        max_epochs=2,
        patience=2,
        warmup=0,
        train_subset=8,
        space=SearchSpace(hidden=Range(low=8, high=16)),
    ),
    "quick": Profile(name="quick", trials=16, max_epochs=25, patience=6, warmup=6, train_subset=80),
    "paper": Profile(name="paper", trials=200, max_epochs=150, patience=15, warmup=15),
}


def apply_overrides(profile: Profile, *layers: dict[str, Any] | None) -> Profile:
    """``profile`` with each layer of field overrides applied in turn (later layers win).

    ``space`` is merged per hyper-parameter, so a layer may change one range only. Layers are
    a task's own sizing (:attr:`cellc.tasks.base.Task.profile_overrides`) and then the command line.
    Raises pydantic's ValidationError for bad values.
    """
    data = profile.model_dump()
    for layer in layers:
        for key, value in (layer or {}).items():
            if key == "space":
                data["space"] = {**data["space"], **value}
            else:
                data[key] = value
    return Profile.model_validate(data)


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise UsageError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def parse_range(text: str, setting: str, integer: bool = False) -> Range:
    """``LOW:HIGH`` -> Range (UsageError naming ``setting`` on bad input); ``integer``: both whole numbers."""
    try:
        low_text, high_text = text.split(":")
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise UsageError(f"{setting}: expected LOW:HIGH, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UsageError(f"{setting}: LOW and HIGH must be finite numbers, got {text!r}")
    if integer and not (low.is_integer() and high.is_integer()):
        raise UsageError(f"{setting}: LOW and HIGH must be whole numbers, got {text!r}")
    if not low <= high:
        raise UsageError(f"{setting}: LOW must not exceed HIGH in {text!r}")
    return Range(low=low, high=high)
