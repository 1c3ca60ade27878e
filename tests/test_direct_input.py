"""The input read elementwise (spec language v2, issue 23): MUT1's ``tanh(x)``, MUT2's ``x`` in a gate, SRU's
highway ``(1 - r) * x``.

- Each of mut1, mut2 and sru equals a per-step implementation written here by hand from its paper, on every CPU
  backend (eager, fused, compiled, triton on CPU) in float64: outputs, final states and every gradient, for one
  layer, padded lengths, and two bidirectional layers (where each direction's elementwise read of a layer's
  input is its own direction's block of the layer below's output: the SRU convention). gradcheck:
  tests/test_numerics.py.
- The schedule: the input itself is one more x-slot of the input GEMM's buffer, last, with no matrix, no bias
  and no recurrent pairing; weight_x holds the matrices only.
- A cell with no matrix on its input at all.
- The size rule: one clear error at construction, a note from `cellc compile`, and `cellc bench` refusing the
  cell before anything runs.
"""

from __future__ import annotations

import pytest
import torch

import cellc
from cellc.codegen.render import BACKENDS
from cellc.testing import assert_results_match, input_size, layer_results
from reference_cells import CASES, DT, N, HandWritten, inputs as _inputs

CPU_BACKENDS = [b for b in BACKENDS if b != "lowered"]

sig, tanh = torch.sigmoid, torch.tanh


def mv(w, v):
    return v @ w.t()


# --- hand-written steps: P(name) -> parameter, x the layer's input at t, xd what the cell reads of it
# elementwise, s the previous state; returns (new state, output) -------------------------------------


def mut1_step(P, x, xd, s):  # Jozefowicz et al. 2015, MUT1
    h = s["y"]
    z = sig(mv(P("W_xz"), x) + P("b_z"))
    r = sig(mv(P("W_xr"), x) + mv(P("W_hr"), h) + P("b_r"))
    y = tanh(mv(P("W_hh"), r * h) + tanh(xd) + P("b_h")) * z + h * (1 - z)
    return {"y": y}, y


def mut2_step(P, x, xd, s):  # Jozefowicz et al. 2015, MUT2
    h = s["y"]
    z = sig(mv(P("W_xz"), x) + mv(P("W_hz"), h) + P("b_z"))
    r = sig(xd + mv(P("W_hr"), h) + P("b_r"))
    y = tanh(mv(P("W_hh"), r * h) + mv(P("W_xh"), x) + P("b_h")) * z + h * (1 - z)
    return {"y": y}, y


def sru_step(P, x, xd, s):  # Lei et al. 2018
    c1 = s["c"]
    f = sig(mv(P("W_f"), x) + P("v_f") * c1 + P("b_f"))
    r = sig(mv(P("W_r"), x) + P("v_r") * c1 + P("b_r"))
    c = f * c1 + (1 - f) * mv(P("W_c"), x)
    y = r * c + (1 - r) * xd
    return {"c": c}, y


STEPS = {"mut1": mut1_step, "mut2": mut2_step, "sru": sru_step}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("spec", sorted(STEPS))
def test_equals_the_hand_written_cell(spec, backend, case):
    opts = CASES[case]
    torch.manual_seed(3)
    module = cellc.build(spec, backend=backend)(N, N, num_layers=opts["num_layers"],
                                                bidirectional=opts["bidirectional"], dtype=DT)
    with torch.no_grad():  # larger than the default init, so that every term matters
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    x, state, lengths = _inputs(module, opts, seed=len(spec) + len(case))
    got = layer_results(module, x, state, lengths)
    want = layer_results(HandWritten(module, STEPS[spec]), x, state, lengths)
    assert_results_match(got, want)
    assert got["d_input"].abs().sum() > 0


def test_the_input_is_the_last_x_slot_with_no_matrix():
    sched = cellc.compile_spec("mut1").schedule
    assert sched.direct == len(sched.x_slots) - 1 == sched.n_w
    assert sched.x_slots[-1].matrix is None and sched.x_slots[-1].bias is None
    assert sched.group_sizes["weight_x"] == sched.n_w == 2  # W_xz, W_xr: the matrices alone
    assert all(s.paired_x != sched.direct for s in sched.s_slots)
    assert cellc.compile_spec("gru").schedule.direct is None  # a cell reading x through matrices only


