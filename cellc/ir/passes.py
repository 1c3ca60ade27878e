"""IR passes: constant folding and dead-code removal.

A dropped gate arrives here as the constant 1; folding turns `z * 1` into `z` and
`c[-1] * 1` into `c[-1]`, and dead-code removal then deletes whatever only fed it, so the
gate's parameters disappear without any edit-specific code.
"""

from __future__ import annotations

from cellc.errors import SpecError
from cellc.ir import nodes as ir
from cellc.ir.activations import ACTIVATIONS
from cellc.spec.identifiers import FLOAT32_MAX


def _fold_sum(node: ir.Sum) -> ir.Expr:
    terms: list[ir.Expr] = []
    constant = 0.0
    for term in node.terms:
        parts = term.terms if isinstance(term, ir.Sum) else (term,)
        for part in parts:
            if isinstance(part, ir.Const):
                constant += part.value
            else:
                terms.append(part)
    if constant != 0.0:
        terms.insert(0, ir.Const(constant, loc=node.loc))
    if not terms:
        return ir.Const(0.0, loc=node.loc)
    if len(terms) == 1:
        return terms[0]
    return ir.Sum(tuple(terms), loc=node.loc)


def _fold_prod(node: ir.Prod) -> ir.Expr:
    factors: list[ir.Expr] = []
    constant = 1.0
    for factor in node.factors:
        parts = factor.factors if isinstance(factor, ir.Prod) else (factor,)
        for part in parts:
            if isinstance(part, ir.Const):
                constant *= part.value
            elif isinstance(part, ir.Neg):
                constant = -constant
                factors.append(part.operand)
            else:
                factors.append(part)
    if constant == 0.0 or not factors:
        return ir.Const(constant if not factors else 0.0, loc=node.loc)
    body = factors[0] if len(factors) == 1 else ir.Prod(tuple(factors), loc=node.loc)
    if constant == 1.0:
        return body
    if constant == -1.0:
        return ir.Neg(body, loc=node.loc)
    rest = (body.factors if isinstance(body, ir.Prod) else (body,))
    return ir.Prod((ir.Const(constant, loc=node.loc), *rest), loc=node.loc)


def _fold(node: ir.Expr) -> ir.Expr | None:
    if isinstance(node, ir.Sum):
        return _fold_sum(node)
    if isinstance(node, ir.Prod):
        return _fold_prod(node)
    if isinstance(node, ir.Neg):
        inner = node.operand
        if isinstance(inner, ir.Const):
            return ir.Const(-inner.value, loc=node.loc)
        if isinstance(inner, ir.Neg):
            return inner.operand
        return None
    if isinstance(node, ir.Act):
        if node.fn == "identity":
            return node.operand
        if isinstance(node.operand, ir.Const):
            value = ACTIVATIONS[node.fn].evaluate(node.operand.value)
            return ir.Const(value, loc=node.loc)
        return None
    if isinstance(node, ir.Norm):
        if isinstance(node.operand, ir.Const):
            return ir.Const(0.0, loc=node.loc)  # a constant row minus its mean
        if not ir.changes_per_step(node.operand):
            # e.g. norm(o * b_q) where o = 1, written so or left by an edit: the same at every step
            raise SpecError("once values that are constants are folded in, this norm(...) reads only parameters and "
                            "constants, so it would be the same at every step; remove it (an 'override' edit can)",
                            node.loc)
        return None
    if isinstance(node, ir.MatMul) and isinstance(node.operand, ir.Const):
        if node.operand.value == 0.0:
            return ir.Const(0.0, loc=node.loc)
        raise SpecError(
            f"after edits, matrix '{node.param}' multiplies the constant {node.operand.value:g}; "
            "remove that term with an 'override' edit",
            node.loc,
        )
    return None


def _fold_finite(node: ir.Expr) -> ir.Expr | None:
    out = _fold(node)
    if out is not None:
        for part in (out, *ir.children(out)):  # folding leaves its constant on top or one level down
            if isinstance(part, ir.Const) and not abs(part.value) <= FLOAT32_MAX:
                # e.g. 1e300 * 1e300: only finite numbers may reach generated code, and float32 must hold them.
                raise SpecError("these constants combine to a number that is not finite in float32",
                                part.loc or node.loc)
    return out


def fold_constants(cell: ir.Cell) -> ir.Cell:
    """Fold arithmetic, and propagate values that fold to a constant (``override o = 1``) into
    later equations of the same step. Only this step's reads are replaced: ``o[-1]`` differs
    from the constant at the first step (it is the initial state there)."""
    constants: dict[str, float] = {}

    def fold(node: ir.Expr) -> ir.Expr | None:
        if isinstance(node, ir.Value) and node.name in constants:
            return ir.Const(constants[node.name], loc=node.loc)
        return _fold_finite(node)

    equations = []
    for eq in cell.equations:  # evaluation order: a value's equation precedes its readers
        expr = ir.transform(eq.expr, fold)
        if isinstance(expr, ir.Const):
            constants[eq.name] = expr.value
        equations.append(ir.Equation(eq.name, expr, loc=eq.loc))
    return _replace(cell, equations)


def eliminate_dead_code(cell: ir.Cell) -> ir.Cell:
    """Keep only what the output needs, now or at a later step (through states)."""
    by_name = {eq.name: eq for eq in cell.equations}
    live: set[str] = set()
    work = [cell.output]
    while work:
        name = work.pop()
        if name in live:
            continue
        live.add(name)
        for node in ir.walk(by_name[name].expr):
            if isinstance(node, (ir.Value, ir.State)) and node.name not in live:
                work.append(node.name)
    return _replace(cell, [eq for eq in cell.equations if eq.name in live])


def _replace(cell: ir.Cell, equations: list[ir.Equation]) -> ir.Cell:
    return ir.Cell(cell.name, cell.input, cell.output, tuple(equations), dict(cell.initial))
