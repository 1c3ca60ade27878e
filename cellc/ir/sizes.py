"""Sizes: how many units each value, parameter and buffer has, as linear forms of the module's sizes.

Every value has N units (``hidden_size``) unless the spec declares another size for it (``sizes: {y:
proj_size}``: P units). Sizes follow from the equations: an elementwise operation needs operands of one
size (numbers broadcast), a vector parameter takes its place's size, and a matrix maps its operand's size
(M for the input x) to its place's size. :func:`infer_sizes` checks all of that once and records each
parameter's shape; :class:`Dim` is a size or an offset such as ``4 * N + 1 * P``, which every backend
prints as it is: ``0``, ``N``, ``4 * N``, ``4 * N + P``.

The v2 limit: every previous-step matrix multiplies values of one size, and so does every current-step
matrix, so that ``weight_s`` and ``weight_c`` stay one matrix each (their rows may mix sizes, their columns
do not).
"""

from __future__ import annotations

from dataclasses import dataclass

from cellc.errors import Location, SpecError
from cellc.ir import nodes as ir

# The sizes a spec may name: the module's constructor argument -> its symbol in shapes and generated code.
SIZE_NAMES = {"hidden_size": "N", "proj_size": "P"}
SYMBOL_NAMES = {symbol: name for name, symbol in SIZE_NAMES.items()}
HIDDEN = "N"
INPUT = "M"  # the layer input's size (input_size, or the layer below's output times its directions)


@dataclass(frozen=True)
class Dim:
    """A linear form of the size symbols (``{N: 4, P: 1}`` is 4N + P), printed as code (``4 * N + P``)."""

    terms: tuple[tuple[str, int], ...] = ()  # (symbol, nonzero coefficient), in SIZE_NAMES order

    @staticmethod
    def of(symbol: str, count: int = 1) -> "Dim":
        return Dim(((symbol, count),)) if count else Dim()

    def coefficient(self, symbol: str) -> int:
        return dict(self.terms).get(symbol, 0)

    def __add__(self, other: "Dim") -> "Dim":
        total = dict(self.terms)
        for symbol, k in other.terms:
            total[symbol] = total.get(symbol, 0) + k
        order = [*SIZE_NAMES.values(), INPUT]
        return Dim(tuple((s, total[s]) for s in order if total.get(s)))

    def __mul__(self, k: int) -> "Dim":
        return Dim(tuple((s, c * k) for s, c in self.terms)) if k else Dim()

    __rmul__ = __mul__

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        return " + ".join(s if k == 1 else f"{k} * {s}" for s, k in self.terms)

    def coefficients(self, symbols: tuple[str, ...]) -> tuple[int, ...]:
        """The coefficients over ``symbols`` (a generated module's SIZES), for its constants."""
        assert {s for s, _ in self.terms} <= set(symbols), (self, symbols)
        return tuple(self.coefficient(s) for s in symbols)


