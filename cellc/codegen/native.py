"""The compiled backend's time loops: C++ generated from the same step program as the fused backend.

Why this shape (measured, see reports/speed.md and README): the per-step cost that matters
at the study's sizes (batch 1, N ~ 100) is dispatch overhead, not arithmetic. The forward and
backward time loops therefore run as plain C++ over raw pointers: the step's pointwise work
is one element loop (one per stage when a current-step product splits it), and the per-step
GEMMs call the BLAS that torch itself uses (MKL's ``sgemm_``/``dgemm_`` exported by
libtorch_cpu, handed over as function pointers at load time). The file includes no torch
header and links to nothing, so it compiles in about a second with any C++ compiler and is
loaded with ctypes; everything outside the loops (the input GEMM, the weight-gradient GEMMs,
reductions) stays in PyTorch and is shared with the fused backend.
"""

from __future__ import annotations

from cellc.codegen import naming
from cellc.codegen.eager import number
from cellc.codegen.layout import Layout, grad_var, saved_var, target_var
from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.ir.activations import FUNCTIONS, NORM_EPS
from cellc.ir.printer import Printer
from cellc.ir.sizes import Dim, total

# C++ forms of each activation (over {x}); their derivatives are IR (cellc.ir.activations), printed below.
CPP_ACTIVATIONS = {
    "sigmoid": "act_sigmoid<F>({x})",
    "tanh": "act_tanh({x})",
    "identity": "({x})",
    "relu": "act_relu<F>({x})",
    "hard_sigmoid": "act_hard_sigmoid<F>({x})",
    "rstd": f"(F(1) / std::sqrt({{x}} + F({number(NORM_EPS)})))",
}
assert set(CPP_ACTIVATIONS) == set(FUNCTIONS), "every function needs a C++ form"


class CppPrinter(Printer):
    """C++ scalar expressions for element (b, n) of a step; ``ref`` resolves targets and leaves."""

    def __init__(self, ref):
        self.ref = ref

    def expr(self, node: ir.Expr) -> str:
        if isinstance(node, (ir.Value, ad.Temp, ad.Grad, ad.Carry, ad.OutGrad, ad.MatGrad, ir.State, ir.Slot,
                             ir.Param)):
            return self.ref(node)
        return super().expr(node)

    def const(self, value: float) -> str:
        return f"F({number(value)})"

    def call(self, fn: str, arg: str) -> str:
        return CPP_ACTIVATIONS[fn].format(x=arg)

    def indicator(self, arg: str, low: float | None, high: float | None) -> str:
        return f"({self.comparisons(arg, low, high, '&&')} ? F(1) : F(0))"


def _at(*parts: object) -> str:
    """An index as a sum of its nonzero parts (``b * KN + N + n``)."""
    return " + ".join(str(p) for p in parts if str(p) != "0")


