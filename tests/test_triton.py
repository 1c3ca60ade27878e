"""The triton backend's generated kernels (per-step and persistent, forward and backward) match
the eager backend in float32 for every spec, under the Triton interpreter on CPU.

The kernels run in one subprocess (tests/triton_check.py) with TRITON_INTERPRET=1, so the
interpreter never leaks into other tests; sizes are small (the interpreter is slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cellc.codegen.support import unsupported
from cellc.ir.pipeline import compile_spec
from cellc.spec.loader import builtin_spec_names

pytest.importorskip("triton")
# One worker runs every test here (pytest-xdist's loadgroup, set in pyproject.toml): the module's fixture runs the
# interpreter subprocess once, not once per worker.
pytestmark = pytest.mark.xdist_group("triton_interpreter")

# every builtin spec the triton backend runs (it refuses cells with declared sizes: cellc.codegen.support)
SPECS = [s for s in builtin_spec_names() if unsupported(compile_spec(s), "triton") is None]
CASES = ("plain", "bidir_lengths", "two_layer")
MODES = ("step", "persistent", "tiled")
ATOL = 1e-5


# A cell whose backward reads an input product itself (r * (W_n x)): the one case where the kernels
# keep the hoisted input GEMM for the backward (no spec in specs/ needs it).
XSLOT = "name: xslot\nequations: |\n  r = sigmoid(W_r x + R_r y[-1] + b_r)\n  n = tanh(r * (W_n x) + R_n y[-1] + b_n)\n  y = n\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    env = {**os.environ, "CELLC_TRITON_MODE": "auto"}
    env.pop("TRITON_INTERPRET", None)
    script = Path(__file__).with_name("triton_check.py")
    xslot = tmp_path_factory.mktemp("specs") / "xslot.yaml"
    xslot.write_text(XSLOT)
    done = subprocess.run([sys.executable, str(script), *SPECS, str(xslot)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {(r.get("spec"), r.get("mode"), r.get("case"), r.get("check")): r for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", SPECS)
def test_kernels_match_eager(results, spec, mode, case):
    row = results[(spec, mode, case, None)]
    assert row["error"] <= ATOL, f"{spec} {mode} {case}: error {row['error']:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", ["vanilla", "gru"])
def test_kernels_with_64_bit_offsets_match_eager(results, spec, mode):
    # what buffers of 2**30 elements or more run (int32 offsets would wrap there): forward and backward
    row = results[(spec, mode, "offsets64", None)]
    assert row["offsets64"] == [True], row  # every launch took the 64-bit kernels
    assert row["error"] <= ATOL, f"{spec} {mode}: error {row['error']:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["plain", "bidir_lengths"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", SPECS)
def test_inference_forward_stores_nothing_for_a_backward(results, spec, mode, case):
    """Under torch.no_grad the forward kernels run with SAVE off and no buffer of saved values (except the
    per-step kernels of a cell with current-step products, whose stages hand values on through it), and
    still match eager; with gradients they store them."""
    row, training = results[(spec, mode, f"inference_{case}", None)], results[(spec, mode, case, None)]
    assert row["error"] <= ATOL, row
    assert {save for save, _ in row["saves"]} == {False}, row
    assert {save for save, _ in training["saves"]} == {True}, training
    staged = row["staged"] and mode != "persistent"
    assert all((elements > 1) == staged for _, elements in row["saves"]), row
    assert all(elements > 1 for _, elements in training["saves"]), training


@pytest.mark.slow
@pytest.mark.parametrize("case", ["loss_on_final_state", "loss_on_output"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", ["vanilla", "gru"])
def test_gradients_when_the_loss_reads_part_of_the_outputs(results, spec, mode, case):
    """A loss on the final state alone (no output gradient) or on the output alone (no final-state
    gradients, which the backward then gets as None) still gives eager's parameter gradients."""
    row = results[(spec, mode, case, None)]
    assert row["error"] <= ATOL, row


@pytest.mark.slow
@pytest.mark.parametrize("case", ["steps_1", "steps_2"])
@pytest.mark.parametrize("spec", SPECS)
def test_persistent_forward_prefetch_at_the_sequence_ends(results, spec, case):
    """The persistent forward loads step t + 1's inputs during step t: sequences of one and two steps
    (bidirectional, one sequence shorter) still match eager."""
    row = results[(spec, "persistent", case, None)]
    assert row["error"] <= ATOL, row


