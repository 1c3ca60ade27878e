"""Warps tuning: the generated modules' knob, and the tuning report (timing needs a GPU)."""

from __future__ import annotations

import pytest
import torch

from cellc.speed import tune
from cellc.speed.kernel_resources import generated_module


def test_warps_knob_overrides_the_rule_and_rejects_other_values(monkeypatch):
    module = generated_module("vanilla")
    monkeypatch.delenv("CELLC_TRITON_WARPS", raising=False)
    assert module._persistent_config(64, "tf32", torch.float32)["num_warps"] == 4
    # the forward holds the next step's inputs too: 8 warps at 64 units
    assert module._persistent_config(64, "tf32", torch.float32, forward=True)["num_warps"] == 8
    assert tune.rule_warps("vanilla", "persistent", 64, "float32", torch) == (8, 4)
    assert tune.rule_warps("vanilla", "persistent", 32, "float32", torch) == (4, 4)
    assert module._tiled_config(256, "tf32")["num_warps"] == 8
    with tune.warps(8):
        assert module._persistent_config(64, "tf32", torch.float32)["num_warps"] == 8
        assert module._tiled_config(64, "tf32")["num_warps"] == 8
    assert module._tiled_config(64, "tf32")["num_warps"] == 4  # restored
    monkeypatch.setenv("CELLC_TRITON_WARPS", "3")
    with pytest.raises(ValueError, match="CELLC_TRITON_WARPS"):
        module._persistent_config(64, "tf32", torch.float32)


def test_points_where_the_kernels_apply():
    assert tune.applies("vanilla", "persistent", 64, "float32", torch)
    assert not tune.applies("vanilla", "persistent", 128, "float32", torch)  # R does not fit on chip
    assert tune.applies("gru", "tiled", 256, "float32", torch)
    assert not tune.applies("mgu", "tiled", 64, "float32", torch)  # a current-step product: no tiled kernels


def test_unknown_cell_is_one_message(capsys):
    assert tune.main(["--cells", "vanilla,lstmx"]) == 2
    assert "unknown cell(s) lstmx" in capsys.readouterr().err


def test_report_names_the_best_choice_against_the_rule():
    rows = [tune.Tuned("vanilla", "persistent", 32, "float32", rule=(4, 4), ms={4: 6.0, 8: 3.0}),
            tune.Tuned("gru", "tiled", 128, "bfloat16", rule=(4, 4), ms={4: 2.0}, note="time cap"),
            tune.Tuned("vanilla", "persistent", 64, "float32", rule=(8, 4), ms={4: 6.0, 8: 5.0, "rule": 4.0})]
    facts = {"device": "a GPU", "when": "now", "torch": "2", "triton": "3"}
    text = tune.render(rows, facts, "python -m cellc.speed.tune", 12.0)
    lines = [line for line in text.splitlines() if line.startswith("| vanilla") or line.startswith("| gru")]
    assert "| 8 " in lines[0] and "2.00x" in lines[0]
    assert "1.00x" in lines[1] and "time cap" in lines[1]
    # a rule that mixes warps is timed on its own, and can be the best choice
    assert "8 fwd, 4 bwd" in lines[2] and "| 4.00 " in lines[2] and "1.00x" in lines[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cpu_only_machine_gets_one_message(tmp_path, capsys):
    assert tune.main(["--out", str(tmp_path / "t.md")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "t.md").exists()


def test_time_choice_sets_the_knob_while_it_builds_and_runs(monkeypatch):
    """time_choice on CPU (the compiled loops stand in for the kernels, a clock for CUDA events): the warps
    and mode it times are in the environment while the layer is built and run, and gone after."""
    import os

    import cpu_torch

    seen = []

    def make(cell, backend, h, dtype, torch_):
        seen.append((os.environ.get("CELLC_TRITON_WARPS"), os.environ.get("CELLC_TRITON_MODE")))
        return cpu_torch.make(cell, backend, h, dtype)

    monkeypatch.setattr(tune, "make", make)
    monkeypatch.setattr(tune, "cuda_ms", cpu_torch.cuda_ms)
    monkeypatch.setattr(tune, "T", 5)
    monkeypatch.delenv("CELLC_TRITON_WARPS", raising=False)
    ms = tune.time_choice("gru", "persistent", 8, "float32", 8, 1, cpu_torch.CpuTorch())
    assert ms > 0 and seen == [("8", "persistent")] and "CELLC_TRITON_WARPS" not in os.environ
    # the rule's own choice: the knob unset while it runs, even where the caller had set it
    monkeypatch.setenv("CELLC_TRITON_WARPS", "4")
    seen.clear()
    tune.time_choice("gru", "persistent", 8, "float32", None, 1, cpu_torch.CpuTorch())
    assert seen == [(None, "persistent")] and os.environ["CELLC_TRITON_WARPS"] == "4"
