"""Parameter kinds, inferred from where each parameter stands (nobody declares them).

- ``W x``            matrix on the input            N x M
- ``R y[-1]``        matrix on a previous-step value N x N
- ``R (r * y[-1])``  matrix on a current-step value  N x N
- ``p * c[-1]``      elementwise vector (peephole)   N
- ``... + b``        bias                            N

A vector multiplying a ``norm(...)`` (its gain) starts at 1 unless the spec's ``init`` says otherwise. The
shapes above are a cell's whose values all have N units; cellc.ir.sizes gives each parameter its rows and
columns where a spec declares other sizes (``R_i y[-1]`` is N x P where y has P units).
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


# A parameter count's monomials, in the order a formula prints them: N*M, N*N, N*P, P*M, P*P, N, P.
MONOMIALS = ("NM", "NN", "NP", "PM", "PP", "N", "P")


def monomial(rows: str, cols: str | None) -> str:
    """The monomial of a parameter of this shape (a P x N matrix is "NP", like an N x P one)."""
    if cols is None:
        return rows
    return "".join(sorted(rows + cols, key="NPM".index))


def formula_monomials(params: dict[str, ParamInfo], shapes: dict[str, tuple[str, str | None]]) -> dict[str, int]:
    """Parameters per layer and direction as {monomial: count} (``shapes``: cellc.ir.sizes' rows and columns)."""
    counts: dict[str, int] = {}
    for name in params:
        term = monomial(*shapes[name])
        counts[term] = counts.get(term, 0) + 1
    return {term: counts[term] for term in MONOMIALS if term in counts}


def format_monomials(counts: dict[str, int]) -> str:
    """'4N(M+N) + 7N' for a cell of N alone (format_formula), else '4NM + 5NP + 4N' style."""
    if set(counts) <= {"NM", "NN", "N"}:
        return format_formula(counts.get("NM", 0), counts.get("NN", 0), counts.get("N", 0))
    shown = {"NN": "N^2", "PP": "P^2"}
    return " + ".join(f"{'' if k == 1 else k}{shown.get(term, term)}" for term, k in counts.items()) or "0"


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
