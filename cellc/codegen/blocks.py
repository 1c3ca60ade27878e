"""Blocks of generated Python that several templates insert, decided and printed here, once.

Each function returns the block's lines, indented relative to where the template puts them (a template
loops over the lines and adds its own indentation). What a block looks like depends on the cell's schedule
(is the input GEMM biased? is the recurrent matrix one parameter or assembled from blocks? is the recurrent
GEMM fused into the input GEMM's buffer?): those decisions are made here, in tested Python, and the
templates hold only text.
"""

from __future__ import annotations

from collections.abc import Callable

from cellc.codegen.layout import Layout
from cellc.ir import nodes as ir
from cellc.ir.schedule import Schedule
from cellc.ir.sizes import SYMBOL_NAMES, Dim


def size_lines(symbols: tuple[str, ...], sources: list[tuple[str, Dim]]) -> list[str]:
    """Lines that recover the sizes ``symbols`` (N, P) inside generated code from tensors' extents: ``sources`` are
    (expression, its size), tried in order; each line takes a size from the first source that leaves only it
    unknown (``N = state[0].shape[1]``; ``N = (weight_x.shape[0] - (1 * P)) // 3``)."""
    known: list[str] = []
    lines = []
    while len(known) < len(symbols):
        for expr, dim in sources:
            unknown = [s for s, _ in dim.terms if s not in known]
            if len(unknown) == 1 and unknown[0] in symbols:
                symbol, k = unknown[0], dim.coefficient(unknown[0])
                rest = Dim(tuple(t for t in dim.terms if t[0] != symbol))
                value = f"({expr} - ({rest}))" if rest.terms else expr
                lines.append(f"{symbol} = {value}" if k == 1 else f"{symbol} = {value} // {k}")
                known.append(symbol)
                break
        else:
            missing = ", ".join(SYMBOL_NAMES[s] for s in symbols if s not in known)
            # cannot happen for a cell that cellc.ir.sizes accepted: every size is a state's or a parameter's
            raise AssertionError(f"no source gives the generated code its {missing}")
    return lines


def x_bias_blocks(sched: Schedule) -> list[int | None]:
    """The input GEMM's bias, slot by slot: the bias block of each product's x-slot, None where it has none."""
    return [sched.layout[s.bias].index if s.bias else None for s in sched.x_slots[: sched.n_w]]


def x_bias_parts(sched: Schedule) -> list[str]:
    """The input GEMM's bias vector's parts, slot by slot: each product's folded bias, zeros where it has none."""
    return [f"x.new_zeros({Dim.of(s.size)})" if s.bias is None else
            f"bias[{sched.layout[s.bias].offset} : {sched.layout[s.bias].stop}]" for s in sched.x_slots[: sched.n_w]]


def input_gemm(sched: Schedule, head: str, out: str = "", direct: bool = True) -> list[str]:
    """``x @ weight_x.T`` over the whole sequence with the slots' biases folded in, as ``{head}<call>`` viewed
    as (T, B, n_x*N); ``out``: the buffer the call writes into (none: a new tensor). Where the cell reads its
    input elementwise, the last block holds ``xd`` (the input the cell reads so) itself, copied beside the
    products; ``direct=False``: the products alone (the eager loop reads ``xd`` where it is)."""
    n_w, w_width = sched.n_w, sched.w_width
    blocks = x_bias_blocks(sched)
    biased = any(b is not None for b in blocks)
    lines = []
    if sched.x_bias_direct:
        lines.append(f"x_bias = bias[: {w_width}]")
    elif biased:
        lines.append(f"x_bias = torch.cat([{', '.join(x_bias_parts(sched))}])")

    def product(into: str) -> str:
        return (f"torch.addmm(x_bias, x.reshape(T * B, M), weight_x.t(){into})" if biased
                else f"torch.mm(x.reshape(T * B, M), weight_x.t(){into})")

    if sched.direct is None or not direct:
        into = f", out={out}" if out else ""
        return [*lines, f"{head}{product(into)}.view(T, B, {w_width})"]
    x_width = sched.x_width
    new = f"x.new_empty(T * B, {x_width})"
    lines.append(f"xw = {new} if {out} is None else {out}" if out else f"xw = {new}")
    if n_w:
        lines.append(product(f", out=xw[:, : {w_width}]"))
    lines.append(f"xw[:, {w_width} :].copy_(xd.reshape(T * B, {Dim.of(sched.x_slots[sched.direct].size)}))")
    return [*lines, f"{head}xw.view(T, B, {x_width})"]


