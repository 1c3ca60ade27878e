"""IR passes: constant folding, dead-code removal and GEMM scheduling."""

from __future__ import annotations

import re

import pytest

import cellc
from cellc.codegen.render import render_module
from cellc.ir import nodes as ir
from cellc.ir.activations import ACTIVATIONS
from cellc.ir.pipeline import compile_spec
from cellc.spec.loader import builtin_spec_names

SPECS = builtin_spec_names()


def all_nodes(cell: ir.Cell):
    for eq in cell.equations:
        yield from ir.walk(eq.expr)


@pytest.mark.parametrize("name", SPECS)
def test_folding_leaves_no_trivial_arithmetic(name):
    cell = compile_spec(name).cell
    for node in all_nodes(cell):
        if isinstance(node, ir.Prod):
            assert not any(isinstance(f, ir.Const) and f.value in (0.0, 1.0) for f in node.factors), node
            assert len(node.factors) >= 2
        if isinstance(node, ir.Sum):
            assert not any(isinstance(t, ir.Const) and t.value == 0.0 for t in node.terms), node
            assert not any(isinstance(t, ir.Sum) for t in node.terms), "sums are flattened"
        if isinstance(node, ir.Act):
            assert node.fn != "identity" and not isinstance(node.operand, ir.Const)
        if isinstance(node, ir.Neg):
            assert not isinstance(node.operand, (ir.Neg, ir.Const))


def test_dropped_gates_leave_no_trace():
    for spec, gate in [("nig", "i"), ("nfg", "f"), ("nog", "o")]:
        compiled = compile_spec(spec)
        assert gate not in compiled.cell.values
        assert not {f"W_{gate}", f"R_{gate}", f"p_{gate}", f"b_{gate}"} & set(compiled.params)
        text = "\n".join(compiled.equations_text)
        assert not re.search(rf"\b{gate}\b", text.replace("c[-1]", "")), text
        assert "* 1" not in text and "1 *" not in text
    assert "c = z + c[-1] * f" in compile_spec("nig").equations_text
    assert "c = z * i + c[-1]" in compile_spec("nfg").equations_text
    assert "y = tanh(c)" in compile_spec("nog").equations_text


def test_cifg_couples_f_to_i():
    compiled = compile_spec("cifg")
    f = compiled.cell.equation("f").expr
    assert f == ir.Sum((ir.Const(1.0), ir.Neg(ir.Value("i"))))
    assert not {"W_f", "R_f", "p_f", "b_f"} & set(compiled.params)


def test_dropped_activation_and_peepholes():
    assert "z = W_z x + R_z y[-1] + b_z" in compile_spec("niaf").equations_text
    assert "y = c * o" in compile_spec("noaf").equations_text
    np_text = compile_spec("np").equations_text
    assert "i = sigmoid(W_i x + R_i y[-1] + b_i)" in np_text
    assert not any("p_" in line for line in np_text)


def test_override_to_a_constant_equals_the_drop_gate_edit(tmp_path):
    path = tmp_path / "o1.yaml"
    path.write_text("name: o1\nextends: vanilla\nedits:\n  - override o = 1\n")
    assert compile_spec(path).equations_text == compile_spec("nog").equations_text
    assert set(compile_spec(path).params) == set(compile_spec("nog").params)


def test_dead_code_removal(tmp_path):
    path = tmp_path / "dead.yaml"
    path.write_text(
        "name: dead\nequations: |\n"
        "  q = sigmoid(W_q x + R_q q[-1] + b_q)\n"  # feeds nothing the output needs
        "  k = tanh(W_k x + R_k y[-1])\n"  # feeds only q... no: feeds nothing
        "  y = tanh(W_y x + R_y y[-1] + b_y)\n"
    )
    compiled = compile_spec(path)
    assert compiled.cell.values == ["y"]
    assert set(compiled.params) == {"W_y", "R_y", "b_y"}
    assert compiled.states == ["y"]
    # What the output needs only through a state stays.
    path.write_text(
        "name: dead\nequations: |\n"
        "  m = tanh(W_m x + R_m m[-1])\n"
        "  y = tanh(W_y x + R_y m[-1])\n"
    )
    compiled = compile_spec(path)
    assert compiled.cell.values == ["m", "y"] and compiled.states == ["m"]


def test_evaluation_order_follows_dependencies(tmp_path):
    path = tmp_path / "order.yaml"
    path.write_text("name: order\nequations: |\n  y = tanh(c) * o\n  o = sigmoid(W_o x + R_o y[-1])\n"
                    "  c = tanh(W_c x + R_c c[-1])\n")
    values = compile_spec(path).cell.values
    assert values[-1] == "y" and set(values) == {"o", "c", "y"}


# --- schedule ---------------------------------------------------------------------------


def loop_body(source: str) -> str:
    body = source.split("for t in range(T):", 1)[1]
    return body.split("return torch.stack", 1)[0]


def test_vanilla_schedule_one_fused_addmm_per_step():
    compiled = compile_spec("vanilla")
    sched = compiled.schedule
    assert sched.fused and sched.s_direct and sched.x_bias_direct
    assert sched.s_operands == ["y"]
    assert [s.matrix for s in sched.x_slots] == ["W_z", "W_i", "W_f", "W_o"]
    assert [s.bias for s in sched.x_slots] == ["b_z", "b_i", "b_f", "b_o"]
    assert [s.products for s in sched.s_slots] == [((f"R_{g}", "y"),) for g in "zifo"]
    assert sched.group_sizes == {"weight_x": 4, "weight_s": 4, "weight_c": 0, "bias": 4, "diag": 3}
    source = render_module(compiled)
    body = loop_body(source)
    assert body.count("torch.addmm(") == 1 and "torch.mm(" not in body and "torch.cat" not in body
    assert "g = torch.addmm(xw_fused[t], s__y, r_t)" in body
    assert "r_t = weight_s.t()" in source  # weight_s is the per-step GEMM's matrix, no copy
    # One input GEMM over the whole sequence, biases folded in.
    assert source.count("x.reshape(T * B, M)") == 1
    assert "torch.addmm(x_bias, x.reshape(T * B, M), weight_x.t())" in source


