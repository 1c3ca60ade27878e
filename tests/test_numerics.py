"""Numerics of the generated modules, float64.

- np equals torch.nn.LSTM and gru equals torch.nn.GRU (weights copied): outputs, final
  state and every gradient.
- Every spec equals an independent per-step implementation of its equations written
  here by hand from the paper (odyssey.md) and the spec files, not generated.
- gradcheck, variable-length batches (lengths, PackedSequence), batch_first, initial
  state, and spec_parameter views.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import cellc

SPECS = ["vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr", "gru", "mgu", "mut3"]
# Cells that read their input elementwise (tests/test_direct_input.py has their hand-written references).
DIRECT_SPECS = ["sru", "mut1"]
# Cells that normalise over the units (tests/test_layer_norm.py has the hand-written reference).
NORM_SPECS = ["lnlstm"]
DT = torch.float64
TOL = dict(rtol=0, atol=1e-10)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def classes():
    # The eager backend is the reference (and what `cellc compile` writes to generated/); the
    # fast backends are checked against it in test_backends.py.
    return {name: cellc.build(name, backend="eager") for name in SPECS + DIRECT_SPECS + NORM_SPECS}


def make(classes, name, m=3, n=4, seed=0, **kw):
    torch.manual_seed(seed)
    module = classes[name](m, n, dtype=DT, **kw)
    with torch.no_grad():  # larger than the default init so every term matters
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    return module


# --- hand-written reference steps ---------------------------------------------------------
# Each takes P(name) -> parameter tensor, the input x_t (B, M) and the previous state as a
# dict, and returns the new state dict plus the output. Matrices act as W @ v.

sig, tanh = torch.sigmoid, torch.tanh


def mv(w, v):
    return v @ w.t()


def lstm_family(variant):
    """The vanilla block of Greff et al. (odyssey.md) with one change applied, written out."""

    def step(P, x, s):
        y1, c1 = s["y"], s["c"]
        pre_z = mv(P("W_z"), x) + mv(P("R_z"), y1) + P("b_z")
        z = pre_z if variant == "niaf" else tanh(pre_z)
        peep = variant != "np"

        def gate(g, c_seen, extra=0.0):
            pre = mv(P(f"W_{g}"), x) + mv(P(f"R_{g}"), y1) + P(f"b_{g}") + extra
            if peep:
                pre = pre + P(f"p_{g}") * c_seen
            return sig(pre)

        extra = {"i": 0.0, "f": 0.0, "o": 0.0}
        if variant == "fgr":  # R_<target><source> reads source[-1]
            for tgt in "ifo":
                extra[tgt] = sum(mv(P(f"R_{tgt}{src}"), s[src]) for src in "ifo")
        i = torch.ones_like(c1) if variant == "nig" else gate("i", c1, extra["i"])
        if variant == "cifg":
            f = 1 - i
        elif variant == "nfg":
            f = torch.ones_like(c1)
        else:
            f = gate("f", c1, extra["f"])
        c = z * i + c1 * f
        o = torch.ones_like(c) if variant == "nog" else gate("o", c, extra["o"])
        y = (c if variant == "noaf" else tanh(c)) * o
        new = {"y": y, "c": c}
        if variant == "fgr":
            new.update(i=i, f=f, o=o)
        return new, y

    return step


def gru_step(P, x, s):
    h = s["y"]
    r = sig(mv(P("W_r"), x) + mv(P("R_r"), h) + P("b_r"))
    u = sig(mv(P("W_u"), x) + mv(P("R_u"), h) + P("b_u"))
    n = tanh(mv(P("W_n"), x) + P("b_n") + r * (mv(P("R_n"), h) + P("b_Rn")))
    y = (1 - u) * n + u * h
    return {"y": y}, y


def mgu_step(P, x, s):  # Zhou et al. 2016
    h = s["y"]
    f = sig(mv(P("W_f"), x) + mv(P("R_f"), h) + P("b_f"))
    n = tanh(mv(P("W_n"), x) + mv(P("R_n"), f * h) + P("b_n"))
    y = (1 - f) * h + f * n
    return {"y": y}, y


def mut3_step(P, x, s):  # Jozefowicz et al. 2015, MUT3
    h = s["y"]
    u = sig(mv(P("W_xu"), x) + mv(P("W_hu"), tanh(h)) + P("b_u"))
    r = sig(mv(P("W_xr"), x) + mv(P("W_hr"), h) + P("b_r"))
    y = tanh(mv(P("W_hh"), r * h) + mv(P("W_xh"), x) + P("b_h")) * u + h * (1 - u)
    return {"y": y}, y


REFERENCE = {
    **{v: lstm_family(v) for v in ["vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr"]},
    "gru": gru_step,
    "mgu": mgu_step,
    "mut3": mut3_step,
}


def reference_run(module, name, x, state):
    """Unidirectional single layer, (T, B, M) input, state as the module's tuple."""
    P = module.spec_parameter
    s = dict(zip(module.state_names, (t[0] for t in state)))
    outs = []
    for t in range(x.shape[0]):
        s, y = REFERENCE[name](P, x[t], s)
        outs.append(y)
    return torch.stack(outs), tuple(s[k].unsqueeze(0) for k in module.state_names)


