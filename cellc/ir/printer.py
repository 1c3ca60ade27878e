"""Render IR equations as spec text (canonical, also hashed) or as LaTeX."""

from __future__ import annotations

from cellc.ir import nodes as ir
from cellc.ir.activations import FUNCTIONS, NORM

# Binding strength: sums < products < unary minus < products by juxtaposition / atoms.
_SUM, _PROD, _NEG, _ATOM = 1, 2, 3, 4


def format_number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _strength(node: ir.Expr) -> int:
    if isinstance(node, ir.Sum):
        return _SUM
    if isinstance(node, ir.Prod):
        return _PROD
    if isinstance(node, ir.Neg) or (isinstance(node, ir.Const) and node.value < 0):
        return _NEG
    return _ATOM


class Printer:
    latex = False

    def wrap(self, node: ir.Expr, minimum: int) -> str:
        text = self.expr(node)
        if _strength(node) < minimum:
            return self.paren(text)
        return text

    def paren(self, text: str) -> str:
        return rf"\left({text}\right)" if self.latex else f"({text})"

    def expr(self, node: ir.Expr) -> str:
        if isinstance(node, ir.Const):
            return self.const(node.value)
        if isinstance(node, ir.Input):
            return self.name(node.name)
        if isinstance(node, ir.Value):
            return self.value(node.name)
        if isinstance(node, ir.Param):
            return self.param(node.name)
        if isinstance(node, ir.State):
            return self.prev(node.name)
        if isinstance(node, ir.Sum):
            parts = [self.wrap(node.terms[0], _SUM)]
            for term in node.terms[1:]:
                if isinstance(term, ir.Neg):
                    parts.append(f"- {self.wrap(term.operand, _PROD)}")
                else:
                    parts.append(f"+ {self.wrap(term, _SUM + 1 if isinstance(term, ir.Sum) else _SUM)}")
            return " ".join(parts)
        if isinstance(node, ir.Prod):
            sep = r" \odot " if self.latex else " * "
            return sep.join(self.wrap(f, _NEG) for f in node.factors)
        if isinstance(node, ir.Neg):
            return f"-{self.wrap(node.operand, _NEG)}"
        if isinstance(node, ir.MatMul):
            return self.matmul(node)
        if isinstance(node, ir.Act):
            return self.call(node.fn, self.expr(node.operand))
        if isinstance(node, ir.Slot):
            return self.slot(node)
        if isinstance(node, ir.Indicator):
            return self.indicator(self.expr(node.operand), node.low, node.high)
        if isinstance(node, ir.Norm):
            return self.norm(self.expr(node.operand))
        if isinstance(node, ir.RowMean):
            return self.row_mean(self.expr(node.operand))
        raise AssertionError(f"unhandled IR node {node!r}")  # pragma: no cover

    # Leaves and products: the hooks a code generator overrides.
    def const(self, value: float) -> str:
        return format_number(value)

    def name(self, name: str) -> str:
        return name

    def value(self, name: str) -> str:
        return self.name(name)

    def param(self, name: str) -> str:
        return self.name(name)

    def matmul(self, node: ir.MatMul) -> str:
        text = self.expr(node.operand)
        if not isinstance(node.operand, (ir.Input, ir.Value, ir.State, ir.Act, ir.Norm)):
            text = self.paren(text)
        return f"{self.name(node.param)} {text}"

    def slot(self, node: ir.Slot) -> str:
        return f"<{node.stage}{node.index}>"

    def prev(self, name: str) -> str:
        return f"{name}[-1]"

    def call(self, fn: str, arg: str) -> str:
        return f"{fn}({arg})"

    def norm(self, arg: str) -> str:
        return f"{NORM}({arg})"

    def row_mean(self, arg: str) -> str:
        """The mean over the units (only in derived code)."""
        return f"mean({arg})"

    def indicator(self, arg: str, low: float | None, high: float | None) -> str:
        """1 where ``low < arg < high``, else 0 (an Iverson bracket here; code generators print a select)."""
        bounds = ([self.const(low), "<"] if low is not None else []) + [arg] + (
            ["<", self.const(high)] if high is not None else [])
        return f"[{' '.join(bounds)}]"

    def comparisons(self, arg: str, low: float | None, high: float | None, both: str) -> str:
        """``arg > low`` and ``arg < high`` (those bounds given), joined by ``both``: the condition of an
        indicator, for the code generators' own select."""
        parts = ([f"{arg} > {self.const(low)}"] if low is not None else []) + (
            [f"{arg} < {self.const(high)}"] if high is not None else [])
        return f" {both} ".join(f"({part})" for part in parts) if len(parts) > 1 else parts[0]

    def equation(self, eq: ir.Equation) -> str:
        return f"{self.name(eq.name)} = {self.expr(eq.expr)}"


class _LatexPrinter(Printer):
    """Values carry a time index (c_t, c_{t-1}); parameters keep their subscripts (W_{z})."""

    latex = True

    @staticmethod
    def _split(name: str) -> tuple[str, str]:
        head, _, sub = name.partition("_")
        return head, sub.replace("_", r"\_")

    def name(self, name: str) -> str:
        head, sub = self._split(name)
        return f"{head}_{{{sub}}}" if sub else head

    def value(self, name: str) -> str:
        head, sub = self._split(name)
        return f"{head}_{{{sub + ',' if sub else ''}t}}"

    def prev(self, name: str) -> str:
        head, sub = self._split(name)
        return f"{head}_{{{sub + ',' if sub else ''}t-1}}"

    def matmul(self, node: ir.MatMul) -> str:
        if isinstance(node.operand, ir.Input):
            return f"{self.name(node.param)} {self.value(node.operand.name)}"
        return super().matmul(node)

    def call(self, fn: str, arg: str) -> str:
        return rf"{FUNCTIONS[fn].latex}\left({arg}\right)"

    def norm(self, arg: str) -> str:
        return rf"\mathrm{{LN}}\left({arg}\right)"

    def equation(self, eq: ir.Equation) -> str:
        return f"{self.value(eq.name)} = {self.expr(eq.expr)}"


def equation_text(eq: ir.Equation) -> str:
    return Printer().equation(eq)


def expr_text(expr: ir.Expr) -> str:
    return Printer().expr(expr)


def equation_latex(eq: ir.Equation) -> str:
    return _LatexPrinter().equation(eq)


def cell_text(cell: ir.Cell) -> list[str]:
    return [equation_text(eq) for eq in cell.equations]
