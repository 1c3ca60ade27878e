"""Semantic analysis: a resolved ``Spec`` (syntax trees) -> ``Cell`` IR.

Decides what every name is and rejects what cannot be computed: undefined names,
redefinitions, states never produced, unknown activations and cycles within a step. The input
may be read through a matrix or elementwise (then the module needs input_size == hidden_size).
Equations are sorted into evaluation order.
"""

from __future__ import annotations

from cellc.errors import Location, SpecError
from cellc.ir import nodes as ir
from cellc.ir.activations import ACTIVATIONS, NORM
from cellc.spec import ast
from cellc.spec.identifiers import is_parameter_name
from cellc.spec.model import Spec


def _loc(node) -> Location | None:
    pos = getattr(node, "pos", None)
    if pos is None or pos.origin is None:
        return None
    return pos.origin.locate(pos.line, pos.column)


class _Resolver:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.values = {eq.target for eq in spec.equations}

    def expr(self, node: ast.Node) -> ir.Expr:
        loc = _loc(node)
        if isinstance(node, ast.Num):
            return ir.Const(node.value, loc=loc)
        if isinstance(node, ast.Name):
            return self.name(node.id, loc)
        if isinstance(node, ast.Prev):
            return self.prev(node.id, loc)
        if isinstance(node, ast.Apply):
            return self.apply(node, loc)
        if isinstance(node, ast.BinOp):
            left, right = self.expr(node.left), self.expr(node.right)
            if node.op == "+":
                return ir.Sum((left, right), loc=loc)
            if node.op == "-":
                return ir.Sum((left, ir.Neg(right, loc=right.loc)), loc=loc)
            return ir.Prod((left, right), loc=loc)
        if isinstance(node, ast.Neg):
            return ir.Neg(self.expr(node.operand), loc=loc)
        raise AssertionError(f"unhandled syntax node {node!r}")  # pragma: no cover

    def name(self, name: str, loc) -> ir.Expr:
        if name in self.values:
            return ir.Value(name, loc=loc)
        if name == self.spec.input:
            return ir.Input(name, loc=loc)
        if is_parameter_name(name):
            return ir.Param(name, loc=loc)
        if name in ACTIVATIONS or name == NORM:
            raise SpecError(f"{'activation' if name in ACTIVATIONS else 'normalisation'} '{name}' needs an argument: "
                            f"{name}(...)", loc)
        known = ", ".join(sorted(self.values | {self.spec.input}))
        raise SpecError(
            f"undefined name '{name}' (values: {known}; parameters have an underscore, e.g. b_{name})", loc
        )

    def prev(self, name: str, loc) -> ir.Expr:
        if name in self.values:
            return ir.State(name, loc=loc)
        if name == self.spec.input:
            raise SpecError(f"the input '{name}' has no previous step; only values computed by the cell do", loc)
        if is_parameter_name(name):
            raise SpecError(f"'{name}' is a parameter and does not change over time: write {name}, not {name}[-1]", loc)
        raise SpecError(f"state '{name}' is read as {name}[-1] but no equation produces it", loc)

    def apply(self, node: ast.Apply, loc) -> ir.Expr:
        operand = self.expr(node.operand)
        if node.head == NORM:
            if not ir.changes_per_step(operand):
                raise SpecError(
                    "norm(...) normalises a value over its units, and this argument reads only parameters and "
                    "constants (it would be the same at every step: write norm(W_a x) or norm(c), say)", loc)
            return ir.Norm(operand, loc=loc)
        if node.head in ACTIVATIONS:
            return ir.Act(node.head, operand, loc=loc)
        if node.head in self.values or node.head == self.spec.input:
            raise SpecError(f"'{node.head}' is a value, not a matrix; write '{node.head} * (...)' for a product", loc)
        if is_parameter_name(node.head):
            if isinstance(operand, (ir.Param, ir.Const)):
                raise SpecError(f"matrix '{node.head}' must multiply a value, not a parameter or a constant", loc)
            return ir.MatMul(node.head, operand, loc=loc)
        if node.parenthesised:
            raise SpecError(f"unknown activation '{node.head}' (known: {', '.join(ACTIVATIONS)})", loc)
        raise SpecError(
            f"'{node.head}' is neither an activation nor a parameter (parameters have an underscore, e.g. W_{node.head})",
            loc,
        )


def _sort(equations: list[ir.Equation]) -> list[ir.Equation]:
    """Evaluation order: written order where possible, dependencies first; cycles are errors."""
    by_name = {eq.name: eq for eq in equations}
    deps = {
        eq.name: [n for n in ir.walk(eq.expr) if isinstance(n, ir.Value) and n.name in by_name]
        for eq in equations
    }
    done: list[str] = []
    state: dict[str, str] = {}
    for eq in equations:
        if state.get(eq.name) == "done":
            continue
        # depth-first, dependencies first, with an explicit stack: a spec's chain of equations may be
        # longer than Python's recursion limit. Each entry: (name, its dependencies not yet visited).
        state[eq.name] = "active"
        stack = [(eq.name, iter(deps[eq.name]))]
        while stack:
            name, pending = stack[-1]
            dep = next(pending, None)
            if dep is None:
                stack.pop()
                state[name] = "done"
                done.append(name)
            elif state.get(dep.name) == "active":
                path = [n for n, _ in stack]
                cycle = " -> ".join(path[path.index(dep.name):] + [dep.name])
                raise SpecError(
                    f"'{dep.name}' is used before it is computed within a step (cycle {cycle}); "
                    f"read the previous step's value as {dep.name}[-1]",
                    dep.loc,
                )
            elif state.get(dep.name) != "done":
                state[dep.name] = "active"
                stack.append((dep.name, iter(deps[dep.name])))
    return [by_name[n] for n in done]


def lower(spec: Spec) -> ir.Cell:
    seen: dict[str, ast.Equation] = {}
    for eq in spec.equations:
        if eq.target in seen:
            raise SpecError(f"'{eq.target}' is defined twice (each value has one equation)", _loc(eq))
        if eq.target == spec.input:
            raise SpecError(f"'{eq.target}' is the input and cannot be assigned", _loc(eq))
        seen[eq.target] = eq
    if spec.output not in seen:
        raise SpecError(f"the output '{spec.output}' is not computed by any equation", spec.key_locations.get("output"))

    resolver = _Resolver(spec)
    equations = [ir.Equation(eq.target, resolver.expr(eq.expr), loc=_loc(eq)) for eq in spec.equations]
    equations = _sort(equations)
    return ir.Cell(
        name=spec.name,
        input=spec.input,
        output=spec.output,
        equations=tuple(equations),
        initial=dict(spec.initial),
    )
