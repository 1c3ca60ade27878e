"""Declared sizes (spec language v2, issue 23): ``sizes: {y: proj_size}`` gives a value P units instead of N.

- lstmp (specs/lstmp.yaml) equals torch.nn.LSTM(proj_size=P) in float64, torch's weights copied in: outputs, both
  final states (h of P units, c of N) and the gradients of the input, of both initial states and of every torch
  parameter (weight_hr included); one layer, packed sequences of several lengths, two bidirectional layers; on
  every backend that runs cells with declared sizes.
- P larger than N (torch refuses it; cellc does not), against the eager module.
- The module's interface: proj_size= required and positive, state shapes, parameter shapes, spec_parameter,
  parameter_count, extra_repr; `cellc show`.
- The front end: sizes that cannot agree, an unknown value or size, the one-size rule for each kind of matrix, a
  size nothing gives, an input read elementwise at a size other than the output's; each at file:line:col.
  `extends` inherits sizes, and a declared value an edit removes is no error.
- The lowered backend hands lstmp to torch's LSTM with its projection (views of one flat buffer, w_hr included),
  and refuses P >= N as torch does; the Triton backend refuses cells with declared sizes with one message, and
  'auto' picks one that runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import cellc
from cellc.codegen import support
from cellc.errors import SpecError, UsageError
from cellc.ir.pipeline import compile_spec
from cellc.testing import assert_results_match, layer_results, random_state

ROOT = Path(__file__).resolve().parents[1]
DT = torch.float64
M, N, P, T, B = 3, 5, 2, 6, 4
RUNS_SIZES = [b for b in ("eager", "fused", "compiled", "triton")
              if support.unsupported(compile_spec("lstmp"), b) is None]
CASES = {
    "plain": dict(num_layers=1, bidirectional=False, lengths=None),
    "packed": dict(num_layers=1, bidirectional=False, lengths=[6, 3, 1, 5]),
    "bidir2": dict(num_layers=2, bidirectional=True, lengths=[2, 6, 4, 6]),
}
GATES = "ifzo"  # torch's gate order (i, f, g, o); the spec calls g z


def _pair(backend, opts, p=P):
    torch.manual_seed(11)
    ref = torch.nn.LSTM(M, N, num_layers=opts["num_layers"], bidirectional=opts["bidirectional"], proj_size=p,
                        dtype=DT)
    mine = cellc.build("lstmp", backend=backend)(M, N, num_layers=opts["num_layers"],
                                                  bidirectional=opts["bidirectional"], proj_size=p, dtype=DT)
    with torch.no_grad():
        for layer in range(ref.num_layers):
            for d in range(2 if ref.bidirectional else 1):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(ref, "weight_ih" + suffix), getattr(ref, "weight_hh" + suffix)
                b_ih, b_hh = getattr(ref, "bias_ih" + suffix), getattr(ref, "bias_hh" + suffix)
                b_hh.zero_()  # one bias per gate in the spec: torch's second is held at zero
                for k, g in enumerate(GATES):
                    rows = slice(k * N, (k + 1) * N)
                    mine.spec_parameter(f"W_{g}", layer, d).copy_(w_ih[rows])
                    mine.spec_parameter(f"R_{g}", layer, d).copy_(w_hh[rows])
                    mine.spec_parameter(f"b_{g}", layer, d).copy_(b_ih[rows])
                mine.spec_parameter("W_p", layer, d).copy_(getattr(ref, "weight_hr" + suffix))
    return ref, mine


def _torch_run(ref, x, h0, c0, lengths):
    if lengths is None:
        return ref(x, (h0, c0))
    out, final = ref(pack_padded_sequence(x, lengths, enforce_sorted=False), (h0, c0))
    return pad_packed_sequence(out, total_length=x.shape[0])[0], final


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", RUNS_SIZES)
def test_lstmp_equals_torch_lstm_with_proj_size(backend, case):
    opts = CASES[case]
    ref, mine = _pair(backend, opts)
    layers = ref.num_layers * (2 if ref.bidirectional else 1)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(T, B, M, generator=g, dtype=DT, requires_grad=True)
    h0 = 0.5 * torch.randn(layers, B, P, generator=g, dtype=DT, requires_grad=True)
    c0 = 0.5 * torch.randn(layers, B, N, generator=g, dtype=DT, requires_grad=True)
    lengths = None if opts["lengths"] is None else torch.tensor(opts["lengths"])
    assert mine.state_names == ("y", "c")  # torch's order: (h, c)
    out_t, (h_t, c_t) = _torch_run(ref, x, h0, c0, lengths)
    out_m, (h_m, c_m) = mine(x, (h0, c0), lengths=lengths)
    assert out_m.shape == (T, B, P * (2 if ref.bidirectional else 1)) and h_m.shape == h0.shape
    for got, want in ((out_m, out_t), (h_m, h_t), (c_m, c_t)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    weights = [getattr(ref, f"{kind}_l{layer}{'_reverse' if d else ''}") for layer in range(ref.num_layers)
               for d in range(2 if ref.bidirectional else 1) for kind in ("weight_ih", "weight_hh", "bias_ih",
                                                                          "weight_hr")]
    g2 = torch.Generator().manual_seed(6)
    proj = [torch.randn(t.shape, generator=g2, dtype=DT) for t in (out_t, h_t, c_t)]
    loss_t = sum((a * b).sum() for a, b in zip((out_t, h_t, c_t), proj))
    loss_m = sum((a * b).sum() for a, b in zip((out_m, h_m, c_m), proj))
    grads_t = torch.autograd.grad(loss_t, [x, h0, c0, *weights])
    grads_m = torch.autograd.grad(loss_m, [x, h0, c0, *mine.parameters()])
    for got, want in zip(grads_m[:3], grads_t[:3]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # torch's parameter gradients, read out of cellc's storage
    per = iter(grads_t[3:])
    named = dict(zip([n for n, _ in mine.named_parameters()], grads_m[3:]))
    for layer in range(ref.num_layers):
        for d in range(2 if ref.bidirectional else 1):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            d_ih, d_hh, d_b, d_hr = next(per), next(per), next(per), next(per)
            torch.testing.assert_close(named["weight_x" + suffix], d_ih, rtol=0, atol=1e-12)
            torch.testing.assert_close(named["weight_s" + suffix], d_hh, rtol=0, atol=1e-12)
            torch.testing.assert_close(named["bias" + suffix], d_b, rtol=0, atol=1e-12)
            torch.testing.assert_close(named["weight_c" + suffix], d_hr, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", [b for b in RUNS_SIZES if b not in ("eager", "lowered")])
@pytest.mark.parametrize("p", [1, 5, 7])
def test_a_projection_wider_than_the_cell_matches_eager(backend, p):
    """torch requires proj_size < hidden_size; cellc's fused and compiled modules take any positive size (here
    P = 1, P = N = 5 and P = 7 > N)."""
    torch.manual_seed(2)
    eager = cellc.build("lstmp", backend="eager")(M, N, num_layers=2, bidirectional=True, proj_size=p, dtype=DT)
    fast = cellc.build("lstmp", backend=backend)(M, N, num_layers=2, bidirectional=True, proj_size=p, dtype=DT)
    fast.load_state_dict(eager.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(T, B, M, generator=g, dtype=DT)
    state = random_state(eager, B, g, DT)
    lengths = torch.tensor([6, 2, 5, 1])
    assert_results_match(layer_results(fast, x, state, lengths), layer_results(eager, x, state, lengths))


@pytest.mark.parametrize("p", [5, 7])
def test_the_lowered_backend_refuses_a_projection_torch_cannot_run(p):
    """torch.lstm tells a projection by h's size, so the lowered lstmp needs P < N, as torch.nn.LSTM does."""
    with pytest.raises(ValueError, match="proj_size < hidden_size"):
        cellc.build("lstmp", backend="lowered")(M, N, proj_size=p)


