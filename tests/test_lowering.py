"""Lowering onto torch's own LSTM / GRU kernels: detected from the IR, equal to the eager backend.

Equality in float64 on CPU (outputs, final states, every gradient to 1e-10): plain,
variable-length, bidirectional with lengths, two layers. Detection is structural: a spec
that writes torch's LSTM with other names and another term order lowers too; near misses
(peepholes, coupled gates, a missing bias) do not.
"""

from __future__ import annotations

import sys

import pytest
import torch

import cellc
from cellc.errors import UsageError
from cellc.ir.lowering import lowering_plan
from cellc.ir.pipeline import compile_spec
from cellc.spec.loader import spec_search_dirs

SPECS = sorted(p.stem for p in spec_search_dirs()[0].glob("*.yaml"))
CASES = {
    "plain": dict(num_layers=1, bidirectional=False, lengths=None),
    "lengths": dict(num_layers=1, bidirectional=False, lengths=[5, 2, 4]),
    "bidir_lengths": dict(num_layers=1, bidirectional=True, lengths=[3, 5, 1]),
    "two_layer": dict(num_layers=2, bidirectional=True, lengths=None),
    # the whole stack in one torch call: packing, reversal and the state layout across layers at once
    "two_layer_bidir_lengths": dict(num_layers=2, bidirectional=True, lengths=[5, 2, 4]),
}
M, N, T, B = 3, 4, 5, 3

RENAMED_LSTM = """\
name: renamed_lstm
output: h
equations: |
  o = sigmoid(b_o + W_o x + R_o h[-1])
  f = sigmoid(W_f x + b_f + R_f h[-1])
  g = tanh(R_g h[-1] + W_g x + b_g)
  i = sigmoid(W_i x + R_i h[-1] + b_i)
  c = i * g + f * c[-1]
  h = o * tanh(c)
"""


def _grads(layer, x, state, lengths):
    x = x.clone().requires_grad_(True)
    state = tuple(s.clone().requires_grad_(True) for s in state)
    out, final = layer(x, state, lengths=lengths)
    g = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for f in final:
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=f.dtype)).sum()
    names = ["x", *[f"state{k}" for k in range(len(state))], *[n for n, _ in layer.named_parameters()]]
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    return out.detach(), [f.detach() for f in final], dict(zip(names, grads))


