"""Where a cell's buffers live, and their names: the facts the fused, compiled and Triton backends share.

:func:`layout_of` computes a compiled cell's :class:`Layout` once (from its one step program,
:func:`cellc.ir.autodiff.step_program`) and keeps it on the cell; backends read it and print.

- ``xw`` (T, B, n_x*N): the hoisted input GEMM with biases folded in. When the schedule is
  fused, the recurrent GEMM is added in place into its first n_s*N columns, so after the
  forward loop xw holds the pre-activations the backward reads. Where the cell reads its input
  elementwise, the last block (``Schedule.direct``) holds that input itself, copied in, and its
  gradient block in dXW is the gradient of that input.
- ``gs`` (T, B, n_s*N): the recurrent GEMM's result when it is not fused with xw.
- ``S`` (T+1, B, K*N): every state, previous-step GEMM operands first, so that S[t, :, :n_ops*N]
  is the recurrent GEMM's operand and S[:T] is the operand of its weight gradient.
- one (T, B, N) buffer per forward value the backward reads (``StepProgram.saved``); (T, B, 1) for a value
  that is the same in every unit (``saved_rows``: a normalisation's reciprocal standard deviation).

Blocks of N above are a cell's whose values all have N units. Where a spec declares other sizes
(cellc.ir.sizes), each block has its value's or slot's size and every offset and width is a ``Dim``
(``state_offset``, ``S_width``, ``ops_width``, ``slot_span``, ``block_span``, ``saved_widths``).
"""

from __future__ import annotations

from cellc.codegen import naming
from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.ir.pipeline import CompiledCell
from cellc.ir.sizes import HIDDEN, Dim, total


def layout_of(compiled: CompiledCell) -> "Layout":
    """``compiled``'s layout, built once per compiled cell (every backend reads this one)."""
    layout = compiled.derived.get("layout")
    if layout is None:
        layout = compiled.derived["layout"] = Layout(compiled, ad.step_program(compiled))
    return layout


def _kind(node: ir.Expr) -> str:
    """'v' for a forward value, 't' for a temporary of the derived backward (cellc.codegen.naming)."""
    if isinstance(node, ir.Value):
        return "v"
    assert isinstance(node, ad.Temp)
    return "t"


def target_var(node: ir.Expr) -> str:
    return naming.spec_var(_kind(node), node.name)


def grad_var(node: ir.Expr) -> str:
    return naming.spec_var("d" + _kind(node), node.name)


def saved_var(node: ir.Expr) -> str:
    return naming.spec_var("s" + _kind(node), node.name)