def input_grads(sched: Schedule, need_d_x: str) -> list[str]:
    """The input GEMM's backward from ``dXW`` (T, B, n_x*N): ``flat`` (dXW as one matrix), ``d_x`` (only where
    ``need_d_x``, an expression, holds), ``d_weight_x`` and ``d_xd`` (the direct block's gradient: what the
    cell's elementwise reads of its input add to it; None where it reads none)."""
    n_w, n_x, w_width = sched.n_w, len(sched.x_slots), sched.w_width
    lines = [f"flat = dXW.view(T * B, {sched.x_width})"]
    if not n_w:
        lines += ["d_x = d_weight_x = None"]
    else:
        products = "flat" if n_w == n_x else f"flat[:, : {w_width}]"
        lines += [f"d_x = torch.mm({products}, weight_x).view(T, B, M) if {need_d_x} else None",
                  f"d_weight_x = torch.mm({products}.t(), x.reshape(T * B, M))"]
    lines.append("d_xd = None" if sched.direct is None else f"d_xd = dXW[:, :, {w_width} :]")
    return lines


def direct_input(sched: Schedule) -> list[str]:
    """The body of ``_direct_input(x, layer, direction, N)``: what the cell reads elementwise of a layer's input
    x: x itself in the first layer, the direction's own block of the layer below's output above it (the SRU
    convention for stacks); None for a cell that reads its input through matrices only."""
    if sched.direct is None:
        return ["return None"]
    return ["if layer == 0:", "    return x", "return x[:, :, direction * N : (direction + 1) * N]"]


def weight_s_blocks(sched: Schedule) -> list[list[str]]:
    """Blocks of weight_s as placed in the per-step GEMM's matrix: rows = slots, columns = operands
    (``weight_s[a : b]``: a matrix's rows of weight_s; zeros where a slot does not read an operand)."""
    cols = Dim.of(sched.group_cols["weight_s"])
    rows = []
    for slot in sched.s_slots:
        row = [f"weight_s.new_zeros({Dim.of(slot.size)}, {cols})"] * len(sched.s_operands)
        for matrix, operand in slot.products:
            place = sched.layout[matrix]
            row[sched.s_operands.index(operand)] = f"weight_s[{place.offset} : {place.stop}]"
        rows.append(row)
    return rows


def recurrent_matrix(sched: Schedule, head: str, tail: str = "") -> list[str]:
    """The per-step GEMM's matrix r (n_s*N x n_ops*N; ``g = h @ r.T``) as ``{head}<r>{tail}``: weight_s itself
    where it is laid out so, else assembled from its blocks (zero blocks where a slot skips an operand).
    A cell without recurrent products: ``{head}None``."""
    if not sched.s_slots:
        return [f"{head}None"]
    if sched.s_direct:
        return [f"{head}weight_s{tail}"]
    rows = [f"    torch.cat([{', '.join(row)}], 1)," for row in weight_s_blocks(sched)]
    return [f"{head}torch.cat([", *rows, f"], 0){tail}"]


def recurrent_grad(layout: Layout) -> list[str]:
    """The body of ``_recurrent_grad(d_r, N)``: weight_s's gradient from r's (its nonzero blocks, in order)."""
    sched = layout.compiled.schedule
    if sched.s_direct:
        return ["return d_r"]
    cols = Dim.of(sched.group_cols["weight_s"])
    rows = [f"    d_r[{sched.s_offset(j)} : {sched.s_offset(j + 1)}, {cols * k} : {cols * (k + 1)}],"
            for j, k in layout.r_blocks]
    return ["return torch.cat([", *rows, "], 0)"]


def recurrent_step(sched: Schedule, operands: list[str]) -> list[str]:
    """The eager loop's recurrent GEMM at step t (``operands``: the previous-step values it multiplies), into
    the slot variables g0, g1, ...; nothing for a cell without recurrent products."""
    n_s = len(sched.s_slots)
    if not n_s:
        return []
    lines = []
    if sched.s_direct:
        h = operands[0]
    else:
        h = "h"
        lines.append(f"h = torch.cat([{', '.join(operands)}], 1)")
    lines.append(f"g = torch.addmm(xw_fused[t], {h}, r_t)" if sched.fused else f"g = torch.mm({h}, r_t)")
    return [*lines, slot_split(sched)]


