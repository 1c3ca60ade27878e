"""The fused backend: a custom autograd.Function per cell, its backward derived by cellc.ir.autodiff.

Its buffers (cellc/codegen/layout.py) are shared with the compiled backend (cellc/codegen/native.py),
which replaces only the two time loops, and with the Triton backend.

After the backward loop, weight gradients are single large GEMMs over the whole sequence and
vector-parameter gradients are reductions.
"""

from __future__ import annotations

from cellc.codegen import blocks, naming
from cellc.codegen.eager import TorchPrinter, layer_size_sources, number, step_context
from cellc.codegen.layout import Layout, grad_var, layout_of, saved_var, target_var
from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.ir.pipeline import CompiledCell
from cellc.ir.sizes import Dim



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
    sched = layout.compiled.schedule
    slot_vars: dict[tuple[str, int], str] = {}
    for j in range(layout.n_s):
        slot_vars[("xs" if layout.fused else "s", j)] = f"g{j}"
    for k in range(layout.n_x):
        if ("xs", k) not in slot_vars:
            slot_vars[("x", k)] = f"x{k}"
    p = FusedPrinter(slot_vars)

    def columns(name: str) -> str:
        start = layout.state_offset[name]
        return f"{start} : {start + layout.size_of[name]}"

    def state_view(name: str, t: str) -> str:
        return f"S[{t}, :, {columns(name)}]"

    def span(stage: str, k: int) -> str:
        start, stop = layout.slot_span(stage, k)
        return f"{start} : {stop}"

    fwd: list[str] = []
    for s in layout.state_order:
        if s in prog.forward_states:
            fwd.append(f"{naming.state_var(s)} = {state_view(s, 't')}")
    if layout.n_s:
        h = f"S[t, :, : {layout.ops_width}]"
        if layout.fused:
            fwd.append(f"g = xw[t, :, : {sched.s_width}].addmm_({h}, r_t)")
        else:
            fwd.append(f"g = torch.mm({h}, r_t, out=gs[t])")
        fwd.append(blocks.slot_split(sched))
    for (stage, k), var in slot_vars.items():
        if stage == "x":
            fwd.append(f"{var} = xw[t, :, {span('x', k)}]")
    saved = set(layout.saved)
    for op in prog.forward:
        var = target_var(op.target)
        if isinstance(op, ad.CurrentGemm):
            fwd.append(f"{var} = torch.mm({p.expr(op.operand)}, mat_{op.index}.t())")
        elif ad.reads_per_batch(op.expr):
            fwd.append(f"{var} = {p.expr(op.expr)}")
        else:  # the same for every sequence: broadcast to (B, size) like every other value
            fwd.append(f"{var} = out[t].new_zeros(out[t].shape[0], {layout.value_size(op.target)}) + {p.expr(op.expr)}")
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
        bwd.append(f"{var} = {src}[t, :, {span(stage, k)}]")
    bwd.append("m = None if mask is None else mask[t]")
    bwd.append("d_out_t = d_out[t] if m is None else d_out[t] * m")
    for s in layout.state_order:
        c = naming.carry_var(s)
        bwd.append(f"{c} = carry[:, {columns(s)}]")
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
        bwd.append(f"{buf}[t, :, {span('x' if home == 'dxw' else 's', col)}] = {p.expr(expr)}")
    for name in layout.vector_grads:
        bwd.append(f"{naming.acc_var(name)} += {p.expr(prog.param_grads[name])}")
    bwd.append("new = torch.empty_like(carry)")
    for s in layout.state_order:
        expr = prog.prev_grads.get(s)
        raw = f"carry[:, {columns(s)}]"
        keep = f"torch.where(m, 0.0, {raw})"
        if expr is None:
            bwd.append(f"new[:, {columns(s)}] = 0.0 if m is None else {keep}")
        else:
            bwd.append(f"new[:, {columns(s)}] = {p.expr(expr)}")
            bwd.append(f"if m is not None: new[:, {columns(s)}] += {keep}")
    if layout.n_s:
        dg = f"dXW[t, :, : {sched.s_width}]" if layout.fused else "dG[t]"
        bwd.append(f"new[:, : {layout.ops_width}].addmm_({dg}, r)")
    bwd.append("carry = new")
    return fwd, bwd


