"""The fused and compiled backends against eager on huge and NaN inputs, float32 and float64.

The compiled loops are built with -ffast-math, which once made sigmoid NaN for pre-activations
below -88.7 in float32 (exp overflowed to inf and the vectorized division by inf gave NaN), so
training runs with large inputs falsely "diverged". Here, wherever eager is finite the fast
backends must be finite and close; and a NaN input must still come out as NaN (divergence
detection relies on it), in the batch element that holds it and nowhere else.
"""

from __future__ import annotations

import zlib

import pytest
import torch

import cellc
from cellc.ir.activations import ACTIVATIONS
from cellc.testing import random_state, size_keywords, builtin_spec_names, input_size, layer_results

from backend_builds import build_fast

SPECS = builtin_spec_names()
FAST = ("fused", "compiled")
DTYPES = {"f64": torch.float64, "f32": torch.float32}
# float64 keeps the 1e-10 of tests/test_backends.py, relative to the value's size (inputs up to 1e4);
# float32 is a few ulps of its own rounding (summation order and vectorized exp/tanh differ).
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-4)}
M, N, T, B = 3, 4, 6, 3


def _one_activation_spec(tmp_path, act: str):
    """y = act(W x + R y[-1] + b): the output is the activation itself, so each one is seen alone."""
    path = tmp_path / f"only_{act}.yaml"
    path.write_text(f"name: only_{act}\nequations: |\n  y = {act}(W_a x + R_a y[-1] + b_a)\n")
    return path


def _layers(spec, backend, dtype):
    torch.manual_seed(zlib.crc32(str(spec).encode()))  # the same weights whatever ran before in this process
    eager_class = cellc.build(spec, backend="eager")
    sizes = size_keywords(eager_class, N)  # proj_size = N // 2 for a cell that takes it
    m = input_size(eager_class, M, N, **sizes)  # N for a cell that reads its input elementwise
    eager = eager_class(m, N, dtype=dtype, **sizes)
    fast = build_fast(spec, backend, m, N, dtype=dtype, **sizes)
    fast.load_state_dict(eager.state_dict())
    return eager, fast


def _run(layer, x, state):
    """Output, final states and every gradient (input, initial states, parameters)."""
    return layer_results(layer, x, state, seed=7)


