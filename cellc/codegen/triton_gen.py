"""Triton kernels generated from the step program (the same one the fused backend prints).

Three families, all written into the generated module as source text and compiled lazily
(the module imports triton only when a CUDA tensor, or TRITON_INTERPRET=1, asks for them):

- Per-step kernels: after the recurrent GEMM (torch.addmm / torch.mm, cuBLAS), one launch
  per step does all pointwise work of the step, forward and backward (gate activations,
  state update, peepholes, derivatives). Current-step products (``R (r * y[-1])``) split a
  step into stages: a kernel, torch.mm, the next kernel; values that cross a stage go
  through a small scratch buffer.
- Persistent kernels: one launch runs the whole time loop (and one its backward). Each
  program owns a tile of batch rows and ALL hidden units, and keeps every block of R (and
  of any current-step matrix) resident on chip for the whole loop; the recurrent products
  are ``tl.dot``. A step's full ``h`` is in the program's registers when the next step
  needs it, so no synchronisation between programs is needed. This limits the hidden size
  (``PERSISTENT_MAX_N``); larger layers use the per-step kernels. The forward loads step
  t + 1's inputs while it computes step t (the loop is bound by latency).
- Tiled per-step kernels (cells without current-step products): one launch per step that
  also does the step's recurrent products, each program for its own tile of hidden units,
  reading the previous step's whole ``h`` from memory. Half the launches of the per-step
  kernels and no cuBLAS call; R is read from L2 every step, so no size limit on chip.

Forward kernels take SAVE: whether to store what the backward reads (saved values, every
step's state, recurrent sums). Inference (torch.no_grad) runs them without, writing the
output and final state only.

Element (b, n) of every (B, N) block is owned by one program, so accumulations (the
peephole and bias gradients, summed over steps) need no atomics. Arithmetic is float32
whatever the storage dtype (bf16 / fp16 inputs and weights keep float32 state).
"""

from __future__ import annotations

from cellc.codegen import blocks, naming
from cellc.codegen.eager import number
from cellc.codegen.fused import FusedPrinter
from cellc.codegen.layout import Layout, grad_var, layout_of, paired_runs, target_var
from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.ir.activations import FUNCTIONS, NORM_EPS
from cellc.ir.pipeline import CompiledCell

# Triton forms of each activation (over {x}); their derivatives are IR (cellc.ir.activations), printed below.
TRITON_ACTIVATIONS = {
    "sigmoid": "tl.sigmoid({x})",
    "tanh": "_tanh({x})",
    "identity": "({x})",
    "relu": "tl.maximum({x}, 0.0)",
    "hard_sigmoid": "tl.minimum(tl.maximum(({x}) / 6.0 + 0.5, 0.0), 1.0)",
    "rstd": f"tl.rsqrt({{x}} + {number(NORM_EPS)})",
}
assert set(TRITON_ACTIVATIONS) == set(FUNCTIONS), "every function needs a Triton form"

# Largest hidden size the persistent kernels take (R resident on chip; see the module docstring).
PERSISTENT_MAX_N = 128


class TritonPrinter(FusedPrinter):
    def expr(self, node: ir.Expr) -> str:
        if isinstance(node, ir.Const):
            return number(node.value)
        return super().expr(node)

    def call(self, fn: str, arg: str) -> str:
        return TRITON_ACTIVATIONS[fn].format(x=arg)

    def indicator(self, arg: str, low: float | None, high: float | None) -> str:
        return f"tl.where({self.comparisons(arg, low, high, '&')}, 1.0, 0.0)"

    def row_mean(self, arg: str) -> str:
        """Over the program's whole rows (a cell with row means runs its per-step kernels one row tile wide,
        and the persistent ones hold all N units anyway), units past N left out; broadcast to the tile."""
        return f"(zero + tl.sum(tl.where(c < N, {arg}, 0.0), axis=1)[:, None] / N)"


def _assign(var: str, expr: ir.Expr, p: TritonPrinter) -> str:
    code = p.expr(expr)
    return f"{var} = {code}" if ad.reads_per_batch(expr) else f"{var} = zero + {code}"