def grads_of(tensors):
    out = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return out


@pytest.mark.parametrize("name", SPECS)
def test_spec_matches_hand_written_equations(classes, name):
    module = make(classes, name)
    T, B = 5, 3
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, 3, dtype=DT, generator=gen, requires_grad=True)
    state = tuple(torch.randn(1, B, 4, dtype=DT, generator=gen).mul(0.5).requires_grad_() for _ in module.state_names)
    leaves = [x, *state, *module.parameters()]
    weights = torch.randn(T, B, 4, dtype=DT, generator=gen)

    out_ref, final_ref = reference_run(module, name, x, state)
    (out_ref * weights).sum().add(sum(f.sum() for f in final_ref)).backward()
    g_ref = grads_of(leaves)

    out, final = module(x, state)
    (out * weights).sum().add(sum(f.sum() for f in final)).backward()
    g = grads_of(leaves)

    torch.testing.assert_close(out, out_ref, **TOL)
    assert len(final) == len(final_ref)
    for a, b in zip(final, final_ref):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, **TOL)
    assert all(gr.abs().sum() > 0 for gr in g), "every input, state and weight gets a gradient"


# --- torch.nn.LSTM / torch.nn.GRU --------------------------------------------------------


def _torch_pair(classes, name, num_layers=2, bidirectional=True):
    m, n = 3, 4
    ours = make(classes, name, m, n, num_layers=num_layers, bidirectional=bidirectional)
    cls = torch.nn.LSTM if name == "np" else torch.nn.GRU
    torch.manual_seed(7)
    ref = cls(m, n, num_layers=num_layers, bidirectional=bidirectional, dtype=DT)
    # Torch's gate blocks in order, mapped to our spec parameters (u is torch's z).
    order = ["i", "f", "z", "o"] if name == "np" else ["r", "u", "n"]
    dirs = 2 if bidirectional else 1
    with torch.no_grad():
        for layer in range(num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(ref, "weight_ih" + sfx), getattr(ref, "weight_hh" + sfx)
                b_ih, b_hh = getattr(ref, "bias_ih" + sfx), getattr(ref, "bias_hh" + sfx)
                for k, g in enumerate(order):
                    rows = slice(k * n, (k + 1) * n)
                    P = lambda p: ours.spec_parameter(p, layer, d)  # noqa: E731
                    P(f"W_{g}").copy_(w_ih[rows])
                    P(f"R_{g}").copy_(w_hh[rows])
                    if name == "gru" and g == "n":
                        P("b_n").copy_(b_ih[rows])
                        P("b_Rn").copy_(b_hh[rows])
                    else:
                        P(f"b_{g}").copy_(b_ih[rows] + b_hh[rows])
    return ours, ref, order


def _bias_grad_map(ours, ref, name, order, layer, d, n):
    """Our bias grads vs torch's: a summed bias has the gradient of both torch biases."""
    sfx = f"_l{layer}" + ("_reverse" if d else "")
    b_ih, b_hh = getattr(ref, "bias_ih" + sfx).grad, getattr(ref, "bias_hh" + sfx).grad
    pairs = []
    for k, g in enumerate(order):
        rows = slice(k * n, (k + 1) * n)
        if name == "gru" and g == "n":
            pairs += [("b_n", b_ih[rows]), ("b_Rn", b_hh[rows])]
        else:
            pairs += [(f"b_{g}", b_ih[rows]), (f"b_{g}", b_hh[rows])]
    return pairs


@pytest.mark.parametrize("name", ["np", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_torch_rnn(classes, name, batch_first):
    n, layers = 4, 2
    ours, ref, order = _torch_pair(classes, name)
    ours.batch_first = ref.batch_first = batch_first
    T, B = 6, 3
    gen = torch.Generator().manual_seed(3)
    shape = (B, T, 3) if batch_first else (T, B, 3)
    x = torch.randn(*shape, dtype=DT, generator=gen, requires_grad=True)
    h0 = torch.randn(layers * 2, B, n, dtype=DT, generator=gen, requires_grad=True)
    c0 = torch.randn(layers * 2, B, n, dtype=DT, generator=gen, requires_grad=True)
    weights = torch.randn(*shape[:2], 2 * n, dtype=DT, generator=gen)

    if name == "np":
        out_ref, (h_ref, c_ref) = ref(x, (h0, c0))
        finals_ref = (h_ref, c_ref)
        state = (h0, c0)
    else:
        out_ref, h_ref = ref(x, h0)
        finals_ref = (h_ref,)
        state = (h0,)
    loss = (out_ref * weights).sum() + sum((f * f).sum() for f in finals_ref)
    loss.backward()
    g_in_ref = grads_of([x, *state])

    out, finals = ours(x, state)
    loss = (out * weights).sum() + sum((f * f).sum() for f in finals)
    loss.backward()
    g_in = grads_of([x, *state])

    torch.testing.assert_close(out, out_ref, **TOL)
    for a, b in zip(finals, finals_ref):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(g_in, g_in_ref):
        torch.testing.assert_close(a, b, **TOL)
    # Every weight's gradient, read through the spec-level views.
    for layer in range(layers):
        for d in range(2):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            P = lambda p: ours.spec_parameter(p, layer, d)  # noqa: E731
            for k, g in enumerate(order):
                rows = slice(k * n, (k + 1) * n)
                grad = lambda p: _view_grad(ours, p, layer, d)  # noqa: E731
                torch.testing.assert_close(grad(f"W_{g}"), getattr(ref, "weight_ih" + sfx).grad[rows], **TOL)
                torch.testing.assert_close(grad(f"R_{g}"), getattr(ref, "weight_hh" + sfx).grad[rows], **TOL)
                assert P(f"W_{g}").shape == getattr(ref, "weight_ih" + sfx)[rows].shape
            for p, expected in _bias_grad_map(ours, ref, name, order, layer, d, n):
                torch.testing.assert_close(_view_grad(ours, p, layer, d), expected, **TOL)


def _view_grad(module, name, layer, direction):
    """The gradient of spec parameter `name`: the same rows of its storage's gradient."""
    view = module.spec_parameter(name, layer, direction)
    base = view._base
    n = module.hidden_size
    start = view.storage_offset() // base.stride(0) if base.dim() == 2 else view.storage_offset()
    assert start % n == 0
    return base.grad[start:start + n]


def test_module_has_no_extra_parameters_beyond_torch(classes):
    ours, ref, _ = _torch_pair(classes, "np")
    # torch keeps two bias vectors per gate where the spec has one.
    extra_torch = sum(getattr(ref, f"bias_hh_l{l}{s}").numel() for l in range(2) for s in ("", "_reverse"))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) - extra_torch


# --- gradcheck ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS + DIRECT_SPECS + NORM_SPECS)
def test_gradcheck(classes, name):  # input size 2 = hidden size 2, as DIRECT_SPECS need
    module = make(classes, name, m=2, n=2, seed=4, bidirectional=True)
    names = [k for k, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 2, 2, dtype=DT, generator=gen, requires_grad=True)
    k = len(module.state_names)
    state = [torch.randn(2, 2, 2, dtype=DT, generator=gen).mul(0.5).requires_grad_() for _ in range(k)]
    lengths = torch.tensor([3, 2])

    def fn(x, *rest):
        st, ps = rest[:k], rest[k:]
        out, finals = torch.func.functional_call(module, dict(zip(names, ps)), (x, tuple(st)),
                                                 {"lengths": lengths})
        return (out, *finals)

    assert torch.autograd.gradcheck(fn, (x, *state, *params), eps=1e-6, atol=1e-7)


# --- variable-length batches ---------------------------------------------------------------

VARLEN_SPECS = ["vanilla", "fgr", "gru", "mgu", "mut3", "cifg"]


def _varlen_setup(classes, name):
    module = make(classes, name, m=3, n=3, seed=11, num_layers=2, bidirectional=True)
    gen = torch.Generator().manual_seed(12)
    lengths = [4, 6, 1, 3]
    T, B = max(lengths), len(lengths)
    x = torch.randn(T, B, 3, dtype=DT, generator=gen)
    for b, L in enumerate(lengths):
        x[L:, b] = 1e3  # padding holds junk; it must never change a result
    x[5:, 0] = float("nan")
    k = len(module.state_names)
    state = tuple(torch.randn(4, B, 3, dtype=DT, generator=gen) * 0.5 for _ in range(k))
    return module, x, lengths, state


def _alone(module, x, lengths, state):
    """Each sequence run on its own (batch of one, no padding): outputs, finals, weight grads."""
    outs, finals, grads = [], [], None
    for b, L in enumerate(lengths):
        xb = x[:L, b:b + 1]
        sb = tuple(s[:, b:b + 1] for s in state)
        out, fin = module(xb, sb)
        (out.square().sum() + sum(f.sum() for f in fin)).backward()
        outs.append(out.detach())
        finals.append([f.detach() for f in fin])
    grads = grads_of(list(module.parameters()))
    return outs, finals, grads


def _check_against_alone(out, finals, lengths, alone, padded=True):
    outs_a, finals_a, _ = alone
    for b, L in enumerate(lengths):
        torch.testing.assert_close(out[:L, b:b + 1], outs_a[b], **TOL)
        if padded:
            assert torch.all(out[L:, b] == 0)
        for k, f in enumerate(finals):
            torch.testing.assert_close(f[:, b:b + 1], finals_a[b][k], **TOL)


@pytest.mark.parametrize("name", VARLEN_SPECS)
def test_lengths_equal_each_sequence_alone(classes, name):
    module, x, lengths, state = _varlen_setup(classes, name)
    alone = _alone(module, x, lengths, state)
    out, finals = module(x, state, lengths=torch.tensor(lengths))
    assert torch.isfinite(out).all()
    _check_against_alone(out, finals, lengths, alone)
    (out.square().sum() + sum(f.sum() for f in finals)).backward()
    for a, b in zip(grads_of(list(module.parameters())), alone[2]):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("name", ["vanilla", "gru", "fgr"])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequence_equals_each_sequence_alone(classes, name, enforce_sorted):
    module, x, lengths, state = _varlen_setup(classes, name)
    if enforce_sorted:  # sorted by decreasing length, as enforce_sorted requires
        order = sorted(range(len(lengths)), key=lambda b: -lengths[b])
        x, lengths = x[:, order], [lengths[b] for b in order]
        state = tuple(s[:, order] for s in state)
    alone = _alone(module, x, lengths, state)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    out_packed, finals = module(packed, state)
    assert type(out_packed) is type(packed)
    torch.testing.assert_close(out_packed.batch_sizes, packed.batch_sizes)
    out, out_lengths = pad_packed_sequence(out_packed)
    assert out_lengths.tolist() == lengths
    _check_against_alone(out, finals, lengths, alone)
    (out.square().sum() + sum(f.sum() for f in finals)).backward()
    for a, b in zip(grads_of(list(module.parameters())), alone[2]):
        torch.testing.assert_close(a, b, **TOL)


def test_packed_matches_torch_lstm_packed(classes):
    ours, ref, _ = _torch_pair(classes, "np")
    gen = torch.Generator().manual_seed(9)
    lengths = torch.tensor([2, 5, 3])
    x = torch.randn(5, 3, 3, dtype=DT, generator=gen)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_ref, (h_ref, c_ref) = ref(packed)
    out, (h, c) = ours(packed)
    torch.testing.assert_close(out.data, out_ref.data, **TOL)
    torch.testing.assert_close(out.sorted_indices, out_ref.sorted_indices)
    torch.testing.assert_close(h, h_ref, **TOL)
    torch.testing.assert_close(c, c_ref, **TOL)


def test_batch_first_and_default_state(classes):
    module = make(classes, "vanilla", num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3, dtype=DT)
    out, finals = module(x)
    zeros = tuple(torch.zeros(4, 2, 4, dtype=DT) for _ in module.state_names)
    out0, finals0 = module(x, zeros)
    torch.testing.assert_close(out, out0, **TOL)
    module.batch_first = True
    out_bf, finals_bf = module(x.transpose(0, 1).contiguous())
    assert out_bf.shape == (2, 5, 8)
    torch.testing.assert_close(out_bf.transpose(0, 1), out, **TOL)
    for a, b in zip(finals_bf, finals):
        torch.testing.assert_close(a, b, **TOL)


def test_initial_state_is_used_and_checked(classes):
    module = make(classes, "vanilla")
    x = torch.randn(2, 1, 3, dtype=DT)
    out0, _ = module(x)
    out1, _ = module(x, (torch.ones(1, 1, 4, dtype=DT), torch.ones(1, 1, 4, dtype=DT)))
    assert not torch.allclose(out0, out1)
    with pytest.raises(ValueError, match="state"):
        module(x, (torch.ones(1, 1, 4, dtype=DT),))
    with pytest.raises(ValueError, match="shape"):
        module(x, (torch.ones(1, 2, 4, dtype=DT), torch.ones(1, 2, 4, dtype=DT)))


def test_bidirectional_reverse_direction_reads_backwards(classes):
    """The reverse direction's output at t equals a forward run over the reversed sequence."""
    module = make(classes, "gru", bidirectional=True)
    x = torch.randn(4, 2, 3, dtype=DT)
    out, (h,) = module(x)
    single = make(classes, "gru")
    with torch.no_grad():
        for name in ("W_r", "W_u", "W_n", "R_r", "R_u", "R_n", "b_r", "b_u", "b_n", "b_Rn"):
            single.spec_parameter(name).copy_(module.spec_parameter(name, 0, 1))
    out_rev, (h_rev,) = single(x.flip(0))
    torch.testing.assert_close(out[:, :, 4:], out_rev.flip(0), **TOL)
    torch.testing.assert_close(h[1:], h_rev, **TOL)


# --- spec_parameter --------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS)
def test_spec_parameter_views_alias_storage(classes, name):
    module = make(classes, name, num_layers=2, bidirectional=True)
    compiled = cellc.compile_spec(name)
    storages = {p.data_ptr(): p for p in module.parameters()}
    seen = []
    for layer in range(2):
        for d in range(2):
            for pname, info in compiled.params.items():
                view = module.spec_parameter(pname, layer, d)
                assert view._base is not None and view._base.data_ptr() in storages
                in_size = 3 if layer == 0 else 8
                expected = {"input matrix": (4, in_size), "bias": (4,), "elementwise vector": (4,)}.get(
                    info.kind.value, (4, 4))
                assert tuple(view.shape) == expected, pname
                with torch.no_grad():
                    view.fill_(0.25 + len(seen))
                seen.append((layer, d, pname, 0.25 + len(seen)))
    # Every write landed in the real parameter and no two spec parameters share storage.
    for layer, d, pname, value in seen:
        assert torch.all(module.spec_parameter(pname, layer, d) == value)
    total = sum(p.numel() for p in module.parameters())
    assert total == sum(module.spec_parameter(p, l, d).numel() for l, d, p, _ in seen)
    with pytest.raises(KeyError):
        module.spec_parameter("W_nope")
    with pytest.raises(IndexError):
        module.spec_parameter(next(iter(compiled.params)), layer=2)


def test_writing_a_view_changes_the_output(classes):
    module = make(classes, "np")
    x = torch.randn(3, 2, 3, dtype=DT)
    before, _ = module(x)
    with torch.no_grad():
        module.spec_parameter("b_o").fill_(-50.0)  # output gate shut
    after, _ = module(x)
    assert not torch.allclose(before, after)
    assert after.abs().max() < 1e-15


# --- values that read nothing per batch ------------------------------------------------------

EDGE_SPECS = {
    # After an override o is the constant 1, yet FGR still reads o[-1] as state.
    "const_gate": "name: const_gate\nextends: fgr\nedits:\n  - override o = 1\n",
    # A value that is only a parameter, read at the previous step.
    "param_value": "name: param_value\nequations: |\n  g = b_g\n  y = tanh(W_a x + R_a y[-1] + R_g g[-1])\n",
}


@pytest.mark.parametrize("edge", sorted(EDGE_SPECS))
def test_values_without_batch_dependence(tmp_path, edge):
    path = tmp_path / f"{edge}.yaml"
    path.write_text(EDGE_SPECS[edge])
    torch.manual_seed(0)
    module = cellc.build(path, backend="eager")(2, 3, dtype=DT, bidirectional=True)
    x = torch.randn(4, 2, 2, dtype=DT)
    k = len(module.state_names)
    state = tuple(torch.randn(2, 2, 3, dtype=DT) for _ in range(k))
    out, finals = module(x, state, lengths=[4, 2])
    assert out.shape == (4, 2, 6) and all(f.shape == (2, 2, 3) for f in finals)
    if edge == "param_value":  # by hand: g[-1] is the initial state at t=0, then b_g
        P = module.spec_parameter
        y, g = state[0][0], state[1][0]
        for t in range(4):
            y = tanh(mv(P("W_a"), x[t]) + mv(P("R_a"), y) + mv(P("R_g"), g))
            g = P("b_g").expand_as(g)
            if t == 1:
                torch.testing.assert_close(finals[0][0, 1], y[1], **TOL)
        torch.testing.assert_close(out[:, 0, :3][-1], y[0], **TOL)
        torch.testing.assert_close(finals[1][0, 0], P("b_g"), **TOL)
    else:
        names = list(module.state_names)
        assert torch.all(finals[names.index("o")] == 1)
    # The fast backends agree, forward and backward.
    for backend in ("fused", "auto"):
        other = cellc.build(path, backend=backend)(2, 3, dtype=DT, bidirectional=True)
        other.load_state_dict(module.state_dict())
        out2, finals2 = other(x, state, lengths=[4, 2])
        torch.testing.assert_close(out2, out, **TOL)
        for a, b in zip(finals2, finals):
            torch.testing.assert_close(a, b, **TOL)
