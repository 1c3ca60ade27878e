"""Early stopping with a warm-up (initial plateau of the validation metric) and secondary test metrics."""

from __future__ import annotations

import math

import optuna
import pytest
import torch

import cellc
from cellc.harness.profiles import PROFILES, apply_overrides
from cellc.harness.record import record_from_trial
from cellc.harness.train import TrainConfig, evaluate_scores, train_trial
from cellc.tasks import Sequence, TaskData
from cellc.tasks.iam import IamOnline
from cellc.tasks.jsb import JSBChorales
from cellc.tasks.timit import Timit

from test_train import toy_data


class ScriptedValidation(JSBChorales):
    """JSB whose evaluation metric (validation, then test) follows a script; training is real."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.script = iter(script)

    def score(self, outputs, batch):
        if torch.is_grad_enabled():  # a training batch: the real metric
            return super().score(outputs, batch)
        return next(self.script), 1.0  # one evaluation batch per split in toy_data


@pytest.fixture(scope="module")
def vanilla():
    return cellc.build("vanilla")


def run(vanilla, script: list[float], **settings) -> list[float]:
    config = TrainConfig(hidden=4, lr=1e-3, momentum=0.0, noise=0.0, seed=0, **settings)
    outcome = train_trial(ScriptedValidation(script + [0.0] * 40), toy_data(), vanilla, config)
    assert outcome.status == "ok"
    return outcome.valid_curve


def test_plain_patience_stops_on_the_initial_plateau(vanilla):
    curve = run(vanilla, [100.0] * 5 + [90.0, 80.0], max_epochs=20, patience=2, warmup=0)
    assert curve == [100.0] * 3


def test_warmup_lets_the_metric_leave_its_initial_value(vanilla):
    # Patience counts from the end of the plateau (epoch 5), then from the best epoch (7).
    curve = run(vanilla, [100.0] * 5 + [90.0, 80.0, 85.0, 86.0, 70.0], max_epochs=20, patience=2, warmup=10)
    assert curve == [100.0] * 5 + [90.0, 80.0, 85.0, 86.0]


def test_warmup_is_capped_for_a_metric_that_never_moves(vanilla):
    curve = run(vanilla, [100.0] * 30, max_epochs=30, patience=2, warmup=3)
    assert len(curve) == 3 + 2


def test_warmup_does_not_extend_a_metric_that_moves_at_once(vanilla):
    # Epoch 2 differs (worse): the plateau ended at epoch 1; later repeats of 100 do not extend it.
    curve = run(vanilla, [100.0, 101.0, 100.0, 102.0, 50.0], max_epochs=20, patience=2, warmup=10)
    assert curve == [100.0, 101.0, 100.0]


def test_quick_profile_sizes_iam_with_a_warmup_and_paper_keeps_its_search_space():
    quick = apply_overrides(PROFILES["quick"], IamOnline.profile_overrides.get("quick"))
    assert quick.warmup >= quick.patience and quick.trials >= 10
    assert quick.space.lr.low > PROFILES["quick"].space.lr.low  # learning rates that leave 100 % CER in time
    assert "paper" not in IamOnline.profile_overrides and PROFILES["paper"].warmup > 0


# -- secondary metrics ------------------------------------------------------------------------


def timit_toy(seed: int = 0) -> TaskData:
    gen = torch.Generator().manual_seed(seed)

    def utterance(length: int) -> Sequence:
        return Sequence(torch.randn(length, 39, generator=gen), torch.randint(0, 61, (length,), generator=gen))

    return TaskData(train=[utterance(20) for _ in range(4)], valid=[utterance(15), utterance(9)],
                    test=[utterance(17), utterance(11), utterance(6)], source="synthetic")


def test_secondary_scores_sum_over_batches_like_the_primary(vanilla):
    task, data = Timit(auto_generate=False), timit_toy()
    torch.manual_seed(0)
    network = task.build_network(vanilla, 6)
    sums = {"primary": [0.0, 0.0], "FER39 %": [0.0, 0.0]}
    with torch.no_grad():
        for seq in data.test:
            batch = task.collate([seq])
            outputs = network(batch.inputs, None)
            for name, (num, den) in {"primary": task.score(outputs, batch), **task.secondary_scores(outputs, batch)}.items():
                sums[name][0] += num
                sums[name][1] += den
    scores = evaluate_scores(network, task, data.test)  # one padded batch
    assert scores.primary == pytest.approx(sums["primary"][0] / sums["primary"][1], rel=1e-5)
    assert set(scores.secondary) == {"FER39 %"}
    assert scores.secondary["FER39 %"] == pytest.approx(sums["FER39 %"][0] / sums["FER39 %"][1], rel=1e-5)


def test_trial_reports_secondary_test_metrics_and_the_record_reads_them(vanilla):
    config = TrainConfig(hidden=6, lr=1e-2, momentum=0.9, noise=0.0, max_epochs=2, patience=2, seed=1)
    outcome = train_trial(Timit(auto_generate=False), timit_toy(), vanilla, config)
    assert outcome.status == "ok" and outcome.test_at_best is not None
    assert set(outcome.test_secondary_at_best) == {"FER39 %"}
    assert 0.0 <= outcome.test_secondary_at_best["FER39 %"] <= 100.0
    jsb = train_trial(JSBChorales(), toy_data(), vanilla, config)
    assert jsb.test_secondary_at_best == {}

    attrs = {**outcome.model_dump(), "data_source": "synthetic"}
    trial = optuna.trial.create_trial(value=1.0, user_attrs=attrs)
    record = record_from_trial(trial, {"task": "timit", "cell": "vanilla"})
    assert record.test_secondary_at_best == outcome.test_secondary_at_best
    del attrs["test_secondary_at_best"]  # stored before the attribute existed
    old = record_from_trial(optuna.trial.create_trial(value=1.0, user_attrs=attrs), {})
    assert old.test_secondary_at_best == {} and math.isfinite(old.test_at_best)
    assert Timit(auto_generate=False).describe()["secondary_metrics"] == Timit.secondary_metrics
