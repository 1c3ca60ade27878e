"""The GPU benchmark fails with one clear message on a machine without CUDA; its report logic."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from cellc.speed import gpu, gpu_report


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cpu_only_machine_gets_one_message(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"
    done = subprocess.run([str(script), "--out", str(tmp_path / "r.md")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.md").exists()


def test_targets_are_evaluated_from_rows():
    run = gpu_report.Run()
    size = (16, 1000, 128)
    run.rows = [gpu_report.Row("vanilla", "torch", size, "float32", 1.0, 10.0),
                gpu_report.Row("vanilla", "triton-persistent", size, "float32", 1.0, 8.0),
                gpu_report.Row("vanilla", "eager", size, "float32", 30.0, 100.0),
                gpu_report.Row("np", "torch", size, "float32", 1.0, 10.0),
                gpu_report.Row("np", "lowered", size, "float32", 1.0, 10.5)]
    table = gpu_report.targets_table(run)
    assert "0.80x" in table  # persistent vs cuDNN, met
    assert "1.050x" in table and "NOT met" in table  # lowered 5 % slower than cuDNN
    assert "12.5x faster" in table  # eager / best fast backend


def test_lowered_target_uses_the_paired_ratio_where_measured():
    size = (16, 100, 256)
    run = gpu_report.Run()
    run.rows = [gpu_report.Row("np", "torch", size, "float32", 1.0, 10.0),
                gpu_report.Row("np", "lowered", size, "float32", 1.0, 11.0, paired=(1.01, 0.99, 1.03))]
    row = next(r for r in gpu_report.target_rows(run) if r[0] == "lowered within 2 %")
    assert row[-1] == "met" and "paired" in row[7]  # 11.0 / 10.0 alone would have failed it
    run.rows[1].paired = None
    row = next(r for r in gpu_report.target_rows(run) if r[0] == "lowered within 2 %")
    assert row[-1] == "NOT met"


def test_report_rewritten_from_saved_measurements(tmp_path):
    run = gpu_report.Run(rows=[gpu_report.Row("gru", "torch", (16, 100, 128), "bfloat16", 1.0, 4.0),
                        gpu_report.Row("gru", "lowered", (16, 100, 128), "bfloat16", 1.0, 4.1, 0.2, (1.0, 0.98, 1.02))])
    facts = {"device": "TEST GPU", "when": "now", "torch": "t", "cudnn": 1, "triton": "x", "host": "h",
             "persistent_max": {"gru": [64, 128]}}
    gpu_report.save_json(run, tmp_path / "r.json", facts, 12.0, "cmd")
    assert gpu.main(["--from-json", str(tmp_path / "r.json"), "--out", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "TEST GPU" in text and "1.000x paired" in text and "| gru    |        64 |        128 |" in text


def test_tiled_rows_where_the_cell_has_tiled_kernels_and_h_is_small():
    # beyond H=256 the per-step kernels with cuBLAS are the better bet: no tiled rows there
    assert gpu.applies("vanilla", "triton-tiled", 256) and not gpu.applies("vanilla", "triton-tiled", 768)
    # mgu's R (f * y[-1]) is a current-step product: no tiled kernels, so no tiled rows
    assert not gpu.applies("mgu", "triton-tiled", 64)


def test_correctness_checks_reach_what_only_bf16_runs():
    """The persistent kernel where only its bf16 build fits (fgr at H=64, every cell at H=128) is checked
    in bf16 alone; everything else in float32 too at H 64 and 256."""
    vanilla = {(h, label): fp32 for h, (label, _, _), fp32 in gpu.check_points("vanilla")}
    fgr = {(h, label): fp32 for h, (label, _, _), fp32 in gpu.check_points("fgr")}
    assert vanilla[(64, "triton-persistent")] and vanilla[(128, "triton-persistent")] is False
    assert (256, "triton-persistent") not in vanilla and (128, "triton-step") not in vanilla
    assert vanilla[(256, "triton-step")] and fgr[(64, "triton-persistent")] is False


def test_correctness_phase_runs_end_to_end_on_cpu(monkeypatch):
    """The correctness phase itself (first run on a GPU otherwise), on CPU: CUDA placements dropped, two
    backends, one checked in float32 and bf16, one where only its bf16 build applies."""
    from cpu_torch import CpuTorch, make

    monkeypatch.setattr(gpu, "make", make)
    monkeypatch.setattr(gpu, "BACKENDS", (("eager", "eager", None), ("fused", "fused", None), ("lowered", "lowered", None)))
    # fused in float32 at every H; lowered as if only its bf16 build applied (as the persistent kernel at H=128)
    monkeypatch.setattr(gpu, "applies", lambda cell, label, h, dtype="float32": label == "fused" or dtype == "bfloat16")
    run = gpu_report.Run()
    gpu.check_correctness(run, CpuTorch(), cells=("np",))
    assert not run.failures, run.failures
    rows = {(r[1], r[2]): r for r in run.checks}
    assert set(rows) == {("fused", 64), ("fused", 256), ("lowered", 64), ("lowered", 128), ("lowered", 256)}
    assert rows[("fused", 64)][-1] == "ok" and float(rows[("fused", 64)][3]) < 1e-4
    assert rows[("lowered", 128)][3:5] == ["", ""] and rows[("lowered", 128)][-1] == "ok"
    assert rows[("lowered", 128)][6] == "as they are"  # CPU torch never copies (no cuDNN)


def test_timing_phase_runs_end_to_end_on_cpu(monkeypatch):
    """The timing phase (time_all, time_one, the paired ratio for lowered rows) on CPU, a clock for CUDA
    events: a row per backend and dtype, the lowered ones with their paired ratio to torch's module."""
    import time
    import types

    from cpu_torch import CpuTorch, cuda_ms, make

    monkeypatch.setattr(gpu, "make", make)
    monkeypatch.setattr(gpu, "cuda_ms", cuda_ms)
    monkeypatch.setattr(gpu, "BACKENDS", (("eager", "eager", None), ("fused", "fused", None), ("lowered", "lowered", None)))
    run = gpu_report.Run()
    gpu.time_all(run, types.SimpleNamespace(repeat=2), CpuTorch(), time.monotonic() + 600, cells=("np",),
                 sizes=((2, 5, 8),))
    assert not run.failures, run.failures
    rows = {(r.backend, r.dtype): r for r in run.rows}
    assert {"torch", "lowered"} <= {backend for backend, _ in rows}
    for dtype in ("float32", "bfloat16"):
        lowered = rows[("lowered", dtype)]
        assert lowered.train_ms > 0 and lowered.fwd_ms > 0 and len(lowered.paired) == 3
        assert lowered.paired[1] <= lowered.paired[0] <= lowered.paired[2]  # median between the quartiles
