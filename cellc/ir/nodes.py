"""The cell IR: one step of the recurrence as typed expression trees over named values.

Every leaf says what it is: the input, a value of this step, a state (a value of the
previous step), a parameter vector, or a constant. Matrix products name their parameter;
its kind follows from the operand (input, state, or anything computed this step).
Source locations ride along for error messages but never take part in equality.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cellc.errors import Location


@dataclass(frozen=True)
class Expr:
    loc: Location | None = field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Const(Expr):
    value: float


@dataclass(frozen=True)
class Input(Expr):
    name: str


@dataclass(frozen=True)
class Value(Expr):
    """A value computed earlier in this step."""

    name: str


@dataclass(frozen=True)
class State(Expr):
    """``name[-1]``: the value at the previous step (recurrent state)."""

    name: str


@dataclass(frozen=True)
class Param(Expr):
    """A parameter vector: a bias (additive) or an elementwise weight (a peephole)."""

    name: str


@dataclass(frozen=True)
class MatMul(Expr):
    param: str
    operand: Expr


@dataclass(frozen=True)
class Sum(Expr):
    terms: tuple[Expr, ...]


@dataclass(frozen=True)
class Prod(Expr):
    factors: tuple[Expr, ...]


@dataclass(frozen=True)
class Neg(Expr):
    operand: Expr


@dataclass(frozen=True)
class Act(Expr):
    fn: str
    operand: Expr


@dataclass(frozen=True)
class Indicator(Expr):
    """1 where ``low < operand < high`` (a bound of None: unbounded on that side), else 0. Not written in specs:
    the derivative of a piecewise-linear activation (relu, hard sigmoid) from its output, in the backward."""

    operand: Expr
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Norm(Expr):
    """``norm(v)``: v normalised over its units, (v - mean(v)) / sqrt(var(v) + eps) with the biased variance,
    per sequence and step (layer normalisation without gain or bias: the spec writes those as vectors)."""

    operand: Expr


@dataclass(frozen=True)
class RowMean(Expr):
    """The mean of ``operand`` over the units, the same in every unit. Not written in specs: the backward's
    expansion of :class:`Norm` (cellc.ir.autodiff), and the adjoint of itself."""

    operand: Expr


@dataclass(frozen=True)
class Slot(Expr):
    """A slice of a scheduled GEMM's result (set by the scheduling pass).

    stage 'x': the hoisted input GEMM (biases folded in); 's': the per-step GEMM over
    previous-step values; 'xs': both added, from one fused addmm per step.
    """

    stage: str
    index: int


@dataclass(frozen=True)
class Equation:
    name: str
    expr: Expr
    loc: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Cell:
    """One step of a recurrent cell. Equations are in evaluation order."""

    name: str
    input: str
    output: str
    equations: tuple[Equation, ...]
    initial: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def values(self) -> list[str]:
        return [eq.name for eq in self.equations]

    def equation(self, name: str) -> Equation:
        for eq in self.equations:
            if eq.name == name:
                return eq
        raise KeyError(name)

    @property
    def states(self) -> list[str]:
        """Values read at the previous step, in order of first read (output first if read)."""
        seen: list[str] = []
        for eq in self.equations:
            for node in walk(eq.expr):
                if isinstance(node, State) and node.name not in seen:
                    seen.append(node.name)
        # The output leads when it is state, mirroring torch's (h, c).
        if self.output in seen:
            seen.remove(self.output)
            seen.insert(0, self.output)
        return seen


def changes_per_step(node: Expr) -> bool:
    """Does the expression read anything that changes from step to step (the input, a value, a state or a
    product of them), rather than parameters and constants alone? A normalisation needs such an argument."""
    return any(isinstance(n, (Input, State, Value, MatMul)) for n in walk(node))


def children(node: Expr) -> tuple[Expr, ...]:
    if isinstance(node, (MatMul, Neg, Act, Indicator, Norm, RowMean)):
        return (node.operand,)
    if isinstance(node, Sum):
        return node.terms
    if isinstance(node, Prod):
        return node.factors
    return ()


def walk(node: Expr):
    """Yield ``node`` and everything below it, parents first."""
    yield node
    for child in children(node):
        yield from walk(child)


def rebuild(node: Expr, kids: tuple[Expr, ...]) -> Expr:
    """``node`` with its children replaced (same location)."""
    if isinstance(node, MatMul):
        return MatMul(node.param, kids[0], loc=node.loc)
    if isinstance(node, Neg):
        return Neg(kids[0], loc=node.loc)
    if isinstance(node, Act):
        return Act(node.fn, kids[0], loc=node.loc)
    if isinstance(node, Indicator):
        return Indicator(kids[0], node.low, node.high, loc=node.loc)
    if isinstance(node, Norm):
        return Norm(kids[0], loc=node.loc)
    if isinstance(node, RowMean):
        return RowMean(kids[0], loc=node.loc)
    if isinstance(node, Sum):
        return Sum(tuple(kids), loc=node.loc)
    if isinstance(node, Prod):
        return Prod(tuple(kids), loc=node.loc)
    return node


def transform(node: Expr, fn) -> Expr:
    """Rebuild bottom-up; ``fn(node)`` returns a replacement or None to keep the node."""
    kids = children(node)
    if kids:
        node = rebuild(node, tuple(transform(k, fn) for k in kids))
    out = fn(node)
    return node if out is None else out