def test_a_cell_without_any_input_matrix(tmp_path, assert_matches_eager):
    spec = tmp_path / "plain_direct.yaml"
    spec.write_text("name: plain_direct\nequations: |\n  y = tanh(R_a y[-1] + x + b_a) * sigmoid(p_a * x)\n")
    compiled = cellc.compile_spec(spec)
    assert compiled.schedule.n_w == 0 and compiled.schedule.group_sizes["weight_x"] == 0
    for backend in ("fused", "compiled", "triton"):
        assert_matches_eager(spec, backend, lengths=[5, 3, 2], num_layers=2, bidirectional=True)


def test_input_size_must_equal_hidden_size():
    layer_class = cellc.build("sru", backend="eager")
    assert layer_class.direct_input_at == (12, 25)  # specs/sru.yaml: the highway's x
    assert input_size(layer_class, 3, 4) == 4 and input_size(cellc.build("gru"), 3, 4) == 3
    with pytest.raises(ValueError, match=r"^sru reads its input elementwise \(spec line 12, column 25\), so "
                                         r"input_size must equal hidden_size; got 3 and 4$"):
        layer_class(3, 4)
    layer_class(4, 4, num_layers=3, bidirectional=True)  # layers above read 2N; each direction its own N


def test_check_notes_where_the_input_is_read_and_compile_stays_quiet(tmp_path, capsys):
    from cellc.cli import main

    assert main(["check", "specs/mut2.yaml"]) == 0
    err = capsys.readouterr().err
    assert "note: specs/mut2.yaml:8:15: reads the input 'x' elementwise, not through a matrix: its modules need " \
           "input_size == hidden_size" in err
    assert main(["compile", "mut2", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""  # a fact about a valid cell, not a warning


def test_bench_refuses_the_cell_before_running(tmp_path, capsys):
    from cellc.cli import main

    code = main(["bench", "--tasks", "jsb", "--cells", "vanilla,sru", "--storage", f"sqlite:///{tmp_path}/s.db",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'sru' reads its input elementwise (" in err and "sru.yaml:12:25" in err
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("argv", [["speed", "--cells", "mut1"], ["speed", "--train", "--cells", "mut1"],
                                  ["train", "--task", "jsb", "--cell", "mut1", "--hidden", "8"]])
def test_other_commands_refuse_sizes_that_cannot_agree(argv, capsys):
    from cellc.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'mut1' reads its input elementwise (" in err and "mut1.yaml:9:36" in err


def test_show_counts_parameters_at_input_size_equal_to_hidden_size(capsys):
    from cellc.cli import main

    assert main(["show", "sru", "--hidden-size", "100"]) == 0
    out = capsys.readouterr().out
    assert "input: read elementwise at " in out and "sru.yaml:12:25, so input_size must equal hidden_size" in out
    assert "3NM + 4N = 30,400 at M=100, N=100" in out  # 3 * 100 * 100 + 4 * 100


def test_the_input_gemm_block_compiles_with_and_without_an_output_buffer():
    from cellc.codegen.blocks import input_gemm

    sched = cellc.compile_spec("sru").schedule
    for out in ("", "out"):
        lines = input_gemm(sched, "return ", out=out)
        compile("def f(x, xd, weight_x, bias, N, out=None):\n    T, B, M = x.shape\n"
                + "".join(f"    {line}\n" for line in lines), "<block>", "exec")


def test_a_cell_without_any_parameter(tmp_path):
    """Reading the input elementwise makes a cell without parameters possible: every backend runs it, the online
    trainer's path included (the fuzzer's seeds 20196 and 21699 found `next()` of no weights raising
    StopIteration in the compiled module's dtype check)."""
    from cellc.fuzz.backends import check_spec

    spec = tmp_path / "bare.yaml"
    spec.write_text("name: bare\nequations: |\n  s = sigmoid(x)\n  y = s * y[-1] + (1 - s) * tanh(x + y[-1])\n")
    assert not cellc.compile_spec(spec).params
    result = check_spec(spec, ("fused", "compiled", "triton"))
    assert result["status"] == "ok", result
    assert all(b["status"] == "ok" for b in result["backends"].values()), result