def slot_split(sched: Schedule) -> str:
    """The per-step GEMM's result ``g`` into its slots' variables g0, g1, ... (equal slots: chunks)."""
    n_s = len(sched.s_slots)
    targets = ", ".join(f"g{j}" for j in range(n_s)) + ("," if n_s == 1 else "")
    sizes = [Dim.of(s.size) for s in sched.s_slots]
    if len(set(sizes)) == 1:
        return f"{targets} = g.chunk({n_s}, 1)"
    return f"{targets} = g.split([{', '.join(map(str, sizes))}], 1)"


def eager_products(sched: Schedule) -> list[str]:
    """The eager layer's set-up of its products: the input GEMM over the whole sequence, the recurrent matrix
    (transposed, as the loop multiplies by it) and, where the recurrent GEMM adds into the input GEMM's
    buffer, that buffer's recurrent columns."""
    n_x, n_s = sched.n_w, len(sched.s_slots)
    lines = []
    if n_x:
        lines += ["# Every product of x in one GEMM over the whole sequence, biases folded in.",
                  *input_gemm(sched, "xw = ", direct=False)]
    if n_s:
        lines += ["# Every product of previous-step values in one GEMM per step.",
                  *recurrent_matrix(sched, "r_t = ", ".t()")]
        if sched.fused:
            lines.append(f"xw_fused = {'xw' if n_s == n_x else f'xw[:, :, : {sched.s_width}]'}")
    return lines


def weight_grads(layout: Layout, dm: str, saved: Callable[[ir.Expr], str], cast_h: str = "",
                 cast_c: str = "") -> list[str]:
    """d_weight_s and d_weight_c from the backward loop's buffers, one GEMM each over the whole sequence (one
    per dense tile of r where r has zero blocks). ``dm``: the buffers of the current-step products' gradients;
    ``saved(operand)``: the saved buffer of a product's operand; ``cast_h`` / ``cast_c``: appended to the
    states' matrix and to each d_weight_c block (a 16-bit layer's casts)."""
    lines = []
    sched = layout.compiled.schedule
    if layout.n_s:
        s_width, ops_width = sched.s_width, layout.ops_width
        lines.append(f"d_g = flat[:, : {s_width}]" if layout.fused else f"d_g = dG.view(T * B, {s_width})")
        lines.append(f"h_all = S[:T].reshape(T * B, {layout.S_width})[:, : {ops_width}]{cast_h}")
        if len(layout.r_tiles) > 1:
            lines.append(f"d_r = d_g.new_zeros({s_width}, {ops_width})  # one GEMM per dense tile of r")
            width = Dim.of(sched.group_cols["weight_s"])
            for row, rows, col, cols in layout.r_tiles:
                r0, r1 = sched.s_offset(row), sched.s_offset(row + rows)
                c0, c1 = width * col, width * (col + cols)
                lines += [f"d_r[{r0} : {r1}, {c0} : {c1}] = torch.mm(",
                          f"    d_g[:, {r0} : {r1}].t(), h_all[:, {c0} : {c1}])"]
            lines.append(f"d_weight_s = _recurrent_grad(d_r, {layout.size_args})")
        else:
            lines.append(f"d_weight_s = _recurrent_grad(torch.mm(d_g.t(), h_all), {layout.size_args})")
    else:
        lines.append("d_weight_s = None")
    gemms = sorted(layout.program.gemms, key=lambda g: g.index)
    if gemms:
        lines += ["d_weight_c = torch.cat([",
                  *[f"    torch.mm({dm}[{k}].view(T * B, {sched.layout[g.param].rows}).t(), "
                    f"{saved(g.operand)}.view(T * B, {layout.value_size(g.operand)})){cast_c},"
                    for k, g in enumerate(gemms)],
                  "], 0)"]
    else:
        lines.append("d_weight_c = None")
    return lines


def vector_grads(layout: Layout) -> list[str]:
    """d_bias and d_diag's blocks (both zeroed before): the folded biases' from the input GEMM's column sums,
    the other vectors' from the loops' per-step accumulators, one copy per run of consecutive blocks."""
    sched = layout.compiled.schedule
    lines = ["d_xw_sum = flat.sum(0)"] if layout.x_bias_folded else []
    for k, b, n in layout.x_bias_runs:
        start, stop = layout.block_span("bias", b, n)
        lines.append(f"d_bias[{start} : {stop}] = d_xw_sum[{sched.x_offset(k)} : {sched.x_offset(k + n)}]")
    for a, group, index, n in layout.vector_grad_runs:
        start, stop = layout.block_span(group, index, n)
        lines.append(f"d_{group}[{start} : {stop}] = torch.cat(accs[{a} : {a + n}], 1).sum(0)")
    return lines
