"""`cellc speed` argument checks: a bad count is one message and exit 2, before anything is timed."""

from __future__ import annotations

import pytest

from cellc.cli import main


@pytest.fixture
def nothing_runs(monkeypatch):
    """Building, timing or the GPU benchmark fail the test: arguments must be refused before any of them."""
    from cellc.speed import gpu, measure

    def never(*args, **kwargs):
        raise AssertionError("nothing may be built or timed before the arguments are checked")

    for module, name in ((measure, "make_layer"), (measure, "measure"), (gpu, "main")):
        monkeypatch.setattr(module, name, never)


@pytest.mark.parametrize("argv, fragment", [
    (["--threads", "0"], "--threads"),
    (["--threads", "1", "-2"], "--threads"),
    (["--sizes", "0,10,4,4"], "--sizes"),
    (["--sizes", "2,10,4,4", "2,-1,4,4"], "--sizes"),
    (["--sizes", "2,10,4,0"], "--sizes"),
    (["--sizes", "2,10,4"], "--sizes"),
    (["--jsb-hidden", "0"], "--jsb-hidden"),
    (["--jsb-hidden", "-5"], "--jsb-hidden"),
    (["--jsb-sequences", "-1"], "--jsb-sequences"),
    (["--repeat", "0"], "--repeat"),
    (["--repeat", "-3"], "--repeat"),
])
def test_bad_counts_are_usage_errors(tmp_path, nothing_runs, capsys, argv, fragment):
    out = tmp_path / "speed.md"
    assert main(["speed", "--backends", "eager", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--data-dir", "/nonexistent-cellc-data"], "jsb: --data-dir /nonexistent-cellc-data: folder not found"),
    (["--jsb-sequences", "0", "--out", "{tmp}/file/speed.md"], "cannot create"),
    (["--jsb-sequences", "0", "--out", "{tmp}"], "is a folder"),
])
def test_missing_data_and_unwritable_output_are_found_before_timing(tmp_path, nothing_runs, capsys, argv, fragment):
    (tmp_path / "file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["speed", "--backends", "eager", *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_speed_runs_and_writes_its_report(tmp_path, capfd):
    out = tmp_path / "speed.md"
    assert main(["speed", "--cells", "vanilla", "gru", "--backends", "eager", "compiled", "--sizes", "1,3,2,4",
                 "--repeat", "1", "--threads", "1", "--jsb-sequences", "2", "--jsb-hidden", "4", "--out", str(out)]) == 0
    report = out.read_text()
    assert out.with_suffix(".png").is_file()
    for cell, backend in [("vanilla", "eager"), ("vanilla", "compiled"), ("gru", "eager"), ("gru", "compiled")]:
        assert any(f"| {cell} " in line and f"| {backend} " in line for line in report.splitlines()), (cell, backend)
    assert "cellc speed --cells vanilla gru" in report
    assert "USDT" not in capfd.readouterr().err  # the profiler's native log lines are kept out of the terminal


def test_cell_targets_scale_by_parameter_count():
    """fgr may take its parameter ratio (2.94x at M=39, H=256) times 1.2 of vanilla's time, no more."""
    from cellc.speed.measure import Timing
    from cellc.speed.report import cell_targets, parameter_count

    size = (16, 300, 39, 256)
    ratio = parameter_count("fgr", 39, 256) / parameter_count("vanilla", 39, 256)
    assert 2.9 < ratio < 3.0
    timings = [Timing("vanilla", "compiled", size, 1, 1.0, 100.0),
               Timing("vanilla", "eager", size, 1, 1.0, 900.0),
               Timing("fgr", "compiled", size, 1, 1.0, 100.0 * ratio * 1.19),
               Timing("cifg", "compiled", size, 1, 1.0, 100.0 * 1.3)]
    rows = {line.split("|")[2].strip(): line for line in cell_targets(timings).splitlines()[2:]}
    assert rows["fgr"].rstrip(" |").endswith("met") and "NOT" not in rows["fgr"]
    assert "1.19" in rows["fgr"]
    assert "NOT met" in rows["cifg"]  # cifg has fewer parameters than vanilla, and took longer


def test_memory_targets_compare_with_eager():
    from cellc.speed.measure import Timing
    from cellc.speed.report import memory_targets

    size = (32, 100, 39, 128)
    timings = [Timing("vanilla", "eager", size, 1, 1.0, 9.0, 19.0), Timing("vanilla", "compiled", size, 1, 1.0, 2.0, 14.2),
               Timing("gru", "eager", size, 1, 1.0, 9.0, 15.8), Timing("gru", "fused", size, 1, 1.0, 2.0, 17.2)]
    lines = memory_targets(timings).splitlines()[2:]
    assert len(lines) == 2
    assert "vanilla" in lines[0] and "0.75x" in lines[0] and lines[0].rstrip(" |").endswith("met") and "NOT" not in lines[0]
    assert "gru" in lines[1] and "NOT met" in lines[1]


@pytest.mark.parametrize("argv, fragment", [
    (["--device", "cuda", "--threads", "1"], "--threads applies to the CPU timings only"),
    (["--device", "cuda", "--sizes", "1,2,3,4"], "--sizes applies to the CPU timings only"),
    (["--device", "cuda", "--jsb-sequences", "0"], "--jsb-sequences applies to the CPU timings only"),
    (["--device", "cuda", "--max-seconds", "0"], "--max-seconds must be more than 0"),
    (["--device", "cuda", "--repeat", "0"], "--repeat"),
    (["--device", "cuda", "--out", "{tmp}"], "is a folder"),
    (["--max-seconds", "60"], "--max-seconds applies to the GPU benchmark only"),
])
def test_options_of_the_other_device_are_refused(tmp_path, nothing_runs, capsys, argv, fragment):
    assert main(["speed", *[a.replace("{tmp}", str(tmp_path)) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_device_cuda_runs_the_gpu_benchmark_with_the_shared_options(tmp_path, monkeypatch):
    from cellc.speed import gpu

    calls = []
    monkeypatch.setattr(gpu, "main", lambda argv, command=None: calls.append((argv, command)) or 0)
    out = tmp_path / "gpu.md"
    assert main(["speed", "--device", "cuda", "--cells", "np", "gru", "--repeat", "3", "--max-seconds", "90",
                 "--out", str(out)]) == 0
    assert calls == [(["--out", str(out), "--repeat", "3", "--cells", "np,gru", "--max-seconds", "90.0"],
                      f"cellc speed --device cuda --cells np gru --repeat 3 --max-seconds 90 --out {out}")]
    calls.clear()
    assert main(["speed", "--device", "cuda"]) == 0
    assert calls[0][0] == ["--out", "reports/speed-gpu.md", "--repeat", "5"]  # the GPU benchmark's own defaults


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_message(capsys):
    assert main(["speed", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "Traceback" not in err
