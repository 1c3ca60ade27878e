"""The symbolic backward of one step (cellc.ir.autodiff): structure and what is saved."""

from __future__ import annotations

import pytest

from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.ir.activations import ACTIVATIONS
from cellc.ir.pipeline import compile_spec
from cellc.spec.loader import builtin_spec_names

SPECS = builtin_spec_names()


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
    # Activation derivatives are taken from outputs only: the backward never evaluates an activation (a
    # pre-activation would have to be kept for it), and what it compares (relu, hard sigmoid) is an output.
    for expr in program.backward_exprs():
        for node in ir.walk(expr):
            assert not isinstance(node, ir.Act)
            if isinstance(node, ir.Indicator):
                assert isinstance(node.operand, (ir.Value, ad.Temp))
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


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_activation_derivative_is_ir_that_every_printer_prints_and_torch_agrees_with(name):
    """An activation's derivative is one IR expression of its output; printed for torch it equals autograd's
    derivative of the activation (away from a kink), and the C++ and Triton printers print it too."""
    import torch

    from cellc.codegen.eager import TorchPrinter
    from cellc.codegen.native import CppPrinter
    from cellc.codegen.triton_gen import TritonPrinter

    y_node = ir.Value("y")
    derivative = ACTIVATIONS[name].derivative(y_node)
    assert not any(isinstance(node, ir.Act) for node in ir.walk(derivative))  # from the output alone

    class Printer(TorchPrinter):
        def value(self, value_name: str) -> str:
            return value_name

    x = torch.tensor([-7.0, -2.5, -0.3, 0.4, 1.7, 2.9, 8.0], dtype=torch.float64, requires_grad=True)
    y = eval(ACTIVATIONS[name].torch_call.format(x="x"), {"torch": torch, "x": x})  # noqa: S307 - fixed text
    (expected,) = torch.autograd.grad(y.sum(), x)
    got = eval(Printer({}).expr(derivative), {"torch": torch, "y": y.detach()})  # noqa: S307 - printed IR
    torch.testing.assert_close(torch.as_tensor(got, dtype=torch.float64).expand_as(expected), expected, rtol=0, atol=1e-15)
    assert CppPrinter(lambda node: "y").expr(derivative) and TritonPrinter({}).expr(ad.Temp("t")) == "t__t"


@pytest.mark.parametrize("spec", SPECS)
def test_the_stage_plan_keeps_exactly_what_a_later_stage_reads(spec):
    """Every target read in a stage other than the one that computes it (the state updates and the output count
    as read by the last stage) crosses; nothing else does."""
    compiled = compile_spec(spec)
    program = ad.step_program(compiled)
    plan = program.stage_plan(program.forward)
    assert sum(len(s) for s in plan.stages) == len(program.forward)
    define = {op.target: plan.stage_of[id(op)] for op in program.forward}
    reads = {(plan.stage_of[id(op)], leaf) for op in program.forward
             for leaf in ir.walk(op.expr if isinstance(op, ad.Pointwise) else op.operand)}
    reads |= {(plan.last, ir.Value(s)) for s in compiled.states} | {(plan.last, ir.Value(compiled.cell.output))}
    assert plan.crossing == {leaf for k, leaf in reads if leaf in define and define[leaf] != k}
    if not program.gemms:
        assert len(plan.stages) == 1 and not plan.crossing
    backward = program.stage_plan(program.backward)
    assert len(backward.stages) == 2 * len(program.gemms) + 1
    assert all(isinstance(node, ad.Grad) for node in backward.crossing)
