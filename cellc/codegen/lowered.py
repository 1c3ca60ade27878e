"""Lowering onto torch's own RNN kernels (cuDNN on GPU) for cells that are exactly LSTM or GRU.

The pipeline stores such a cell's gates in torch's order (np's z, i, f, o become i, f, z, o), so
its ``weight_x`` and ``weight_s`` are torch's ``w_ih`` and ``w_hh`` as they are. The generated
module keeps them, as torch.nn.LSTM keeps its own, as views of one flat buffer for the whole stack
laid out as cuDNN wants its weights: a call hands torch the storage itself, and its autograd graph
is torch.nn.LSTM's. The bias is ``b_ih`` itself where torch's second bias is zero (np); where it is
not (the GRU's ``b_hn`` sits in ``b_hh``), each call mirrors the bias into the two.
"""

from __future__ import annotations

from cellc.errors import UsageError
from cellc.ir.lowering import LoweringPlan
from cellc.ir.pipeline import CompiledCell


def block_runs(compiled: CompiledCell, names: tuple[str | None, ...]) -> list[tuple[str | None, int, int]]:
    """The named blocks as runs (group or None for zero blocks, first block, count): consecutive
    blocks of one storage group become one run."""
    layout = compiled.schedule.layout
    runs: list[tuple[str | None, int, int]] = []
    for name in names:
        group, index = (layout[name].group, layout[name].index) if name else (None, 0)
        if runs and runs[-1][0] == group and (group is None or runs[-1][1] + runs[-1][2] == index):
            runs[-1] = (group, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((group, index, 1))
    return runs


def lowered_context(compiled: CompiledCell, required: bool) -> dict:
    """Template context for the lowered layer; ``lowering`` is None when the cell is not torch's."""
    plan: LoweringPlan | None = compiled.lowering
    if plan is None:
        if required:
            raise UsageError(
                f"backend 'lowered' runs only cells whose equations are exactly torch.nn.LSTM's or "
                f"torch.nn.GRU's; '{compiled.name}' is neither (use auto, compiled, fused, triton or eager)")
        return {"lowering": None}
    sizes = compiled.schedule.group_sizes
    gates = len(plan.weight_ih)
    w_ih, w_hh, b_ih, b_hh = (block_runs(compiled, names) for names in
                              (plan.weight_ih, plan.weight_hh, plan.bias_ih, plan.bias_hh))
    # The schedule stores a lowered cell's gates in torch's order (pipeline: gate_order), so its input
    # and previous-step matrices are torch's w_ih and w_hh whole.
    assert w_ih == [("weight_x", 0, gates)] and sizes["weight_x"] == gates
    assert w_hh == [("weight_s", 0, gates)] and sizes["weight_s"] == gates
    # Every bias block is in exactly one of torch's biases (their gradients are a permutation of it).
    used = sorted(f + k for runs in (b_ih, b_hh) for g, f, c in runs if g for k in range(c))
    assert used == list(range(sizes["bias"])) and all(g in (None, "bias") for g, _, _ in b_ih + b_hh)
    # A projection (torch.nn.LSTM's proj_size) is the whole of weight_c: torch's w_hr, the fifth weight of a layer.
    proj = plan.weight_hr is not None
    assert not proj or block_runs(compiled, (plan.weight_hr,)) == [("weight_c", 0, 1)] == [
        ("weight_c", 0, sizes["weight_c"])]
    bias_resident = b_ih == [("bias", 0, sizes["bias"])] and b_hh == [(None, 0, gates)]
    # torch's weights of a layer in its flat buffer: w_ih, w_hh, b_ih, b_hh (and w_hr); which of them ARE the
    # spec's storage, as (index in the module's _weights tuple, position in the layer's weights)
    resident = [(0, 0), (1, 1)] + [(3, 2)] * bias_resident + [(2, 4)] * proj
    return {
        "lowering": {
            "mode": plan.mode,
            "gates": gates,
            # The bias is b_ih exactly and b_hh is zero: the bias can be a view of the buffer too.
            "bias_resident": bias_resident,
            "per_layer": 5 if proj else 4,
            "resident": resident,
            # the keyword torch.nn.LSTM takes for it, the projection's place among a layer's weights
            "torch_sizes": ", proj_size=module.proj_size" if proj else "",
            "projection": ", weight_c" if proj else "",
            # Otherwise each of b_ih, b_hh as runs (first bias block or None for zero blocks, count).
            "bias_runs": [[(f if g else None, c) for g, f, c in runs] for runs in (b_ih, b_hh)],
            # Position in the module's state tuple of torch's h (and c).
            "state_index": [compiled.states.index(s) for s in plan.states],
            # For each module state: its position among torch's states.
            "torch_index": [plan.states.index(s) for s in compiled.states],
        }
    }
