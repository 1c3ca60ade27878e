"""The symbolic backward of one step (cellc.ir.autodiff): structure and what is saved."""

from __future__ import annotations

import pytest

from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.ir.pipeline import compile_spec
from cellc.spec.loader import spec_search_dirs

SPECS = sorted(p.stem for p in spec_search_dirs()[0].glob("*.yaml"))


@pytest.mark.parametrize("spec", SPECS)
def test_every_spec_derives(spec):
    compiled = compile_spec(spec)
    program = ad.step_program(compiled)
    # Every GEMM slot and every vector parameter outside the input GEMM receives a gradient.
    sched = compiled.schedule
    slots = {(n.stage, n.index) for eq in sched.equations for n in ir.walk(eq.expr) if isinstance(n, ir.Slot)}
    assert set(program.slot_grads) == slots
    folded = {s.bias for s in sched.x_slots if s.bias}
    vectors = {n for n, p in compiled.params.items() if not p.kind.is_matrix and n not in folded}
    assert set(program.param_grads) == vectors
    # Activation derivatives are taken from outputs only, never from pre-activations.
    for expr in program.backward_exprs():
        for node in ad._walk(expr):
            if isinstance(node, ad.Deriv):
                assert isinstance(node.output, (ir.Value, ad.Temp))
    # One backward product per current-step product.
    assert len([op for op in program.backward if isinstance(op, ad.GradGemm)]) == len(sched.current)


def test_vanilla_saves_only_what_backward_reads():
    program = ad.step_program(compile_spec("vanilla"))
    saved = {n.name for n in program.saved}
    assert ir.Value("y") not in program.saved  # the output is never read by the backward
    assert {"z", "i", "f", "c", "o"} <= saved
    assert any(isinstance(n, ad.Temp) for n in program.saved)  # tanh(c), kept rather than recomputed
    assert program.saved_slots == []  # pre-activations are not needed: derivatives use outputs


def test_gru_keeps_the_recurrent_product_it_multiplies():
    program = ad.step_program(compile_spec("gru"))
    # r * (R_n y[-1] + b_Rn): the gradient of r needs the recurrent slot's value.
    assert program.saved_slots == [("s", 2)]
    assert "b_Rn" in program.param_grads


def test_current_step_product_saves_its_operand():
    program = ad.step_program(compile_spec("mgu"))
    (gemm,) = program.gemms
    assert gemm.param == "R_n"
    assert gemm.operand in program.saved
    stages = program.stages(program.forward)
    assert any(stage and isinstance(stage[0], ad.CurrentGemm) for stage in stages)
