"""The online trainer (cellc.harness.online) learns exactly what the reference loop learns.

The reference loop (autograd, torch.optim.SGD, padded batches of one) is what trials ran before the
online trainer; it stays as ``train_trial(online=False)``. In float64, from the same seed, the two
must give the same per-epoch losses and the same weights to 1e-9 over three epochs: for every spec
in specs/, with each framewise loss (sigmoid and softmax cross-entropy, closed forms) and with CTC
(differentiated by autograd through the output layer).
"""

from __future__ import annotations

import random

import pytest
import torch

import cellc
from cellc.harness.online import NesterovSGD, OnlineTrainer
from cellc.harness.train import OnlineEpoch, ReferenceEpoch, TrainConfig, data_as, initialise, train_trial
from cellc.spec.loader import builtin_spec_names
from cellc.tasks.base import Sequence, TaskData
from cellc.tasks.iam import IamOnline, LineTarget
from cellc.tasks.jsb import JSBChorales
from cellc.tasks.timit import Timit
from cellc.testing import input_size

SPECS = builtin_spec_names()
EPOCHS = 3
LENGTHS = (7, 4, 9, 5, 6)


def _jsb_data(g: torch.Generator) -> TaskData:
    def seq(n: int) -> Sequence:
        roll = (torch.rand(n + 1, 88, generator=g) < 0.1).float()
        return Sequence(roll[:-1].clone(), roll[1:].clone())
    return TaskData([seq(n) for n in LENGTHS], [seq(6), seq(3)], [seq(5)], source="synthetic")


def _timit_data(g: torch.Generator) -> TaskData:
    def seq(n: int) -> Sequence:
        return Sequence(torch.randn(n, 39, generator=g), torch.randint(0, 61, (n,), generator=g))
    return TaskData([seq(n) for n in LENGTHS], [seq(6), seq(3)], [seq(5)], source="synthetic")


def _iam_data(g: torch.Generator) -> TaskData:
    def seq(n: int) -> Sequence:
        labels = torch.randint(1, 4, (2,), generator=g)
        return Sequence(torch.randn(n, 4, generator=g), LineTarget(labels, "".join("abc"[i - 1] for i in labels)))
    return TaskData([seq(n) for n in LENGTHS], [seq(6), seq(3)], [seq(5)], source="synthetic")


def _iam() -> IamOnline:
    task = IamOnline()
    task.characters = ["a", "b", "c"]
    task.output_size = 4
    return task


TASKS = {"jsb": (JSBChorales, _jsb_data), "timit": (Timit, _timit_data), "iam": (_iam, _iam_data)}


def _trajectory(task, data, layer_class, runner_class, *, momentum=0.9, noise=0.3, seed=5):
    """Per-epoch (score numerator, denominator) and the final weights, float64, EPOCHS epochs."""
    # hidden 6, or the task's input size for a cell that reads its input elementwise
    config = TrainConfig(hidden=input_size(layer_class, 6, task.input_size), lr=0.05, momentum=momentum, noise=noise,
                         seed=seed)
    generator = torch.Generator().manual_seed(seed)
    order_rng = random.Random(seed)
    network = task.build_network(layer_class, config.hidden)
    initialise(network, config.init_std, generator)
    network.double()
    initial = {name: value.clone() for name, value in network.state_dict().items()}
    runner = runner_class(network, task, data_as(data, torch.float64), config, generator)
    sums = []
    for _ in range(EPOCHS):
        order = list(range(len(data.train)))
        order_rng.shuffle(order)
        sums.append(runner.run(order))
    return sums, initial, {name: value.clone() for name, value in network.state_dict().items()}


