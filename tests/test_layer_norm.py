"""Layer normalisation, ``norm(v)`` (spec language v2, issue 23): the layer-normalised LSTM of Ba et al. 2016.

- lnlstm equals a per-step implementation written here from the paper, on every CPU backend (eager, fused,
  compiled, triton on CPU) in float64: outputs, final states and every gradient, for one layer, padded lengths
  and two bidirectional layers. The Triton kernels run under the interpreter in tests/test_triton.py (every
  builtin spec), and gradcheck in tests/test_numerics.py.
- The hard inputs of a normalisation on every backend against eager (torch's own layer_norm): one unit (the
  variance is 0), a large common offset (cancellation in the mean) and an operand that is zero.
- The derived backward: it is exact through the expansion (row means, their own adjoint), evaluates no
  activation, and the C++ stages group independent reductions.
- The front end: the syntax, gains starting at 1, and the errors for misuse.
"""

from __future__ import annotations

import pytest
import torch

import cellc
from cellc.codegen.render import BACKENDS
from cellc.errors import SpecError
from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.testing import assert_results_match, layer_results
from reference_cells import CASES, DT, N, HandWritten, inputs

CPU_BACKENDS = [b for b in BACKENDS if b != "lowered"]
sig, tanh = torch.sigmoid, torch.tanh


def mv(w, v):
    return v @ w.t()


def layer_norm(v, eps=1e-5):
    """Written out: the mean and the biased variance over the units."""
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    return (v - mean) / torch.sqrt(var + eps)


def lnlstm_step(P, x, xd, s):  # Ba, Kiros and Hinton 2016, the LSTM of section 3.1
    h, c1 = s["y"], s["c"]

    def gate(g, act):
        return act(P(f"a_{g}x") * layer_norm(mv(P(f"W_{g}"), x)) + P(f"a_{g}y") * layer_norm(mv(P(f"R_{g}"), h))
                   + P(f"b_{g}"))

    i, f, z, o = gate("i", sig), gate("f", sig), gate("z", tanh), gate("o", sig)
    c = f * c1 + i * z
    y = o * tanh(P("a_c") * layer_norm(c) + P("b_c"))
    return {"y": y, "c": c}, y


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_lnlstm_equals_the_hand_written_cell(backend, case):
    opts = CASES[case]
    torch.manual_seed(5)
    module = cellc.build("lnlstm", backend=backend)(3, N, num_layers=opts["num_layers"],
                                                    bidirectional=opts["bidirectional"], dtype=DT)
    with torch.no_grad():  # gains away from 1 and larger weights, so that every term matters
        for p in module.parameters():
            p.uniform_(-0.8, 0.8)
    x, state, lengths = inputs(module, opts, seed=len(case))
    got = layer_results(module, x, state, lengths)
    want = layer_results(HandWritten(module, lnlstm_step), x, state, lengths)
    assert_results_match(got, want)
    assert all(got[k].abs().sum() > 0 for k in got if k.startswith("d_"))  # every parameter has a gradient


# One unit (variance 0), a large common offset, and an operand that is zero at run time (x = 0). At an offset
# of 1e6 the operand itself is only known to 1e-10 in float64 (its spacing there), so the results agree to
# 1e-7; a variance taken as mean(u^2) - mean(u)^2 would be off by about 1e-4 there.
EXTREMES = {
    "one_unit": dict(N=1, spec="y = tanh(a_y * norm(W_y x + R_y y[-1]) + b_y)", scale=1.0, atol=1e-10),
    "offset": dict(N=6, spec="y = tanh(a_y * norm(W_y x + 1000000) + p_y * norm(R_y y[-1] - 3000) + b_y)",
                   scale=1.0, atol=1e-7),
    "zero_operand": dict(N=5, spec="y = tanh(a_y * norm(W_y x) + R_y y[-1] + b_y)", scale=0.0, atol=1e-10),
}


@pytest.mark.parametrize("backend", ["fused", "compiled", "triton"])
@pytest.mark.parametrize("case", sorted(EXTREMES))
def test_hard_operands_agree_with_torch_layer_norm(tmp_path, case, backend):
    opts = EXTREMES[case]
    spec = tmp_path / f"ln_{case}.yaml"
    spec.write_text(f"name: ln_{case}\nequations: |\n  {opts['spec']}\n")
    n = opts["N"]
    torch.manual_seed(1)
    eager = cellc.build(spec, backend="eager")(3, n, num_layers=2, bidirectional=True, dtype=DT)
    fast = cellc.build(spec, backend=backend)(3, n, num_layers=2, bidirectional=True, dtype=DT)
    fast.load_state_dict(eager.state_dict())
    g = torch.Generator().manual_seed(2)
    x = opts["scale"] * torch.randn(5, 3, 3, generator=g, dtype=DT)
    state = (torch.randn(4, 3, n, generator=g, dtype=DT),)
    lengths = torch.tensor([5, 2, 4])
    want = layer_results(eager, x, state, lengths)
    assert_results_match(layer_results(fast, x, state, lengths), want, atol=opts["atol"])
    assert all(torch.isfinite(v).all() for v in want.values())


def test_the_backward_is_derived_through_row_means():
    program = ad.step_program(cellc.compile_spec("lnlstm"))
    backward = program.backward_exprs()
    means = [n for e in backward for n in ir.walk(e) if isinstance(n, ir.RowMean)]
    assert means  # the adjoint of a row mean is a row mean
    assert not any(isinstance(n, (ir.Act, ir.Norm)) for e in backward for n in ir.walk(e))
    assert program.row_means and not ad.step_program(cellc.compile_spec("vanilla")).row_means


