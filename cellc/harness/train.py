"""Train one network on one task: one trial of the study.

Training follows the LSTM Odyssey (see odyssey.md):

- SGD with Nesterov momentum; the learning rate is multiplied by (1 - momentum) as in the
  authors' code, so ``lr`` is comparable across momenta.
- Online updates (one sequence per update) by default; ``batch_size`` > 1 pads sequences into
  a batch (the layer masks padding).
- Additive Gaussian noise of std ``noise`` on the inputs during training only.
- Early stopping: at most ``max_epochs`` epochs, stop after ``patience`` epochs without a
  validation improvement; the test score (and the task's secondary metrics, e.g. TIMIT's
  39-phone frame error) is taken with the weights of the best validation epoch.
- Warm-up: a network may need several epochs before its validation metric moves at all (a CTC
  network that still emits only blanks scores exactly 100 % CER while its loss falls). Leading
  epochs whose validation metric equals the first epoch's exactly are not counted toward
  ``patience``, up to ``warmup`` of them: patience runs from the later of the best epoch and the
  end of that initial plateau (capped at ``warmup``). A metric that never moves therefore stops
  after ``warmup + patience`` epochs (or ``max_epochs``); ``warmup=0`` is plain early stopping.
  Any change of the metric, better or worse, ends the plateau; tasks whose metric moves from
  epoch 2 on (framewise error, NLL) are unaffected.
- Every random source (initialisation, epoch order, subset draw, noise) comes from ``seed``.
- A trial whose loss or validation metric becomes NaN / inf is stopped and reported as
  ``status="diverged"`` (with the best result seen before, if any), never raised.

``train_subset`` (sequences per epoch, drawn afresh each epoch) lets small profiles cap an
epoch's cost; None uses the whole training set as the paper does.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from cellc.harness.device import Placement
from cellc.tasks.base import RecurrentNetwork, Sequence, Task, TaskData

Status = Literal["ok", "diverged", "failed", "interrupted"]
EVAL_BATCH = 128  # sequences per forward pass when evaluating (no gradients, so big batches are cheap)


class TrainConfig(BaseModel):
    """Hyper-parameters and training schedule of one trial."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(ge=1, description="hidden units (blocks) per direction")
    lr: float = Field(gt=0, description="learning rate before scaling by (1 - momentum)")
    momentum: float = Field(ge=0, lt=1)
    noise: float = Field(ge=0, description="std of Gaussian input noise during training")
    batch_size: int = Field(default=1, ge=1)
    max_epochs: int = Field(default=150, ge=1)
    patience: int = Field(default=15, ge=1)
    warmup: int = Field(default=0, ge=0, description="leading epochs at the initial validation value not counted toward patience")
    train_subset: int | None = Field(default=None, ge=1, description="sequences per epoch; None = all")
    init_std: float | None = Field(default=0.1, gt=0, description="normal init std; None = module default")
    seed: int = 0


class EpochReport(BaseModel):
    """What a trial reports after each epoch (for -v progress output)."""

    epoch: int
    train: float
    valid: float
    best_valid: float
    seconds: float


class TrialOutcome(BaseModel):
    """Everything a trial produces; stored per trial (see :mod:`cellc.harness.record`)."""

    status: Status
    param_count: int
    train_curve: list[float]  # per epoch: training-loss metric (noisy inputs, running weights)
    valid_curve: list[float]  # per epoch: validation metric
    best_valid: float | None
    best_epoch: int | None  # 1-based
    test_at_best: float | None
    test_secondary_at_best: dict[str, float] = {}  # task.secondary_metrics on the test split at best_epoch
    epochs: int
    wall_time_s: float
    cpu_time_s: float
    device: str = "cpu"  # Placement.describe(): "cpu" / "cuda", the CPU model or GPU name, the precision
    device_name: str | None = None
    precision: str = "float32"
    error: str | None = None


def batches(sequences: list[Sequence], size: int) -> list[list[Sequence]]:
    return [sequences[i : i + size] for i in range(0, len(sequences), size)]


