"""The fused and compiled backends against the eager reference, in float64, for every spec.

Outputs, final states and every gradient (input, initial state, each parameter) must agree
to 1e-10 on random inputs: plain, variable-length, bidirectional and two-layer.
"""

from __future__ import annotations

import zlib

import pytest
import torch

import cellc
from cellc.spec.loader import spec_search_dirs

from backend_builds import build_fast

SPECS = sorted(p.stem for p in spec_search_dirs()[0].glob("*.yaml"))
FAST = ("fused", "compiled")
CASES = {
    "plain": dict(num_layers=1, bidirectional=False, lengths=None),
    "lengths": dict(num_layers=1, bidirectional=False, lengths=[5, 2, 4]),
    "bidir_lengths": dict(num_layers=1, bidirectional=True, lengths=[3, 5, 1]),
    "two_layer": dict(num_layers=2, bidirectional=True, lengths=None),
}
M, N, T, B = 3, 4, 5, 3


def _grads(layer, x, state, lengths, seed):
    x = x.clone().requires_grad_(True)
    state = tuple(s.clone().requires_grad_(True) for s in state)
    out, final = layer(x, state, lengths=lengths)
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for f in final:
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=f.dtype)).sum()
    names = [n for n, _ in layer.named_parameters()]
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    return out.detach(), tuple(f.detach() for f in final), dict(zip(["x", *[f"state{k}" for k in range(len(state))], *names], grads))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("spec", SPECS)
def test_matches_eager(spec, backend, case):
    opts = dict(CASES[case])
    lengths = opts.pop("lengths")
    torch.manual_seed(zlib.crc32(f"{spec}/{case}/weights".encode()))  # the same weights whatever ran before
    eager = cellc.build(spec, backend="eager")(M, N, dtype=torch.float64, **opts)
    fast = build_fast(spec, backend, M, N, dtype=torch.float64, **opts)
    fast.load_state_dict(eager.state_dict())  # identical parameter names and layout
    g = torch.Generator().manual_seed(zlib.crc32(f"{spec}/{case}".encode()))  # the same inputs every run
    x = torch.randn(T, B, M, generator=g, dtype=torch.float64)
    layers = opts["num_layers"] * (2 if opts["bidirectional"] else 1)
    state = tuple(0.5 * torch.randn(layers, B, N, generator=g, dtype=torch.float64) for _ in eager.state_names)
    if lengths is not None:
        lengths = torch.tensor(lengths)
    out_e, fin_e, grads_e = _grads(eager, x, state, lengths, 1)
    out_f, fin_f, grads_f = _grads(fast, x, state, lengths, 1)
    torch.testing.assert_close(out_f, out_e, rtol=0, atol=1e-10)
    for a, b in zip(fin_f, fin_e):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert grads_f.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(grads_f[name], grads_e[name], rtol=0, atol=1e-10, msg=lambda m: f"{name}: {m}")


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
