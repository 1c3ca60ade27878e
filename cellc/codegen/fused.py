"""The fused backend: a custom autograd.Function per cell, its backward derived by cellc.ir.autodiff.

Layout shared with the compiled backend (cellc/codegen/native.py), which replaces only the
two time loops:

- ``xw`` (T, B, n_x*N): the hoisted input GEMM with biases folded in. When the schedule is
  fused, the recurrent GEMM is added in place into its first n_s*N columns, so after the
  forward loop xw holds the pre-activations the backward reads.
- ``gs`` (T, B, n_s*N): the recurrent GEMM's result when it is not fused with xw.
- ``S`` (T+1, B, K*N): every state, previous-step GEMM operands first, so that S[t, :, :n_ops*N]
  is the recurrent GEMM's operand and S[:T] is the operand of its weight gradient.
- one (T, B, N) buffer per forward value the backward reads (``StepProgram.saved``).

After the backward loop, weight gradients are single large GEMMs over the whole sequence and
vector-parameter gradients are reductions.
"""

from __future__ import annotations

from cellc.codegen import naming
from cellc.codegen.eager import TorchPrinter, number, step_context
from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.ir.activations import ACTIVATIONS
from cellc.ir.pipeline import CompiledCell



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


class FusedPrinter(TorchPrinter):
    """Torch expressions over the step program's nodes (forward and backward)."""

    def expr(self, node: ir.Expr) -> str:
        if isinstance(node, ad.Temp):
            return target_var(node)
        if isinstance(node, ad.Grad):
            return grad_var(node.target)
        if isinstance(node, ad.Deriv):
            return "(" + ACTIVATIONS[node.fn].derivative.format(y=self.expr(node.output)) + ")"
        if isinstance(node, ad.Carry):
            return naming.carry_var(node.name)
        if isinstance(node, ad.OutGrad):
            return "d_out_t"
        if isinstance(node, ad.MatGrad):
            return f"mg{node.index}"
        return super().expr(node)

    def matmul(self, node: ir.MatMul) -> str:  # pragma: no cover - flattened into CurrentGemm
        raise AssertionError("current-step products are separate ops in the step program")


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
        self.vectors = [name for name, place in sched.layout.items()
                        if place.group in ("diag", "bias") and name not in {s.bias for s in sched.x_slots}]
        self.vector_grads = [name for name in self.vectors if name in program.param_grads]
        self.current = list(sched.current)
        self.saved = list(program.saved)
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


