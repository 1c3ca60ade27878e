"""The fused and compiled backends against the eager reference, in float64, for every spec.

Outputs, final states and every gradient (input, initial state, each parameter) must agree
to 1e-10 on random inputs: plain, variable-length, bidirectional and two-layer.
"""

from __future__ import annotations

import zlib

import pytest
import torch

import cellc
from cellc.spec.loader import builtin_spec_names

from backend_builds import build_fast

SPECS = builtin_spec_names()
FAST = ("fused", "compiled")
CASES = {
    "plain": dict(num_layers=1, bidirectional=False, lengths=None),
    "lengths": dict(num_layers=1, bidirectional=False, lengths=[5, 2, 4]),
    "bidir_lengths": dict(num_layers=1, bidirectional=True, lengths=[3, 5, 1]),
    "two_layer": dict(num_layers=2, bidirectional=True, lengths=None),
}
M, N, T, B = 3, 4, 5, 3


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("spec", SPECS)
def test_matches_eager(spec, backend, case, assert_matches_eager):
    opts = dict(CASES[case])
    lengths = opts.pop("lengths")
    assert_matches_eager(spec, lambda spec, *args, **kw: build_fast(spec, backend, *args, **kw), lengths, seed=case,
                         **opts)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("spec", ["vanilla", "gru", "mgu", "mut3", "fgr"])
def test_gradcheck(spec, backend):
    layer = build_fast(spec, backend, 2, 3, dtype=torch.float64, bidirectional=True)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    state = tuple(0.3 * torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True) for _ in layer.state_names)
    lengths = torch.tensor([4, 2])

    def f(x, *state):
        out, final = layer(x, state, lengths=lengths)
        return (out, *final)

    assert torch.autograd.gradcheck(f, (x, *state), eps=1e-6, atol=1e-7)
    names = [n for n, _ in layer.named_parameters()]
    weights = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())

    def h(*weights):
        return torch.func.functional_call(layer, dict(zip(names, weights)), (x, state), {"lengths": lengths})[0]

    assert torch.autograd.gradcheck(h, weights, eps=1e-6, atol=1e-7)