def default_sizes(size_names: tuple[str, ...], hidden_size: int) -> dict[str, int]:
    """The sizes beside hidden_size that a module taking ``size_names`` gets where nobody chose them (the
    harness, the test helpers): proj_size = hidden_size // 2 (at least 1), as speech LSTMs often have it."""
    return {name: max(1, hidden_size // 2) for name in size_names if name != "hidden_size"}


def total(sizes: list[str]) -> Dim:
    """The sum of blocks of these sizes (symbols)."""
    out = Dim()
    for s in sizes:
        out = out + Dim.of(s)
    return out


@dataclass(frozen=True)
class CellSizes:
    values: dict[str, str]  # every value of the cell -> its symbol
    params: dict[str, tuple[str, str | None]]  # parameter -> (rows, columns: None for a vector; M for x's)
    direct: str | None  # the size of the input where the cell reads it elementwise (None: it does not)
    norms: dict[ir.Norm, str]  # each normalisation -> the size it normalises over
    symbols: tuple[str, ...]  # the sizes the cell uses: N first, then the declared ones (SIZE_NAMES order)

    @property
    def declared(self) -> bool:
        """Does any value have a size other than N? (Its modules take proj_size=, and so on.)"""
        return self.symbols != (HIDDEN,)

    def names(self) -> tuple[str, ...]:
        return tuple(SYMBOL_NAMES[s] for s in self.symbols)

    def widths(self, hidden_size: int, **sizes: int) -> dict[str, int]:
        """Each symbol's number of units for a module of this hidden size (other sizes: ``sizes``, else
        :func:`default_sizes`)."""
        given = {**default_sizes(self.names(), hidden_size), **sizes, "hidden_size": hidden_size}
        return {s: given[SYMBOL_NAMES[s]] for s in self.symbols}

    def declarations(self) -> dict[str, str]:
        """The values whose size is not N, as a spec's ``sizes:`` would give them ({"y": "proj_size"})."""
        return {value: SYMBOL_NAMES[s] for value, s in self.values.items() if s != HIDDEN}


def _name(symbol: str) -> str:
    return SYMBOL_NAMES.get(symbol, "input_size")


def infer_sizes(cell: ir.Cell, declared: dict[str, str], key_locations: dict, inherited: set[str],
                spec_values: set[str]) -> CellSizes:
    """Check that the sizes agree everywhere and record every parameter's shape (one error at its place
    otherwise). ``declared``: the spec's ``sizes``; ``spec_values``: every value the spec's equations define
    (a declared value that edits or dead-code elimination removed is not an error)."""
    values = {eq.name: HIDDEN for eq in cell.equations}
    for value, size in declared.items():
        where = key_locations.get(f"sizes.{value}")
        if value not in spec_values:
            if f"sizes.{value}" in inherited:
                continue  # the parent's, for a value an edit removed
            raise SpecError(f"sizes: '{value}' is not a value of the cell (values: {', '.join(sorted(spec_values))})",
                            where)
        if size not in SIZE_NAMES:
            raise SpecError(f"sizes: '{size}' is not a size (sizes: {', '.join(SIZE_NAMES)})", where)
        if value in values:
            values[value] = SIZE_NAMES[size]
    checker = _Checker(values, {v: key_locations.get(f"sizes.{v}") for v in declared})
    for eq in cell.equations:
        checker.equation = eq.name
        checker.visit(eq.expr, values[eq.name])
    _check_matrix_columns(checker)
    direct = None
    if checker.direct:
        (direct, loc), *rest = checker.direct
        other = next(((s, where) for s, where in rest if s != direct), None)
        if other is not None:
            raise SpecError(f"the input '{cell.input}' is read elementwise with size {_name(direct)} at "
                            f"{_where(loc, other[1])} and with size {_name(other[0])} here: an input has one size", other[1])
        if direct != values[cell.output]:
            raise SpecError(f"the input '{cell.input}' is read elementwise here with size {_name(direct)}, but the "
                            f"output '{cell.output}' has size {_name(values[cell.output])}: in a stack, a layer's "
                            "input is the output of the layer below, so the two must agree", loc)
    # A module learns its sizes from its states' and parameters' extents: hidden_size is every undeclared value's,
    # and a cell may declare another size for all of them (then nothing of it would have hidden_size units).
    stored = {values[s] for s in cell.states} | {n for shape in checker.params.values() for n in shape}
    if HIDDEN not in stored:
        first = next(v for v in declared if v in values)
        raise SpecError(f"sizes: no state and no parameter of the cell has hidden_size units (every value is "
                        f"declared {_name(values[first])}); hidden_size is the size of the values that 'sizes:' "
                        "does not name, so leave at least one such value", key_locations.get(f"sizes.{first}"))
    used = set(values.values()) | {rows for rows, _ in checker.params.values()}
    symbols = tuple(s for s in SIZE_NAMES.values() if s == HIDDEN or s in used)
    return CellSizes(values=values, params=checker.params, direct=direct, norms=checker.norms, symbols=symbols)


def _where(loc: Location | None, here: Location | None = None) -> str:
    """A place for a message about ``here``: line:column in the same file, file:line:column in another."""
    if loc is None:
        return "its first use"
    return f"{loc.line}:{loc.column}" if here is not None and here.file == loc.file else loc.render()


class _Checker:
    def __init__(self, values: dict[str, str], declared_at: dict[str, Location | None]):
        self.values = values
        self.declared_at = declared_at  # where `sizes:` gives a value its size
        self.equation = ""  # the value whose equation is being checked
        self.params: dict[str, tuple[str, str | None]] = {}
        self.matrices: dict[str, tuple[ir.MatMul, str]] = {}  # matrix -> (its product, operand's size)
        self.direct: list[tuple[str, Location | None]] = []
        self.norms: dict[ir.Norm, str] = {}

    def _origin(self, value: str, here: Location | None) -> str:
        """Where a value's size was declared (its file too where that is not the error's: a child's `sizes:`
        that clashes with its parent's equations)."""
        where = self.declared_at.get(value)
        if where is None:
            return ""
        return f" (sizes: at {_where(where, here)})"

    def size_of(self, node: ir.Expr) -> str | None:
        """The size an expression has by itself (None: it takes its place's, as numbers and vectors do)."""
        if isinstance(node, (ir.Value, ir.State)):
            return self.values[node.name]
        if isinstance(node, (ir.MatMul, ir.Param, ir.Const, ir.Input)):
            return None
        return next((s for s in map(self.size_of, ir.children(node)) if s is not None), None)

    def visit(self, node: ir.Expr, size: str) -> None:
        if isinstance(node, (ir.Value, ir.State)):
            have = self.values[node.name]
            if have != size:
                shown = node.name + ("[-1]" if isinstance(node, ir.State) else "")
                raise SpecError(f"'{shown}' has size {_name(have)}{self._origin(node.name, node.loc)}, but here the "
                                f"sizes are {_name(size)}{self._origin(self.equation, node.loc)} (an elementwise "
                                "operation needs operands of one size; a matrix maps one size to another)", node.loc)
        elif isinstance(node, ir.Param):
            self.params[node.name] = (size, None)
        elif isinstance(node, ir.Input):
            self.direct.append((size, node.loc))
        elif isinstance(node, ir.MatMul):
            operand = INPUT if isinstance(node.operand, ir.Input) else self.size_of(node.operand) or HIDDEN
            self.params[node.param] = (size, operand)
            self.matrices[node.param] = (node, operand)
            if not isinstance(node.operand, ir.Input):
                self.visit(node.operand, operand)
        else:
            if isinstance(node, ir.Norm):
                self.norms[node] = size
            for child in ir.children(node):
                self.visit(child, size)


def _check_matrix_columns(checker: _Checker) -> None:
    """The v2 limit: previous-step matrices read values of one size, and so do current-step matrices."""
    for kind, test in (("previous-step", lambda m: isinstance(m.operand, ir.State)),
                       ("current-step", lambda m: not isinstance(m.operand, (ir.State, ir.Input)))):
        seen: tuple[ir.MatMul, str] | None = None
        for product, operand in checker.matrices.values():
            if not test(product):
                continue
            if seen is None:
                seen = (product, operand)
            elif operand != seen[1]:
                first = seen[0]
                raise SpecError(f"the {kind} matrices read values of different sizes: '{first.param}' reads "
                                f"{_name(seen[1])} (at {_where(first.loc, product.loc)}) and '{product.param}' "
                                f"{_name(operand)} here; all {kind} matrices of a cell must read one size (they "
                                "are one weight matrix)", product.loc)
