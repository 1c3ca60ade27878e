"""Edit directives: rewrite a parent spec's equations ("drop gate i", "couple f = 1 - i", ...).

Edits work on the syntax tree; the compiler's passes then fold the constants they leave
behind, so a dropped gate takes its multiply and its parameters with it.
"""

from __future__ import annotations

from cellc.errors import SpecError
from cellc.ir.activations import ACTIVATIONS
from cellc.spec import ast
from cellc.spec.identifiers import identifier_problem, is_parameter_name


def _fail(edit: ast.Edit, message: str) -> SpecError:
    pos = edit.pos
    location = pos.origin.locate(pos.line, pos.column) if pos is not None and pos.origin else None
    return SpecError(f"edit '{edit.text}': {message}", location)


def _index(equations: list[ast.Equation], target: str, edit: ast.Edit) -> int:
    for k, eq in enumerate(equations):
        if eq.target == target:
            return k
    names = ", ".join(eq.target for eq in equations)
    raise _fail(edit, f"the cell has no value '{target}' (values: {names})")


def _replace_names(expr: ast.Node, name: str, by: ast.Node) -> ast.Node:
    def swap(node: ast.Node):
        if isinstance(node, (ast.Name, ast.Prev)) and node.id == name:
            return by
        return None

    return ast.transform(expr, swap)


def _drop_gate(equations, edit: ast.DropGate, output: str):
    k = _index(equations, edit.gate, edit)
    if edit.gate == output:
        raise _fail(edit, f"'{edit.gate}' is the cell's output and cannot be dropped")
    expr = equations[k].expr
    if not (isinstance(expr, ast.Apply) and expr.head in ACTIVATIONS and ACTIVATIONS[expr.head].gate_like):
        # fixing a gate (its values in [0, 1]) to 1 leaves it always open; fixing any other value is an override
        gates = " or ".join(f"{a.name}(...)" for a in ACTIVATIONS.values() if a.gate_like)
        raise _fail(edit, f"'{edit.gate}' is not a gate (a gate is {gates}); to replace it, write "
                          f"'override {edit.gate} = ...'")
    one = ast.Num(1.0, pos=edit.pos)
    return [
        ast.Equation(eq.target, _replace_names(eq.expr, edit.gate, one), pos=eq.pos)
        for j, eq in enumerate(equations)
        if j != k
    ]


def _drop_activation(equations, edit: ast.DropActivation):
    k = _index(equations, edit.target, edit)
    eq = equations[k]
    if edit.function is not None and edit.function not in ACTIVATIONS:
        raise _fail(edit, f"unknown activation '{edit.function}' (known: {', '.join(ACTIVATIONS)})")
    calls = [
        n
        for n in ast.walk(eq.expr)
        if isinstance(n, ast.Apply) and n.head in ACTIVATIONS and n.head != "identity"
        and (edit.function is None or n.head == edit.function)
    ]
    what = f"activation '{edit.function}'" if edit.function else "activation"
    if not calls:
        raise _fail(edit, f"equation '{edit.target}' has no {what} to drop")
    if len(calls) > 1:
        found = ", ".join(c.head for c in calls)
        raise _fail(edit, f"equation '{edit.target}' has {len(calls)} activations ({found}); "
                          "name the one to drop, or use 'override'")
    target_call = calls[0]

    def strip(node: ast.Node):
        return node.operand if node == target_call else None

    new = ast.transform(eq.expr, strip)
    return equations[:k] + [ast.Equation(eq.target, new, pos=eq.pos)] + equations[k + 1:]


def _set_equation(equations, target: str, expr: ast.Node, edit: ast.Edit):
    k = _index(equations, target, edit)
    return equations[:k] + [ast.Equation(target, expr, pos=equations[k].pos)] + equations[k + 1:]