def test_independent_reductions_share_a_stage():
    """Nine normalisations, two means each: the eight gate normalisations reduce together (their means, then
    their variances), then the cell state's; the C++ loops make four reduction passes a step, not eighteen."""
    program = ad.step_program(cellc.compile_spec("lnlstm"))
    for direction in ("forward", "backward"):
        reduced = program.reduced(direction)
        reductions = [stage for stage in reduced.plan.stages if stage and isinstance(stage[0], ad.Reduce)]
        assert sum(map(len, reductions)) == 18 and len(reductions) == 4, direction
        assert not any(isinstance(n, ir.RowMean) for op in reduced.ops if not isinstance(op, ad.Reduce)
                       for n in ir.walk(getattr(op, "expr", ir.Const(0.0))))
    vanilla = ad.step_program(cellc.compile_spec("vanilla"))
    assert vanilla.reduced("forward").ops == vanilla.forward  # nothing to hoist: the program as it is


def test_the_cpp_loops_run_a_step_of_reductions_row_by_row():
    """Between two products, a step's stages with reductions run as one loop over the batch rows, a row's means
    are scalars there, and only what the backward reads is written per unit (lnlstm has no current-step
    product: one loop over the rows each way)."""
    from cellc.codegen.layout import layout_of
    from cellc.codegen.native import native_context

    context = native_context(layout_of(cellc.compile_spec("lnlstm")))
    for direction in ("cpp_forward", "cpp_backward"):
        code = "\n".join(context[direction])
        assert code.count("for (int64_t b = 0; b < B; ++b)") == 1, direction
        assert code.count("rsum") and "F(N);" in code
    # the forward's eighteen means and their temporaries stay in the row: its one scratch row is the cell state
    # c, which the normalisation of c reads back in a later pass over the units
    assert [name for name, _ in context["forward_scratch"]] == ["v__c__scr"]


def test_gains_start_at_one_unless_init_says_otherwise(tmp_path):
    params = cellc.compile_spec("lnlstm").params
    assert {name for name, p in params.items() if p.init == 1.0} == {
        "a_ix", "a_iy", "a_fx", "a_fy", "a_zx", "a_zy", "a_ox", "a_oy", "a_c"}
    assert params["b_i"].init is None and params["a_c"].kind.value == "elementwise vector"
    spec = tmp_path / "gain.yaml"
    spec.write_text("name: gain\nequations: |\n  y = tanh(g_y * norm(W_y x + R_y y[-1]) + b_y)\ninit:\n  g_y: 0.5\n")
    layer = cellc.build(spec, backend="eager")(3, 4)
    assert torch.equal(layer.spec_parameter("g_y"), torch.full((4,), 0.5))


def test_show_renders_the_cell_and_its_formula(capsys):
    from cellc.cli import main

    assert main(["show", "lnlstm"]) == 0
    out = capsys.readouterr().out
    assert "y = o * tanh(a_c * norm(c) + b_c)" in out
    assert "4N(M+N) + 14N" in out
    assert cellc.compile_spec("lnlstm").parameter_count(3, 4) == 4 * 4 * (3 + 4) + 14 * 4


@pytest.mark.parametrize("equation, message, column", [
    ("y = tanh(norm + R_y y[-1] + W_y x)", "normalisation 'norm' needs an argument: norm(...)", 12),
    ("y = tanh(norm(b_y) + R_y y[-1] + W_y x)", "norm(...) normalises a value over its units, and this argument "
                                                "reads only parameters and constants", 12),
    ("y = tanh(norm(2 * 3) + R_y y[-1] + W_y x)", "reads only parameters and constants", 12),
])
def test_misuse_is_an_error_at_its_place(tmp_path, equation, message, column):
    spec = tmp_path / "bad.yaml"
    spec.write_text(f"name: bad\nequations: |\n  {equation}\n")
    with pytest.raises(SpecError) as err:
        cellc.compile_spec(spec)
    assert message in str(err.value)
    assert err.value.location is not None and (err.value.location.line, err.value.location.column) == (3, column)


def test_an_override_that_leaves_a_norm_of_constants_folds_or_fails_clearly(tmp_path, assert_matches_eager):
    base = tmp_path / "base.yaml"
    base.write_text("name: base\nequations: |\n  g = sigmoid(W_g x + R_g y[-1] + b_g)\n"
                    "  y = tanh(W_y x + a_y * norm(g) + p_y * norm(g * p_o) + R_y y[-1])\n")
    folded = tmp_path / "folded.yaml"  # norm(1): a constant row minus its mean is 0, and a_y goes with it
    folded.write_text("name: folded\nextends: base\nedits:\n  - override g = 1\n"
                      "  - override y = tanh(W_y x + a_y * norm(g) + R_y y[-1])\n")
    assert "a_y" not in cellc.compile_spec(folded).params
    constant = tmp_path / "constant.yaml"  # norm(1 * p_o): the same at every step
    constant.write_text("name: constant\nextends: base\nedits:\n  - override g = 1\n")
    with pytest.raises(SpecError, match="once values that are constants are folded in, this norm"):
        cellc.compile_spec(constant)
    written = tmp_path / "written.yaml"  # the same without an edit: o = 1 is a value that folds to a constant
    written.write_text("name: written\nequations: |\n  o = 1\n  y = tanh(W_y x + R_y y[-1] + norm(o * b_q))\n")
    with pytest.raises(SpecError, match="once values that are constants are folded in, this norm"):
        cellc.compile_spec(written)
    vector = tmp_path / "vector.yaml"  # g = b_o is a value (a learned vector, broadcast): it may be normalised
    vector.write_text("name: vector\nextends: base\nedits:\n  - override g = b_o\n")
    for backend in ("fused", "compiled", "triton"):
        assert_matches_eager(vector, backend, lengths=[5, 3, 2])
