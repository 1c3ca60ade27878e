"""The GPU benchmark fails with one clear message on a machine without CUDA; its report logic."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from cellc.speed import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cpu_only_machine_gets_one_message(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"
    done = subprocess.run([str(script), "--out", str(tmp_path / "r.md")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.md").exists()


def test_targets_are_evaluated_from_rows():
    run = gpu.Run()
    size = (16, 1000, 128)
    run.rows = [gpu.Row("vanilla", "torch", size, "float32", 1.0, 10.0),
                gpu.Row("vanilla", "triton-persistent", size, "float32", 1.0, 8.0),
                gpu.Row("vanilla", "eager", size, "float32", 30.0, 100.0),
                gpu.Row("np", "torch", size, "float32", 1.0, 10.0),
                gpu.Row("np", "lowered", size, "float32", 1.0, 10.5)]
    table = gpu.targets_table(run)
    assert "0.80x" in table  # persistent vs cuDNN, met
    assert "1.050x" in table and "NOT met" in table  # lowered 5 % slower than cuDNN
    assert "12.5x faster" in table  # eager / best fast backend
