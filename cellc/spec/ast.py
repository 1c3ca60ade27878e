"""Syntax tree of cell equations, as written (names not yet resolved), with source positions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pos:
    """A position in a snippet of spec text; ``origin`` maps it back to the file."""

    line: int
    column: int
    origin: "Origin | None" = field(default=None, compare=False, repr=False)


class Origin:
    """Where a snippet (an equations block, one edit) sits in its YAML file."""

    def __init__(self, file: str, file_lines: list[str], first_line: int, column_offset: int, exact: bool = True,
                 folds: list[tuple[int, int, int]] | None = None):
        self.file = file
        self.file_lines = file_lines
        self.first_line = first_line  # 1-based file line of the snippet's line 1
        self.column_offset = column_offset  # added to the snippet's column
        # False where the snippet's text is not the file's (a quoted scalar with escapes such as \n): positions
        # in it then point at where the snippet starts.
        self.exact = exact
        # A plain scalar YAML folded from several lines into one: (offset in the text, 1-based file line, 1-based
        # file column) where each line's part starts.
        self.folds = folds
        self.text = ""  # the snippet itself, set by the parser (for end-of-text errors)

    def _fold(self, column: int) -> tuple[int, tuple[int, int, int]] | None:
        if not self.folds:
            return None
        index = max(k for k, (offset, _, _) in enumerate(self.folds) if k == 0 or offset <= column - 1)
        return index, self.folds[index]

    def joined_here(self, line: int, column: int) -> bool:
        """Does (line, column) of the text start a file line that YAML folded onto the one above?"""
        found = self._fold(column) if line == 1 else None
        return found is not None and found[0] > 0 and found[1][0] == column - 1

    def locate(self, line: int, column: int):
        from cellc.errors import Location

        found = self._fold(column) if line == 1 else None
        if found is not None:
            offset, file_line, file_column = found[1]
            source = self.file_lines[file_line - 1] if 0 < file_line <= len(self.file_lines) else None
            return Location(self.file, file_line, file_column + column - 1 - offset, source)
        if not self.exact:
            line, column = 1, 1
        file_line = self.first_line + line - 1
        source = self.file_lines[file_line - 1] if 0 < file_line <= len(self.file_lines) else None
        return Location(self.file, file_line, column + self.column_offset, source)


@dataclass(frozen=True)
class Node:
    pos: Pos | None = field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Num(Node):
    value: float


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Prev(Node):
    """``id[-1]``: the value of ``id`` at the previous time step."""

    id: str


@dataclass(frozen=True)
class Apply(Node):
    """``head operand``: an activation call or a matrix product, decided by the front end."""

    head: str
    operand: Node
    parenthesised: bool


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # "+", "-", "*"
    left: Node
    right: Node


@dataclass(frozen=True)
class Neg(Node):
    operand: Node


@dataclass(frozen=True)
class Equation:
    target: str
    expr: Node
    pos: Pos | None = field(default=None, compare=False, repr=False)


# --- edit directives -------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    pos: Pos | None = field(default=None, compare=False, repr=False, kw_only=True)
    text: str = field(default="", compare=False, kw_only=True)


@dataclass(frozen=True)
class DropGate(Edit):
    gate: str


@dataclass(frozen=True)
class DropActivation(Edit):
    function: str | None
    target: str


@dataclass(frozen=True)
class Couple(Edit):
    target: str
    expr: Node


@dataclass(frozen=True)
class RemovePeepholes(Edit):
    pass


@dataclass(frozen=True)
class AddFullGateRecurrence(Edit):
    pass


@dataclass(frozen=True)
class Override(Edit):
    target: str
    expr: Node


def walk(node: Node):
    """Yield ``node`` and all nodes below it, parents first."""
    yield node
    if isinstance(node, Apply):
        yield from walk(node.operand)
    elif isinstance(node, BinOp):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, Neg):
        yield from walk(node.operand)


def transform(node: Node, fn) -> Node:
    """Rebuild ``node`` bottom-up, replacing each node by ``fn(node)`` (identity when it returns None)."""
    if isinstance(node, Apply):
        node = Apply(node.head, transform(node.operand, fn), node.parenthesised, pos=node.pos)
    elif isinstance(node, BinOp):
        node = BinOp(node.op, transform(node.left, fn), transform(node.right, fn), pos=node.pos)
    elif isinstance(node, Neg):
        node = Neg(transform(node.operand, fn), pos=node.pos)
    out = fn(node)
    return node if out is None else out