def initialise(network: torch.nn.Module, std: float | None, generator: torch.Generator) -> None:
    """Every parameter ~ N(0, std) (``None`` keeps the modules' own init), then the spec's ``init:`` constants.

    The constants (e.g. a forget-gate bias ``b_f: 1``) are part of the cell's definition, so
    the random draw must not erase them: they are re-applied after it.
    """
    if std is None:
        return
    with torch.no_grad():
        for param in network.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
        for module in network.modules():
            apply_constant_init(module)


def apply_constant_init(layer: torch.nn.Module) -> None:
    """Fill the spec's constant-initialised parameters of a compiled layer (no-op for other modules).

    A generated module lists them in its module-level ``CONSTANT_INIT`` (what its own
    ``reset_parameters`` applies) and exposes ``spec_parameter(name, layer, direction)``.
    """
    constants = getattr(sys.modules.get(type(layer).__module__), "CONSTANT_INIT", None)
    if not constants or not hasattr(layer, "spec_parameter"):
        return
    with torch.no_grad():
        for index in range(layer.num_layers):
            for direction in range(layer.num_directions):
                for name, value in constants.items():
                    layer.spec_parameter(name, index, direction).fill_(value)


class Scores(BaseModel):
    """A split's task metric and the task's secondary metrics (name -> value)."""

    primary: float
    secondary: dict[str, float] = {}


def evaluate_scores(network: torch.nn.Module, task: Task, sequences: list[Sequence],
                    placement: Placement | None = None) -> Scores:
    """The task metric and secondary metrics over ``sequences`` (each sum(numerators) / sum(denominators)),
    in batches of :data:`EVAL_BATCH` on the sequences' device, at ``placement``'s precision."""
    network.eval()
    sums: dict[str | None, list[float]] = {None: [0.0, 0.0]}  # None: the primary metric
    # Sorting by length keeps padding small inside each evaluation batch.
    ordered = sorted(sequences, key=len)
    with torch.no_grad():
        for group in batches(ordered, EVAL_BATCH):
            batch = task.collate(group)
            with (placement or Placement()).autocast():
                outputs = network(batch.inputs, batch.lengths)
            outputs = full_precision(outputs)
            parts: dict[str | None, tuple[float, float]] = {None: task.score(outputs, batch)}
            parts.update(task.secondary_scores(outputs, batch))
            for name, (num, den) in parts.items():
                total = sums.setdefault(name, [0.0, 0.0])
                total[0] += num
                total[1] += den
    network.train()
    ratios = {name: num / den if den else math.nan for name, (num, den) in sums.items()}
    return Scores(primary=ratios.pop(None), secondary=ratios)  # type: ignore[arg-type]


def full_precision(outputs: torch.Tensor) -> torch.Tensor:
    """Autocast's bfloat16 outputs as float32 for scoring (other dtypes as they are)."""
    return outputs.float() if outputs.dtype in (torch.bfloat16, torch.float16) else outputs


def evaluate(network: torch.nn.Module, task: Task, sequences: list[Sequence], placement: Placement | None = None) -> float:
    """The task metric over ``sequences`` (sum of numerators / sum of denominators)."""
    return evaluate_scores(network, task, sequences, placement).primary