def _inputs(eager, dtype, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(T, B, eager.input_size, generator=g, dtype=torch.float64)
    state = random_state(eager, B, g, torch.float64)
    return x.to(dtype), tuple(s.to(dtype) for s in state)


def _assert_matches(fast: dict, eager: dict, dtype, values=lambda name: True):
    """Same NaN positions, finite where eager is finite, close there (only the entries ``values`` names)."""
    assert fast.keys() == eager.keys()
    for name, want in eager.items():
        got = fast[name]
        finite = torch.isfinite(want)
        assert torch.isfinite(got[finite]).all(), f"{name}: non-finite where eager is finite"
        assert torch.equal(torch.isnan(got), torch.isnan(want)), f"{name}: NaN where eager has none, or not where it has"
        if values(name):
            tol = dict(TOL[dtype])
            if dtype == torch.float32 and finite.any():
                # a gradient summed over steps and batch in another order: its rounding is relative to the
                # tensor's size, not each entry's (an entry near zero by cancellation has no relative bound)
                tol["atol"] = tol["atol"] * max(1.0, want[finite].abs().max().item())
            torch.testing.assert_close(got[finite], want[finite], **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("scale", [100.0, 1e4])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("spec", SPECS)
def test_huge_inputs_match_eager(spec, backend, dtype, scale):
    eager, fast = _layers(spec, backend, dtype)
    x, state = _inputs(eager, dtype, scale, seed=len(spec))
    want = _run(eager, x, state)
    assert torch.isfinite(want["output"]).all()  # saturating gates: the reference itself stays finite
    _assert_matches(_run(fast, x, state), want, dtype)


@pytest.mark.parametrize("scale", [1.0, 100.0, 1e4])
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_each_activation_huge_both_signs(tmp_path, monkeypatch, act, backend, dtype, scale):
    """Pre-activations of both signs far beyond exp's range (about +-1e4 and more), forward and backward."""
    # PyTorch's own hardsigmoid backward multiplies by the float32 constant 1.0f/6 even in float64
    # (0.16666667163...), 3e-8 off; the same function through clamp has an exact float64 gradient.
    monkeypatch.setattr(torch.nn.functional, "hardsigmoid", lambda x: (x + 3).clamp(0, 6) / 6)
    eager, fast = _layers(_one_activation_spec(tmp_path, act), backend, dtype)
    x, state = _inputs(eager, dtype, scale, seed=3)
    x[0, 0] = scale  # make sure both extremes appear at the first step, whatever the weights
    x[0, 1] = -scale
    want = _run(eager, x, state)
    _assert_matches(_run(fast, x, state), want, dtype)


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("spec", [*SPECS, *[f"only_{a}" for a in sorted(ACTIVATIONS)]])
def test_nan_input_stays_nan(tmp_path, spec, backend, dtype):
    """A NaN in one batch element's input gives NaN there (as eager does) and leaves the others alone.

    Gradients must be NaN exactly where eager's are; their finite values are not compared: at a NaN
    pre-activation PyTorch's relu backward passes the gradient (NaN <= 0 is false), while the
    derivative from the output, (y > 0), blocks it."""
    if spec.startswith("only_"):
        spec = _one_activation_spec(tmp_path, spec.removeprefix("only_"))
    eager, fast = _layers(spec, backend, dtype)
    x, state = _inputs(eager, dtype, 1.0, seed=5)
    x[2, 1, 0] = float("nan")
    want = _run(eager, x, state)
    assert torch.isnan(want["output"][2:, 1]).all() and torch.isfinite(want["output"][:, [0, 2]]).all()
    got = _run(fast, x, state)
    assert torch.isnan(got["output"][2:, 1]).all()
    _assert_matches(got, want, dtype, values=lambda name: not name.startswith("d_"))


@pytest.mark.parametrize("backend", FAST)
def test_backward_reading_an_input_product_keeps_it(tmp_path, backend):
    """Where the backward reads an input product itself (r * (W_n x)), the hoisted input GEMM is kept
    for it; elsewhere it is dropped after the forward to save memory. Both give eager's numbers."""
    from cellc.codegen.layout import layout_of
    from cellc.ir.pipeline import compile_spec

    path = tmp_path / "xslot.yaml"
    path.write_text("name: xslot\nequations: |\n  r = sigmoid(W_r x + R_r y[-1] + b_r)\n"
                    "  n = tanh(r * (W_n x) + R_n y[-1] + b_n)\n  y = n\n")
    compiled = compile_spec(path)
    assert layout_of(compiled).xw_for_backward
    vanilla = compile_spec("vanilla")
    assert not layout_of(vanilla).xw_for_backward
    dtype = torch.float64
    eager, fast = _layers(path, backend, dtype)
    x, state = _inputs(eager, dtype, 1.0, seed=11)
    _assert_matches(_run(fast, x, state), _run(eager, x, state), dtype)


@pytest.mark.parametrize("spec_text,tiles", [
    # fused schedule: z reads only y, the gates read y, i, f, o (fgr's shape)
    ("fgr", [(0, 4, 0, 1), (1, 3, 1, 3)]),
    # unfused schedule (a recurrent product without an input product): i reads y and i[-1], n only y
    ("name: tiles\nequations: |\n  i = sigmoid(W_i x + R_i y[-1] + R_ii i[-1] + b_i)\n"
     "  n = tanh(W_n x + i * (R_n y[-1]) + b_n)\n  y = n\n", [(0, 2, 0, 1), (0, 1, 1, 1)]),
])
@pytest.mark.parametrize("backend", FAST)
def test_recurrent_gemm_skips_zero_blocks(tmp_path, spec_text, tiles, backend):
    """The recurrent matrix is multiplied tile by tile where it has zero blocks; same numbers as eager."""
    from cellc.codegen.layout import layout_of
    from cellc.ir.pipeline import compile_spec

    spec = spec_text
    if "\n" in spec_text:
        spec = tmp_path / "tiles.yaml"
        spec.write_text(spec_text)
    compiled = compile_spec(spec)
    assert layout_of(compiled).r_tiles == tiles
    dtype = torch.float64
    eager, fast = _layers(spec, backend, dtype)
    x, state = _inputs(eager, dtype, 1.0, seed=13)
    _assert_matches(_run(fast, x, state), _run(eager, x, state), dtype)
