"""Online training (one sequence per update) without autograd's and torch.optim's per-update overhead.

The paper trains online: one sequence per update. At a batch of one, a few hundred microseconds of
Python and framework work per update (building and walking an autograd graph, torch.optim's
bookkeeping, padding a batch of one) cost as much as the arithmetic. :class:`OnlineTrainer` does
the same update with far fewer calls:

- the recurrent layer runs through its generated module's ``train_forward`` / ``train_backward``
  (the module's own loops and derived backward, called directly instead of through autograd); a
  layer from a backend without them (eager, Triton, lowered) is differentiated by autograd instead;
- the output layer's and the loss's gradients are closed forms where the task gives one
  (:meth:`cellc.tasks.base.Task.loss_and_gradient`: sigmoid cross-entropy, softmax cross-entropy);
  otherwise (CTC) autograd differentiates the task's loss through the output layer alone;
- the Nesterov update runs over all parameters in one pass (torch's fused SGD kernel), the
  arithmetic of ``torch.optim.SGD(nesterov=True)``.

It computes what the reference loop in :func:`cellc.harness.train.train_trial` computes (tests
compare both trajectories in float64); only the number of calls differs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch

from cellc.tasks.base import Batch, RecurrentNetwork, Task


class RecurrentProgram:
    """The recurrent layer's forward (output, tape) and backward (parameter gradients by name)."""

    def __init__(self, layer: torch.nn.Module) -> None:
        module = sys.modules.get(type(layer).__module__)
        self.layer = layer
        self.names = [name for name, _ in layer.named_parameters()]
        native = getattr(module, "train_forward", None), getattr(module, "train_backward", None)
        self.generated = all(native) and getattr(layer, "num_layers", 1) == 1
        if self.generated:
            self._forward: Callable[..., Any] = native[0]
            self._backward: Callable[..., Any] = native[1]

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, Any]:
        if self.generated:
            return self._forward(self.layer, inputs)
        with torch.enable_grad():
            hidden, _ = self.layer(inputs)
        return hidden.detach(), hidden

    def backward(self, tape: Any, d_hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.generated:
            return self._backward(self.layer, tape, d_hidden)
        named = [(name, p) for name, p in self.layer.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(tape, [p for _, p in named], d_hidden, allow_unused=True)
        return {name: grad for (name, _), grad in zip(named, grads) if grad is not None}


class NesterovSGD:
    """``torch.optim.SGD(params, lr, momentum, nesterov=momentum > 0)`` over explicit gradient lists.

    The arithmetic of torch's SGD (buffer = grad on a parameter's first step, then
    ``buffer * momentum + grad``; step ``grad + momentum * buffer``): in one pass over every parameter
    by torch's fused SGD kernel (what ``SGD(fused=True)`` runs; float64 results equal the plain
    optimizer's, float32 ones within a rounding) when every parameter has a gradient, else in foreach
    calls. A parameter whose gradient is missing is left alone, as torch leaves one whose ``.grad`` is None."""

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float) -> None:
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.buffers: list[torch.Tensor | None] = [None] * len(params)
        self.fused = hasattr(torch, "_fused_sgd_")

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor | None]) -> None:
        present = [i for i, g in enumerate(grads) if g is not None]
        if self.momentum == 0:
            torch._foreach_add_([self.params[i] for i in present], [grads[i] for i in present], alpha=-self.lr)
            return
        started = [b is not None for b in self.buffers]
        # the fused kernel reads every tensor as dense: a strided gradient (autograd may return one) goes the
        # foreach way
        if (self.fused and len(present) == len(grads) and (all(started) or not any(started))
                and all(g.is_contiguous() for g in grads)):  # type: ignore[union-attr]
            if not any(started):
                self.buffers = [torch.empty_like(p) for p in self.params]
            torch._fused_sgd_(self.params, grads, self.buffers, weight_decay=0.0, momentum=self.momentum,
                              lr=self.lr, dampening=0.0, nesterov=True, maximize=False,
                              is_first_step=not any(started))
            return
        for i in present:
            if self.buffers[i] is None:
                self.buffers[i] = grads[i].clone()  # type: ignore[union-attr]
            else:
                self.buffers[i].mul_(self.momentum).add_(grads[i])  # type: ignore[union-attr]
        steps = torch._foreach_add([grads[i] for i in present], [self.buffers[i] for i in present],
                                   alpha=self.momentum)
        torch._foreach_add_([self.params[i] for i in present], steps, alpha=-self.lr)


