"""Lowering onto torch's own LSTM / GRU kernels: detected from the IR, equal to the eager backend.

Equality in float64 on CPU (outputs, final states, every gradient to 1e-10): plain,
variable-length, bidirectional with lengths, two layers. Detection is structural: a spec
that writes torch's LSTM with other names and another term order lowers too; near misses
(peepholes, coupled gates, a missing bias) do not.
"""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch

import cellc
from cellc.errors import UsageError
from cellc.ir.pipeline import compile_spec
from cellc.spec.loader import builtin_spec_names

SPECS = builtin_spec_names()
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


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("spec", ["np", "gru"])
def test_lowered_matches_eager(spec, case, assert_matches_eager):
    opts = dict(CASES[case])
    lengths = opts.pop("lengths")
    assert_matches_eager(spec, "lowered", lengths, **opts)


def _buffer_views(layer):
    """torch's weight list the module hands torch, checked to lie in one storage; with their offsets."""
    params = sys.modules[type(layer).__module__]._torch_weights(layer)
    base = params[0].untyped_storage().data_ptr()
    assert all(p.untyped_storage().data_ptr() == base and p.is_contiguous() for p in params)
    return params, [p.storage_offset() for p in params]


@pytest.mark.parametrize("spec,torch_class", [("np", torch.nn.LSTM), ("gru", torch.nn.GRU)])
def test_weights_live_in_one_buffer_in_torch_layout(spec, torch_class):
    # cuDNN uses the weights as they are only when every layer's and direction's sit, in torch's order,
    # in one buffer; otherwise it copies them into one on every call. The spec's storage IS that buffer.
    layer = cellc.build(spec, backend="lowered")(M, N, num_layers=2, bidirectional=True)
    params, offsets = _buffer_views(layer)
    reference = torch_class(M, N, num_layers=2, bidirectional=True)._flat_weights
    assert [p.shape for p in params] == [w.shape for w in reference]
    assert offsets == [sum(w.numel() for w in params[:k]) for k in range(len(params))]
    stack = [(ln, d) for ln in range(2) for d in range(2)]
    assert all(params[4 * k] is layer._weights(*ld)[0] and params[4 * k + 1] is layer._weights(*ld)[1]
               for k, ld in enumerate(stack))
    biases = [layer._weights(*ld)[3] for ld in stack]
    if spec == "np":  # the bias is b_ih itself and b_hh a zero block
        assert all(params[4 * k + 2] is b for k, b in enumerate(biases))
        assert all(not params[4 * k + 3].any() for k in range(4))
    # A deep copy holds one buffer of its own.
    copied = copy.deepcopy(layer)
    copied_params, _ = _buffer_views(copied)
    assert copied_params[0].data_ptr() != params[0].data_ptr()
    x = torch.randn(T, B, M)
    torch.testing.assert_close(copied(x)[0], layer(x)[0], rtol=0, atol=0)
    # Moved or cast, the same Parameter objects (an optimizer's) are views of a new buffer, values kept.
    before = [p.detach().clone() for p in layer.parameters()]
    identity = [id(p) for p in layer.parameters()]
    layer.double()
    params, _ = _buffer_views(layer)
    assert params[0].dtype == torch.float64 and [id(p) for p in layer.parameters()] == identity
    for a, b in zip(layer.parameters(), before):
        torch.testing.assert_close(a, b.double(), rtol=0, atol=0)


