"""Lowering onto torch's own RNN kernels (cuDNN on GPU) for cells that are exactly LSTM or GRU.

The spec's parameters keep their storage (``weight_x``, ``weight_s``, ``bias``, the layout
every backend shares); each forward assembles torch's ``w_ih, w_hh, b_ih, b_hh`` from them
in torch's gate order (np stores z, i, f, o; torch wants i, f, g, o) with one cat of row slices
into a single flat buffer for the whole stack (every layer and direction), as views laid out the
way cuDNN keeps its weights: cuDNN then uses that buffer as it is instead of compacting separate
tensors into one on every call (the copy and the warning the H100 run showed). A custom autograd function cuts the four gradients back into
the spec's blocks (autograd's own slicing would cost a zero-filled copy per block). torch's second
bias is a zero block except the GRU's ``b_hn``.
"""

from __future__ import annotations

from cellc.errors import UsageError
from cellc.ir.lowering import LoweringPlan, lowering_plan
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
    plan: LoweringPlan | None = lowering_plan(compiled)
    if plan is None:
        if required:
            raise UsageError(
                f"backend 'lowered' runs only cells whose equations are exactly torch.nn.LSTM's or "
                f"torch.nn.GRU's; '{compiled.name}' is neither (use auto, compiled, fused, triton or eager)")
        return {"lowering": None}
    assert None not in plan.weight_ih + plan.weight_hh, "only bias blocks can be zero (torch's b_hh)"
    torch_blocks = (plan.weight_ih, plan.weight_hh, plan.bias_ih, plan.bias_hh)
    used = [name for names in torch_blocks for name in names if name]
    # The backward is a permutation of the gradient rows: every storage block must appear exactly once.
    layout = compiled.schedule.layout
    assert len(used) == len(set(used)) == sum(compiled.schedule.group_sizes[g] for g in ("weight_x", "weight_s", "bias")) \
        and all(layout[name].group in ("weight_x", "weight_s", "bias") for name in used)
    return {
        "lowering": {
            "mode": plan.mode,
            "gates": len(plan.weight_ih),
            # w_ih, w_hh, b_ih, b_hh, each as runs of the spec's storage blocks (zero blocks: bias only).
            "torch_runs": [block_runs(compiled, names) for names in torch_blocks],
            # Position in the module's state tuple of torch's h (and c).
            "state_index": [compiled.states.index(s) for s in plan.states],
            # For each module state: its position among torch's states.
            "torch_index": [plan.states.index(s) for s in compiled.states],
        }
    }