@pytest.mark.parametrize("name", ["nig", "nfg", "nog", "cifg", "niaf", "noaf", "np"])
def test_lstm_variants_keep_one_fused_gemm(name):
    sched = compile_spec(name).schedule
    assert sched.fused and sched.s_direct and sched.x_bias_direct
    assert loop_body(render_module(compile_spec(name))).count("torch.addmm(") == 1


def test_fgr_schedule():
    compiled = compile_spec("fgr")
    sched = compiled.schedule
    assert sched.fused and not sched.s_direct
    assert sched.s_operands == ["y", "i", "f", "o"]
    assert sched.group_sizes["weight_s"] == 13
    assert [len(s.products) for s in sched.s_slots] == [1, 4, 4, 4]  # z gets no gate recurrence
    body = loop_body(render_module(compiled))
    assert body.count("torch.addmm(") == 1
    assert "h = torch.cat([s__y, s__i, s__f, s__o], 1)" in body


def test_current_step_products_form_a_second_stage():
    mgu = compile_spec("mgu")
    assert mgu.schedule.current == ["R_n"]
    assert mgu.schedule.layout["R_n"].group == "weight_c"
    assert mgu.schedule.s_operands == ["y"]
    assert [s.products for s in mgu.schedule.s_slots] == [(("R_f", "y"),)]
    assert "torch.mm(v__f * s__y, m__R_n)" in loop_body(render_module(mgu))

    mut3 = compile_spec("mut3")
    assert set(mut3.schedule.current) == {"W_hu", "W_hh"}  # W_hu reads tanh(y[-1]), W_hh reads r * y[-1]
    assert all(mut3.schedule.layout[m].group == "weight_c" for m in ("W_hu", "W_hh"))
    assert mut3.schedule.layout["W_hr"].group == "weight_s"
    assert {s.matrix for s in mut3.schedule.x_slots} == {"W_xu", "W_xr", "W_xh"}


def test_gru_schedule():
    sched = compile_spec("gru").schedule
    assert sched.s_operands == ["y"] and sched.s_direct
    assert [s.products for s in sched.s_slots] == [(("R_r", "y"),), (("R_u", "y"),), (("R_n", "y"),)]
    assert sched.layout["b_Rn"].group == "bias"
    body = loop_body(render_module(compile_spec("gru")))
    assert body.count("torch.mm(") + body.count("torch.addmm(") == 1  # one GEMM per step


@pytest.mark.parametrize("name", SPECS)
def test_layout_places_every_parameter_once(name):
    compiled = compile_spec(name)
    layout = compiled.schedule.layout
    assert set(layout) == set(compiled.params)
    for group, size in compiled.schedule.group_sizes.items():
        assert sorted(p.index for p in layout.values() if p.group == group) == list(range(size))


@pytest.mark.parametrize("name", SPECS)
def test_printed_equations_parse_back_to_the_same_cell(tmp_path, name):
    compiled = compile_spec(name)
    body = "".join(f"  {line}\n" for line in compiled.equations_text)
    path = tmp_path / "again.yaml"
    sizes = "".join(f"  {value}: {size}\n" for value, size in compiled.sizes.declarations().items())
    path.write_text(f"name: {name}\nequations: |\n{body}" + (f"sizes:\n{sizes}" if sizes else ""))
    again = compile_spec(path)
    assert again.equations_text == compiled.equations_text
    assert again.hash == compiled.hash  # same cell, same identity, whatever the route
    assert cellc.build(name).spec_hash == compiled.hash


def test_constants_fold_to_their_values(tmp_path):
    """(2 - -1) * -g * -0.5 is 1.5 g and sigmoid(0) * y[-1] is 0.5 y[-1]: folded, and right, on every backend."""
    import torch

    from backend_builds import build_fast

    path = tmp_path / "folded.yaml"
    path.write_text("name: folded\nequations: |\n  g = tanh(W_g x + R_g y[-1])\n"
                    "  y = (2 - -1) * -g * -0.5 + sigmoid(0) * y[-1] + -(-(0 * g))\n")
    text = " ".join(compile_spec(path).equations_text)
    assert "1.5" in text and "0.5" in text and "sigmoid" not in text and "2" not in text.replace("1.5", "")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    for backend in ("eager", "fused", "compiled"):
        layer = build_fast(path, backend, 3, 4, dtype=torch.float64)
        W, R = layer.spec_parameter("W_g"), layer.spec_parameter("R_g")
        y, expected = torch.zeros(2, 4, dtype=torch.float64), []
        for x_t in x:
            y = 1.5 * torch.tanh(x_t @ W.T + y @ R.T) + 0.5 * y
            expected.append(y)
        torch.testing.assert_close(layer(x)[0], torch.stack(expected), rtol=0, atol=1e-12, msg=backend)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_folding_values_match_torch(name):
    """Constant folding evaluates activations in Python: the same numbers torch computes at run time."""
    import torch

    activation = ACTIVATIONS[name]
    points = [-1e3, -3.0, -1.0, 0.0, 1.0, 3.0, 1e3]
    values = torch.tensor(points, dtype=torch.float64)
    expected = eval(activation.torch_call.format(x="values"), {"torch": torch, "values": values})  # noqa: S307 - fixed text
    assert [activation.evaluate(v) for v in points] == pytest.approx(expected.tolist(), abs=1e-15)
