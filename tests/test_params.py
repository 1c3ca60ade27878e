"""Parameter counts follow from each cell's equations (odyssey.md: vanilla 4N(M+N) + 7N)."""

from __future__ import annotations

import pytest
import torch

import cellc

# Per layer and direction, as functions of (M, N), written from the equations by hand.
EXPECTED = {
    "vanilla": lambda M, N: 4 * N * (M + N) + 4 * N + 3 * N,  # 4 biases + 3 peepholes
    "nig": lambda M, N: 3 * N * (M + N) + 5 * N,
    "nfg": lambda M, N: 3 * N * (M + N) + 5 * N,
    "nog": lambda M, N: 3 * N * (M + N) + 5 * N,
    "cifg": lambda M, N: 3 * N * (M + N) + 5 * N,
    "niaf": lambda M, N: 4 * N * (M + N) + 7 * N,
    "noaf": lambda M, N: 4 * N * (M + N) + 7 * N,
    "np": lambda M, N: 4 * N * (M + N) + 4 * N,
    "fgr": lambda M, N: 4 * N * (M + N) + 7 * N + 9 * N * N,
    "gru": lambda M, N: 3 * N * (M + N) + 4 * N,  # b_r, b_u, b_n and b_Rn
    "mgu": lambda M, N: 2 * N * (M + N) + 2 * N,
    "mut3": lambda M, N: 3 * N * (M + N) + 3 * N,
}

FORMULA_TEXT = {
    "vanilla": "4N(M+N) + 7N",
    "nig": "3N(M+N) + 5N",
    "nfg": "3N(M+N) + 5N",
    "nog": "3N(M+N) + 5N",
    "cifg": "3N(M+N) + 5N",
    "niaf": "4N(M+N) + 7N",
    "noaf": "4N(M+N) + 7N",
    "np": "4N(M+N) + 4N",
    "fgr": "4NM + 13N^2 + 7N",
    "gru": "3N(M+N) + 4N",
    "mgu": "2N(M+N) + 2N",
    "mut3": "3N(M+N) + 3N",
}

SIZES = [(1, 1), (39, 100), (7, 3), (88, 200)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count_formula(name):
    compiled = cellc.compile_spec(name)
    for m, n in SIZES:
        assert compiled.parameter_count(m, n) == EXPECTED[name](m, n)
    assert compiled.formula_text() == FORMULA_TEXT[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_module_numel_equals_parameter_count(name, layers, bidirectional):
    m, n = 5, 3
    cls = cellc.build(name)
    module = cls(m, n, num_layers=layers, bidirectional=bidirectional)
    dirs = 2 if bidirectional else 1
    expected = sum(
        dirs * EXPECTED[name](m if layer == 0 else n * dirs, n) for layer in range(layers)
    )
    assert sum(p.numel() for p in module.parameters()) == expected
    assert cls.parameter_count(m, n) == EXPECTED[name](m, n)


def test_vanilla_parameter_names_follow_the_paper():
    params = cellc.compile_spec("vanilla").params
    assert set(params) == {f"{k}_{g}" for k in "WRb" for g in "zifo"} | {"p_i", "p_f", "p_o"}
    kinds = {name: info.kind.value for name, info in params.items()}
    assert kinds["W_z"] == "input matrix" and kinds["R_o"] == "previous-step matrix"
    assert kinds["p_f"] == "elementwise vector" and kinds["b_i"] == "bias"


def test_dropped_parts_take_their_parameters():
    def names(spec):
        return set(cellc.compile_spec(spec).params)

    vanilla = names("vanilla")
    assert vanilla - names("nig") == {"W_i", "R_i", "p_i", "b_i"}
    assert vanilla - names("nfg") == {"W_f", "R_f", "p_f", "b_f"}
    assert vanilla - names("nog") == {"W_o", "R_o", "p_o", "b_o"}
    assert vanilla - names("cifg") == {"W_f", "R_f", "p_f", "b_f"}
    assert vanilla - names("np") == {"p_i", "p_f", "p_o"}
    assert names("niaf") == names("noaf") == vanilla
    assert names("fgr") - vanilla == {f"R_{t}{s}" for t in "ifo" for s in "ifo"}
    assert names("gru") == {"W_r", "W_u", "W_n", "R_r", "R_u", "R_n", "b_r", "b_u", "b_n", "b_Rn"}


def test_gru_kinds():
    params = cellc.compile_spec("gru").params
    assert params["R_n"].kind.value == "previous-step matrix"
    assert params["b_Rn"].kind.value == "bias"
    mgu = cellc.compile_spec("mgu").params
    assert mgu["R_n"].kind.value == "current-step matrix"


def test_show_prints_count_for_given_sizes(capsys):
    from cellc.cli import main

    assert main(["show", "fgr", "-M", "7", "-N", "3"]) == 0
    out = capsys.readouterr().out
    assert "4NM + 13N^2 + 7N" in out
    assert f"= {EXPECTED['fgr'](7, 3):,} at M=7, N=3" in out


def test_constant_init_reaches_the_module(tmp_path):
    spec = tmp_path / "fb.yaml"
    spec.write_text("name: fb\nextends: vanilla\ninit:\n  b_f: 1.5\n")
    module = cellc.build(spec)(2, 3, num_layers=2, bidirectional=True)
    for layer in range(2):
        for d in range(2):
            assert torch.all(module.spec_parameter("b_f", layer, d) == 1.5)
    assert not torch.all(module.spec_parameter("b_i") == 1.5)
    # A child that drops the gate drops the inherited init with it.
    child = tmp_path / "fb_nfg.yaml"
    child.write_text("name: fb_nfg\nextends: fb\nedits:\n  - drop gate f\n")
    assert "b_f" not in cellc.compile_spec(child).params


@pytest.mark.parametrize("parent,initial,backends", [
    ("vanilla", {"c": 0.7, "y": -0.3}, ("eager", "fused", "compiled")),
    ("gru", {"y": -0.3}, ("eager", "compiled", "lowered")),
])
def test_spec_initial_state_is_the_default_state(tmp_path, parent, initial, backends):
    """A spec's `initial:` values are the state a call starts from when it is given none, on every backend."""
    from backend_builds import build_fast

    path = tmp_path / "warm.yaml"
    path.write_text(f"name: warm\nextends: {parent}\ninitial:\n" + "".join(f"  {k}: {v}\n" for k, v in initial.items()))
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    reference = None
    for backend in backends:
        layer = build_fast(path, backend, 2, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
        if reference is None:
            reference = layer
        layer.load_state_dict(reference.state_dict())
        given = tuple(torch.full((4, 3, 5), initial.get(name, 0.0), dtype=torch.float64) for name in layer.state_names)
        out, final = layer(x)
        out_given, final_given = layer(x, given)
        torch.testing.assert_close(out, out_given, rtol=0, atol=0, msg=backend)
        torch.testing.assert_close(out, reference(x)[0], rtol=0, atol=1e-12, msg=backend)
        assert not torch.equal(out, layer(x, tuple(torch.zeros_like(g) for g in given))[0])  # the values matter