@pytest.mark.slow
@pytest.mark.parametrize("case", ["shallow_plain", "shallow_two_layer"])
@pytest.mark.parametrize("spec", ["vanilla", "gru"])
def test_persistent_backward_with_one_step_of_prefetch(results, spec, case):
    """Where the resident matrices leave room for one step of prefetch only (STAGES=2), the persistent
    backward still matches eager."""
    row = results[(spec, "persistent", case, None)]
    assert row["stages"] == 2 and row["error"] <= ATOL, row


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_runs_its_own_kernels(results, mode):
    """A mode's rows launched that mode's kernels and no others (tiled: per-step kernels for cells
    with current-step products, which have no tiled kernels)."""
    rows = [r for (spec, m, case, _), r in results.items() if m == mode and case in CASES]
    assert rows
    for row in rows:
        expected = {"step": "step", "persistent": "persistent",
                    "tiled": "tiled" if row["tiled_kernels"] else "step"}[mode]
        assert set(row["launches"]) == {expected}, row
    if mode == "tiled":
        assert any(row["tiled_kernels"] for row in rows)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_kernels_keep_the_input_gemm_where_the_backward_reads_it(results, mode):
    rows = [r for (spec, m, case, _), r in results.items() if spec and spec.endswith("xslot.yaml") and m == mode
            and case in CASES]
    assert len(rows) == len(CASES)
    assert all(r["error"] <= ATOL for r in rows), rows


@pytest.mark.slow
def test_cpu_without_interpreter_never_imports_triton(results):
    assert results[(None, None, None, "cpu_without_triton")]["ok"]


@pytest.mark.slow
@pytest.mark.parametrize("mode,case", [("step", "autocast_bfloat16"), ("step", "autocast_float16"),
                                       ("persistent", "autocast_float16"), ("tiled", "autocast_float16")])
@pytest.mark.parametrize("spec", ["vanilla", "gru"])
def test_autocast_16_bit_close_to_float32(results, spec, mode, case):
    row = results[(spec, mode, case, None)]
    assert row["out_dtype"] == "torch." + case.removeprefix("autocast_")
    assert row["grads_fp32"], "parameters keep float32 gradients under autocast"
    assert row["error"] < 3e-2, row
    # 16-bit matrices: a few of their ulps, relative to each gradient (measured: bf16 6e-3 to 1e-2, fp16 7e-4)
    assert row["grad_error"] < (3e-2 if case.endswith("bfloat16") else 5e-3), row


@pytest.mark.slow
def test_a_graph_evicted_before_each_use_is_captured_a_bounded_number_of_times(results):
    # two shapes taking turns in a cache of one: captured at each key's second use, evicted, captured again...
    row = results[("vanilla", "step", "graph_churn", None)]
    assert row["captures"] and max(row["captures"]) == row["limit"], row  # ... until the limit: then plain loops
    assert row["error"] <= ATOL, row


@pytest.mark.slow
def test_float64_runs_the_loops_not_the_float32_kernels(results):
    row = results[("vanilla", "auto", "float64", None)]
    assert row["launches"] == {} and row["error"] <= 1e-9, row


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["step", "persistent"])
def test_a_backward_inside_autocast_keeps_float32_gradients(results, mode):
    row = results[("vanilla", mode, "backward_in_autocast", None)]
    assert row["dtypes"] == ["torch.float32"] and row["error"] <= ATOL, row


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["np", "gru"])
def test_lowered_16_bit_layer_takes_a_float32_state(results, spec):
    row = results[(spec, "lowered", "bf16_float32_state", None)]
    assert row["final_dtypes"] == ["torch.float32"], row  # given back as it came
    assert row["error"] < 5e-2 and row["final_error"] < 5e-2, row  # bf16 against float32 eager


@pytest.mark.slow
@pytest.mark.parametrize("case", ["graph_plain", "graph_bidir_lengths"])
@pytest.mark.parametrize("mode", ["step", "tiled"])
@pytest.mark.parametrize("spec", SPECS)
def test_cuda_graph_replay_copies_every_buffer_it_needs(results, spec, mode, case):
    """The per-step loops replayed from a (faked) CUDA graph give the plain loop's results, in training and
    in inference (which copies back less)."""
    row = results[(spec, mode, case, None)]
    assert row["replayed"] > 0 and row["replayed_inference"] > 0, "the third call of each replays the captured loops"
    assert row["error"] <= ATOL, f"{spec} {case}: error {row['error']:.3g}"


def test_generated_module_imports_torch_only():
    from cellc.codegen.render import render_module
    from cellc.ir.pipeline import compile_spec

    source = render_module(compile_spec("vanilla"), "triton")
    kernels_start = source.index("TRITON_SOURCE = r'''")
    kernels_end = source.index("'''", kernels_start + 20)
    outside = source[:kernels_start] + source[kernels_end:]
    assert "import triton" not in outside
    assert "import triton" in source[kernels_start:kernels_end]


