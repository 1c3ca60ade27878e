"""Pointwise activation functions a spec may call, with what each backend needs to know.

Each derivative is an IR expression of the activation's *output* (``derivative(y)``), so that a backward
pass only keeps outputs (never pre-activations), and every backend prints it with the printer that prints the
forward: there is no derivative written per target language.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from cellc.ir import nodes as ir


@dataclass(frozen=True)
class Activation:
    name: str
    torch_call: str  # format string over {x}: the eager PyTorch expression
    derivative: Callable[[ir.Expr], ir.Expr]  # d act / d input as IR, from the output y
    evaluate: Callable[[float], float]  # for constant folding
    gate_like: bool  # its output lies in [0, 1]: a gate (full gate recurrence feeds these)
    latex: str


def _one_minus(y: ir.Expr) -> ir.Expr:
    return ir.Sum((ir.Const(1.0), ir.Neg(y)))


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", "torch.sigmoid({x})", lambda y: ir.Prod((y, _one_minus(y))), _sigmoid, True,
                   r"\sigma"),
        Activation("tanh", "torch.tanh({x})", lambda y: ir.Sum((ir.Const(1.0), ir.Neg(ir.Prod((y, y))))), math.tanh,
                   False, r"\tanh"),
        Activation("identity", "{x}", lambda y: ir.Const(1.0), lambda v: v, False, r"\mathrm{id}"),
        Activation("relu", "torch.relu({x})", lambda y: ir.Indicator(y, 0.0, None), lambda v: max(v, 0.0), False,
                   r"\mathrm{relu}"),
        Activation(
            "hard_sigmoid",
            # hardtanh, not torch's hardsigmoid: its backward multiplies by a float32 1/6 (float64 gradients
            # off by ~1e-8), and hardtanh's is exact and zero at the corners, as the derivative below
            "torch.nn.functional.hardtanh(({x}) / 6 + 0.5, 0.0, 1.0)",
            lambda y: ir.Prod((ir.Indicator(y, 0.0, 1.0), ir.Const(1.0 / 6.0))),
            lambda v: min(max(v / 6.0 + 0.5, 0.0), 1.0),
            True,
            r"\sigma_{\mathrm{hard}}",
        ),
    )
}


# Layer normalisation, ``norm(v)``: a spec's builtin beside the activations (not pointwise: cellc.ir.nodes.Norm).
NORM = "norm"

# Layer normalisation's epsilon, inside the square root (torch.nn.LayerNorm's default).
NORM_EPS = 1e-5

# Functions the derived code uses that a spec cannot call: ``rstd(v) = 1 / sqrt(v + NORM_EPS)``, the
# reciprocal standard deviation of a normalisation's expansion (cellc.ir.autodiff), derivative -y^3 / 2.
DERIVED: dict[str, Activation] = {
    "rstd": Activation(
        "rstd", f"torch.rsqrt({{x}} + {NORM_EPS!r})",
        lambda y: ir.Prod((ir.Const(-0.5), y, y, y)),
        lambda v: 1.0 / math.sqrt(v + NORM_EPS) if v + NORM_EPS > 0 else math.inf,
        False, r"\mathrm{rstd}"),
}

# Every function a backend prints: the activations specs call and the derived ones.
FUNCTIONS: dict[str, Activation] = {**ACTIVATIONS, **DERIVED}


def is_activation(name: str) -> bool:
    return name in ACTIVATIONS