class Layout:
    """Where every buffer lives; shared by the fused and compiled backends."""

    def __init__(self, compiled: CompiledCell, program: ad.StepProgram):
        sched = compiled.schedule
        self.compiled = compiled
        self.program = program
        self.n_x = len(sched.x_slots)
        self.n_s = len(sched.s_slots)
        self.n_ops = len(sched.s_operands)
        self.fused = sched.fused
        others = [s for s in compiled.states if s not in sched.s_operands]
        self.state_order = list(sched.s_operands) + others  # S column blocks
        self.state_block = {s: k for k, s in enumerate(self.state_order)}
        self.K = len(self.state_order)
        # Sizes (cellc.ir.sizes): each state's columns in S, and the widths of S and of the recurrent operand.
        values = compiled.sizes.values
        self.size_of = {s: Dim.of(values[s]) for s in values}
        self.state_offset = {s: total([values[o] for o in self.state_order[:k]]) for k, s in enumerate(self.state_order)}
        self.S_width = total([values[s] for s in self.state_order])
        self.ops_width = total([values[s] for s in sched.s_operands])
        self.places = {(p.group, p.index): p for p in sched.layout.values()}
        self.size_args = ", ".join(compiled.sizes.symbols)  # the generated helpers' size parameters: "N", "N, P"
        self.vectors = [name for name, place in sched.layout.items()
                        if place.group in ("diag", "bias") and name not in {s.bias for s in sched.x_slots}]
        self.vector_grads = [name for name in self.vectors if name in program.param_grads]
        self.current = list(sched.current)
        self.saved = list(program.saved)
        # which saved buffers hold one number per row ((T, B, 1): a normalisation's rstd), not one per unit (the
        # fused and compiled buffers; the Triton kernels keep one uniform (n, T, B, N) buffer)
        self.saved_rows = [n in program.row_values for n in self.saved]
        # and the width of each: 1 for a row's number, else its value's size (a Dim)
        self.saved_widths = [None if row else self.value_size(n) for n, row in zip(self.saved, self.saved_rows)]
        # Which weight_s block sits where in the recurrent matrix r (n_s*N x n_ops*N).
        self.r_blocks: list[tuple[int, int]] = []
        for j, slot in enumerate(sched.s_slots):
            for _, operand in slot.products:
                self.r_blocks.append((j, sched.s_operands.index(operand)))
        self.r_tiles = recurrent_tiles(self.r_blocks, self.n_s, self.n_ops)
        # Where each slot's gradient goes: ('dxw', column) or ('dg', column).
        self.slot_home: dict[tuple[str, int], tuple[str, int]] = {}
        for j in range(self.n_s):
            self.slot_home[("xs" if self.fused else "s", j)] = ("dxw" if self.fused else "dg", j)
        for k in range(self.n_x):
            self.slot_home[("x", k)] = ("dxw", k)
        self.gs_needed = self.n_s > 0 and not self.fused
        # Does the backward read pre-activations from xw? Only for activations whose derivative needs
        # its input; otherwise xw is not kept for the backward (it is the largest forward buffer).
        self.xw_for_backward = any(stage in ("x", "xs") for stage, _ in program.saved_slots)
        self.x_bias_folded = [(k, sched.layout[s.bias].index) for k, s in enumerate(sched.x_slots) if s.bias]
        self.vector_places = {name: (sched.layout[name].group, sched.layout[name].index) for name in self.vectors}
        # The bias gradient's copies from the input GEMM's column sums, and the per-unit vectors' gradients from
        # the loops' accumulators, each as runs of consecutive blocks (one tensor operation per run).
        self.x_bias_runs = paired_runs(self.x_bias_folded)  # (source block, bias block, count)
        self.vector_grad_runs = paired_runs([(a, *self.vector_places[v]) for a, v in enumerate(self.vector_grads)])


    def value_size(self, node: ir.Expr) -> Dim:
        """The size of a forward value or temporary of the step program."""
        return Dim.of(self.program.size_of(node))

    def expr_size(self, expr: ir.Expr, known: dict | None = None) -> str:
        """The size (N, P) of a step-program expression: its first leaf of known size (a forward target's, in
        ``known`` or the program's sizes; a state's, a slot's, a vector's), N for numbers alone."""
        known = self.program.sizes if known is None else known
        sizes, sched = self.compiled.sizes, self.compiled.schedule
        for node in ir.walk(expr):
            node = node.target if isinstance(node, ad.Grad) else node
            if node in known:
                return known[node]
            if isinstance(node, (ir.Value, ir.State, ad.Carry)):
                return sizes.values[node.name]
            if isinstance(node, ir.Slot):
                return (sched.x_slots if node.stage == "x" else sched.s_slots)[node.index].size
            if isinstance(node, ad.OutGrad):
                return sizes.values[self.compiled.cell.output]
            if isinstance(node, ad.MatGrad):
                return sched.group_cols["weight_c"]
            if isinstance(node, ir.Param):
                return sizes.params[node.name][0]
        return HIDDEN

    def slot_span(self, stage: str, k: int) -> tuple[Dim, Dim]:
        """(start, end) columns of slot k of xw (stage "x") or of the per-step GEMM's result ("s", "xs")."""
        sched = self.compiled.schedule
        if stage == "x":
            return sched.x_offset(k), sched.x_offset(k + 1)
        return sched.s_offset(k), sched.s_offset(k + 1)

    def block_span(self, group: str, index: int, count: int = 1) -> tuple[Dim, Dim]:
        """(start, end) rows of ``count`` consecutive parameters of a group from its ``index``-th."""
        return self.places[(group, index)].offset, self.places[(group, index + count - 1)].stop


def paired_runs(pairs: list[tuple]) -> list[tuple]:
    """(source block, *where, target block) pairs as runs (source, *where, target, count): consecutive
    pairs whose source and target blocks both follow on (and lie in the same place) become one, so the
    backward gathers each run of gradient blocks with one copy (one launch on a GPU) instead of a copy
    per block."""
    runs: list[tuple] = []
    for source, *where, target in pairs:
        if runs:
            first, *place, start, count = runs[-1]
            if place == where and source == first + count and target == start + count:
                runs[-1] = (first, *place, start, count + 1)
                continue
        runs.append((source, *where, target, 1))
    return runs


def recurrent_tiles(blocks: list[tuple[int, int]], n_rows: int, n_cols: int) -> list[tuple[int, int, int, int]]:
    """Dense rectangles of the recurrent matrix's nonzero blocks, (row, rows, col, cols) in blocks.

    Runs of operand columns that feed the same contiguous range of slots become one GEMM each,
    so a block matrix with zero blocks (fgr: the cell input z reads only y, the gates read
    y, i, f, o) skips them: fewer flops, and fewer bytes of R streamed every step. Anything
    else is one dense GEMM over the whole matrix, zero blocks included."""
    dense = [(0, n_rows, 0, n_cols)] if n_rows and n_cols else []
    rows_of = [sorted(j for j, k in blocks if k == col) for col in range(n_cols)]
    tiles: list[tuple[int, int, int, int]] = []
    for col, rows in enumerate(rows_of):
        if not rows or rows != list(range(rows[0], rows[-1] + 1)):
            return dense  # an unused operand, or rows that are not one range
        if tiles and rows_of[tiles[-1][2]] == rows:
            row, count, first, width = tiles[-1]
            tiles[-1] = (row, count, first, width + 1)
        else:
            tiles.append((rows[0], len(rows), col, 1))
    return tiles if len(tiles) > 1 else dense