def test_kernels_launch_on_the_gpu_their_tensors_are_on(monkeypatch):
    # Triton launches on the current device: a layer on cuda:1 without torch.cuda.set_device(1) would run
    # its kernels on cuda:0 with cuda:1's pointers. Forward and backward enter the tensors' device first.
    import types

    import torch

    import cellc

    module = sys.modules[cellc.build("vanilla", backend="triton").__module__]
    assert module._TritonSteps.forward.on_its_device and module._TritonSteps.backward.on_its_device
    entered = []

    class Guard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            entered.append("left")

    monkeypatch.setattr(torch.cuda, "device", Guard)
    method = module._on_its_device(lambda ctx, *args: entered.append("ran") or "result")
    assert method("ctx", None, types.SimpleNamespace(is_cuda=True, device="cuda:1")) == "result"
    assert entered == ["cuda:1", "ran", "left"]
    entered.clear()
    assert method("ctx", torch.zeros(1), None) == "result" and entered == ["ran"]  # CPU: no device switch


def test_tf32_setting_is_read_through_torchs_newer_api():
    # Reading torch.backends.cuda.matmul.allow_tf32 raises once a program set the newer fp32_precision (as
    # torch now advises): the persistent and tiled kernels, which read it, crashed. In a subprocess: the
    # setting is process-wide.
    code = (
        "import sys, types, torch, cellc\n"
        "module = sys.modules[cellc.build('vanilla', backend='triton').__module__]\n"
        "x = types.SimpleNamespace(is_cuda=True, dtype=torch.float32)\n"
        "torch.backends.cuda.matmul.fp32_precision = 'tf32'\n"
        "first = module._precision(x)\n"
        "torch.backends.cuda.matmul.fp32_precision = 'ieee'\n"
        "print(first, module._precision(x), module._precision(types.SimpleNamespace(is_cuda=False, dtype=torch.float32)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["tf32", "ieee", "ieee"]


def test_backward_gathers_runs_of_gradient_blocks():
    from cellc.codegen.layout import paired_runs

    # consecutive on both sides and in the same place: one run; a gap or another group starts a new one
    assert paired_runs([(0, 0), (1, 1), (2, 2), (3, 3)]) == [(0, 0, 4)]
    assert paired_runs([(0, 0), (1, 2), (2, 3)]) == [(0, 0, 1), (1, 2, 2)]
    assert paired_runs([(0, "diag", 0), (1, "diag", 1), (2, "bias", 2), (3, "bias", 3)]) == [
        (0, "diag", 0, 2), (2, "bias", 2, 2)]
    assert paired_runs([(0, "bias", 3)]) == [(0, "bias", 3, 1)] and paired_runs([]) == []


def test_vector_gradients_gather_runs_and_zero_fill_only_what_no_gather_writes():
    from cellc.codegen.triton_gen import vector_gradients

    # vanilla: four biases from xw's columns, three peepholes from ACC: each group one slice, no copy
    lines = vector_gradients({"bias": 4, "diag": 3}, [(0, 0), (1, 1), (2, 2), (3, 3)],
                             [("diag", 0), ("diag", 1), ("diag", 2)])
    assert "d_bias = d_xw_sum[0 * N : 4 * N].to(bias.dtype)" in lines
    assert "d_diag = acc_sums[0 : 3].reshape(-1).to(diag.dtype)" in lines
    # gru: three biases from xw, the fourth (inside the reset product) from ACC; no peepholes
    lines = vector_gradients({"bias": 4}, [(0, 0), (1, 1), (2, 2)], [("bias", 3)])
    assert lines[2:] == ["d_bias = torch.empty_like(bias)", "d_bias[0 * N : 3 * N] = d_xw_sum[0 * N : 3 * N]",
                         "d_bias[3 * N : 4 * N] = acc_sums[0 : 1].reshape(-1)", "d_diag = None"]
    # a peephole block no gather writes: the group starts from zeros
    lines = vector_gradients({"bias": 1, "diag": 3}, [(0, 0)], [("diag", 0), ("diag", 2)])
    assert "d_diag = torch.zeros_like(diag)" in lines
    assert "d_diag[0 * N : 1 * N] = acc_sums[0 : 1].reshape(-1)" in lines
    assert "d_diag[2 * N : 3 * N] = acc_sums[1 : 2].reshape(-1)" in lines
