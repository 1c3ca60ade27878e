"""One trial: learning, reproducibility, early stopping, divergence, optimizer settings."""

from __future__ import annotations

import math

import pytest
import torch

import cellc
from cellc.harness.train import TrainConfig, evaluate, train_trial
from cellc.tasks import Sequence, TaskData
from cellc.tasks.jsb import JSBChorales


def toy_data(seed: int = 0) -> TaskData:
    """A tiny JSB-shaped problem: repeating chords, so a network can learn to predict them."""
    gen = torch.Generator().manual_seed(seed)

    def piece(length: int) -> Sequence:
        chords = torch.zeros(3, 88)
        for k in range(3):
            chords[k, torch.randint(30, 60, (3,), generator=gen)] = 1
        roll = chords[torch.arange(length + 1) % 3]
        return Sequence(roll[:-1].clone(), roll[1:].clone())

    return TaskData(train=[piece(12) for _ in range(6)], valid=[piece(9) for _ in range(3)],
                    test=[piece(10) for _ in range(3)], source="synthetic")


@pytest.fixture(scope="module")
def vanilla():
    return cellc.build("vanilla")


def config(**overrides) -> TrainConfig:
    base = dict(hidden=8, lr=1e-2, momentum=0.9, noise=0.0, max_epochs=4, patience=4, seed=3)
    return TrainConfig(**{**base, **overrides})


def test_trial_learns_and_reports_test_at_best_epoch(vanilla):
    outcome = train_trial(JSBChorales(), toy_data(), vanilla, config(lr=1e-1, max_epochs=6, patience=6))
    assert outcome.status == "ok"
    assert outcome.epochs == 6 == len(outcome.train_curve) == len(outcome.valid_curve)
    assert outcome.valid_curve[-1] < outcome.valid_curve[0]
    assert outcome.best_valid == min(outcome.valid_curve)
    assert outcome.valid_curve[outcome.best_epoch - 1] == outcome.best_valid
    assert outcome.test_at_best is not None and math.isfinite(outcome.test_at_best)
    expected_params = vanilla.parameter_count(88, 8) + 8 * 88 + 88
    assert outcome.param_count == expected_params


def test_same_seed_same_curves_different_seed_differs(vanilla):
    a = train_trial(JSBChorales(), toy_data(), vanilla, config(noise=0.3))
    b = train_trial(JSBChorales(), toy_data(), vanilla, config(noise=0.3))
    c = train_trial(JSBChorales(), toy_data(), vanilla, config(noise=0.3, seed=4))
    assert a.valid_curve == b.valid_curve and a.test_at_best == b.test_at_best
    assert a.valid_curve != c.valid_curve


def test_early_stopping_stops_after_patience(vanilla):
    # lr so small that validation barely moves: improvements are tiny but real, so use a frozen net.
    outcome = train_trial(JSBChorales(), toy_data(), vanilla, config(lr=1e-12, momentum=0.0, max_epochs=30, patience=2))
    assert outcome.epochs <= 30
    assert outcome.epochs - outcome.best_epoch <= 2
    if outcome.epochs < 30:
        assert outcome.epochs - outcome.best_epoch == 2


def test_diverging_trial_is_recorded_not_raised(vanilla):
    outcome = train_trial(JSBChorales(), toy_data(), vanilla, config(lr=1e35, momentum=0.0))
    assert outcome.status == "diverged"
    assert outcome.epochs < 4
    assert outcome.test_at_best is None or math.isfinite(outcome.test_at_best)


class Recorded(JSBChorales):
    """JSB that keeps the network a trial builds, and whose training loss turns NaN from a given epoch."""

    def __init__(self, nan_from_epoch: int | None = None):
        super().__init__()
        self.nan_from_epoch, self.epoch = nan_from_epoch, 1

    def build_network(self, layer_class, hidden_size):
        self.network = super().build_network(layer_class, hidden_size)
        return self.network

    def loss(self, outputs, batch):
        loss = super().loss(outputs, batch)
        return loss * math.nan if self.nan_from_epoch is not None and self.epoch >= self.nan_from_epoch else loss


def _snapshots(task):
    """on_epoch that keeps each epoch's weights (and tells the task which epoch comes next)."""
    kept = []

    def on_epoch(report):
        kept.append({k: v.detach().clone() for k, v in task.network.state_dict().items()})
        task.epoch = report.epoch + 1

    return kept, on_epoch


def test_test_score_is_the_best_epochs_weights(vanilla):
    """test_at_best is the test metric of the weights of the best validation epoch, not the last one."""
    task, data = Recorded(), toy_data()
    kept, on_epoch = _snapshots(task)
    outcome = train_trial(task, data, vanilla, config(lr=0.3, momentum=0.0, max_epochs=6, patience=6), on_epoch)
    assert outcome.status == "ok" and outcome.epochs == 6
    assert outcome.best_epoch < outcome.epochs  # this learning rate overshoots: the best is not the last
    task.network.load_state_dict(kept[outcome.best_epoch - 1])
    assert outcome.test_at_best == evaluate(task.network, task, data.test)
    task.network.load_state_dict(kept[-1])
    assert outcome.test_at_best != evaluate(task.network, task, data.test)