class KernelWriter:
    """Lines of the generated kernels, from the Layout / StepProgram of the fused backend."""

    def __init__(self, compiled: CompiledCell, layout: Layout):
        self.c = compiled
        self.lay = layout
        self.prog = layout.program
        sched = compiled.schedule
        self.slot_vars: dict[tuple[str, int], str] = {}
        for j in range(layout.n_s):
            self.slot_vars[("xs" if layout.fused else "s", j)] = f"g{j}"
        for k in range(layout.n_x):
            self.slot_vars.setdefault(("x", k), f"x{k}")
        self.p = TritonPrinter(self.slot_vars)
        self.saved_index = {node: k for k, node in enumerate(layout.saved)}
        self.vector_index = {name: k for k, name in enumerate(layout.vectors)}
        self.acc_index = {name: k for k, name in enumerate(layout.vector_grads)}
        self.n_gemm = len(sched.current)

    # ---- leaves -------------------------------------------------------------------------
    def slot_load(self, stage: str, k: int, base: str = "xw") -> str:
        return f"{self.slot_vars[(stage, k)]} = {self.slot_value(stage, k, base)}"

    def slot_value(self, stage: str, k: int, base: str = "xw", step: str = "t", ok: str = "ok", load: str = "_ld") -> str:
        """Slot k of a stage at a step; load="tl.load" keeps the stored dtype (_ld: float32)."""
        other = ", other=0.0" if load == "tl.load" else ""
        if stage == "s":
            return f"{load}(gs + (({step}) * B + r) * ({self.lay.n_s} * N) + {k} * N + c, {ok}{other})"
        return f"{load}({base} + (({step}) * B + r) * ({self.lay.n_x} * N) + {k} * N + c, {ok}{other})"

    def state_ptr(self, name: str, step: str) -> str:
        return f"S + (({step}) * B + r) * ({self.lay.K} * N) + {self.lay.state_block[name]} * N + c"

    def saved_ptr(self, node: ir.Expr) -> str:
        return f"SV + (({self.saved_index[node]} * T + t) * B + r) * N + c"

    def saved_store(self, node: ir.Expr, var: str, staged: bool = False) -> list[str]:
        """Store of a value the backward reads: skipped where no backward follows (SAVE false, e.g. under
        torch.no_grad), except in a step split into stages (staged), whose later stages and torch.mm
        calls read saved values back from SV."""
        store = f"tl.store({self.saved_ptr(node)}, {var}, mask=ok)"
        return [store] if staged else ["if SAVE:", f"    {store}"]

    def leaf_loads(self, exprs, local: set, stage_store: dict, *, states_from_memory: bool = True,
                   slots_from_memory: bool = True, vectors_from_memory: bool = True,
                   products: dict | None = None) -> list[str]:
        """Loads of every leaf the expressions read that is not computed in this block of code."""
        lines: list[str] = []
        seen: set[str] = set()
        for e in exprs:
            for leaf in ad.forward_leaves(e):
                line = self.leaf_load(leaf, local, stage_store, states_from_memory, slots_from_memory,
                                      vectors_from_memory, products or {})
                if line and line not in seen:
                    seen.add(line)
                    lines.append(line)
        return lines

    def leaf_load(self, leaf, local, stage_store, states_from_memory, slots_from_memory,
                  vectors_from_memory=True, products: dict | None = None) -> str | None:
        """products: the current-step products this step has computed so far (target -> index in CG), which
        a forward stage reads from CG."""
        if isinstance(leaf, ir.Param):
            if not vectors_from_memory:
                return None  # loaded once, in the kernel's prologue
            return f"{naming.param_var(leaf.name)} = _ld(VEC + {self.vector_index[leaf.name]} * N + c, c < N)"
        if isinstance(leaf, ir.State):
            if not states_from_memory:
                return None
            return f"{naming.state_var(leaf.name)} = _ld({self.state_ptr(leaf.name, 't')}, ok)"
        if isinstance(leaf, ir.Slot):
            if not slots_from_memory and leaf.stage != "x":
                return None  # computed by tl.dot in the persistent kernel
            return self.slot_load(leaf.stage, leaf.index)
        if isinstance(leaf, (ir.Value, ad.Temp)):
            var = target_var(leaf)
            if var in local:
                return None
            if var in stage_store:
                return f"{var} = _ld(TMP + ({stage_store[var]} * B + r) * N + c, ok)"
            if products and leaf in products:  # a product an earlier stage opened with (R_a w + R_b w)
                return f"{var} = _ld(CG + ({products[leaf]} * B + r) * N + c, ok)"
            return f"{var} = _ld({self.saved_ptr(leaf)}, ok)"
        if isinstance(leaf, ad.Grad):
            var = grad_var(leaf.target)
            if var in local:
                return None
            return f"{var} = _ld(TMP + ({stage_store[var]} * B + r) * N + c, ok)"
        if isinstance(leaf, ad.MatGrad):
            return None if f"mg{leaf.index}" in local else f"mg{leaf.index} = _ld(MG + ({leaf.index} * B + r) * N + c, ok)"
        return None  # constants; Carry and OutGrad are loaded by the kernel's prologue

    # ---- per-step forward ---------------------------------------------------------------
    def step_forward(self) -> list[list[str]]:
        """Bodies of the forward stage kernels (split at current-step products)."""
        stages = [s for s in self.prog.stages(self.prog.forward)]
        bodies: list[list[str]] = []
        self.fwd_tmp: dict[str, int] = {}
        self.fwd_gemm_operand: list[tuple[int, str]] = []  # (gemm index, 'SV k' | 'TMP k')
        kernels: list[list] = []
        current: list = []
        for part in stages:
            if part and isinstance(part[0], ad.CurrentGemm):
                kernels.append(current)
                current = []
                continue
            current.extend(part)
        kernels.append(current)
        gemms = list(self.prog.gemms)
        for number_, ops in enumerate(kernels):
            last = number_ == len(kernels) - 1
            local: set[str] = set()
            lines: list[str] = []
            exprs = [op.expr for op in ops]
            if last:
                exprs += [ir.Value(s) for s in self.lay.state_order] + [ir.Value(self.c.cell.output)]
                exprs += [ir.State(s) for s in self.lay.state_order]
            if number_ > 0:  # the product that opened this stage
                g = gemms[number_ - 1]
                var = target_var(g.target)
                local.add(var)
                lines.append(f"{var} = _ld(CG + ({g.index} * B + r) * N + c, ok)")
                if g.target in self.saved_index:  # the backward reads the product itself (m * (R m))
                    lines += self.saved_store(g.target, var, staged=True)
            body: list[str] = []
            for op in ops:
                var = target_var(op.target)
                body.append(_assign(var, op.expr, self.p))
                local.add(var)
                if op.target in self.saved_index:
                    body += self.saved_store(op.target, var, staged=len(kernels) > 1)
                if not last and op.target not in self.saved_index:
                    k = self.fwd_tmp.setdefault(var, len(self.fwd_tmp))
                    body.append(f"tl.store(TMP + ({k} * B + r) * N + c, {var}, mask=ok)")
            products = {g.target: g.index for g in gemms[:number_]}
            lines += self.leaf_loads(exprs, local, self.fwd_tmp, products=products)
            lines += body
            if last:
                lines += self.forward_epilogue()
            bodies.append(lines)
        # Where each current-step product's operand lives (saved buffer or scratch).
        for g in gemms:
            var = target_var(g.operand)
            where = ("SV", self.saved_index[g.operand]) if g.operand in self.saved_index else ("TMP", self.fwd_tmp[var])
            self.fwd_gemm_operand.append((g.index, *where))
        return bodies

    def forward_epilogue(self, persistent: bool = False) -> list[str]:
        out = naming.value_var(self.c.cell.output)
        # the persistent kernel has this step's mask already (prefetched)
        lines = ["if HAS_MASK:"] + ([] if persistent else ["    m = tl.load(MASK + t * B + r, mask=r < B, other=0) != 0"])
        for s in self.lay.state_order:
            v, sv = naming.value_var(s), naming.state_var(s)
            lines.append(f"    {v} = tl.where(m, {v}, {sv})")
        masked = naming.suffixed(out, "out")
        lines.append(f"    {masked} = tl.where(m, {out}, 0.0)")
        lines.append("else:")
        lines.append(f"    {masked} = {out}")
        lines.append(f"tl.store(out + (t * B + r) * N + c, {masked}, mask=ok)")
        for s in self.lay.state_order:
            v = naming.value_var(s)
            # the persistent kernel keeps its state in registers: every step's only for the backward
            store = f"tl.store({self.state_ptr(s, 't + 1')}, {v}, mask=ok)"
            lines += ["if SAVE:", f"    {store}"] if persistent else [store]
            if persistent:
                lines.append(f"{naming.state_var(s)} = tl.where(c < N, {v}, 0.0)")
        return lines

    # ---- per-step backward --------------------------------------------------------------
    def backward_prologue(self, persistent: bool = False) -> list[str]:
        lines = ["if HAS_MASK:", "    m = tl.load(MASK + t * B + r, mask=r < B, other=0) != 0",
                 "    d_out_t = tl.where(m, _ld(DOUT + (t * B + r) * N + c, ok), 0.0)",
                 "else:", "    d_out_t = _ld(DOUT + (t * B + r) * N + c, ok)"]
        for s in self.lay.state_order:
            b = self.lay.state_block[s]
            raw, c = naming.spec_var("raw", s), naming.carry_var(s)
            source = naming.spec_var("k", s) if persistent else f"_ld(CARRY + r * ({self.lay.K} * N) + {b} * N + c, ok)"
            lines.append(f"{raw} = {source}")
            lines.append(f"{c} = {raw}")
            lines.append("if HAS_MASK:")
            lines.append(f"    {c} = tl.where(m, {raw}, 0.0)")
        return lines

    def backward_epilogue(self, persistent: bool = False) -> list[str]:
        """Slot gradients stored, vector gradients accumulated, the pointwise part of the new carry."""
        lines = []
        for (stage, k), expr in self.prog.slot_grads.items():
            home, col = self.lay.slot_home[(stage, k)]
            var = f"dslot_{home}{col}"
            lines.append(_assign(var, expr, self.p))
            if home == "dxw":
                lines.append(f"tl.store(DXW + (t * B + r) * ({self.lay.n_x} * N) + {col} * N + c, {var}, mask=ok)")
            else:
                lines.append(f"tl.store(DG + (t * B + r) * ({self.lay.n_s} * N) + {col} * N + c, {var}, mask=ok)")
        for name in self.lay.vector_grads:
            a = self.acc_index[name]
            value = self.p.expr(self.prog.param_grads[name])
            if persistent:
                lines.append(f"acc{a} += tl.where(ok, {value}, 0.0)")
            else:
                ptr = f"ACC + ({a} * B + r) * N + c"
                lines.append(f"tl.store({ptr}, _ld({ptr}, ok) + {value}, mask=ok)")
        for s in self.lay.state_order:
            expr = self.prog.prev_grads.get(s)
            value = "0.0" if expr is None else self.p.expr(expr)
            new = naming.spec_var("new", s)
            lines.append(f"{new} = zero + {value}")
            lines.append("if HAS_MASK:")
            lines.append(f"    {new} += tl.where(m, 0.0, {naming.spec_var('raw', s)})")
            if not persistent:
                b = self.lay.state_block[s]
                lines.append(f"tl.store(NEW + r * ({self.lay.K} * N) + {b} * N + c, {new}, mask=ok)")
        return lines

    def backward_exprs(self) -> list[ir.Expr]:
        exprs = [op.expr for op in self.prog.backward if isinstance(op, ad.GradAssign)]
        exprs += list(self.prog.slot_grads.values()) + list(self.prog.param_grads.values())
        return exprs + list(self.prog.prev_grads.values())

    def step_backward(self) -> list[list[str]]:
        kernels: list[list] = [[]]
        for op in self.prog.backward:
            if isinstance(op, ad.GradGemm):
                kernels[-1].append(op)  # stores the result's gradient, then torch.mm
                kernels.append([])
            else:
                kernels[-1].append(op)
        self.bwd_tmp: dict[str, int] = {}
        bodies = []
        for number_, ops in enumerate(kernels):
            last = number_ == len(kernels) - 1
            local: set[str] = set()
            body: list[str] = []
            exprs = [op.expr for op in ops if isinstance(op, ad.GradAssign)]
            if last:
                exprs = exprs + list(self.prog.slot_grads.values()) + list(self.prog.param_grads.values())
                exprs += list(self.prog.prev_grads.values())
            for op in ops:
                if isinstance(op, ad.GradGemm):
                    var = grad_var(op.result)
                    body.append(f"tl.store(DM + (({op.index} * T + t) * B + r) * N + c, {var}, mask=ok)")
                    continue
                var = grad_var(op.target)
                body.append(_assign(var, op.expr, self.p))
                local.add(var)
                if not last:
                    k = self.bwd_tmp.setdefault(var, len(self.bwd_tmp))
                    body.append(f"tl.store(TMP + ({k} * B + r) * N + c, {var}, mask=ok)")
            lines = self.backward_prologue()
            lines += self.leaf_loads(exprs, local, self.bwd_tmp)
            lines += body
            if last:
                lines += self.backward_epilogue()
            bodies.append(lines)
        self.bwd_gemms = [op.index for op in self.prog.backward if isinstance(op, ad.GradGemm)]
        return bodies

    # ---- persistent ---------------------------------------------------------------------
    def _slot_store(self, j: int, var: str) -> list[str]:
        """Store of recurrent slot j's sum where the backward reads it (none where it does not, or where no
        backward follows)."""
        lay = self.lay
        if lay.fused and ("xs", j) in self.prog.saved_slots:
            return ["if SAVE:", f"    tl.store(xw + (t * B + r) * ({lay.n_x} * N) + {j} * N + c, {var}, mask=ok)"]
        if not lay.fused and ("s", j) in self.prog.saved_slots:
            return ["if SAVE:", f"    tl.store(gs + (t * B + r) * ({lay.n_s} * N) + {j} * N + c, {var}, mask=ok)"]
        return []

    def _slot_start(self, j: int) -> str:
        """The part of recurrent slot j's sum that is not a recurrent product: xw's block when fused."""
        return self.slot_value("x", j) if self.lay.fused else "zero"

    def _forward_body(self) -> tuple[list[str], set[str]]:
        """The step's pointwise forward (and current-step products) once the recurrent sums g_j are known:
        (body lines, the variables they define)."""
        body: list[str] = []
        local: set[str] = set()
        for op in self.prog.forward:
            var = target_var(op.target)
            if isinstance(op, ad.CurrentGemm):
                operand = target_var(op.operand)
                body.append(f"{var} = tl.dot(tl.where(c < N, {operand}, 0.0).to(mT{op.index}.dtype), mT{op.index}, "
                            f"input_precision=PREC)")
            else:
                body.append(_assign(var, op.expr, self.p))
            local.add(var)
            if op.target in self.saved_index:
                body += self.saved_store(op.target, var)  # tl.dot takes a current-step operand from registers
        return body, local

    def _register_loads(self, exprs, local, states_from_memory: bool) -> list[str]:
        # vectors are loaded once, in the kernel's prologue; recurrent slots are computed with tl.dot
        return self.leaf_loads(exprs, local, {}, states_from_memory=states_from_memory, slots_from_memory=False,
                               vectors_from_memory=False)

    def persistent_forward(self) -> tuple[list[str], list[str]]:
        """(prologue, loop body) of the persistent forward kernel (states and R live in registers).

        What a step reads from memory (its blocks of xw, its mask) does not depend on the recurrence, so
        each step loads the next step's while it computes: the loop is bound by latency, and a load
        issued where it is used would stall every step."""
        lines: list[str] = []
        lay = self.lay
        # Recurrent products: g_j = sum over operand blocks k of h_k @ R_jk^T (+ xw when fused).
        for j in range(lay.n_s):
            dots = [f"tl.dot(hk{k}, rT{j}_{k}, input_precision=PREC)" for jj, k in lay.r_blocks if jj == j]
            lines.append(f"g{j} = " + " + ".join(([f"xg{j}"] if lay.fused else []) + dots))
            lines += self._slot_store(j, f"g{j}")
        body, local = self._forward_body()
        exprs = [op.expr if isinstance(op, ad.Pointwise) else op.operand for op in self.prog.forward]
        # (variable, its load at a step): the fused slots' xw blocks and the input-only slots, held until
        # used in xw's dtype (half the registers for 16-bit inputs)
        x_slots = sorted({leaf.index for e in exprs for leaf in ad.forward_leaves(e)
                          if isinstance(leaf, ir.Slot) and leaf.stage == "x"})
        reads = [(var, lambda step, ok, k=k: self.slot_value("x", k, step=step, ok=ok, load="tl.load"))
                 for var, k in [(f"xg{j}", j) for j in range(lay.n_s) if lay.fused]
                 + [(self.slot_vars[("x", k)], k) for k in x_slots]]
        mask = "tl.load(MASK + ({step}) * B + r, mask={ok}, other=0)"
        # Step 0's loads come before the loop (r < B * T: none at all where T == 0); the last step loads
        # itself again rather than past the end.
        prologue = [f"pf_{var} = {load('0', 'ok & (r < B * T)')}" for var, load in reads]
        prologue += ["if HAS_MASK:", "    pf_mask = " + mask.format(step="0", ok="r < B * T")]
        top = []
        following = "tl.minimum(t + 1, T - 1)"
        for var, load in reads:
            top += [f"{var} = pf_{var}.to(tl.float32)", f"pf_{var} = {load(following, 'ok')}"]
        top += ["if HAS_MASK:", "    m = pf_mask != 0", "    pf_mask = " + mask.format(step=following, ok="r < B")]
        operands = []
        for k, name in enumerate(self.c.schedule.s_operands):
            j = next(j for j, kk in lay.r_blocks if kk == k)
            operands.append(f"hk{k} = {naming.state_var(name)}.to(rT{j}_{k}.dtype)")
        return prologue, top + operands + lines + body + self.forward_epilogue(persistent=True)

    def persistent_backward(self) -> list[str]:
        lay = self.lay
        lines = self.backward_prologue(persistent=True)
        local: set[str] = set()
        body: list[str] = []
        for op in self.prog.backward:
            if isinstance(op, ad.GradGemm):
                var = grad_var(op.result)
                body.append(f"tl.store(DM + (({op.index} * T + t) * B + r) * N + c, {var}, mask=ok)")
                body.append(f"mg{op.index} = tl.dot(tl.where(ok, {var}, 0.0).to(mN{op.index}.dtype), mN{op.index}, "
                            f"input_precision=PREC)")
                local.add(f"mg{op.index}")
                continue
            var = grad_var(op.target)
            body.append(_assign(var, op.expr, self.p))
            local.add(var)
        loads = self.leaf_loads(self.backward_exprs(), local, {}, vectors_from_memory=False)
        lines += loads + body + self.backward_epilogue(persistent=True)
        # The recurrent GEMM's share of the carried gradient: dh_k += sum_j dg_j @ R_jk.
        for s in lay.state_order:
            k = lay.state_block[s]
            if k >= lay.n_ops:
                continue
            for j, kk in lay.r_blocks:
                if kk != k or ("xs" if lay.fused else "s", j) not in self.prog.slot_grads:
                    continue
                home, col = lay.slot_home[("xs" if lay.fused else "s", j)]
                lines.append(f"{naming.spec_var('new', s)} += tl.dot(tl.where(ok, dslot_{home}{col}, 0.0)"
                             f".to(rN{j}_{k}.dtype), rN{j}_{k}, input_precision=PREC)")
        for s in lay.state_order:
            lines.append(f"{naming.spec_var('k', s)} = tl.where(ok, {naming.spec_var('new', s)}, 0.0)")
        return lines


    # ---- tiled per-step ---------------------------------------------------------------------
    # One launch a step: a program owns BB batch rows and BN hidden units and computes their recurrent
    # products itself, reading the previous step's full h (and, backward, the full slot gradients of
    # step t + 1) from memory, with its columns of r. The reductions run over the contiguous operand
    # columns of S (slot columns of dXW backward) against the dense r, zero blocks included, in chunks
    # of BK: a chunk holds one operand load and one r tile per slot, so few values are live at once.
    # Launch boundaries order the steps.
    def tiled_forward(self) -> list[str]:
        lay = self.lay
        width = f"{lay.n_ops} * N"  # reduction length: the operands' columns, S[t, :, :n_ops*N]
        lines = [f"g{j} = {self._slot_start(j)}" for j in range(lay.n_s)]
        lines += [f"for q in range(0, {width}, BK):",
                  "    ik = q + tl.arange(0, BK)",
                  f"    h = _ld(S + (t * B + r) * ({lay.K} * N) + ik[None, :], (r < B) & (ik[None, :] < {width}))"]
        for j in range(lay.n_s):  # rT[i, n] = r[j*N + n, i] for this tile's n
            lines.append(f"    rT = tl.load(R + ({j} * N + c) * ({width}) + ik[:, None], "
                         f"mask=(ik[:, None] < {width}) & (c < N), other=0.0)")
            lines.append(f"    g{j} += tl.dot(h.to(rT.dtype), rT, input_precision=PREC)")
        for j in range(lay.n_s):
            lines += self._slot_store(j, f"g{j}")
        body, local = self._forward_body()
        exprs = [op.expr for op in self.prog.forward] + [ir.Value(v) for v in (*lay.state_order, self.c.cell.output)]
        exprs += [ir.State(v) for v in lay.state_order]  # the epilogue keeps a masked step's state
        loads = self._register_loads(exprs, local, states_from_memory=True)
        return loads + lines + body + self.forward_epilogue()

    def tiled_backward(self) -> list[str]:
        lay = self.lay
        lines = []
        for s in lay.state_order:  # the carried gradient's pointwise part, left by step t + 1
            lines.append(f"{naming.spec_var('k', s)} = _ld(CARRY + r * ({lay.K} * N) + {lay.state_block[s]} * N + c, ok)")
        # ... plus the recurrent GEMM's share: dh_k += dg(t + 1) @ r[:, k block], this tile's columns
        # (slot gradients sit in the first n_s*N columns of dXW when fused, of dG otherwise; slots
        # without a gradient stay zero there)
        if self.prog.slot_grads.keys() & {("xs" if lay.fused else "s", j) for j in range(lay.n_s)}:
            base, stride = ("DXW", lay.n_x) if lay.fused else ("DG", lay.n_s)
            width = f"{lay.n_s} * N"
            lines += ["if t + 1 < T:",
                      f"    for q in range(0, {width}, BK):",
                      "        ik = q + tl.arange(0, BK)",
                      f"        dg = _ld({base} + ((t + 1) * B + r) * ({stride} * N) + ik[None, :], (r < B) & (ik[None, :] < {width}))"]
            for k in range(lay.n_ops):
                s = lay.state_order[k]
                lines.append(f"        rN = tl.load(R + ik[:, None] * ({lay.n_ops} * N) + {k} * N + c, "
                             f"mask=(ik[:, None] < {width}) & (c < N), other=0.0)")
                lines.append(f"        {naming.spec_var('k', s)} += tl.dot(dg.to(rN.dtype), rN, input_precision=PREC)")
        lines += self.backward_prologue(persistent=True)
        local: set[str] = set()
        body: list[str] = []
        for op in self.prog.backward:
            var = grad_var(op.target)
            body.append(_assign(var, op.expr, self.p))
            local.add(var)
        loads = self.leaf_loads(self.backward_exprs(), local, {}, vectors_from_memory=False)
        return lines + loads + body + self.backward_epilogue()


