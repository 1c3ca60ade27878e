"""Parameter kinds, inferred from where each parameter stands (nobody declares them).

- ``W x``            matrix on the input            N x M
- ``R y[-1]``        matrix on a previous-step value N x N
- ``R (r * y[-1])``  matrix on a current-step value  N x N
- ``p * c[-1]``      elementwise vector (peephole)   N
- ``... + b``        bias                            N

A vector multiplying a ``norm(...)`` (its gain) starts at 1 unless the spec's ``init`` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cellc.errors import SpecError
from cellc.ir import nodes as ir


class Kind(str, Enum):
    INPUT_MATRIX = "input matrix"
    STATE_MATRIX = "previous-step matrix"
    CURRENT_MATRIX = "current-step matrix"
    ELEMENTWISE = "elementwise vector"
    BIAS = "bias"

    @property
    def is_matrix(self) -> bool:
        return self in (Kind.INPUT_MATRIX, Kind.STATE_MATRIX, Kind.CURRENT_MATRIX)

    def shape(self) -> str:
        return {"input matrix": "N x M"}.get(self.value, "N x N" if self.is_matrix else "N")

    def size(self, n: int, m: int) -> int:
        if self is Kind.INPUT_MATRIX:
            return n * m
        return n * n if self.is_matrix else n


@dataclass(frozen=True)
class ParamInfo:
    name: str
    kind: Kind
    init: float | None = None  # constant initial value (vectors only), from the spec's `init`


def _kind_of_matmul(node: ir.MatMul) -> Kind:
    if isinstance(node.operand, ir.Input):
        return Kind.INPUT_MATRIX
    if isinstance(node.operand, ir.State):
        return Kind.STATE_MATRIX
    return Kind.CURRENT_MATRIX


def infer_parameters(cell: ir.Cell, init: dict[str, float], init_locations: dict) -> dict[str, ParamInfo]:
    found: dict[str, tuple[Kind, object]] = {}
    gains: set[str] = set()  # vectors multiplying a norm(...): they start at 1, as nn.LayerNorm's weight

    def record(name: str, kind: Kind, loc) -> None:
        if name in found:
            previous, _ = found[name]
            if previous is not kind:
                raise SpecError(f"parameter '{name}' is used both as {previous.value} and as {kind.value}", loc)
            raise SpecError(
                f"parameter '{name}' is used twice; each parameter appears once (give the second use its own name)",
                loc,
            )
        found[name] = (kind, loc)

    def visit(node: ir.Expr, in_product: bool) -> None:
        if isinstance(node, ir.MatMul):
            record(node.param, _kind_of_matmul(node), node.loc)
        elif isinstance(node, ir.Param):
            record(node.name, Kind.ELEMENTWISE if in_product else Kind.BIAS, node.loc)
        if isinstance(node, ir.Prod) and any(isinstance(f, ir.Norm) for f in node.factors):
            gains.update(f.name for f in node.factors if isinstance(f, ir.Param))
        for child in ir.children(node):
            visit(child, isinstance(node, ir.Prod))

    for eq in cell.equations:
        visit(eq.expr, False)

    for name in init:
        if name not in found:
            raise SpecError(f"init: parameter '{name}' is not used by the cell (unused parameter)",
                            init_locations.get(f"init.{name}"))
        if found[name][0].is_matrix:
            raise SpecError(f"init: '{name}' is a matrix; only vectors take a constant initial value",
                            init_locations.get(f"init.{name}"))
    return {name: ParamInfo(name, kind, init.get(name, 1.0 if name in gains else None))
            for name, (kind, _) in found.items()}


def parameter_formula(params: dict[str, ParamInfo]) -> tuple[int, int, int]:
    """(a, b, c) with count = a*N*M + b*N^2 + c*N per layer and direction."""
    a = sum(1 for p in params.values() if p.kind is Kind.INPUT_MATRIX)
    b = sum(1 for p in params.values() if p.kind in (Kind.STATE_MATRIX, Kind.CURRENT_MATRIX))
    c = sum(1 for p in params.values() if not p.kind.is_matrix)
    return a, b, c


def format_formula(a: int, b: int, c: int) -> str:
    """'4N(M+N) + 7N' style when the matrix counts agree, else '3NM + 4N^2 + 5N'."""

    def coef(k: int) -> str:
        return "" if k == 1 else str(k)

    parts = []
    if a and a == b:
        parts.append(f"{coef(a)}N(M+N)")
    else:
        if a:
            parts.append(f"{coef(a)}NM")
        if b:
            parts.append(f"{coef(b)}N^2")
    if c:
        parts.append(f"{coef(c)}N")
    return " + ".join(parts) or "0"
