"""The random search: the paper's distributions as Optuna distributions, and a reproducible sampler.

Trial ``k`` of a study always draws the same hyper-parameters for a given search seed, however
often the study was interrupted and resumed and whichever worker or machine asked for it:
each draw is seeded by (search seed, trial number, parameter name).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler

from cellc.harness.profiles import SearchSpace


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Optuna distributions, in a fixed order: hidden, lr, one_minus_momentum, noise."""
    return {
        "hidden": IntDistribution(int(space.hidden.low), int(space.hidden.high), log=True),
        "lr": FloatDistribution(space.lr.low, space.lr.high, log=True),
        "one_minus_momentum": FloatDistribution(space.one_minus_momentum.low, space.one_minus_momentum.high, log=True),
        "noise": FloatDistribution(space.noise.low, space.noise.high),
    }


def hyperparameters(params: dict[str, Any]) -> dict[str, float | int]:
    """Training hyper-parameters from sampled Optuna params (momentum = 1 - one_minus_momentum)."""
    return {
        "hidden": int(params["hidden"]),
        "lr": float(params["lr"]),
        "momentum": 1.0 - float(params["one_minus_momentum"]),
        "noise": float(params["noise"]),
    }


class SeededRandomSampler(BaseSampler):
    """Independent uniform / log-uniform draws, seeded per (seed, trial number, parameter)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        entropy = [self.seed, trial.number, zlib.crc32(param_name.encode())]
        draw_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        return RandomSampler(seed=draw_seed).sample_independent(study, trial, param_name, param_distribution)
