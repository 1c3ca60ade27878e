"""The generated modules' interface where a user can get it wrong or reach an edge: autocast on CPU, double
backward, a given state of another dtype, an input without time steps. One clear outcome each, on every
CPU backend (compiled: C++ loops reading raw pointers, where a wrong buffer is memory corruption)."""

from __future__ import annotations

import sys

import pytest
import torch

from backend_builds import build_fast

CPU_BACKENDS = ("eager", "fused", "compiled", "triton")  # triton runs the compiled loops on CPU tensors


@pytest.mark.parametrize("spec,backend", [("np", "compiled"), ("gru", "compiled"), ("mgu", "fused"),
                                          ("vanilla", "triton")])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_autocast_runs_the_loops_in_the_inputs_dtype(spec, backend, dtype):
    """Under CPU autocast the input GEMM alone used to turn 16-bit, and the C++ loops read its buffer as
    float32 (a crash, or silent corruption): the loops now run in the input's dtype, as without autocast."""
    torch.manual_seed(0)
    layer = build_fast(spec, backend, 3, 8)
    x = torch.randn(6, 3, 3)
    expected = layer(x)[0]
    with torch.autocast("cpu", dtype=dtype):
        out, _ = layer(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters())


def test_cpu_autocast_takes_a_16_bit_input_from_an_earlier_layer():
    layer = build_fast("vanilla", "compiled", 3, 4)
    x = torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x.bfloat16())  # as an autocast Linear before it would hand over
    torch.testing.assert_close(out, layer(x.bfloat16().float())[0], rtol=0, atol=0)


def test_compiled_loops_refuse_a_buffer_of_another_dtype():
    """The C++ loops read every buffer with one element size: a weight or an output gradient of another
    dtype, or a buffer that is not contiguous, is refused before any pointer reaches them."""
    layer = build_fast("vanilla", "compiled", 2, 3)
    module = sys.modules[type(layer).__module__]
    x = torch.randn(4, 1, 2)
    out, tapes = module.train_forward(layer, x)
    with pytest.raises(RuntimeError, match="got a torch.float64 .* output gradient for a torch.float32"):
        module.train_backward(layer, tapes, out.double())
    with pytest.raises(RuntimeError, match="not contiguous"):
        module._check([torch.zeros(4, 4).t()], torch.float32)
    layer.weight_s_l0.data = layer.weight_s_l0.data.double()
    with pytest.raises(RuntimeError, match="got a torch.float64"):
        layer(x)
    assert len(module._pointers([x, None, torch.zeros(2, dtype=torch.uint8)])) == 3  # mask: bytes


@pytest.mark.parametrize("backend", ["fused", "compiled", "triton"])
def test_double_backward_is_an_error_not_a_wrong_number(backend):
    """The derived backward is not differentiable: a gradient of a gradient must fail, not come out wrong."""
    layer = build_fast("vanilla", backend, 2, 3, dtype=torch.float64)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x)[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        (grad ** 2).sum().backward()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_state_of_another_dtype_and_an_empty_input_are_value_errors(backend):
    layer = build_fast("vanilla", backend, 2, 3)
    x = torch.randn(4, 2, 2)
    state = tuple(torch.zeros(1, 2, 3, dtype=torch.float64) for _ in layer.state_names)
    with pytest.raises(ValueError, match="must be torch.float32 on cpu, as the input is; got torch.float64"):
        layer(x, state)
    with pytest.raises(ValueError, match="no time steps"):
        layer(torch.randn(0, 2, 2))


@pytest.mark.parametrize("spec,backend", [("np", "compiled"), ("gru", "lowered"), ("mgu", "fused"), ("vanilla", "eager")])
def test_a_built_layer_pickles_and_loads_in_a_fresh_process(tmp_path, spec, backend):
    """torch.save(model) pickles the layer: by its spec's identity (its module exists only in this process)."""
    import pickle
    import subprocess

    torch.manual_seed(0)
    layer = build_fast(spec, backend, 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    expected = layer(x)[0]
    assert torch.equal(pickle.loads(pickle.dumps(layer))(x)[0], expected)
    torch.save({"layer": layer, "x": x, "y": expected}, tmp_path / "saved.pt")
    code = ("import torch; d = torch.load(r'%s', weights_only=False); "
            "print(torch.equal(d['layer'](d['x'])[0], d['y']))" % (tmp_path / "saved.pt"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def test_unpickling_a_layer_whose_spec_is_not_here_says_so(tmp_path):
    import pickle

    from cellc.codegen.build import restore_layer
    from cellc.errors import CellcError

    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n")
    layer = build_fast(path, "eager", 2, 3)
    name, spec_hash, backend = type(layer)._cellc_identity
    with pytest.raises(CellcError, match="no spec of that name and hash here; build it first"):
        restore_layer(name, "0" * 16, backend)  # as in a process that never built it
    assert pickle.loads(pickle.dumps(layer)).hidden_size == 3  # this process has it
    other = restore_layer(name, spec_hash, "fused")  # saved with another backend: built from the same cell
    assert type(other).__name__ == "Mine" and type(other)._cellc_identity[2] == "fused"
