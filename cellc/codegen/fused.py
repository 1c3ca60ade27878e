"""The fused backend: a custom autograd.Function per cell, its backward derived by cellc.ir.autodiff.

Its buffers (cellc/codegen/layout.py) are shared with the compiled backend (cellc/codegen/native.py),
which replaces only the two time loops, and with the Triton backend.

After the backward loop, weight gradients are single large GEMMs over the whole sequence and
vector-parameter gradients are reductions.
"""

from __future__ import annotations

from cellc.codegen import blocks, naming
from cellc.codegen.eager import TorchPrinter, number, step_context
from cellc.codegen.layout import Layout, grad_var, layout_of, saved_var, target_var
from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.ir.pipeline import CompiledCell



class FusedPrinter(TorchPrinter):
    """Torch expressions over the step program's nodes (forward and backward)."""

    def expr(self, node: ir.Expr) -> str:
        if isinstance(node, ad.Temp):
            return target_var(node)
        if isinstance(node, ad.Grad):
            return grad_var(node.target)
        if isinstance(node, ad.Carry):
            return naming.carry_var(node.name)
        if isinstance(node, ad.OutGrad):
            return "d_out_t"
        if isinstance(node, ad.MatGrad):
            return f"mg{node.index}"
        return super().expr(node)

    def matmul(self, node: ir.MatMul) -> str:  # pragma: no cover - flattened into CurrentGemm
        raise AssertionError("current-step products are separate ops in the step program")

    def norm(self, arg: str) -> str:  # pragma: no cover - expanded by the step program
        raise AssertionError("normalisations are expanded into row means in the step program")


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
    for s in layout.state_order:
        if s in prog.forward_states:
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
    for s in layout.state_order:
        if s in prog.backward_states:
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


def backend_context(compiled: CompiledCell) -> dict:
    layout = layout_of(compiled)
    sched = compiled.schedule
    fwd, bwd = _python_loops(layout)
    return {
        **step_context(compiled),
        "lay": layout,
        "recurrent_matrix": blocks.recurrent_matrix(sched, "return "),
        "recurrent_grad": blocks.recurrent_grad(layout),
        "input_gemm": blocks.input_gemm(sched, "return ", out="out"),
        "input_grads": blocks.input_grads(sched, "need_d_x"),
        "weight_grads": blocks.weight_grads(layout, "dM", lambda operand: f"saved[{layout.saved.index(operand)}]"),
        "vector_grads_lines": blocks.vector_grads(layout),
        # blocks of N per step in each buffer, and how many buffers and vectors (module constants)
        "counts": {"xw": layout.n_x, "gs": layout.n_s if layout.gs_needed else 0, "s": layout.K,
                   "mats": len(layout.current), "vectors": len(layout.vectors),
                   "accs": len(layout.vector_grads)},
        # for each state of the module's order (STATE_NAMES): its column block in S; for each block: its state
        "state_target": [layout.state_block[s] for s in compiled.states],
        "state_source": [compiled.states.index(s) for s in layout.state_order],
        "forward_loop": fwd,
        "backward_loop": bwd,
        "saved_names": [saved_var(n) for n in layout.saved],
        "saved_rows": tuple(layout.saved_rows),
        "vector_vars": [naming.param_var(v) for v in layout.vectors],
        "vector_grads": layout.vector_grads,
        "vector_places": [(naming.param_var(v), *layout.vector_places[v]) for v in layout.vectors],
        "grad_places": [(v, *layout.vector_places[v]) for v in layout.vector_grads],
        "mat_vars": [f"mat_{k}" for k in range(len(layout.current))],
        "dm_vars": [f"d_m{k}" for k in range(len(layout.current))],
        "acc_vars": [naming.acc_var(v) for v in layout.vector_grads],
        "number": number,
    }