def _compare(spec, opts, lengths, seed=0):
    eager = cellc.build(spec, backend="eager")(M, N, dtype=torch.float64, **opts)
    lowered = cellc.build(spec, backend="lowered")(M, N, dtype=torch.float64, **opts)
    lowered.load_state_dict(eager.state_dict())  # same parameter names and layout
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, M, generator=g, dtype=torch.float64)
    layers = opts.get("num_layers", 1) * (2 if opts.get("bidirectional") else 1)
    state = tuple(0.5 * torch.randn(layers, B, N, generator=g, dtype=torch.float64) for _ in eager.state_names)
    lengths = None if lengths is None else torch.tensor(lengths)
    out_e, fin_e, grads_e = _grads(eager, x, state, lengths)
    out_l, fin_l, grads_l = _grads(lowered, x, state, lengths)
    torch.testing.assert_close(out_l, out_e, rtol=0, atol=1e-10)
    for a, b in zip(fin_l, fin_e):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert grads_l.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(grads_l[name], grads_e[name], rtol=0, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("spec", ["np", "gru"])
def test_lowered_matches_eager(spec, case):
    opts = dict(CASES[case])
    lengths = opts.pop("lengths")
    _compare(spec, opts, lengths)


@pytest.mark.parametrize("spec,torch_class", [("np", torch.nn.LSTM), ("gru", torch.nn.GRU)])
def test_whole_stack_weights_are_one_buffer_in_torch_layout(spec, torch_class):
    # cuDNN uses the weights as they are only when every layer's and direction's sit, in torch's order,
    # back to back in one buffer; otherwise it copies them into one on every call
    layer = cellc.build(spec, backend="lowered")(M, N, num_layers=2, bidirectional=True)
    module = sys.modules[type(layer).__module__]
    storage = [w for ln in range(2) for d in range(2) for w in layer._weights(ln, d) if w is not None and w.dim()]
    views = module._TorchWeights.apply(N, *storage)
    reference = torch_class(M, N, num_layers=2, bidirectional=True)._flat_weights
    assert [v.shape for v in views] == [w.shape for w in reference]
    base = views[0].untyped_storage().data_ptr()
    assert all(v.untyped_storage().data_ptr() == base and v.is_contiguous() for v in views)
    assert [v.storage_offset() for v in views] == [sum(w.numel() for w in views[:k]) for k in range(len(views))]


def test_detection_is_structural():
    plans = {spec: lowering_plan(compile_spec(spec)) for spec in SPECS}
    assert {s for s, p in plans.items() if p is not None} == {"np", "gru"}
    assert plans["np"].mode == "lstm" and plans["gru"].mode == "gru"
    # np stores z, i, f, o; torch's order is i, f, g(=z), o.
    assert plans["np"].weight_ih == ("W_i", "W_f", "W_z", "W_o")
    assert plans["gru"].bias_hh == (None, None, "b_Rn")


def test_renamed_and_reordered_lstm_lowers(tmp_path):
    path = tmp_path / "renamed_lstm.yaml"
    path.write_text(RENAMED_LSTM)
    plan = lowering_plan(compile_spec(path))
    assert plan is not None and plan.mode == "lstm"
    assert plan.weight_hh == ("R_i", "R_f", "R_g", "R_o") and plan.states == ("h", "c")
    _compare(path, dict(bidirectional=True), [5, 3, 4])


@pytest.mark.parametrize("edit", [
    "c = i * g + f * c[-1] + b_x",           # an extra bias
    "c = i * g + (1 - i) * c[-1]",           # coupled gates (f unused: dead, removed)
    "c = i * tanh(g) + f * c[-1]",           # an extra activation
])
def test_near_misses_do_not_lower(tmp_path, edit):
    path = tmp_path / "near.yaml"
    path.write_text(RENAMED_LSTM.replace("name: renamed_lstm", "name: near").replace("  c = i * g + f * c[-1]", "  " + edit))
    assert lowering_plan(compile_spec(path)) is None


def test_lowered_backend_refuses_other_cells():
    with pytest.raises(UsageError, match="exactly torch.nn.LSTM"):
        cellc.build("vanilla", backend="lowered")


@pytest.mark.parametrize("spec", ["np", "gru"])
def test_bfloat16_close_to_float32(spec):
    """bf16 weights and inputs on CPU (where torch has bf16 RNN kernels): close to float32."""
    ref = cellc.build(spec, backend="eager")(M, 8)
    lowered = cellc.build(spec, backend="lowered")(M, 8)
    lowered.load_state_dict(ref.state_dict())
    x = torch.randn(6, 2, M)
    out32 = ref(x)[0]
    try:
        out16 = lowered.to(torch.bfloat16)(x.to(torch.bfloat16))[0]
    except RuntimeError as error:  # pragma: no cover - depends on the torch build
        pytest.skip(f"torch has no CPU bf16 {spec} kernel here: {error}")
    assert out16.dtype == torch.bfloat16
    assert (out16.float() - out32).abs().max().item() < 3e-2


@pytest.mark.parametrize("spec", ["np", "gru"])
def test_lowered_takes_packed_and_batch_first_input_like_eager(spec):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    opts = dict(num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    eager = cellc.build(spec, backend="eager")(M, N, **opts)
    lowered = cellc.build(spec, backend="lowered")(M, N, **opts)
    lowered.load_state_dict(eager.state_dict())
    x = torch.randn(B, T, M, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    packed = pack_padded_sequence(x, torch.tensor([2, 5, 3]), batch_first=True, enforce_sorted=False)
    (out_e, fin_e), (out_l, fin_l) = eager(packed), lowered(packed)
    torch.testing.assert_close(pad_packed_sequence(out_l, batch_first=True)[0],
                               pad_packed_sequence(out_e, batch_first=True)[0], rtol=0, atol=1e-10)
    for a, b in zip(fin_l, fin_e):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    torch.testing.assert_close(lowered(x)[0], eager(x)[0], rtol=0, atol=1e-10)