def vector_gradients(group_sizes: dict[str, int], x_bias_folded: list[tuple[int, int]],
                     grad_places: list[tuple[str, int]]) -> list[str]:
    """Backward lines that make d_bias and d_diag: the bias blocks folded into the input GEMM take the
    sums of their dXW columns, the vector parameters the batch sums of their ACC rows (grad_places: the
    group and block of each ACC row). Consecutive blocks are gathered in one copy; a group gathered whole
    by one run is that slice itself; a group with a block no gather writes starts from zeros."""
    lines: list[str] = []
    gathers: dict[str, list[tuple[str, int, int]]] = {}  # group -> (source slice, first block, count)
    if x_bias_folded:
        lines.append("d_xw_sum = flat.sum(0, dtype=wide)")
        for k, b, count in paired_runs(x_bias_folded):
            gathers.setdefault("bias", []).append((f"d_xw_sum[{k} * N : {k + count} * N]", b, count))
    if grad_places:
        lines.append("acc_sums = ACC.sum(1)  # each vector parameter's gradient, summed over the batch")
        for a, group, index, count in paired_runs([(a, *place) for a, place in enumerate(grad_places)]):
            gathers.setdefault(group, []).append((f"acc_sums[{a} : {a + count}].reshape(-1)", index, count))
    for group in ("bias", "diag"):
        size, runs = group_sizes.get(group, 0), gathers.get(group, [])
        if not size:
            lines.append(f"d_{group} = None")
        elif len(runs) == 1 and runs[0][1:] == (0, size):
            lines.append(f"d_{group} = {runs[0][0]}.to({group}.dtype)")
        else:
            covered = sorted(b for _, first, count in runs for b in range(first, first + count)) == list(range(size))
            lines.append(f"d_{group} = torch.{'empty' if covered else 'zeros'}_like({group})")
            lines += [f"d_{group}[{first} * N : {first + count} * N] = {source}" for source, first, count in runs]
    return lines