def test_a_projection_of_undeclared_size_is_not_lowered(tmp_path):
    """The same equations without `sizes:` make y N wide: torch.lstm could not tell that projection (P = N)."""
    text = (ROOT / "specs" / "lstmp.yaml").read_text().replace("sizes:\n  y: proj_size\n", "")
    compiled = compile_spec(_spec(tmp_path, text.split("name: lstmp\n", 1)[1], name="lstmpn"))
    assert not compiled.sizes.declared and compiled.lowering is None


def test_the_lowered_lstmp_hands_torch_its_own_storage():
    """As for np: the spec's storage IS torch's flat buffer (w_hr included), nothing is copied per call."""
    layer = cellc.build("lstmp", backend="lowered")(M, N, num_layers=2, bidirectional=True, proj_size=P, dtype=DT)
    storage = layer.weight_x_l0.untyped_storage().data_ptr()
    assert all(p.untyped_storage().data_ptr() == storage for p in layer.parameters())
    assert compile_spec("lstmp").lowering.weight_hr == "W_p"
    assert compile_spec("np").lowering.weight_hr is None and compile_spec("gru").lowering.weight_hr is None


def test_the_module_takes_proj_size_like_torch():
    cls = cellc.build("lstmp", backend="eager")
    assert cls.size_names == ("hidden_size", "proj_size")
    with pytest.raises(ValueError, match="proj_size"):
        cls(M, N)  # proj_size=0, as torch's default: a projected cell needs one
    layer = cls(M, N, num_layers=2, bidirectional=True, proj_size=P)
    assert layer.proj_size == P and layer.output_size == P and "proj_size=2" in repr(layer)
    assert layer.state_shapes(B) == [(4, B, P), (4, B, N)]
    assert dict((n, tuple(t.shape)) for n, t in layer.named_parameters() if n.endswith("_l1")) == {
        "weight_x_l1": (4 * N, 2 * P), "weight_s_l1": (4 * N, P), "weight_c_l1": (P, N), "bias_l1": (4 * N,)}
    assert layer.spec_parameter("W_p").shape == (P, N) and layer.spec_parameter("R_o", 1, 1).shape == (N, P)
    assert cls.parameter_count(M, N, P) == 4 * N * M + 5 * N * P + 4 * N
    assert sum(t.numel() for n, t in layer.named_parameters() if n.endswith("_l0")) == cls.parameter_count(M, N, P)
    compiled = compile_spec("lstmp")
    assert compiled.formula_text() == "4NM + 5NP + 4N"
    assert compiled.parameter_count(M, N, P) == cls.parameter_count(M, N, P)
    assert compiled.shape_text("W_p") == "P x N" and compiled.shape_text("R_i") == "N x P"
    # cells without declared sizes keep their constructor and their hash
    assert cellc.build("vanilla", backend="eager").size_names == ("hidden_size",)
    with pytest.raises(TypeError):
        cellc.build("vanilla", backend="eager")(M, N, proj_size=2)