def _size_contexts(layout: Layout) -> dict:
    """Where each generated function finds its sizes, and the sizes of the buffers it allocates."""
    compiled, sched = layout.compiled, layout.compiled.schedule
    symbols = compiled.sizes.symbols
    out_size = layout.size_of[compiled.cell.output]
    weights = [(src, dim) for src, dim in layer_size_sources(compiled) if not src.startswith("state")]
    mats = [(sched.layout[m].offset, sched.layout[m].stop) for m in layout.current]
    mat_sources = [(f"mats[{k}].shape[0]", sched.layout[m].rows) for k, m in enumerate(layout.current)]
    mat_sources += [(f"mats[{k}].shape[1]", Dim.of(sched.group_cols["weight_c"])) for k in range(len(mats))]
    vector_sources = [(f"vectors[{k}].shape[0]", sched.layout[v].rows) for k, v in enumerate(layout.vectors)]
    acc_sizes = [sched.layout[v].rows for v in layout.vector_grads]
    loop_sources = [("S.shape[2]", layout.S_width), *mat_sources, *vector_sources]  # (xw is None in some backwards)
    return {
        "size_args": layout.size_args,
        "forward_loop_sizes": blocks.size_lines(symbols, [("out.shape[2]", out_size), *loop_sources,
                                                          ("xw.shape[2]", sched.x_width)]),
        "backward_loop_sizes": blocks.size_lines(symbols, [("d_out.shape[2]", out_size), *loop_sources]),
        "backward_sizes": blocks.size_lines(symbols, [("d_out.shape[2]", out_size), ("S.shape[2]", layout.S_width),
                                                      *weights]),
        "grads_sizes": blocks.size_lines(symbols, [("dXW.shape[2]", sched.x_width), ("S.shape[2]", layout.S_width),
                                                   *[(f"dM[{k}].shape[2]", sched.layout[m].rows)
                                                     for k, m in enumerate(layout.current)],
                                                   *[(f"accs[{k}].shape[1]", d) for k, d in enumerate(acc_sizes)],
                                                   *[w for w in weights if not w[0].startswith(("weight_s",
                                                                                                 "weight_c"))]]),
        "widths": {"xw": sched.x_width, "gs": sched.s_width, "S": layout.S_width, "out": out_size},
        "saved_widths": ["1" if w is None else str(w) for w in layout.saved_widths],
        "mat_spans": mats,
        "dm_sizes": [sched.layout[m].rows for m in layout.current],
        "acc_sizes": acc_sizes,
        # for each state of the module's order (STATE_NAMES): its columns in S
        "state_spans": [(layout.state_offset[s], layout.state_offset[s] + layout.size_of[s]) for s in compiled.states],
        "carry_parts": [(compiled.states.index(s), layout.size_of[s]) for s in layout.state_order],
    }


def backend_context(compiled: CompiledCell) -> dict:
    layout = layout_of(compiled)
    sched = compiled.schedule
    fwd, bwd = _python_loops(layout)
    return {
        **_size_contexts(layout),
        **step_context(compiled),
        "lay": layout,
        "recurrent_matrix": blocks.recurrent_matrix(sched, "return "),
        "recurrent_grad": blocks.recurrent_grad(layout),
        "input_gemm": blocks.input_gemm(sched, "return ", out="out"),
        "input_grads": blocks.input_grads(sched, "need_d_x"),
        "weight_grads": blocks.weight_grads(layout, "dM", lambda operand: f"saved[{layout.saved.index(operand)}]"),
        "vector_grads_lines": blocks.vector_grads(layout),
        # the recurrent GEMM's own buffer: its slots (0 where it adds into xw)
        "gs_blocks": layout.n_s if layout.gs_needed else 0,
        # for each state of the module's order (STATE_NAMES): its column block in S; for each block: its state
        "state_target": [layout.state_block[s] for s in compiled.states],
        "state_source": [compiled.states.index(s) for s in layout.state_order],
        "forward_loop": fwd,
        "backward_loop": bwd,
        "saved_names": [saved_var(n) for n in layout.saved],
        "vector_vars": [naming.param_var(v) for v in layout.vectors],
        "vector_grads": layout.vector_grads,
        "vector_places": [(naming.param_var(v), layout.vector_places[v][0], sched.layout[v].offset,
                           sched.layout[v].stop) for v in layout.vectors],
        "grad_places": [(v, *layout.vector_places[v]) for v in layout.vector_grads],
        "mat_vars": [f"mat_{k}" for k in range(len(layout.current))],
        "dm_vars": [f"d_m{k}" for k in range(len(layout.current))],
        "acc_vars": [naming.acc_var(v) for v in layout.vector_grads],
        "number": number,
    }