def _vector_group(compiled: CompiledCell, layout: Layout) -> str | None:
    """The storage group whose blocks are the vector parameters, in order and nothing else, or None."""
    places = [layout.vector_places[v] for v in layout.vectors]
    groups = {group for group, _ in places}
    if len(groups) != 1:
        return None
    group = groups.pop()
    in_order = [index for _, index in places] == list(range(len(places)))
    return group if in_order and compiled.schedule.group_sizes.get(group) == len(places) else None


def recurrent_share(layout: Layout) -> list[str]:
    """``_add_recurrent_share(new, dg, r)`` (preceded by its blank lines), for cells with recurrent products: the
    recurrent GEMM's share of the carried gradient, one dense tile of r at a time."""
    if not layout.n_s:
        return []
    lines = ["", "", "def _add_recurrent_share(new, dg, r):",
             '    """new[:, operand blocks] += dg @ r: the recurrent GEMM\'s share of the carried gradient, one dense '
             'tile of r at a time."""',
             f"    N = new.shape[1] // {layout.K}"]
    for row, rows, col, cols in layout.r_tiles:
        lines += [f"    dg_tile, r_tile = dg[:, {row} * N : {row + rows} * N], "
                  f"r[{row} * N : {row + rows} * N, {col} * N : {col + cols} * N]",
                  "    if dg.dtype == new.dtype:",
                  f"        new[:, {col} * N : {col + cols} * N].addmm_(dg_tile, r_tile)",
                  "    else:",
                  f"        new[:, {col} * N : {col + cols} * N] += torch.mm(dg_tile, r_tile)"]
    return lines


