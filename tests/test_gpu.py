"""On a CUDA device only (skipped elsewhere): every GPU path of a few cells against the eager backend, as the
device benchmark checks them (cellc.speed.gpu.check_correctness): the Triton per-step, tiled and persistent
kernels with their CUDA-graph capture and replay, cuDNN through the lowered path, bf16 against float32.

On CPU the same logic runs under the Triton interpreter (tests/test_triton.py) and the benchmark's own code
paths with CPU stand-ins (tests/test_speed_gpu.py); this file is what a GPU machine adds to them:
`python -m pytest tests/test_gpu.py`."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and importlib.util.find_spec("triton")),
                                reason="needs a CUDA device and triton")


# plain, lowerable, staged, gate recurrence; the input read elementwise (the check's layers have M = N); layer norm
@pytest.mark.parametrize("cell", ["vanilla", "gru", "mgu", "fgr", "sru", "mut1", "lnlstm"])
def test_gpu_backends_match_eager(cell):
    from cellc.speed import gpu
    from cellc.speed.gpu_report import Run

    run = Run()
    gpu.check_correctness(run, torch, cells=(cell,))
    assert not run.failures, run.failures
    assert run.checks, "no GPU path was checked"
    bad = [row for row in run.checks if row[-1] != "ok"]
    assert not bad, bad


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("mode", ["step", "persistent"])
def test_a_layer_on_the_second_gpu_runs_there(mode, monkeypatch):
    # the current device stays cuda:0: the kernels must launch (and graphs capture) on the tensors' device
    import cellc

    monkeypatch.setenv("CELLC_TRITON_MODE", mode)
    torch.manual_seed(0)
    eager = cellc.build("vanilla", backend="eager")(8, 32).to("cuda:1")
    fast = cellc.build("vanilla", backend="triton")(8, 32).to("cuda:1")
    fast.load_state_dict(eager.state_dict())
    torch.cuda.set_device(0)
    for _ in range(3):  # plain loop, capture, replay
        x = torch.randn(20, 4, 8, device="cuda:1")
        out, _ = fast(x)
        ref, _ = eager(x)
        assert out.device == torch.device("cuda:1")
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        out.sum().backward()
        ref.sum().backward()
    for p, q in zip(fast.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("backend", ["eager", "triton"])
def test_the_caller_can_capture_a_layer_with_lengths_in_a_cuda_graph(backend):
    # nothing in the forward waits for the host (the lengths' values are checked outside a capture)
    import cellc

    torch.manual_seed(0)
    layer = cellc.build("vanilla", backend=backend)(8, 32).cuda()
    x = torch.randn(20, 4, 8, device="cuda")
    lengths = torch.tensor([20, 13, 7, 1], device="cuda")
    with torch.no_grad():
        expected, _ = layer(x, lengths=lengths)  # compiles the kernels outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured, _ = layer(x, lengths=lengths)
        graph.replay()
    torch.testing.assert_close(captured, expected)