def _couple(equations, edit: ast.Couple):
    values = {eq.target for eq in equations} - {edit.target}
    used = {n.id for n in ast.walk(edit.expr) if isinstance(n, (ast.Name, ast.Prev))}
    if not used & values:
        raise _fail(edit, f"a coupled gate must be computed from another value of the cell, e.g. 'couple {edit.target} = 1 - i'")
    return _set_equation(equations, edit.target, edit.expr, edit)


def _is_peephole(node: ast.Node, values: set[str]) -> bool:
    """A parameter vector times a value: `p_i * c[-1]` or `c * p_o`."""
    if not (isinstance(node, ast.BinOp) and node.op == "*"):
        return False

    def param(n):
        return isinstance(n, ast.Name) and n.id not in values and is_parameter_name(n.id)

    def value(n):
        return isinstance(n, (ast.Name, ast.Prev)) and n.id in values

    return (param(node.left) and value(node.right)) or (param(node.right) and value(node.left))


def _remove_peepholes(equations, edit: ast.RemovePeepholes):
    values = {eq.target for eq in equations}
    removed = 0

    def zero_terms(node: ast.Node):
        nonlocal removed
        if isinstance(node, ast.BinOp) and node.op in "+-":
            left, right = node.left, node.right
            if _is_peephole(left, values):
                left, removed = ast.Num(0.0, pos=edit.pos), removed + 1
            if _is_peephole(right, values):
                right, removed = ast.Num(0.0, pos=edit.pos), removed + 1
            return ast.BinOp(node.op, left, right, pos=node.pos)
        return None

    out = [ast.Equation(eq.target, ast.transform(eq.expr, zero_terms), pos=eq.pos) for eq in equations]
    if not removed:
        raise _fail(edit, "the cell has no peepholes (terms like p_i * c[-1]) to remove")
    return out


def _gates(equations) -> list[str]:
    return [
        eq.target
        for eq in equations
        if isinstance(eq.expr, ast.Apply) and eq.expr.head in ACTIVATIONS and ACTIVATIONS[eq.expr.head].gate_like
    ]


def _add_full_gate_recurrence(equations, edit: ast.AddFullGateRecurrence):
    gates = _gates(equations)
    if not gates:
        raise _fail(edit, "the cell has no gates (values computed as sigmoid(...)) to connect")
    existing = {n.head for eq in equations for n in ast.walk(eq.expr) if isinstance(n, ast.Apply)}
    out = []
    for eq in equations:
        if eq.target not in gates:
            out.append(eq)
            continue
        call = eq.expr
        operand = call.operand
        for source in gates:
            name = f"R_{eq.target}{source}"
            problem = identifier_problem(name)
            if problem or name in existing:
                raise _fail(edit, f"cannot add matrix '{name}': " + (problem or "the name is taken"))
            product = ast.Apply(name, ast.Prev(source, pos=edit.pos), False, pos=edit.pos)
            operand = ast.BinOp("+", operand, product, pos=edit.pos)
        out.append(ast.Equation(eq.target, ast.Apply(call.head, operand, True, pos=call.pos), pos=eq.pos))
    return out


def apply_edits(equations: list[ast.Equation], edits: list[ast.Edit], output: str) -> list[ast.Equation]:
    for edit in edits:
        if isinstance(edit, ast.DropGate):
            equations = _drop_gate(equations, edit, output)
        elif isinstance(edit, ast.DropActivation):
            equations = _drop_activation(equations, edit)
        elif isinstance(edit, ast.Couple):
            equations = _couple(equations, edit)
        elif isinstance(edit, ast.Override):
            equations = _set_equation(equations, edit.target, edit.expr, edit)
        elif isinstance(edit, ast.RemovePeepholes):
            equations = _remove_peepholes(equations, edit)
        elif isinstance(edit, ast.AddFullGateRecurrence):
            equations = _add_full_gate_recurrence(equations, edit)
        else:  # pragma: no cover
            raise AssertionError(f"unhandled edit {edit!r}")
    return equations