class OnlineTrainer:
    """One sequence per update for ``network`` on ``task``: :meth:`update` trains and returns the task's score."""

    def __init__(self, network: RecurrentNetwork, task: Task, lr: float, momentum: float) -> None:
        self.network = network
        self.task = task
        self.program = RecurrentProgram(network.recurrent)
        recurrent = dict(network.recurrent.named_parameters())
        self.weight, self.bias = network.output.weight, network.output.bias
        params = [recurrent[name] for name in self.program.names] + [self.weight, self.bias]
        self.optimizer = NesterovSGD(params, lr, momentum)  # the Parameters: a moved storage is followed
        # A closed form stands for the loss (and its score for the score) of the class that defined it: a
        # subclass that redefines loss (or score) below it gets autograd (or its own score), never a stale form.
        self.closed_form = not _overrides(task, "loss", "loss_and_gradient")
        self.closed_score = not _overrides(task, "score", "loss_and_gradient")

    def update(self, inputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        """Train on one sequence: ``inputs`` (T, 1, M) (noise already added), targets from ``batch``.
        Returns the task's score (numerator, denominator) of the outputs the update was computed from;
        raises FloatingPointError, having changed nothing, where the loss is not finite."""
        hidden, tape = self.program.forward(inputs)
        T, B, H = hidden.shape
        flat = hidden.view(T * B, H)
        weight, bias = self.weight.detach(), self.bias.detach()
        outputs = torch.addmm(bias, flat, weight.t()).view(T, B, -1)
        closed = self.task.loss_and_gradient(outputs, batch) if self.closed_form else None
        if closed is not None:
            loss, score = closed.loss, closed.score if self.closed_score else None
            d_flat = closed.gradient.view(T * B, -1)
            d_weight = torch.mm(d_flat.t(), flat)
            d_bias = d_flat.sum(0)
            d_hidden = torch.mm(d_flat, weight).view(T, B, H)
        else:
            score = None
            loss, d_hidden, d_weight, d_bias = self._autograd_head(flat, batch, T, B)
        if not math.isfinite(score[0] if score is not None else float(loss)):
            raise FloatingPointError("loss is not finite")
        grads = self.program.backward(tape, d_hidden)
        found = [grads.get(name) for name in self.program.names] + [d_weight, d_bias]
        # a frozen parameter is left alone, as torch.optim leaves one without a gradient
        self.optimizer.step([g if p.requires_grad else None for g, p in zip(found, self.optimizer.params)])
        return score if score is not None else self.task.score(outputs, batch)

    def _autograd_head(self, flat: torch.Tensor, batch: Batch, T: int, B: int):
        """Loss and gradients of the output layer and the loss by autograd (tasks without a closed form)."""
        with torch.enable_grad():
            leaf = flat.detach().requires_grad_()
            outputs = torch.nn.functional.linear(leaf, self.weight, self.bias).view(T, B, -1)
            loss = self.task.loss(outputs, batch)
            wanted = [leaf] + [p for p in (self.weight, self.bias) if p.requires_grad]
            found = iter(torch.autograd.grad(loss, wanted))
            d_hidden = next(found)
            d_weight, d_bias = (next(found) if p.requires_grad else None for p in (self.weight, self.bias))
        return loss.detach(), d_hidden.view(T, B, -1), d_weight, d_bias


def _overrides(task: Task, name: str, other: str) -> bool:
    """Whether ``task``'s ``name`` comes from somewhere that ``other`` may not know about: the instance itself,
    or a class before the one defining ``other`` in the method resolution order (a subclass or a mixin)."""
    if name in vars(task):
        return True
    mro = type(task).__mro__

    def owner(attr: str) -> int:
        return next(i for i, c in enumerate(mro) if attr in vars(c))

    return owner(name) < owner(other)