def _python_loops(layout: Layout) -> tuple[list[str], list[str]]:
    """Bodies of the Python forward and backward time loops (indented 8 spaces by the template)."""
    prog = layout.program
    N = "N"
    slot_vars: dict[tuple[str, int], str] = {}
    for j in range(layout.n_s):
        slot_vars[("xs" if layout.fused else "s", j)] = f"g{j}"
    for k in range(layout.n_x):
        if ("xs", k) not in slot_vars:
            slot_vars[("x", k)] = f"x{k}"
    p = FusedPrinter(slot_vars)

    def state_view(name: str, t: str) -> str:
        b = layout.state_block[name]
        return f"S[{t}, :, {b} * {N} : {b + 1} * {N}]"

    fwd: list[str] = []
    used_states = {leaf.name for op in prog.forward for leaf in ir.walk(op.expr if isinstance(op, ad.Pointwise) else op.operand)
                   if isinstance(leaf, ir.State)}
    for s in layout.state_order:
        if s in used_states:
            fwd.append(f"{naming.state_var(s)} = {state_view(s, 't')}")
    if layout.n_s:
        h = f"S[t, :, : {layout.n_ops} * N]"
        if layout.fused:
            fwd.append(f"g = xw[t, :, : {layout.n_s} * N].addmm_({h}, r_t)")
        else:
            fwd.append(f"g = torch.mm({h}, r_t, out=gs[t])")
        fwd.append(f"{', '.join(f'g{j}' for j in range(layout.n_s))}{',' if layout.n_s == 1 else ''} = g.chunk({layout.n_s}, 1)")
    for (stage, k), var in slot_vars.items():
        if stage == "x":
            fwd.append(f"{var} = xw[t, :, {k} * N : {k + 1} * N]")
    saved = set(layout.saved)
    for op in prog.forward:
        var = target_var(op.target)
        if isinstance(op, ad.CurrentGemm):
            fwd.append(f"{var} = torch.mm({p.expr(op.operand)}, mat_{op.index}.t())")
        elif ad.reads_per_batch(op.expr):
            fwd.append(f"{var} = {p.expr(op.expr)}")
        else:  # the same for every sequence: broadcast to (B, N) like every other value
            fwd.append(f"{var} = out[t].new_zeros(out[t].shape) + {p.expr(op.expr)}")
        if op.target in saved:
            fwd.append(f"{saved_var(op.target)}[t] = {var}")
    out_var = naming.value_var(layout.compiled.cell.output)
    fwd.append("if mask is None:")
    for s in layout.state_order:
        fwd.append(f"    {state_view(s, 't + 1')} = {naming.value_var(s)}")
    fwd.append(f"    out[t] = {out_var}")
    fwd.append("else:")
    fwd.append("    m = mask[t]")
    for s in layout.state_order:
        fwd.append(f"    {state_view(s, 't + 1')} = torch.where(m, {naming.value_var(s)}, {state_view(s, 't')})")
    fwd.append(f"    out[t] = {out_var} * m")

    # Backward: forward values from the saved buffers, states from S, slots from xw / gs.
    bwd: list[str] = []
    all_exprs = [op.expr for op in prog.backward if isinstance(op, ad.GradAssign)]
    all_exprs += list(prog.slot_grads.values()) + list(prog.param_grads.values()) + list(prog.prev_grads.values())
    leaves = [leaf for e in all_exprs for leaf in ad.forward_leaves(e)]
    for s in layout.state_order:
        if any(isinstance(leaf, ir.State) and leaf.name == s for leaf in leaves):
            bwd.append(f"{naming.state_var(s)} = {state_view(s, 't')}")
    for node in layout.saved:
        bwd.append(f"{target_var(node)} = {saved_var(node)}[t]")
    for stage, k in prog.saved_slots:
        var = slot_vars[(stage, k)]
        src = "gs" if stage == "s" else "xw"
        bwd.append(f"{var} = {src}[t, :, {k} * N : {k + 1} * N]")
    bwd.append("m = None if mask is None else mask[t]")
    bwd.append("d_out_t = d_out[t] if m is None else d_out[t] * m")
    for s in layout.state_order:
        b = layout.state_block[s]
        c = naming.carry_var(s)
        bwd.append(f"{c} = carry[:, {b} * N : {b + 1} * N]")
        bwd.append(f"if m is not None: {c} = {c} * m")
    for op in prog.backward:
        if isinstance(op, ad.GradGemm):
            bwd.append(f"d_m{op.index}[t] = {grad_var(op.result)}")
            bwd.append(f"mg{op.index} = torch.mm({grad_var(op.result)}, mat_{op.index})")
        else:
            bwd.append(f"{grad_var(op.target)} = {p.expr(op.expr)}")
    for (stage, k), expr in prog.slot_grads.items():
        home, col = layout.slot_home[(stage, k)]
        buf = "dXW" if home == "dxw" else "dG"
        bwd.append(f"{buf}[t, :, {col} * N : {col + 1} * N] = {p.expr(expr)}")
    for name in layout.vector_grads:
        bwd.append(f"{naming.acc_var(name)} += {p.expr(prog.param_grads[name])}")
    bwd.append("new = torch.empty_like(carry)")
    for s in layout.state_order:
        b = layout.state_block[s]
        expr = prog.prev_grads.get(s)
        raw = f"carry[:, {b} * N : {b + 1} * N]"
        keep = f"torch.where(m, 0.0, {raw})"
        if expr is None:
            bwd.append(f"new[:, {b} * N : {b + 1} * N] = 0.0 if m is None else {keep}")
        else:
            bwd.append(f"new[:, {b} * N : {b + 1} * N] = {p.expr(expr)}")
            bwd.append(f"if m is not None: new[:, {b} * N : {b + 1} * N] += {keep}")
    if layout.n_s:
        dg = f"dXW[t, :, : {layout.n_s} * N]" if layout.fused else "dG[t]"
        bwd.append(f"new[:, : {layout.n_ops} * N].addmm_({dg}, r)")
    bwd.append("carry = new")
    return fwd, bwd


def backend_context(compiled: CompiledCell, backend: str) -> dict:
    program = ad.derive(compiled)
    layout = Layout(compiled, program)
    fwd, bwd = _python_loops(layout)
    return {
        **step_context(compiled),
        "lay": layout,
        "forward_loop": fwd,
        "backward_loop": bwd,
        "saved_names": [saved_var(n) for n in layout.saved],
        "vector_vars": [naming.param_var(v) for v in layout.vectors],
        "vector_grads": layout.vector_grads,
        "vector_places": [(naming.param_var(v), *layout.vector_places[v]) for v in layout.vectors],
        "grad_places": [(v, *layout.vector_places[v]) for v in layout.vector_grads],
        "mat_vars": [f"mat_{k}" for k in range(len(layout.current))],
        "dm_vars": [f"d_m{k}" for k in range(len(layout.current))],
        "gemm_operands": [saved_var(g.operand) for g in sorted(program.gemms, key=lambda g: g.index)],
        "acc_vars": [naming.acc_var(v) for v in layout.vector_grads],
        "r_blocks": layout.r_blocks,
        "r_tiles": layout.r_tiles,
        "number": number,
        **(_native_context(layout) if backend == "compiled" else {}),
    }


def _native_context(layout: Layout) -> dict:
    from cellc.codegen.native import native_context

    return native_context(layout)