def _by_size(lines: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(size, line) pairs as one list of lines per size, sizes in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for size, line in lines:
        groups.setdefault(size, []).append(line)
    return groups


class _Emitter:
    def __init__(self, layout: Layout):
        self.lay = layout
        self.prog = layout.program
        self.saved_index = {node: k for k, node in enumerate(layout.saved)}
        self.saved_rows = {node for node, row in zip(layout.saved, layout.saved_rows) if row}
        self.scratch: list[tuple[str, str]] = []  # (name, size) of (B, size) scratch arrays
        self.sizes = dict(layout.program.sizes)  # every target's size, the hoisted means' added as they come

    def size(self, node: ir.Expr) -> str:
        """The size (N, P) of a target, a gradient or a mean: the element loop that computes it."""
        node = node.target if isinstance(node, ad.Grad) else node
        return self.sizes[node] if node in self.sizes else self.lay.expr_size(node, self.sizes)

    def learn_sizes(self, ops: list) -> None:
        """The sizes of the hoisted means (from their operands) and of the targets the reduction made."""
        for op in ops:
            if isinstance(op, ad.Reduce):
                self.sizes.setdefault(op.target, self.lay.expr_size(op.operand, self.sizes))
            elif isinstance(op, ad.Pointwise):
                self.sizes.setdefault(op.target, self.lay.expr_size(op.expr, self.sizes))

    def saved(self, node: ir.Expr) -> str:
        """A saved buffer's element at step t: the unit's, or the row's where it holds one number per row."""
        return f"{naming.suffixed(saved_var(node), 't')}[{'b' if node in self.saved_rows else 'e'}]"

    def scratch_slot(self, name: str, size: str) -> str:
        if (name, size) not in self.scratch:
            self.scratch.append((name, size))
        return naming.scratch_var(name)

    # -- leaves common to both directions -------------------------------------------------------
    def state(self, name: str, t: str = "S_t") -> str:
        return f"{t}[{_at('b * KN', self.lay.state_offset[name], 'n')}]"

    def slot(self, node: ir.Slot) -> str:
        start, _ = self.lay.slot_span("x" if node.stage == "x" else "s", node.index)
        if node.stage == "s" and not self.lay.fused:
            return f"gs_t[{_at('b * SN', start, 'n')}]"
        return f"xw_t[{_at('b * XN', start, 'n')}]"

    def param(self, name: str) -> str:
        return f"{naming.param_var(name)}[n]"

    # -- forward ------------------------------------------------------------------------------
    def forward(self) -> tuple[list[str], int]:
        lay, prog = self.lay, self.prog
        reduced = prog.reduced("forward")
        self.learn_sizes(reduced.ops)
        plan = reduced.plan
        stages, last, stored = plan.stages, plan.last, plan.crossing
        define = {op.target: plan.stage_of[id(op)] for op in reduced.ops}
        # what a product or a reduction writes whole (never a variable of an element loop)
        whole = {op.target for op in reduced.ops if isinstance(op, (ad.CurrentGemm, ad.Reduce))}
        out_value = ir.Value(lay.compiled.cell.output)

        def home(node: ir.Expr) -> str:
            if node in self.saved_index:
                return self.saved(node)
            return f"{self.scratch_slot(target_var(node), self.size(node))}[{rows.index(node, define.get(node))}]"

        rows = _RowBlocks(plan, reduced.ops, prog.forward_end, set(self.saved_index), prog.row_values)

        def make_ref(k: int):
            def ref(node: ir.Expr) -> str:
                if isinstance(node, (ir.Value, ad.Temp)):
                    if rows.scalar(node, k):
                        return target_var(node)
                    if define[node] == k and node not in whole:
                        return target_var(node)
                    return home(node)
                return self.leaf(node)
            return ref

        lines: list[str] = []
        for k, stage in enumerate(stages):
            if stage and isinstance(stage[0], ad.Reduce):
                lines += rows.wrap(k, self._reduce_rows(k, stage, CppPrinter(make_ref(k)), home, rows))
                continue
            if stage and isinstance(stage[0], ad.CurrentGemm):
                op = stage[0]
                operand = home(op.operand).replace("[e]", "")
                result = home(op.target).replace("[e]", "")
                rows_, cols = self.size(op.target), self.size(op.operand)
                lines.append(f"mm_nt<F>(B, {rows_}, {cols}, {operand}, {cols}, mat_{op.index}, {cols}, F(0), {result}, "
                             f"{rows_});")
                continue
            if not stage and k != last:
                continue
            p = CppPrinter(make_ref(k))
            body: list[tuple[str, str]] = []  # (size, line): one loop over the units per size
            row_level = [op for op in stage if op.target in rows.row_level]
            for op in stage:
                if op in row_level:
                    continue
                var, size = target_var(op.target), self.size(op.target)
                body.append((size, f"const F {var} = {p.expr(op.expr)};"))
                if op.target in self.saved_index or op.target in stored:
                    body.append((size, f"{home(op.target)} = {var};"))
            if k == last:
                ref = make_ref(k)
                for s in lay.state_order:
                    v = ref(ir.Value(s))
                    body.append((self.size(ir.Value(s)), f"{self.state(s, 'S_n')} = m ? {v} : {self.state(s)};"))
                body.append((self.size(out_value), f"out_t[e] = m ? {ref(out_value)} : F(0);"))
            head = [f"    const F {target_var(op.target)} = {p.expr(op.expr)};" for op in row_level]
            head += self._row_stores([op.target for op in row_level], home, rows)
            loops = [line for size, part in _by_size(body).items() for line in self._unit_loop(part, size)]
            lines += rows.wrap(k, head + loops)
        return lines, len(self.scratch)

    def leaf(self, node: ir.Expr) -> str:
        """A leaf both directions read alike: a state at this step, a GEMM slot, a vector parameter."""
        if isinstance(node, ir.State):
            return self.state(node.name)
        if isinstance(node, ir.Slot):
            return self.slot(node)
        if isinstance(node, ir.Param):
            return self.param(node.name)
        raise AssertionError(node)

    @staticmethod
    def _unit_loop(body: list[str], size: str = "N") -> list[str]:
        """One row's loop over the units of one size (inside the loop over the batch)."""
        return [
            "    #pragma GCC ivdep",  # buffers never overlap: lets gcc vectorize (libmvec exp/tanh)
            f"    for (int64_t n = 0; n < {size}; ++n) {{",
            f"        const int64_t e = b * {size} + n;",
            "        (void)e;",
            *[f"        {line}" for line in body],
            "    }",
        ]

    def _reduce_rows(self, k: int, stage: list, p: CppPrinter, home, rows: "_RowBlocks") -> list[str]:
        """A stage of row means, inside the loop over the batch: one pass over the units sums every operand,
        then each mean is a scalar of the row, stored beyond its run where :meth:`_row_stores` says."""
        sums = [f"    F rsum{k}_{j} = F(0);" for j in range(len(stage))]
        add = _by_size([(self.size(op.target), f"rsum{k}_{j} += {p.expr(op.operand)};") for j, op in enumerate(stage)])
        means = [f"    const F {target_var(op.target)} = rsum{k}_{j} / F({self.size(op.target)});"
                 for j, op in enumerate(stage)]
        loops = [line for size, part in add.items() for line in self._unit_loop(part, size)]
        return sums + loops + means + self._row_stores([op.target for op in stage], home, rows)

    def _row_stores(self, targets: list[ir.Expr], home, rows: "_RowBlocks") -> list[str]:
        """Where row scalars go beyond their run: once per row into a saved buffer, to every unit of a scratch
        home (inside the loop over the units a store to one address would keep gcc from vectorizing it)."""
        once = [f"    {home(t)} = {target_var(t)};" for t in targets if t in rows.saved]
        spread = _by_size([(self.size(t), f"{home(t)} = {target_var(t)};") for t in targets if t in rows.stored])
        return once + [line for size, part in spread.items() for line in self._unit_loop(part, size)]

    # -- backward -----------------------------------------------------------------------------
    def backward(self) -> tuple[list[str], int]:
        lay, prog = self.lay, self.prog
        self.scratch = []
        reduced = prog.reduced("backward")
        self.learn_sizes(reduced.ops)
        plan = reduced.plan
        stages, last, stored = plan.stages, plan.last, plan.crossing
        define = {ad.Grad(op.target): plan.stage_of[id(op)] for op in reduced.ops if isinstance(op, ad.GradAssign)}
        gemm_inputs = {ad.Grad(op.result): op.index for op in reduced.ops if isinstance(op, ad.GradGemm)}
        means = {op.target for op in reduced.ops if isinstance(op, ad.Reduce)}
        rows = _RowBlocks(plan, reduced.ops, [leaf for tail in (reduced.slot_grads, reduced.param_grads,
                                                                 reduced.prev_grads)
                                              for e in tail.values() for leaf in ad.forward_leaves(e)], set())

        def mean_home(node: ad.Temp) -> str:
            return f"{self.scratch_slot(target_var(node), self.size(node))}[{rows.index(node, rows.defined.get(node))}]"

        def grad_home(node: ad.Grad) -> str:
            if node in gemm_inputs:
                return f"dm_{gemm_inputs[node]}_t[e]"
            return f"{self.scratch_slot(grad_var(node.target), self.size(node))}[{rows.index(node, define.get(node))}]"

        def make_ref(k: int):
            def ref(node: ir.Expr) -> str:
                if isinstance(node, ad.Grad):
                    if define[node] == k:
                        return grad_var(node.target)
                    return grad_home(node)
                if node in means:
                    return target_var(node) if rows.scalar(node, k) else mean_home(node)
                if isinstance(node, (ir.Value, ad.Temp)):
                    return self.saved(node)
                if isinstance(node, ad.Carry):
                    return f"(m ? {self.state(node.name, 'carry')} : F(0))"
                if isinstance(node, ad.OutGrad):
                    return "(m ? dout_t[e] : F(0))"
                if isinstance(node, ad.MatGrad):
                    return f"{self.scratch_slot(f'mg{node.index}', self.lay.expr_size(node))}[e]"
                return self.leaf(node)
            return ref

        lines: list[str] = []
        for k, stage in enumerate(stages):
            if stage and isinstance(stage[0], ad.Reduce):
                lines += rows.wrap(k, self._reduce_rows(k, stage, CppPrinter(make_ref(k)), mean_home, rows))
                continue
            if stage and isinstance(stage[0], ad.GradGemm):
                op = stage[0]
                cols = self.lay.expr_size(ad.MatGrad(op.index))
                rows_ = self.size(ad.Grad(op.result))
                mg = self.scratch_slot(f"mg{op.index}", cols)
                lines.append(f"mm_nn<F>(B, {cols}, {rows_}, dm_{op.index}_t, {rows_}, mat_{op.index}, {cols}, F(0), {mg}, "
                             f"{cols});")
                continue
            if not stage and k != last:
                continue
            p = CppPrinter(make_ref(k))
            body: list[tuple[str, str]] = []  # (size, line): one loop over the units per size
            for op in stage:
                g = ad.Grad(op.target)
                var, size = grad_var(op.target), self.size(g)
                body.append((size, f"const F {var} = {p.expr(op.expr)};"))
                if g in stored or g in gemm_inputs:
                    body.append((size, f"{grad_home(g)} = {var};"))
            if k == last:
                sched = lay.compiled.schedule
                for (stage_name, idx), expr in reduced.slot_grads.items():
                    home, col = lay.slot_home[(stage_name, idx)]
                    start, _ = lay.slot_span("x" if home == "dxw" else "s", col)
                    target = (f"dxw_t[{_at('b * XN', start, 'n')}]" if home == "dxw"
                              else f"dg_t[{_at('b * SN', start, 'n')}]")
                    slots = sched.x_slots if stage_name == "x" else sched.s_slots
                    body.append((slots[idx].size, f"{target} = {p.expr(expr)};"))
                for name in lay.vector_grads:
                    body.append((lay.compiled.sizes.params[name][0],
                                 f"{naming.acc_var(name)}[e] += {p.expr(reduced.param_grads[name])};"))
                for s in lay.state_order:
                    keep = f"(m ? F(0) : {self.state(s, 'carry')})"
                    expr = reduced.prev_grads.get(s)
                    value = keep if expr is None else f"{p.expr(expr)} + {keep}"
                    body.append((lay.compiled.sizes.values[s], f"{self.state(s, 'carry_new')} = {value};"))
            loops = [line for size, part in _by_size(body).items() for line in self._unit_loop(part, size)]
            lines += rows.wrap(k, loops)
        return lines, len(self.scratch)


class _RowBlocks:
    """Runs of stages between two products that hold a reduction (a normalisation's row means): the C++ loops
    run such a run as ONE loop over the batch rows, with a pass over the units per stage, so a row's means
    are scalars of the row and what a stage hands on to the next is still in cache when it is read. Every
    other stage keeps its own loop over the batch (the code of cells without reductions is unchanged).

    ``last_reads``: what the last stage reads besides its ops (the backward's tail); ``saved``: what the
    backward reads of the forward (a row scalar among them is written once per row); ``row_values``: the
    step program's values of one number per row."""

    def __init__(self, plan: ad.StagePlan, ops: list, last_reads: list[ir.Expr], saved: set,
                 row_values: frozenset = frozenset()):
        stages = plan.stages
        emitted = [k for k, stage in enumerate(stages) if stage or k == plan.last]
        self.run_of: dict[int, int] = {}
        self.first: set[int] = set()
        self.end: set[int] = set()
        run: list[int] = []
        for k in emitted + [None]:
            if k is None or isinstance(stages[k][0] if stages[k] else None, (ad.CurrentGemm, ad.GradGemm)):
                if any(stages[j] and isinstance(stages[j][0], ad.Reduce) for j in run):
                    self.run_of.update({j: run[0] for j in run})
                    self.first.add(run[0])
                    self.end.add(run[-1])
                run = []
            else:
                run.append(k)
        self.defined = {op.target: plan.stage_of[id(op)] for op in ops if isinstance(op, ad.Reduce)}
        # values of one number per row computed from this run's means alone (a normalisation's rstd): computed
        # once per row, before the stage's pass over the units
        self.row_level: set[ir.Expr] = set()
        for op in ops:
            k = plan.stage_of[id(op)]
            if (isinstance(op, ad.Pointwise) and op.target in row_values and k in self.run_of
                    and all(self.scalar(leaf, k) for leaf in ad.op_reads(op) if not isinstance(leaf, ir.Const))):
                self.defined[op.target] = k
                self.row_level.add(op.target)
        reads = [(plan.stage_of[id(op)], leaf) for op in ops for leaf in ad.op_reads(op)]
        reads += [(plan.last, leaf) for leaf in last_reads]
        self.read_in: dict[ir.Expr, set[int]] = {}
        for k, leaf in reads:
            self.read_in.setdefault(leaf, set()).add(k)
        # row scalars read outside their own run: written to every unit of their home (a scratch row); those the
        # backward reads: written once per row to their saved buffer
        self.stored = {leaf for k, leaf in reads if leaf in self.defined and not self.scalar(leaf, k)} - saved
        self.saved = saved & set(self.defined)

    def scalar(self, node: ir.Expr, k: int) -> bool:
        """Is ``node`` a row scalar (a mean, or computed from means) that stage k reads as such?"""
        j = self.defined.get(node)
        return j is not None and k in self.run_of and self.run_of.get(j) == self.run_of[k]

    def index(self, node: ir.Expr, k: int | None) -> str:
        """The index of ``node``'s element in its scratch row when stage k defines it: ``n`` where every stage
        that reads it is in k's run (the row's pass over the units has it in one row of N, reused from row
        to row and so kept in cache), else ``e`` (B rows of N: a product or another run reads it)."""
        run = self.run_of.get(k) if k is not None else None
        if run is not None and all(self.run_of.get(j) == run for j in self.read_in.get(node, ())):
            return "n"
        return "e"

    def wrap(self, k: int, row: list[str]) -> list[str]:
        """Stage k's lines for one batch row (``b``), inside its run's loop over the rows or in its own."""
        head = ["for (int64_t b = 0; b < B; ++b) {", "    const bool m = MASK ? mask_t[b] != 0 : true;", "    (void)m;"]
        if k not in self.run_of:
            return head + row + ["}"]
        return (head if k in self.first else []) + row + (["}"] if k in self.end else [])


def recurrent_gemm_forward(layout: Layout) -> list[str]:
    """The forward loop's recurrent GEMM at step t: one call per dense tile of r, adding into the input GEMM's
    buffer (fused) or into gs, which the first tile overwrites where it covers every slot (else gs is zeroed
    first and every tile adds)."""
    if not layout.n_s:
        return []
    target, stride = ("xw_t", "XN") if layout.fused else ("gs_t", "SN")
    overwrite = not layout.fused and layout.r_tiles[0][1] == layout.n_s
    lines = ["// The recurrent GEMM, one call per dense tile of r (zero blocks skipped)."]
    if not layout.fused and not overwrite:
        lines.append("std::fill(gs_t, gs_t + B * SN, F(0));  // no tile covers every slot: accumulate from zero")
    for k, (r0, height, c0, width) in enumerate(_tiles(layout)):
        beta = 0 if overwrite and k == 0 else 1
        lines.append(f"mm_nt<F>(B, {height}, {width}, {_at('S_t', c0)}, KN, {_at('r', _times(r0, 'OPN'), c0)}, "
                     f"OPN, F({beta}), {_at(target, r0)}, {stride});")
    return lines


def _times(dim: Dim, factor: str) -> str:
    """``dim * factor`` as code (parenthesised where dim is a sum)."""
    if not dim.terms:
        return "0"
    return f"({dim}) * {factor}" if len(dim.terms) > 1 else f"{dim} * {factor}"


def _tiles(layout: Layout) -> list[tuple[Dim, Dim, Dim, Dim]]:
    """The recurrent matrix's dense tiles as (first row, rows, first column, columns) in units."""
    sched = layout.compiled.schedule
    width = Dim.of(sched.group_cols["weight_s"])
    return [(sched.s_offset(row), total([s.size for s in sched.s_slots[row:row + rows]]), width * col, width * cols)
            for row, rows, col, cols in layout.r_tiles]


def recurrent_gemm_backward(layout: Layout) -> list[str]:
    """The backward loop's share of the recurrent GEMM in the carried gradient: carry_new[:, operands] +=
    d(slots) @ r, one call per dense tile of r."""
    if not layout.n_s:
        return []
    source, stride = ("dxw_t", "XN") if layout.fused else ("dg_t", "SN")
    return [f"mm_nn<F>(B, {width}, {height}, {_at(source, r0)}, {stride}, {_at('r', _times(r0, 'OPN'), c0)}, "
            f"OPN, F(1), {_at('carry_new', c0)}, KN);" for r0, height, c0, width in _tiles(layout)]


def _scratch(scratch: list[tuple[str, str]]) -> tuple[list[tuple[str, Dim]], Dim]:
    """Each scratch array's variable and its offset in units (B times that in elements), and the total."""
    out, offset = [], Dim()
    for name, size in scratch:
        out.append((naming.scratch_var(name), offset))
        offset = offset + Dim.of(size)
    return out, offset


def native_context(layout: Layout) -> dict:
    emitter = _Emitter(layout)
    forward_lines, n_forward_scratch = emitter.forward()
    forward_scratch, forward_width = _scratch(emitter.scratch)
    backward_lines, n_backward_scratch = emitter.backward()
    backward_scratch, backward_width = _scratch(emitter.scratch)
    sched = layout.compiled.schedule
    symbols = layout.compiled.sizes.symbols
    return {
        "cpp_forward": forward_lines,
        "cpp_backward": backward_lines,
        "forward_scratch": [(name, _times(offset, "B")) for name, offset in forward_scratch],
        "backward_scratch": [(name, _times(offset, "B")) for name, offset in backward_scratch],
        "forward_scratch_width": forward_width,
        "backward_scratch_width": backward_width,
        "cpp_size_params": ", ".join(f"int64_t {s}" for s in symbols),
        "cpp_widths": {"XN": sched.x_width, "SN": sched.s_width, "KN": layout.S_width, "OPN": layout.ops_width,
                       "out": _times(layout.size_of[layout.compiled.cell.output], "B")},
        "cpp_dm_steps": [_times(sched.layout[m].rows, "B") for m in layout.current],
        # (buffer, its pointer at step t, the elements a step takes: one per unit, or one per row)
        "cpp_saved": [(saved_var(n), naming.suffixed(saved_var(n), "t"), "B" if w is None else _times(w, "B"))
                      for n, w in zip(layout.saved, layout.saved_widths)],
        "cpp_vectors": [naming.param_var(v) for v in layout.vectors],
        "cpp_accs": [naming.acc_var(v) for v in layout.vector_grads],
        "n_mats": len(layout.current),
        "cpp_recurrent_forward": recurrent_gemm_forward(layout),
        "forward_scratch_count": len(forward_scratch),
        "backward_scratch_count": len(backward_scratch),
        "cpp_recurrent_backward": recurrent_gemm_backward(layout),
    }
