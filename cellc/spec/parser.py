"""Lark front end: equation blocks and edit directives -> syntax trees with positions."""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from cellc.errors import SpecError
from cellc.spec import ast
from cellc.spec.identifiers import FLOAT32_MAX, identifier_problem


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("cellc.spec").joinpath("cell.lark").read_text()
    return Lark(
        grammar,
        start=["equations", "edit"],
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _describe(token: Token | None) -> str:
    if token is None or token.type == "$END":
        return "end of text"
    if token.type == "_NL":
        return "end of line"
    return f"'{token.value}'"


def _syntax_error(err: UnexpectedInput, origin: ast.Origin, what: str) -> SpecError:
    line, column = getattr(err, "line", 1) or 1, getattr(err, "column", 1) or 1
    if isinstance(err, UnexpectedToken):
        message = f"syntax error in {what}: unexpected {_describe(err.token)}"
        if err.token.type == "$END" or line < 0:
            line, column = _end_position(origin)
    elif isinstance(err, UnexpectedCharacters):
        message = f"syntax error in {what}: unexpected character {err.char!r}"
    elif isinstance(err, UnexpectedEOF):
        message = f"syntax error in {what}: unexpected end of text"
        line, column = _end_position(origin)
    else:  # pragma: no cover - lark has no other kinds today
        message = f"syntax error in {what}"
    if origin.joined_here(line, column):
        message += (" (YAML joined this line to the one above it because it is indented under it: to make it an "
                    "item of its own, line its '-' up with the one above)")
    return SpecError(message, origin.locate(line, column))


# Deeper than any real cell; keeps every recursive pass (and Python's parser) far from its limit.
MAX_DEPTH = 100


def _check_depth(tree: Tree, origin: ast.Origin, what: str) -> None:
    """Reject absurdly nested expressions before the recursive passes see them (iteratively)."""
    work = [(tree, 1)]
    while work:
        node, depth = work.pop()
        if depth > MAX_DEPTH:
            line, column = getattr(node.meta, "line", 1), getattr(node.meta, "column", 1)
            # each operator and parenthesis is a level: a sum of 100 terms is 100 deep
            raise SpecError(f"{what} nested more than {MAX_DEPTH} operations deep; split it into several equations",
                            origin.locate(line, column))
        work.extend((kid, depth + 1) for kid in node.children if isinstance(kid, Tree))


def _end_position(origin: ast.Origin) -> tuple[int, int]:
    text = getattr(origin, "text", "")
    lines = text.rstrip("\n").split("\n") or [""]
    return len(lines), len(lines[-1]) + 1


class _Builder:
    """Turns lark trees into ``ast`` nodes, checking every name on the way."""

    def __init__(self, origin: ast.Origin):
        self.origin = origin

    def pos(self, item: Tree | Token) -> ast.Pos:
        if isinstance(item, Token):
            return ast.Pos(item.line, item.column, self.origin)
        return ast.Pos(item.meta.line, item.meta.column, self.origin)

    def name(self, token: Token) -> str:
        problem = identifier_problem(str(token))
        if problem:
            raise SpecError(problem, self.origin.locate(token.line, token.column))
        return str(token)

    def expr(self, tree: Tree | Token) -> ast.Node:
        kind = tree.data
        pos = self.pos(tree)
        kids = tree.children
        if kind == "number":
            value = float(kids[0])
            if not math.isfinite(value):
                raise SpecError(f"number {kids[0]} is not finite", self.origin.locate(pos.line, pos.column))
            if abs(value) > FLOAT32_MAX:  # cells run in float32 (and 16-bit types): it would be inf there
                raise SpecError(f"number {kids[0]} is beyond the float32 range (about 3.4e38)",
                                self.origin.locate(pos.line, pos.column))
            return ast.Num(value, pos=pos)
        if kind == "name":
            return ast.Name(self.name(kids[0]), pos=pos)
        if kind == "prev":
            if str(kids[1]) != "1":
                raise SpecError(
                    f"only the previous step can be read: write {kids[0]}[-1], not {kids[0]}[-{kids[1]}]",
                    self.origin.locate(pos.line, pos.column),
                )
            return ast.Prev(self.name(kids[0]), pos=pos)
        if kind == "paren":
            return self.expr(kids[0])
        if kind == "juxt":
            operand = kids[1]
            return ast.Apply(self.name(kids[0]), self.expr(operand), operand.data == "paren", pos=pos)
        if kind in ("add", "sub", "mul"):
            op = {"add": "+", "sub": "-", "mul": "*"}[kind]
            return ast.BinOp(op, self.expr(kids[0]), self.expr(kids[1]), pos=pos)
        if kind == "neg":
            return ast.Neg(self.expr(kids[0]), pos=pos)
        raise AssertionError(f"unhandled grammar rule {kind}")  # pragma: no cover

    def equation(self, tree: Tree) -> ast.Equation:
        target, expr = tree.children
        return ast.Equation(self.name(target), self.expr(expr), pos=self.pos(target))

    def edit(self, tree: Tree, text: str) -> ast.Edit:
        kind, kids, pos = tree.data, tree.children, self.pos(tree)
        common = {"pos": pos, "text": text}
        if kind == "drop_gate":
            return ast.DropGate(self.name(kids[0]), **common)
        if kind == "drop_activation":
            fn = self.name(kids[0]) if kids[0] is not None else None
            return ast.DropActivation(fn, self.name(kids[1]), **common)
        if kind == "couple":
            return ast.Couple(self.name(kids[0]), self.expr(kids[1]), **common)
        if kind == "override":
            return ast.Override(self.name(kids[0]), self.expr(kids[1]), **common)
        if kind == "remove_peepholes":
            return ast.RemovePeepholes(**common)
        if kind == "add_full_gate_recurrence":
            return ast.AddFullGateRecurrence(**common)
        raise AssertionError(f"unhandled edit {kind}")  # pragma: no cover


def parse_equations(text: str, origin: ast.Origin) -> list[ast.Equation]:
    origin.text = text
    try:
        tree = _parser().parse(text, start="equations")
    except UnexpectedInput as err:
        raise _syntax_error(err, origin, "equations") from None
    _check_depth(tree, origin, "expression")
    return [_Builder(origin).equation(eq) for eq in tree.children]


EDIT_FORMS = (
    "drop gate <g>",
    "drop activation [<fn>] in <v>",
    "couple <g> = <expr>",
    "remove peepholes",
    "add full gate recurrence",
    "override <v> = <expr>",
)


def parse_edit(text: str, origin: ast.Origin) -> ast.Edit:
    origin.text = text
    try:
        tree = _parser().parse(text, start="edit")
    except UnexpectedInput as err:
        error = _syntax_error(err, origin, "edit")
        error.message += "; edits are one of: " + ", ".join(f"'{f}'" for f in EDIT_FORMS)
        raise error from None
    _check_depth(tree, origin, "expression")
    return _Builder(origin).edit(tree, text)