def test_divergence_keeps_the_result_before_it(vanilla):
    """A trial whose loss turns NaN in epoch 3 is 'diverged', keeps epochs 1-2, and is tested at the better."""
    task, data = Recorded(nan_from_epoch=3), toy_data()
    kept, on_epoch = _snapshots(task)
    outcome = train_trial(task, data, vanilla, config(lr=1e-1, max_epochs=6, patience=6), on_epoch)
    assert outcome.status == "diverged"
    assert outcome.epochs == 2 == len(outcome.valid_curve) == len(kept)
    assert outcome.best_epoch in (1, 2) and outcome.best_valid == min(outcome.valid_curve)
    task.network.load_state_dict(kept[outcome.best_epoch - 1])
    assert outcome.test_at_best == evaluate(task.network, task, data.test)


@pytest.mark.parametrize("online", [True, False])
def test_subset_is_drawn_anew_each_epoch_and_noise_is_for_training_only(vanilla, online):
    data = toy_data()
    seen: dict[int, list] = {}

    def key(targets):
        return tuple(targets.flatten().tolist())

    class Seen(Recorded):
        """Records which training sequence each update trained on (by its targets), per epoch."""

        def loss(self, outputs, batch):  # the reference loop's
            seen.setdefault(self.epoch, []).append(key(batch.targets))
            return super().loss(outputs, batch)

        def loss_and_gradient(self, outputs, batch):  # the online trainer's
            seen.setdefault(self.epoch, []).append(key(batch.targets))
            return super().loss_and_gradient(outputs, batch)

    task = Seen()
    kept, on_epoch = _snapshots(task)
    outcome = train_trial(task, data, vanilla, config(train_subset=3, noise=5.0, max_epochs=3, patience=3), on_epoch,
                          online=online)
    train_ids = {key(s.targets.unsqueeze(1)) for s in data.train}
    per_epoch = [seen[e] for e in (1, 2, 3)]
    assert all(len(ids) == 3 == len(set(ids)) and set(ids) <= train_ids for ids in per_epoch)
    assert len({frozenset(ids) for ids in per_epoch}) > 1  # not the same three sequences every epoch
    for weights, valid in zip(kept, outcome.valid_curve):  # validation saw no noise: it repeats exactly
        task.network.load_state_dict(weights)
        assert evaluate(task.network, task, data.valid) == valid


def test_batches_and_subset(vanilla):
    outcome = train_trial(JSBChorales(), toy_data(), vanilla, config(batch_size=4, train_subset=4, max_epochs=2))
    assert outcome.status == "ok" and outcome.epochs == 2


def test_learning_rate_is_scaled_by_one_minus_momentum(vanilla, monkeypatch):
    seen = {}
    real_sgd = torch.optim.SGD

    def spy(params, **kwargs):
        seen.update(kwargs)
        return real_sgd(params, **kwargs)

    monkeypatch.setattr(torch.optim, "SGD", spy)
    # the reference loop's optimizer (the online trainer computes the same updates: tests/test_online.py)
    train_trial(JSBChorales(), toy_data(), vanilla, config(lr=0.5, momentum=0.9, max_epochs=1), online=False)
    assert seen["lr"] == pytest.approx(0.05) and seen["momentum"] == 0.9 and seen["nesterov"] is True


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        TrainConfig(hidden=0, lr=1e-3, momentum=0.9, noise=0)
    with pytest.raises(ValueError):
        TrainConfig(hidden=10, lr=1e-3, momentum=1.0, noise=0)


def test_train_command_prints_curve_and_result(capsys):
    from pathlib import Path

    from cellc.cli import main

    data_root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (data_root / "jsb-chorales").is_dir():
        pytest.skip("../shared/data missing")
    code = main(["train", "--task", "jsb", "--cell", "vanilla", "--hidden", "8", "--max-epochs", "2",
                 "--train-subset", "5", "--data-dir", str(data_root)])
    out = capsys.readouterr().out
    assert code == 0
    assert "epoch    1" in out and "epoch    2" in out and "test at best valid" in out and "real" in out


def test_train_command_rejects_bad_momentum(capsys):
    from cellc.cli import main

    assert main(["train", "--momentum", "1.5", "--max-epochs", "1"]) == 2
    assert "bad training setting" in capsys.readouterr().err


def test_batched_evaluation_equals_one_sequence_at_a_time(vanilla):
    from cellc.harness.train import evaluate

    task, data = JSBChorales(), toy_data()
    sequences = data.train + data.valid  # lengths 12 and 9: padding inside the batch
    torch.manual_seed(0)
    network = task.build_network(vanilla, 8)
    numerator = denominator = 0.0
    with torch.no_grad():
        for seq in sequences:
            batch = task.collate([seq])
            num, den = task.score(network(batch.inputs, None), batch)
            numerator, denominator = numerator + num, denominator + den
    assert evaluate(network, task, sequences) == pytest.approx(numerator / denominator, rel=1e-5)


def test_random_init_keeps_the_spec_init_constants(tmp_path):
    from cellc.harness.train import initialise

    spec = tmp_path / "fb.yaml"
    spec.write_text("name: fb\nextends: vanilla\ninit:\n  b_f: 1\n")
    task = JSBChorales()
    network = task.build_network(cellc.build(spec), 5)
    initialise(network, 0.1, torch.Generator().manual_seed(0))
    layer = network.recurrent
    assert torch.all(layer.spec_parameter("b_f") == 1.0)
    b_i = layer.spec_parameter("b_i")
    assert not torch.all(b_i == 1.0) and float(b_i.abs().max()) < 1.0  # the rest is the N(0, 0.1) draw
    assert 0.05 < float(network.output.weight.std()) < 0.2