def add_noise(inputs: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """The inputs with Gaussian noise of std ``noise`` (drawn in float32 whatever the inputs' dtype, so
    that a float64 run sees the same draws), drawn on ``generator``'s device (see
    :meth:`cellc.harness.device.Placement.noise_generator`)."""
    if noise <= 0:
        return inputs
    return inputs + torch.randn(inputs.shape, generator=generator, device=generator.device) * noise


def data_as(data: TaskData, dtype: torch.dtype, device: torch.device | str = "cpu") -> TaskData:
    """``data`` with floating inputs and targets in ``dtype`` and every tensor of inputs and targets on
    ``device``; data already there (float32 on the CPU, as loaded) is returned as it is. Moved once per task
    (a bench worker keeps the moved copy), not per update. Targets that are not tensors (CTC's labels and
    texts) stay where they are."""
    device = torch.device(device)
    first = next((s.inputs for split in (data.train, data.valid, data.test) for s in split), None)
    if first is None or (first.dtype == dtype and first.device == device):
        return data

    def convert(seq: Sequence) -> Sequence:
        targets = seq.targets
        if isinstance(targets, torch.Tensor):
            targets = targets.to(device, dtype if targets.is_floating_point() else targets.dtype)
        return Sequence(inputs=seq.inputs.to(device, dtype), targets=targets)

    return dataclasses.replace(data, **{split: [convert(s) for s in getattr(data, split)]
                                        for split in ("train", "valid", "test")})


class ReferenceEpoch:
    """One epoch the plain way: torch.optim.SGD and autograd over padded batches (any batch size)."""

    def __init__(self, network: torch.nn.Module, task: Task, data: TaskData, config: TrainConfig,
                 generator: torch.Generator, placement: Placement | None = None) -> None:
        self.network, self.task, self.data, self.config, self.generator = network, task, data, config, generator
        self.placement = placement or Placement()
        self.optimizer = torch.optim.SGD(
            network.parameters(),
            lr=config.lr * (1.0 - config.momentum),
            momentum=config.momentum,
            nesterov=config.momentum > 0,
        )

    def run(self, order: list[int]) -> tuple[float, float] | None:
        """Train on the sequences ``order`` names; (score numerator, denominator), None on divergence."""
        numerator = denominator = 0.0
        for group in batches([self.data.train[i] for i in order], self.config.batch_size):
            batch = self.task.collate(group)
            with self.placement.autocast():
                outputs = self.network(add_noise(batch.inputs, self.config.noise, self.generator), batch.lengths)
                loss = self.task.loss(outputs, batch)
            if not torch.isfinite(loss):
                return None
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            num, den = self.task.score(full_precision(outputs.detach()), batch)
            numerator += num
            denominator += den
        return numerator, denominator


class OnlineEpoch:
    """One epoch of online updates through :class:`cellc.harness.online.OnlineTrainer`, each sequence
    collated once per trial. Computes what :class:`ReferenceEpoch` computes at batch size 1."""

    def __init__(self, network: torch.nn.Module, task: Task, data: TaskData, config: TrainConfig,
                 generator: torch.Generator) -> None:
        from cellc.harness.online import OnlineTrainer

        self.task, self.config, self.generator = task, config, generator
        self.trainer = OnlineTrainer(network, task, config.lr * (1.0 - config.momentum), config.momentum)  # type: ignore[arg-type]
        self.batches = [task.collate([seq]) for seq in data.train]

    def run(self, order: list[int]) -> tuple[float, float] | None:
        numerator = denominator = 0.0
        for i in order:
            batch = self.batches[i]
            try:
                num, den = self.trainer.update(add_noise(batch.inputs, self.config.noise, self.generator), batch)
            except FloatingPointError:
                return None
            numerator += num
            denominator += den
        return numerator, denominator


def epoch_runner(network: torch.nn.Module, task: Task, data: TaskData, config: TrainConfig,
                 generator: torch.Generator, *, online: bool = True,
                 placement: Placement | None = None) -> OnlineEpoch | ReferenceEpoch:
    """What trains an epoch of a trial: :class:`OnlineEpoch` at batch size 1 (unless ``online`` is False, or
    ``placement`` asks for mixed precision), else :class:`ReferenceEpoch`. The cost model's calibration times
    the same."""
    placement = placement or Placement()
    if online and placement.amp is None and config.batch_size == 1 and online_shape(network):
        return OnlineEpoch(network, task, data, config, generator)
    return ReferenceEpoch(network, task, data, config, generator, placement)


def online_shape(network: torch.nn.Module) -> bool:
    """Whether ``network`` is what the online trainer differentiates: :class:`RecurrentNetwork`'s own forward
    (a recurrent layer, then a linear output layer with a bias) and no parameters besides those two layers'.
    A task building anything else trains through :class:`ReferenceEpoch`."""
    if not isinstance(network, RecurrentNetwork) or type(network).forward is not RecurrentNetwork.forward:
        return False
    if network.output.bias is None:
        return False
    known = {id(p) for p in [*network.recurrent.parameters(), *network.output.parameters()]}
    return {id(p) for p in network.parameters()} == known


def train_trial(
    task: Task,
    data: TaskData,
    layer_class: type[torch.nn.Module],
    config: TrainConfig,
    on_epoch: Callable[[EpochReport], None] | None = None,
    *,
    online: bool = True,
    dtype: torch.dtype = torch.float32,
    placement: Placement | None = None,
) -> TrialOutcome:
    """Run one trial to completion (early stopping), returning its outcome. Never raises on divergence.

    ``online`` (default) trains a batch size of 1 through :class:`OnlineEpoch`; False, or a larger batch
    size, through :class:`ReferenceEpoch`. ``dtype`` (tests: float64) is the network's and data's.
    ``placement``: the device and precision (default: the CPU, float32); the network is initialised on the
    CPU from the seed (the same weights on every device), then moved with the data."""
    placement = placement or Placement()
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(config.seed)  # for any randomness inside the layer module itself
    generator = torch.Generator().manual_seed(config.seed)
    order_rng = random.Random(config.seed)

    network = task.build_network(layer_class, config.hidden)
    initialise(network, config.init_std, generator)
    network.to(placement.torch_device, dtype)
    data = data_as(data, dtype, placement.torch_device)
    param_count = sum(p.numel() for p in network.parameters())
    trainer = epoch_runner(network, task, data, config, placement.noise_generator(config.seed, generator),
                           online=online, placement=placement)
    sign = 1.0 if task.lower_is_better else -1.0
    train_curve: list[float] = []
    valid_curve: list[float] = []
    best_valid: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    plateau_end = 0  # last epoch of the initial run of validation values equal to epoch 1's
    status: Status = "ok"

    for epoch in range(1, config.max_epochs + 1):
        epoch_start = time.perf_counter()
        order = list(range(len(data.train)))
        order_rng.shuffle(order)
        if config.train_subset is not None:
            order = order[: config.train_subset]
        sums = trainer.run(order)
        if sums is None:
            status = "diverged"
            break
        numerator, denominator = sums
        train_metric = numerator / denominator if denominator else math.nan
        valid = evaluate(network, task, data.valid, placement)
        if not math.isfinite(valid) or not math.isfinite(train_metric):
            status = "diverged"
            break
        train_curve.append(train_metric)
        valid_curve.append(valid)
        if plateau_end == epoch - 1 and valid == valid_curve[0]:
            plateau_end = epoch
        if best_valid is None or sign * valid < sign * best_valid:
            best_valid, best_epoch = valid, epoch
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        if on_epoch is not None:
            on_epoch(
                EpochReport(
                    epoch=epoch,
                    train=train_metric,
                    valid=valid,
                    best_valid=best_valid,
                    seconds=time.perf_counter() - epoch_start,
                )
            )
        if best_epoch is not None and epoch - max(best_epoch, min(plateau_end, config.warmup)) >= config.patience:
            break

    test_at_best = None
    test_secondary: dict[str, float] = {}
    if best_state is not None:
        network.load_state_dict(best_state)
        scores = evaluate_scores(network, task, data.test, placement)
        if math.isfinite(scores.primary):
            test_at_best = scores.primary
            test_secondary = {name: value for name, value in scores.secondary.items() if math.isfinite(value)}
    return TrialOutcome(
        status=status,
        param_count=param_count,
        train_curve=train_curve,
        valid_curve=valid_curve,
        best_valid=best_valid,
        best_epoch=best_epoch,
        test_at_best=test_at_best,
        test_secondary_at_best=test_secondary,
        epochs=len(valid_curve),
        wall_time_s=time.perf_counter() - wall_start,
        cpu_time_s=time.process_time() - cpu_start,
        **placement.describe(),
    )

