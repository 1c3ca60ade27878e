"""Train one network on one task: one trial of the study.

Training follows the LSTM Odyssey (see odyssey.md):

- SGD with Nesterov momentum; the learning rate is multiplied by (1 - momentum) as in the
  authors' code, so ``lr`` is comparable across momenta.
- Online updates (one sequence per update) by default; ``batch_size`` > 1 pads sequences into
  a batch (the layer masks padding).
- Additive Gaussian noise of std ``noise`` on the inputs during training only.
- Early stopping: at most ``max_epochs`` epochs, stop after ``patience`` epochs without a
  validation improvement; the test score is taken with the weights of the best validation epoch.
- Every random source (initialisation, epoch order, subset draw, noise) comes from ``seed``.
- A trial whose loss or validation metric becomes NaN / inf is stopped and reported as
  ``status="diverged"`` (with the best result seen before, if any), never raised.

``train_subset`` (sequences per epoch, drawn afresh each epoch) lets small profiles cap an
epoch's cost; None uses the whole training set as the paper does.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from cellc.tasks.base import Sequence, Task, TaskData

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
    epochs: int
    wall_time_s: float
    cpu_time_s: float
    error: str | None = None


def batches(sequences: list[Sequence], size: int) -> list[list[Sequence]]:
    return [sequences[i : i + size] for i in range(0, len(sequences), size)]


def initialise(network: torch.nn.Module, std: float | None, generator: torch.Generator) -> None:
    if std is None:
        return
    with torch.no_grad():
        for param in network.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)


def evaluate(network: torch.nn.Module, task: Task, sequences: list[Sequence]) -> float:
    """The task metric over ``sequences`` (sum of numerators / sum of denominators)."""
    network.eval()
    numerator = denominator = 0.0
    # Sorting by length keeps padding small inside each evaluation batch.
    ordered = sorted(sequences, key=len)
    with torch.no_grad():
        for group in batches(ordered, EVAL_BATCH):
            batch = task.collate(group)
            num, den = task.score(network(batch.inputs, batch.lengths), batch)
            numerator += num
            denominator += den
    network.train()
    return numerator / denominator if denominator else math.nan


def train_trial(
    task: Task,
    data: TaskData,
    layer_class: type[torch.nn.Module],
    config: TrainConfig,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrialOutcome:
    """Run one trial to completion (early stopping), returning its outcome. Never raises on divergence."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(config.seed)  # for any randomness inside the layer module itself
    generator = torch.Generator().manual_seed(config.seed)
    order_rng = random.Random(config.seed)

    network = task.build_network(layer_class, config.hidden)
    initialise(network, config.init_std, generator)
    param_count = sum(p.numel() for p in network.parameters())
    optimizer = torch.optim.SGD(
        network.parameters(),
        lr=config.lr * (1.0 - config.momentum),
        momentum=config.momentum,
        nesterov=config.momentum > 0,
    )
    sign = 1.0 if task.lower_is_better else -1.0
    train_curve: list[float] = []
    valid_curve: list[float] = []
    best_valid: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    status: Status = "ok"

    for epoch in range(1, config.max_epochs + 1):
        epoch_start = time.perf_counter()
        train_seqs = list(data.train)
        order_rng.shuffle(train_seqs)
        if config.train_subset is not None:
            train_seqs = train_seqs[: config.train_subset]
        numerator = denominator = 0.0
        for group in batches(train_seqs, config.batch_size):
            batch = task.collate(group)
            inputs = batch.inputs
            if config.noise > 0:
                inputs = inputs + torch.randn(inputs.shape, generator=generator) * config.noise
            outputs = network(inputs, batch.lengths)
            loss = task.loss(outputs, batch)
            if not torch.isfinite(loss):
                status = "diverged"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            num, den = task.score(outputs.detach(), batch)
            numerator += num
            denominator += den
        if status == "diverged":
            break
        train_metric = numerator / denominator if denominator else math.nan
        valid = evaluate(network, task, data.valid)
        if not math.isfinite(valid) or not math.isfinite(train_metric):
            status = "diverged"
            break
        train_curve.append(train_metric)
        valid_curve.append(valid)
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
        if best_epoch is not None and epoch - best_epoch >= config.patience:
            break

    test_at_best = None
    if best_state is not None:
        network.load_state_dict(best_state)
        test_at_best = evaluate(network, task, data.test)
        if not math.isfinite(test_at_best):
            test_at_best = None
    return TrialOutcome(
        status=status,
        param_count=param_count,
        train_curve=train_curve,
        valid_curve=valid_curve,
        best_valid=best_valid,
        best_epoch=best_epoch,
        test_at_best=test_at_best,
        epochs=len(valid_curve),
        wall_time_s=time.perf_counter() - wall_start,
        cpu_time_s=time.process_time() - cpu_start,
    )