def recurrent_forward(layout: Layout) -> list[str]:
    """The eager-GEMM step loop's recurrent products at step t: into xw's slot columns, one addmm per dense tile
    of r (fused), or one GEMM into gs."""
    if not layout.n_s:
        return []
    lines = [f"h = S[t, :, : {layout.n_ops} * N].to(r.dtype)"]
    if not layout.fused:
        return [*lines, "torch.mm(h, r_t, out=gs[t])"]
    for row, rows, col, cols in layout.r_tiles:
        lines += [f"xw[t, :, {row} * N : {row + rows} * N].addmm_(h[:, {col} * N : {col + cols} * N],",
                  f"                                      r_t[{col} * N : {col + cols} * N, {row} * N : {row + rows} * N])"]
    return lines


def d_slots(layout: Layout, step: str) -> str:
    """The recurrent slots' gradients at ``step``: the first n_s blocks of dXW where the recurrent GEMM adds
    into the input GEMM's buffer, else dG's."""
    return f"dXW[{step}, :, : {layout.n_s} * N]" if layout.fused else f"dG[{step}]"


def forward_launches(stages: int, gemm_operands: list[tuple[int, str, int]]) -> list[str]:
    """The per-step forward at step t: each stage's kernel, the current-step products between stages (their
    operand read from the saved buffers SV or the stage temporaries TMP: ``gemm_operands``)."""
    lines = []
    for k in range(stages):
        if k:
            index, buffer, slot = gemm_operands[k - 1]
            operand = f"SV[{slot}, t]" if buffer == "SV" else f"TMP[{slot}]"
            lines += [f"operand = {operand}",
                      f"CG[{index}] = torch.mm(operand.to(MAT.dtype), MAT[{index} * N : {index + 1} * N].t())"]
        lines += [f'kernels["step_forward_{k}"][grid](t, T, B, N, xw, gs, S, out, SV, VEC, MASK, TMP, CG,',
                  " " * 37 + "HAS_MASK=has_mask, I64=i64, SAVE=save, BB=BB, BN=BN, num_warps=WARPS)"]
    return lines


