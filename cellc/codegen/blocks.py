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


def x_bias_blocks(sched: Schedule) -> list[int | None]:
    """The input GEMM's bias, slot by slot: the bias block of each product's x-slot, None where it has none."""
    return [sched.layout[s.bias].index if s.bias else None for s in sched.x_slots[: sched.n_w]]


def input_gemm(sched: Schedule, head: str, out: str = "", direct: bool = True) -> list[str]:
    """``x @ weight_x.T`` over the whole sequence with the slots' biases folded in, as ``{head}<call>`` viewed
    as (T, B, n_x*N); ``out``: the buffer the call writes into (none: a new tensor). Where the cell reads its
    input elementwise, the last block holds ``xd`` (the input the cell reads so) itself, copied beside the
    products; ``direct=False``: the products alone (the eager loop reads ``xd`` where it is)."""
    n_w = sched.n_w
    blocks = x_bias_blocks(sched)
    biased = any(b is not None for b in blocks)
    lines = []
    if sched.x_bias_direct:
        lines.append(f"x_bias = bias[: {n_w} * N]")
    elif biased:
        parts = ", ".join("x.new_zeros(N)" if b is None else f"bias[{b} * N : {b + 1} * N]" for b in blocks)
        lines.append(f"x_bias = torch.cat([{parts}])")

    def product(into: str) -> str:
        return (f"torch.addmm(x_bias, x.reshape(T * B, M), weight_x.t(){into})" if biased
                else f"torch.mm(x.reshape(T * B, M), weight_x.t(){into})")

    if sched.direct is None or not direct:
        into = f", out={out}" if out else ""
        return [*lines, f"{head}{product(into)}.view(T, B, {n_w} * N)"]
    n_x = len(sched.x_slots)
    new = f"x.new_empty(T * B, {n_x} * N)"
    lines.append(f"xw = {new} if {out} is None else {out}" if out else f"xw = {new}")
    if n_w:
        lines.append(product(f", out=xw[:, : {n_w} * N]"))
    lines.append(f"xw[:, {n_w} * N :].copy_(xd.reshape(T * B, N))")
    return [*lines, f"{head}xw.view(T, B, {n_x} * N)"]


def input_grads(sched: Schedule, need_d_x: str) -> list[str]:
    """The input GEMM's backward from ``dXW`` (T, B, n_x*N): ``flat`` (dXW as one matrix), ``d_x`` (only where
    ``need_d_x``, an expression, holds), ``d_weight_x`` and ``d_xd`` (the direct block's gradient: what the
    cell's elementwise reads of its input add to it; None where it reads none)."""
    n_w, n_x = sched.n_w, len(sched.x_slots)
    lines = [f"flat = dXW.view(T * B, {n_x} * N)"]
    if not n_w:
        lines += ["d_x = d_weight_x = None"]
    else:
        products = "flat" if n_w == n_x else f"flat[:, : {n_w} * N]"
        lines += [f"d_x = torch.mm({products}, weight_x).view(T, B, M) if {need_d_x} else None",
                  f"d_weight_x = torch.mm({products}.t(), x.reshape(T * B, M))"]
    lines.append("d_xd = None" if sched.direct is None else f"d_xd = dXW[:, :, {n_w} * N :]")
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
    (``ws[k]``: the k-th N x N block of weight_s; ``zero`` where a slot does not read an operand)."""
    rows, block = [], 0
    for slot in sched.s_slots:
        row = ["zero"] * len(sched.s_operands)
        for _, operand in slot.products:
            row[sched.s_operands.index(operand)] = f"ws[{block}]"
            block += 1
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
    return [f"ws = weight_s.view({sched.group_sizes['weight_s']}, N, N)", "zero = weight_s.new_zeros(N, N)",
            f"{head}torch.cat([", *rows, f"], 0){tail}"]


def recurrent_grad(layout: Layout) -> list[str]:
    """The body of ``_recurrent_grad(d_r, N)``: weight_s's gradient from r's (its nonzero blocks, in order)."""
    if layout.compiled.schedule.s_direct:
        return ["return d_r"]
    rows = [f"    d_r[{j} * N : {j + 1} * N, {k} * N : {k + 1} * N]," for j, k in layout.r_blocks]
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
    targets = ", ".join(f"g{j}" for j in range(n_s)) + ("," if n_s == 1 else "")
    return [*lines, f"{targets} = g.chunk({n_s}, 1)"]


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
            lines.append(f"xw_fused = {'xw' if n_s == n_x else f'xw[:, :, : {n_s} * N]'}")
    return lines


def weight_grads(layout: Layout, dm: str, saved: Callable[[ir.Expr], str], cast_h: str = "",
                 cast_c: str = "") -> list[str]:
    """d_weight_s and d_weight_c from the backward loop's buffers, one GEMM each over the whole sequence (one
    per dense tile of r where r has zero blocks). ``dm``: the buffers of the current-step products' gradients;
    ``saved(operand)``: the saved buffer of a product's operand; ``cast_h`` / ``cast_c``: appended to the
    states' matrix and to each d_weight_c block (a 16-bit layer's casts)."""
    lines = []
    if layout.n_s:
        n_s, n_ops = layout.n_s, layout.n_ops
        lines.append(f"d_g = flat[:, : {n_s} * N]" if layout.fused else f"d_g = dG.view(T * B, {n_s} * N)")
        lines.append(f"h_all = S[:T].reshape(T * B, {layout.K} * N)[:, : {n_ops} * N]{cast_h}")
        if len(layout.r_tiles) > 1:
            lines.append(f"d_r = d_g.new_zeros({n_s} * N, {n_ops} * N)  # one GEMM per dense tile of r")
            for row, rows, col, cols in layout.r_tiles:
                lines += [f"d_r[{row} * N : {row + rows} * N, {col} * N : {col + cols} * N] = torch.mm(",
                          f"    d_g[:, {row} * N : {row + rows} * N].t(), h_all[:, {col} * N : {col + cols} * N])"]
            lines.append("d_weight_s = _recurrent_grad(d_r, N)")
        else:
            lines.append("d_weight_s = _recurrent_grad(torch.mm(d_g.t(), h_all), N)")
    else:
        lines.append("d_weight_s = None")
    gemms = sorted(layout.program.gemms, key=lambda g: g.index)
    if gemms:
        lines += ["d_weight_c = torch.cat([",
                  *[f"    torch.mm({dm}[{k}].view(T * B, N).t(), {saved(g.operand)}.view(T * B, N)){cast_c},"
                    for k, g in enumerate(gemms)],
                  "], 0)"]
    else:
        lines.append("d_weight_c = None")
    return lines


def vector_grads(layout: Layout) -> list[str]:
    """d_bias and d_diag's blocks (both zeroed before): the folded biases' from the input GEMM's column sums,
    the other vectors' from the loops' per-step accumulators, one copy per run of consecutive blocks."""
    lines = ["d_xw_sum = flat.sum(0)"] if layout.x_bias_folded else []
    lines += [f"d_bias[{b} * N : {b + n} * N] = d_xw_sum[{k} * N : {k + n} * N]" for k, b, n in layout.x_bias_runs]
    lines += [f"d_{group}[{index} * N : {index + n} * N] = torch.cat(accs[{a} : {a + n}], 1).sum(0)"
              for a, group, index, n in layout.vector_grad_runs]
    return lines
