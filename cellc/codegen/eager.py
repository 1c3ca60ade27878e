"""The eager backend's per-step code: IR expressions -> PyTorch expressions.

Autograd differentiates what this emits; it is the reference the faster backends are
tested against, so it stays a direct transcription of the scheduled IR.
"""

from __future__ import annotations

import math

from cellc.codegen import blocks, naming
from cellc.ir import nodes as ir
from cellc.ir.autodiff import reads_per_batch
from cellc.ir.activations import FUNCTIONS, NORM_EPS
from cellc.ir.pipeline import CompiledCell
from cellc.ir.printer import Printer
from cellc.ir.sizes import HIDDEN, Dim


def number(value: float) -> str:
    """A float literal; only finite numbers ever reach generated code."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("refusing to emit a non-finite number")
    return repr(value)


class TorchPrinter(Printer):
    def __init__(self, slot_vars: dict[tuple[str, int], str], norm_sizes: dict | None = None):
        self.slot_vars = slot_vars
        self.norm_sizes = norm_sizes or {}  # each norm(...) -> the size it normalises over (default N)

    def expr(self, node: ir.Expr) -> str:
        if isinstance(node, ir.Norm):
            return self.norm(self.expr(node.operand), self.norm_sizes.get(node, HIDDEN))
        return super().expr(node)

    def const(self, value: float) -> str:
        return number(value)

    def name(self, name: str) -> str:  # pragma: no cover - every leaf has its own hook
        raise AssertionError(f"unexpected bare name {name}")

    def value(self, name: str) -> str:
        return naming.value_var(name)

    def prev(self, name: str) -> str:
        return naming.state_var(name)

    def param(self, name: str) -> str:
        return naming.param_var(name)

    def call(self, fn: str, arg: str) -> str:
        return FUNCTIONS[fn].torch_call.format(x=arg)

    def norm(self, arg: str, size: str = HIDDEN) -> str:
        """torch's own layer norm (autograd differentiates it): the eager backend does not use the expansion the
        other backends derive their backward from, so it stays an independent reference."""
        return f"torch.nn.functional.layer_norm({arg}, ({size},), eps={number(NORM_EPS)})"

    def row_mean(self, arg: str) -> str:
        return f"({arg}).mean(1, keepdim=True)"

    def indicator(self, arg: str, low: float | None, high: float | None) -> str:
        return f"({self.comparisons(arg, low, high, '&')}).to({arg if arg.isidentifier() else f'({arg})'}.dtype)"

    def matmul(self, node: ir.MatMul) -> str:
        return f"torch.mm({self.expr(node.operand)}, {naming.current_matrix_var(node.param)})"

    def slot(self, node: ir.Slot) -> str:
        return self.slot_vars[(node.stage, node.index)]


def step_context(compiled: CompiledCell) -> dict:
    """Everything the eager template needs, precomputed here so the template stays declarative."""
    sched = compiled.schedule
    n_x, n_s = len(sched.x_slots), len(sched.s_slots)

    slot_vars: dict[tuple[str, int], str] = {}
    for j in range(n_s):
        slot_vars[("xs" if sched.fused else "s", j)] = f"g{j}"
    for k in range(n_x):
        slot_vars[("x", k)] = f"x{k}[t]"
    if sched.direct is not None:
        slot_vars[("x", sched.direct)] = "xd[t]"  # x itself, where it is: not through the input GEMM's buffer
    printer = TorchPrinter(slot_vars, compiled.sizes.norms)

    vectors = [
        (naming.param_var(name), place.group, place.offset, place.stop)
        for name, place in sched.layout.items()
        if place.group in ("diag", "bias") and name not in {s.bias for s in sched.x_slots}
    ]
    current = [(naming.current_matrix_var(name), sched.layout[name].offset, sched.layout[name].stop)
               for name in sched.current]
    state_vars = [naming.state_var(s) for s in compiled.states]
    paired_x = n_s if sched.fused else 0  # x-slots [0, n_s) live inside the fused GEMM
    return {
        "eager_products": blocks.eager_products(sched),
        "recurrent_step": blocks.recurrent_step(sched, [naming.state_var(s) for s in sched.s_operands]),
        "size_lines": blocks.size_lines(compiled.sizes.symbols, layer_size_sources(compiled)),
        "x_views": [(k, sched.x_offset(k), sched.x_offset(k + 1)) for k in range(paired_x, sched.n_w)],
        "direct_input": blocks.direct_input(sched),
        "direct_input_at": (None if compiled.direct_input is None
                            else (int(compiled.direct_input.line), int(compiled.direct_input.column))),
        "vectors": vectors,
        "current": current,
        "equations": [(naming.value_var(eq.name), _batched(eq.name, eq.expr, printer, compiled)) for eq in sched.equations],
        "states": [(naming.state_var(s), naming.value_var(s)) for s in compiled.states],
        "output_var": naming.value_var(compiled.cell.output),
        "state_targets": ", ".join(state_vars) + ("," if len(state_vars) == 1 else ""),
    }


def layer_size_sources(compiled: CompiledCell) -> list[tuple[str, Dim]]:
    """Where a layer function (``_layer(x, state, weight_x, ...)``) finds its sizes: its states' widths first,
    then its parameters' rows and columns (cellc.codegen.blocks.size_lines)."""
    sched = compiled.schedule
    sources = [(f"state[{k}].shape[1]", Dim.of(compiled.sizes.values[s])) for k, s in enumerate(compiled.states)]
    for group, rows in sched.group_rows.items():
        if rows.terms:
            sources.append((f"{group}.shape[0]", rows))
            if group in ("weight_s", "weight_c"):
                sources.append((f"{group}.shape[1]", Dim.of(sched.group_cols[group])))
    return sources


def _batched(name: str, expr: ir.Expr, printer: TorchPrinter, compiled: CompiledCell) -> str:
    """The equation's code, broadcast to (B, N) where it reads nothing per batch (``o = 1`` after an
    override, ``g = b_g``): a float or an (N,) vector cannot be carried as state or stacked."""
    code = printer.expr(expr)
    if reads_per_batch(expr):
        return code
    size = compiled.sizes.values[name]
    same = [s for s in compiled.states if compiled.sizes.values[s] == size]
    if same:
        like = naming.state_var(same[0])
        return f"{like}.new_zeros({like}.shape) + {code}"
    like = naming.state_var(compiled.states[0])
    return f"{like}.new_zeros({like}.shape[0], {Dim.of(size)}) + {code}"