def _assert_same(online, reference):
    (sums_a, initial, weights_a), (sums_b, _, weights_b) = online, reference
    for a, b in zip(sums_a, sums_b):
        assert a is not None and b is not None
        assert a[1] == b[1] and a[0] == pytest.approx(b[0], rel=1e-9, abs=1e-9)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(weights_a[name], weights_b[name], rtol=0, atol=1e-9, msg=name)
    moved = max(float((weights_a[name] - initial[name]).abs().max()) for name in initial)
    assert moved > 1e-3  # the weights did change: not a comparison of two untrained networks


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("task_name", ["jsb", "timit"])
def test_online_trajectory_equals_the_reference_loop_in_float64(spec, task_name):
    """Every spec, both framewise losses (closed forms), bidirectional for TIMIT: the compiled layer's
    train_forward / train_backward, the closed-form output gradient and the fused Nesterov step give the
    reference loop's losses and weights."""
    make_task, make_data = TASKS[task_name]
    data = make_data(torch.Generator().manual_seed(1))
    layer_class = cellc.build(spec, backend="compiled")
    online = _trajectory(make_task(), data, layer_class, OnlineEpoch)
    reference = _trajectory(make_task(), data, layer_class, ReferenceEpoch)
    _assert_same(online, reference)


@pytest.mark.parametrize("spec", ["vanilla", "gru", "nfg"])
def test_ctc_online_trajectory_equals_the_reference_loop(spec):
    """CTC has no closed form here: autograd differentiates the task's loss through the output layer."""
    data = _iam_data(torch.Generator().manual_seed(2))
    layer_class = cellc.build(spec, backend="compiled")
    _assert_same(_trajectory(_iam(), data, layer_class, OnlineEpoch),
                 _trajectory(_iam(), data, layer_class, ReferenceEpoch))


@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_other_backends_train_the_same(backend):
    """A backend without train_forward (eager) is differentiated by autograd; fused has the Python loops."""
    data = _jsb_data(torch.Generator().manual_seed(3))
    layer_class = cellc.build("vanilla", backend=backend)
    network = JSBChorales().build_network(layer_class, 4)
    assert OnlineTrainer(network, JSBChorales(), 0.1, 0.9).program.generated == (backend == "fused")
    _assert_same(_trajectory(JSBChorales(), data, layer_class, OnlineEpoch),
                 _trajectory(JSBChorales(), data, layer_class, ReferenceEpoch))


def test_momentum_zero_and_no_noise_train_the_same():
    data = _timit_data(torch.Generator().manual_seed(4))
    layer_class = cellc.build("cifg", backend="compiled")
    _assert_same(_trajectory(Timit(), data, layer_class, OnlineEpoch, momentum=0.0, noise=0.0),
                 _trajectory(Timit(), data, layer_class, ReferenceEpoch, momentum=0.0, noise=0.0))


def test_a_subclass_that_redefines_the_loss_is_trained_on_it():
    """A closed form stands for the loss of the class that defined it: a subclass with its own loss (here
    twice the sigmoid cross-entropy) is differentiated by autograd, so both loops still agree."""

    class Doubled(JSBChorales):
        def loss(self, outputs, batch):
            return 2 * super().loss(outputs, batch)

    data = _jsb_data(torch.Generator().manual_seed(5))
    layer_class = cellc.build("vanilla", backend="compiled")
    network = Doubled().build_network(layer_class, 4)
    trainer = OnlineTrainer(network, Doubled(), 0.1, 0.9)
    assert not trainer.closed_form
    online = _trajectory(Doubled(), data, layer_class, OnlineEpoch)
    _assert_same(online, _trajectory(Doubled(), data, layer_class, ReferenceEpoch))
    plain = _trajectory(JSBChorales(), data, layer_class, OnlineEpoch)
    assert online[2]["output.bias"].ne(plain[2]["output.bias"]).any()  # it did train on the doubled loss