def backward_launches(stages: int, gemms: list[int], layout: Layout) -> list[str]:
    """The per-step backward at step t: each stage's kernel, a current-step product's input gradient between
    stages, then the recurrent GEMM's share of the carried gradient."""
    lines = []
    for k in range(stages):
        lines += [f'kernels["step_backward_{k}"][grid](t, T, B, N, xw, gs, S, SV, VEC, MASK, TMP, DM, MG, d_out,',
                  " " * 38 + "carry, new, dXW, dG, ACC, HAS_MASK=has_mask, I64=i64,",
                  " " * 38 + "BB=BB, BN=BN, num_warps=WARPS)"]
        if k < stages - 1:
            i = gemms[k]
            lines.append(f"MG[{i}] = torch.mm(DM[{i}, t].to(MAT.dtype), MAT[{i} * N : {i + 1} * N])")
    if layout.n_s:
        lines.append(f"_add_recurrent_share(new, {d_slots(layout, 't')}, r)")
    return lines


def triton_context(compiled: CompiledCell) -> dict:
    layout = layout_of(compiled)
    w = KernelWriter(compiled, layout)
    fwd = w.step_forward()
    bwd = w.step_backward()
    persistent_fwd = w.persistent_forward()
    # one launch a step, recurrent products included; a tile of units cannot take a row's mean
    tiled = bool(layout.n_s) and not w.n_gemm and not layout.program.row_means
    context = {
        "tk": {
            "lay": layout,
            "fwd_stages": fwd,
            "bwd_stages": bwd,
            "fwd_tmp": max(len(w.fwd_tmp), 1),
            "bwd_tmp": max(len(w.bwd_tmp), 1),
            "fwd_gemm_operand": w.fwd_gemm_operand,
            "bwd_gemms": w.bwd_gemms,
            "n_gemm": w.n_gemm,
            "n_saved": len(layout.saved),
            "n_vec": len(layout.vectors),
            "n_acc": len(layout.vector_grads),
            "persistent_fwd_prologue": persistent_fwd[0],
            "persistent_fwd": persistent_fwd[1],
            "persistent_bwd": w.persistent_backward(),
            "tiled": tiled,  # cells without current-step products or row means
            "whole_rows": layout.program.row_means,  # the per-step kernels' programs hold whole rows
            "tiled_fwd": w.tiled_forward() if tiled else [],
            "tiled_bwd": w.tiled_backward() if tiled else [],
            # (S column block, the state's variable, its carried gradient's variable) per state
            "states": [(layout.state_block[s], naming.state_var(s), naming.spec_var("k", s))
                       for s in layout.state_order],
            "vector_vars": [naming.param_var(v) for v in layout.vectors],
            "persistent_max_n": PERSISTENT_MAX_N,
            "vector_gradients": vector_gradients(compiled.schedule.group_sizes, layout.x_bias_folded,
                                                 [layout.vector_places[v] for v in layout.vector_grads]),
            # the group that holds exactly the vector parameters, in the kernels' order (VEC is a view of it)
            "vec_group": _vector_group(compiled, layout),
            "recurrent_share": recurrent_share(layout),
            "forward_launches": forward_launches(len(fwd), w.fwd_gemm_operand),
            "backward_launches": backward_launches(len(bwd), w.bwd_gemms, layout),
            "d_slots_0": d_slots(layout, "0") if layout.n_s else "",
            "persistent_resident_blocks": len(layout.r_blocks) + w.n_gemm,
            "recurrent_forward": recurrent_forward(layout),
            "weight_grads": blocks.weight_grads(layout, "DM", lambda operand: f"SV[{layout.saved.index(operand)}]",
                                                ".to(low)", ".to(weight_c.dtype)"),
        },
    }
    return context