@pytest.mark.parametrize("spec", ["np", "gru"])
def test_training_steps_and_repeated_calls_match_eager(spec):
    """An optimizer updates the buffer in place; two calls before one backward (a shared graph) and a
    bias changed through .data (no version bump) still give eager's values and gradients."""
    eager = cellc.build(spec, backend="eager")(M, N, num_layers=2, dtype=torch.float64)
    lowered = cellc.build(spec, backend="lowered")(M, N, num_layers=2, dtype=torch.float64)
    lowered.load_state_dict(eager.state_dict())
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (eager, lowered)]
    g = torch.Generator().manual_seed(2)
    for step in range(3):
        x1, x2 = (torch.randn(T, B, M, generator=g, dtype=torch.float64) for _ in range(2))
        for module, optimizer in zip((eager, lowered), optimizers):
            optimizer.zero_grad()
            (module(x1)[0].pow(2).sum() + module(x2)[0].sum()).backward()
            optimizer.step()
        for (name, a), b in zip(lowered.named_parameters(), eager.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m: f"step {step} {name}: {m}")
    _buffer_views(lowered)  # still one buffer after the updates
    # cuDNN's backward checks the version of every weight it saved (torch on CPU saves no bias): a call
    # must not bump the version of the biases an earlier call handed torch
    versions = [v._version for views in lowered._torch_biases for v in views]
    lowered(x1)
    assert [v._version for views in lowered._torch_biases for v in views] == versions
    for module in (eager, lowered):
        module.bias_l0.data.add_(0.25)
    x = torch.randn(T, B, M, generator=g, dtype=torch.float64)
    torch.testing.assert_close(lowered(x)[0], eager(x)[0], rtol=0, atol=1e-10)
    for module in (eager, lowered):  # inference mirrors the biases without an autograd Function
        module.bias_l0.data.add_(-0.5)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x)[0], eager(x)[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("spec,torch_class", [("np", torch.nn.LSTM), ("gru", torch.nn.GRU)])
def test_layout_as_cudnn_reports_it(spec, torch_class, monkeypatch, assert_matches_eager):
    """On a GPU the buffer follows the layout torch.nn.LSTM / GRU gets from cuDNN, gaps included (here a
    fake one: every tensor 3 elements after the last, the buffer 5 longer); where torch keeps its weights
    apart, the tensors lie back to back."""
    module = sys.modules[cellc.build(spec, backend="lowered").__module__]
    shapes = [w.shape for w in torch_class(M, N, num_layers=2, bidirectional=True)._flat_weights]
    offsets = [3 * (k + 1) + sum(math.prod(s) for s in shapes[:k]) for k in range(len(shapes))]
    size = offsets[-1] + math.prod(shapes[-1]) + 5
    buffer = torch.zeros(size)
    aligned = [buffer[o:o + math.prod(s)].view(s) for o, s in zip(offsets, shapes)]
    monkeypatch.setattr(module, "_cudnn_weights", lambda *args: aligned)
    layer = cellc.build(spec, backend="lowered")(M, N, num_layers=2, bidirectional=True)
    _, found = _buffer_views(layer)
    assert found == offsets and layer.weight_x_l0.untyped_storage().nbytes() == 4 * size
    assert_matches_eager(spec, "lowered", [5, 2, 4], num_layers=2, bidirectional=True)
    monkeypatch.setattr(module, "_cudnn_weights", lambda *args: [torch.zeros(s) for s in shapes])
    _, found = _buffer_views(cellc.build(spec, backend="lowered")(M, N, num_layers=2, bidirectional=True))
    assert found == [sum(math.prod(s) for s in shapes[:k]) for k in range(len(shapes))]


def test_np_runs_with_torch_lstm_autograd_graph():
    """np's call is torch.nn.LSTM's: no node of cellc's own between the weights and torch's kernel."""
    layer = cellc.build("np", backend="lowered")(M, N)
    seen, todo = set(), [layer(torch.randn(T, B, M))[0].sum().grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [n for n, _ in node.next_functions]
    leaves = {id(node.variable) for node in seen if type(node).__name__ == "AccumulateGrad"}
    assert leaves == {id(p) for p in layer.parameters()}
    assert not any(isinstance(node, torch.autograd.function.BackwardCFunction) for node in seen)


def test_detection_is_structural():
    plans = {spec: compile_spec(spec).lowering for spec in SPECS}
    assert {s for s, p in plans.items() if p is not None} == {"np", "gru", "lstmp"}
    assert plans["np"].mode == "lstm" and plans["gru"].mode == "gru" and plans["lstmp"].mode == "lstm"
    assert plans["lstmp"].weight_hr == "W_p" and plans["np"].weight_hr is None
    # np stores z, i, f, o; torch's order is i, f, g(=z), o.
    assert plans["np"].weight_ih == ("W_i", "W_f", "W_z", "W_o")
    assert plans["gru"].bias_hh == (None, None, "b_Rn")


def test_renamed_and_reordered_lstm_lowers(tmp_path, assert_matches_eager):
    path = tmp_path / "renamed_lstm.yaml"
    path.write_text(RENAMED_LSTM)
    plan = compile_spec(path).lowering
    assert plan is not None and plan.mode == "lstm"
    assert plan.weight_hh == ("R_i", "R_f", "R_g", "R_o") and plan.states == ("h", "c")
    # written o, f, g, i: stored in torch's gate order, so that torch's weights are views of the storage
    layout = compile_spec(path).schedule.layout
    assert [layout[w].index for w in ("W_i", "W_f", "W_g", "W_o", "R_i", "R_f", "R_g", "R_o")] == [0, 1, 2, 3] * 2
    assert [layout[b].index for b in ("b_i", "b_f", "b_g", "b_o")] == [0, 1, 2, 3]
    assert_matches_eager(path, "lowered", [5, 3, 4], bidirectional=True)


@pytest.mark.parametrize("edit", [
    "c = i * g + f * c[-1] + b_x",           # an extra bias
    "c = i * g + (1 - i) * c[-1]",           # coupled gates (f unused: dead, removed)
    "c = i * tanh(g) + f * c[-1]",           # an extra activation
])
def test_near_misses_do_not_lower(tmp_path, edit):
    path = tmp_path / "near.yaml"
    path.write_text(RENAMED_LSTM.replace("name: renamed_lstm", "name: near").replace("  c = i * g + f * c[-1]", "  " + edit))
    assert compile_spec(path).lowering is None


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


@pytest.mark.parametrize("hidden,dtype,cudnn", [(128, torch.float32, True), (200, torch.float32, True),
                                                (256, torch.float32, False), (64, torch.bfloat16, False),
                                                (768, torch.float16, True)])
def test_auto_mode_uses_cudnn_where_it_was_measured_faster(hidden, dtype, cudnn):
    """The triton backend's auto mode hands np / gru to cuDNN only where the H100 run found cuDNN faster
    (float32 up to H=128; sizes between that and 256, and float16, unmeasured: left to cuDNN)."""
    layer_class = cellc.build("np", backend="triton")
    module = sys.modules[layer_class.__module__]
    assert module._cudnn_faster(layer_class(3, hidden), torch.zeros(2, 1, 3, dtype=dtype)) is cudnn