def test_show_prints_shapes_and_the_formula(capsys):
    from cellc.cli import main

    assert main(["show", "lstmp", "-M", "3", "-N", "5", "-P", "2"]) == 0
    text = capsys.readouterr().out
    assert "P x N" in text and "sizes: y: proj_size" in text
    assert "4NM + 5NP + 4N = 130 at M=3, N=5, P=2" in text


def _spec(tmp_path, body: str, name: str = "sized"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + body)
    return path


ERRORS = {
    "disagree": ("equations: |\n  h = tanh(W_h x + R_h y[-1] + b_h)\n  y = h + W_p h\nsizes:\n  y: proj_size\n",
                 "'h' has size hidden_size, but here the sizes are proj_size", (4, 7)),
    "unknown_size": ("equations: |\n  y = tanh(W_a x + R_a y[-1])\nsizes:\n  y: output_size\n",
                     "sizes: 'output_size' is not a size (sizes: hidden_size, proj_size)", (5, 3)),
    "unknown_value": ("equations: |\n  y = tanh(W_a x + R_a y[-1])\nsizes:\n  q: proj_size\n",
                      "sizes: 'q' is not a value of the cell", (5, 3)),
    "state_matrices": ("equations: |\n  c = tanh(W_c x + R_c c[-1] + R_y y[-1])\n  y = W_p c\nsizes:\n  y: proj_size\n",
                       "previous-step matrices read values of different sizes", (3, 32)),
    "value_disagrees": ("equations: |\n  y = tanh(W_a x + R_a y[-1] + q[-1])\n  q = 2 * y\nsizes:\n  q: proj_size\n",
                        "'q[-1]' has size proj_size (sizes: at 6:3), but here the sizes are hidden_size", (3, 32)),
    "direct": ("equations: |\n  c = tanh(W_c x + R_c c[-1]) + x\n  y = W_p c\nsizes:\n  y: proj_size\n",
               "is read elementwise here with size hidden_size, but the output 'y' has size proj_size", (3, 33)),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_size_errors_name_their_place(tmp_path, case):
    body, message, (line, column) = ERRORS[case]
    path = _spec(tmp_path, body)
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as err:
        compile_spec(path)
    assert err.value.location is not None, err.value
    assert (err.value.location.line, err.value.location.column) == (line, column), str(err.value)


def test_a_cell_with_nothing_of_hidden_size_is_an_error_at_its_sizes(tmp_path):
    """hidden_size is the size of every value `sizes:` does not name: declaring all of them leaves it to nothing
    (the modules could not tell it; before, every backend failed with a traceback)."""
    path = _spec(tmp_path, "equations: |\n  y = tanh(W_a x + R_a y[-1] + b_a)\nsizes:\n  y: proj_size\n")
    with pytest.raises(SpecError, match="no state and no parameter of the cell has hidden_size units") as err:
        compile_spec(path)
    assert (err.value.location.line, err.value.location.column) == (5, 3)


def test_a_size_error_from_a_child_names_the_childs_declaration(tmp_path):
    path = _spec(tmp_path, "extends: lstmp\nsizes: {c: proj_size}\n", name="child_c")
    with pytest.raises(SpecError) as err:
        compile_spec(path)
    assert err.value.location.file.endswith("lstmp.yaml")  # where the sizes clash: the parent's equation
    assert f"(sizes: at {path}:3:9)" in str(err.value)  # and the child's declaration that made them clash


def test_an_input_read_elementwise_takes_the_outputs_size(tmp_path):
    """A projected cell that reads x elementwise: input_size must equal proj_size, and every message says so."""
    path = _spec(tmp_path, "equations: |\n  f = sigmoid(W_f x + v_f * c[-1] + b_f)\n"
                 "  c = f * c[-1] + (1 - f) * (W_c tanh(W_h x))\n  y = c + x\nsizes:\n  f: proj_size\n"
                 "  c: proj_size\n  y: proj_size\n", name="direct_p")
    compiled = compile_spec(path)
    assert compiled.direct_size_name == "proj_size" and "input_size == proj_size" in compiled.remarks[0]
    cls = cellc.build(path, backend="compiled")
    with pytest.raises(ValueError, match="input_size must equal proj_size; got 3 and 2"):
        cls(3, 4, proj_size=2)
    eager = cellc.build(path, backend="eager")(2, 4, proj_size=2, num_layers=2, bidirectional=True, dtype=DT)
    fast = cls(2, 4, proj_size=2, num_layers=2, bidirectional=True, dtype=DT)
    fast.load_state_dict(eager.state_dict())
    g = torch.Generator().manual_seed(4)
    x, state = torch.randn(T, B, 2, generator=g, dtype=DT), random_state(eager, B, g, DT)
    assert_results_match(layer_results(fast, x, state), layer_results(eager, x, state))


def test_only_torchs_roles_are_lowered(tmp_path):
    """c of proj_size and y of hidden_size is not torch's projected LSTM (h must be the projected one)."""
    path = _spec(tmp_path, "extends: lstmp\nsizes: {y: hidden_size, i: proj_size, f: proj_size, z: proj_size, "
                 "o: proj_size, c: proj_size}\n", name="swapped")
    compiled = compile_spec(path)
    assert compiled.sizes.values["c"] == "P" and compiled.lowering is None


def test_compile_all_for_triton_refuses_before_writing_anything(tmp_path, capsys):
    from cellc.cli import main

    assert main(["compile", "--all", "--backend", "triton", "--out", str(tmp_path / "out")]) == 2
    assert "declares sizes (y: proj_size)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_extends_inherits_sizes_and_an_edit_may_remove_a_declared_value(tmp_path):
    child = _spec(tmp_path, "extends: lstmp\nedits:\n  - drop gate i\n", name="lstmp_noi")
    compiled = compile_spec(child)
    assert compiled.sizes.values["y"] == "P" and "NP" in compiled.formula()
    parent = _spec(tmp_path, "equations: |\n  h = tanh(W_h x + R_h y[-1] + b_h)\n  g = W_g h\n"
                   "  y = tanh(W_y x + R_y y[-1] + b_y)\nsizes:\n  g: proj_size\n", name="with_g")
    child = _spec(tmp_path, "extends: with_g\n", name="child_g")
    assert not compile_spec(child).sizes.declared  # g is dead code: its size no longer matters


def test_the_one_size_backends_refuse_and_auto_runs_it():
    compiled = compile_spec("lstmp")
    assert support.unsupported(compiled, "triton") is not None
    for backend in ("compiled", "triton", "lowered"):
        problem = support.unsupported(compiled, backend)
        if problem is not None:
            assert "y: proj_size" in problem and "'compiled'" in problem
            with pytest.raises(UsageError, match="declares sizes"):
                cellc.build("lstmp", backend=backend)
    layer = cellc.build("lstmp", backend="auto")(M, N, proj_size=P)
    out, _ = layer(torch.randn(T, B, M))
    assert out.shape == (T, B, P)