@pytest.mark.parametrize("task_name", ["jsb", "timit"])
def test_closed_form_gradient_equals_autograd(task_name):
    make_task, make_data = TASKS[task_name]
    task = make_task()
    data = data_as(make_data(torch.Generator().manual_seed(6)), torch.float64)
    for seq in data.train:
        batch = task.collate([seq])
        outputs = (torch.randn(len(seq), 1, task.output_size, dtype=torch.float64) * 3).requires_grad_()
        loss = task.loss(outputs, batch)
        (expected,) = torch.autograd.grad(loss, outputs)
        closed = task.loss_and_gradient(outputs.detach(), batch)
        torch.testing.assert_close(closed.loss, loss.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(closed.gradient, expected, rtol=1e-12, atol=1e-12)
        if closed.score is not None:
            assert closed.score == pytest.approx(task.score(outputs.detach(), batch), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_nesterov_update_equals_torch_sgd(dtype, momentum):
    """Eight steps on three parameters, one of which has no gradient at step 3 (torch skips it)."""
    g = torch.Generator().manual_seed(7)
    shapes = [(5, 3), (5,), (2, 5)]
    start = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    reference = [torch.nn.Parameter(p.clone()) for p in start]
    torch_sgd = torch.optim.SGD(reference, lr=0.01, momentum=momentum, nesterov=momentum > 0)
    mine = [p.clone() for p in start]
    ours = NesterovSGD(mine, lr=0.01, momentum=momentum)
    for step in range(8):
        grads = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
        if step == 3:
            grads[1] = None
        for p, grad in zip(reference, grads):
            p.grad = None if grad is None else grad.clone()
        torch_sgd.step()
        ours.step(grads)
        tolerance = 1e-14 if dtype == torch.float64 else 1e-6  # the fused kernel: within a rounding
        for a, b in zip(mine, reference):
            torch.testing.assert_close(a, b.detach(), rtol=tolerance, atol=tolerance)


def test_a_diverging_online_update_changes_nothing():
    task = JSBChorales()
    data = _jsb_data(torch.Generator().manual_seed(8))
    network = task.build_network(cellc.build("vanilla", backend="compiled"), 4)
    trainer = OnlineTrainer(network, task, 0.1, 0.9)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    batch = task.collate([data.train[0]])
    with pytest.raises(FloatingPointError):
        trainer.update(batch.inputs * float("nan"), batch)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())


@pytest.mark.parametrize("task_name", ["jsb", "iam"])
def test_train_trial_online_and_reference_agree(task_name):
    """Whole trials (early stopping, best-epoch test score) agree too."""
    make_task, make_data = TASKS[task_name]
    data = make_data(torch.Generator().manual_seed(9))
    layer_class = cellc.build("nog", backend="compiled")
    config = TrainConfig(hidden=5, lr=0.05, momentum=0.5, noise=0.2, max_epochs=4, patience=2, seed=11)
    a = train_trial(make_task(), data, layer_class, config, online=True, dtype=torch.float64)
    b = train_trial(make_task(), data, layer_class, config, online=False, dtype=torch.float64)
    assert (a.status, a.epochs, a.best_epoch) == (b.status, b.epochs, b.best_epoch)
    assert a.train_curve == pytest.approx(b.train_curve, rel=1e-9)
    assert a.valid_curve == pytest.approx(b.valid_curve, rel=1e-9)
    assert a.test_at_best == pytest.approx(b.test_at_best, rel=1e-9)


@pytest.mark.parametrize("spec", ["vanilla", "gru"])
def test_train_plan_follows_parameters_moved_to_new_storage(spec):
    """The compiled backend keeps buffers and raw pointers between calls: a parameter given new storage (a
    .data assignment, a dtype round trip) must not leave it reading the old one."""
    import sys

    layer = cellc.build(spec, backend="compiled")(3, 4, bidirectional=True)
    module = sys.modules[type(layer).__module__]
    x = torch.randn(6, 1, 3)
    module.train_forward(layer, x)
    for name, param in layer.named_parameters():
        param.data = param.data * 0.5 + 0.01  # every parameter moves
    out, tapes = module.train_forward(layer, x)
    with torch.enable_grad():
        expected, _ = layer(x)
        reference = torch.autograd.grad(expected, list(layer.parameters()), torch.ones_like(expected))
    torch.testing.assert_close(out, expected.detach())
    grads = module.train_backward(layer, tapes, torch.ones_like(out))
    for (name, _), want in zip(layer.named_parameters(), reference):
        torch.testing.assert_close(grads[name], want, msg=name)


def test_nesterov_update_with_a_strided_gradient_equals_torch_sgd():
    """Autograd may hand back a transposed gradient (a layer without train_forward): the update must read it by
    its strides (torch's fused kernel would not)."""
    g = torch.Generator().manual_seed(12)
    start = torch.randn(4, 3, generator=g, dtype=torch.float64)
    reference = torch.nn.Parameter(start.clone())
    torch_sgd = torch.optim.SGD([reference], lr=0.1, momentum=0.9, nesterov=True)
    mine = start.clone()
    ours = NesterovSGD([mine], lr=0.1, momentum=0.9)
    for _ in range(3):
        grad = torch.randn(3, 4, generator=g, dtype=torch.float64).t()  # strided
        reference.grad = grad.clone()
        torch_sgd.step()
        ours.step([grad])
        torch.testing.assert_close(mine, reference.detach(), rtol=1e-14, atol=1e-14)


def test_a_mixin_or_an_instance_loss_is_trained_on():
    """The closed form stands only for the loss defined beside it: a mixin's loss earlier in the method order,
    or a loss set on the instance, is differentiated by autograd."""

    class Scaled:
        def loss(self, outputs, batch):
            return 10 * super().loss(outputs, batch)

    class ScaledJSB(Scaled, JSBChorales):
        pass

    network = JSBChorales().build_network(cellc.build("vanilla", backend="compiled"), 4)
    assert not OnlineTrainer(network, ScaledJSB(), 0.1, 0.9).closed_form
    task = JSBChorales()
    task.loss = lambda outputs, batch: 10 * JSBChorales.loss(task, outputs, batch)
    assert not OnlineTrainer(network, task, 0.1, 0.9).closed_form
    assert OnlineTrainer(network, JSBChorales(), 0.1, 0.9).closed_form
    data = _jsb_data(torch.Generator().manual_seed(13))
    layer_class = cellc.build("vanilla", backend="compiled")
    _assert_same(_trajectory(ScaledJSB(), data, layer_class, OnlineEpoch),
                 _trajectory(ScaledJSB(), data, layer_class, ReferenceEpoch))


def test_updates_follow_moved_storage_and_skip_frozen_parameters():
    task = JSBChorales()
    data = _jsb_data(torch.Generator().manual_seed(14))
    network = task.build_network(cellc.build("vanilla", backend="compiled"), 4)
    trainer = OnlineTrainer(network, task, 0.1, 0.9)
    batch = task.collate([data.train[0]])
    network.output.bias.requires_grad_(False)
    network.output.weight.data = network.output.weight.data.clone()  # new storage after the trainer was built
    bias, weight = network.output.bias.clone(), network.output.weight.clone()
    trainer.update(batch.inputs, batch)
    assert torch.equal(network.output.bias, bias)  # frozen: left alone, as torch.optim leaves it
    assert not torch.equal(network.output.weight, weight)  # the update reached the parameter's new storage


def test_a_network_of_another_shape_trains_through_the_reference_loop():
    from cellc.harness.train import epoch_runner
    from cellc.tasks.base import RecurrentNetwork

    class Scaled(RecurrentNetwork):
        def forward(self, inputs, lengths=None):
            return 2 * super().forward(inputs, lengths)

    layer_class = cellc.build("vanilla", backend="compiled")
    config = TrainConfig(hidden=4, lr=0.1, momentum=0.9, noise=0.0)
    data = _jsb_data(torch.Generator().manual_seed(15))
    generator = torch.Generator().manual_seed(0)
    plain = RecurrentNetwork(layer_class, 88, 4, 88, False)
    assert isinstance(epoch_runner(plain, JSBChorales(), data, config, generator), OnlineEpoch)
    assert isinstance(epoch_runner(Scaled(layer_class, 88, 4, 88, False), JSBChorales(), data, config, generator),
                      ReferenceEpoch)
    plain.extra = torch.nn.Parameter(torch.zeros(2))  # a parameter the online trainer would not know
    assert isinstance(epoch_runner(plain, JSBChorales(), data, config, generator), ReferenceEpoch)


def test_train_backward_refuses_a_parameter_moved_since_its_forward():
    import sys

    layer = cellc.build("vanilla", backend="compiled")(3, 4)
    module = sys.modules[type(layer).__module__]
    out, tapes = module.train_forward(layer, torch.randn(5, 1, 3))
    layer.weight_s_l0.data = layer.weight_s_l0.data.clone()
    with pytest.raises(RuntimeError, match="moved between train_forward and train_backward"):
        module.train_backward(layer, tapes, torch.ones_like(out))
