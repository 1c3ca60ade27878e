"""Pointwise activation functions a spec may call, with what each backend needs to know.

Derivatives are written in terms of the activation's *output* so that a backward pass only
needs to keep outputs (never pre-activations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Activation:
    name: str
    torch_call: str  # format string over {x}: the eager PyTorch expression
    derivative: str  # format string over {y}: d act / d input, from the output y
    evaluate: Callable[[float], float]  # for constant folding
    gate_like: bool  # its output lies in [0, 1]: a gate (full gate recurrence feeds these)
    latex: str


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", "torch.sigmoid({x})", "{y} * (1 - {y})", _sigmoid, True, r"\sigma"),
        Activation("tanh", "torch.tanh({x})", "(1 - {y} * {y})", math.tanh, False, r"\tanh"),
        Activation("identity", "{x}", "1", lambda v: v, False, r"\mathrm{id}"),
        Activation("relu", "torch.relu({x})", "({y} > 0).to({y}.dtype)", lambda v: max(v, 0.0), False, r"\mathrm{relu}"),
        Activation(
            "hard_sigmoid",
            # hardtanh, not torch's hardsigmoid: its backward multiplies by a float32 1/6 (float64 gradients
            # off by ~1e-8), and hardtanh's is exact and zero at the corners, as the derivative below
            "torch.nn.functional.hardtanh(({x}) / 6 + 0.5, 0.0, 1.0)",
            "(({y} > 0) & ({y} < 1)).to({y}.dtype) / 6",
            lambda v: min(max(v / 6.0 + 0.5, 0.0), 1.0),
            True,
            r"\sigma_{\mathrm{hard}}",
        ),
    )
}


def is_activation(name: str) -> bool:
    return name in ACTIVATIONS
