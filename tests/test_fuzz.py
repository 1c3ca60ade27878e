"""Differential fuzzing in the suite: bounded, seeded samples of what `python -m cellc.fuzz.backends` and
`python -m cellc.fuzz.frontend` run at scale (benchmarks/fuzz_backends.py, benchmarks/fuzz_frontend.py),
and the fuzzers' own machinery: a planted wrong backend is caught, a crashing worker costs one case."""

from __future__ import annotations

import textwrap

import pytest

import cellc
from cellc.fuzz import backends, frontend
from cellc.fuzz.cells import random_cell
from cellc.fuzz.driver import run_in_workers
from cellc.ir import autodiff as ad
from cellc.ir import nodes as ir
from cellc.ir.pipeline import compile_spec

# Seeds away from the acceptance runs' 0..9,999, so that the suite looks at other cells.
SEED = 20_000


def quiet(_line: str) -> None:
    pass


def assert_all_ok(summary: dict, count: int) -> None:
    assert summary["cells"] == count
    assert set(summary["statuses"]) <= {"ok"}, summary


def test_random_cells_are_valid_deterministic_and_stress_the_names(tmp_path):
    names, direct, norms, projected = set(), 0, 0, 0
    for seed in range(SEED, SEED + 60):
        cell = random_cell(seed)
        assert cell.text == random_cell(seed).text
        path = tmp_path / f"{cell.name}.yaml"
        path.write_text(cell.text)
        compiled = compile_spec(path)  # every drawn cell is valid
        names |= set(compiled.cell.values)
        direct += compiled.direct_input is not None
        norms += any(isinstance(n, ir.Norm) for eq in compiled.cell.equations for n in ir.walk(eq.expr))
        projected += compiled.sizes.declared
    assert 2 <= projected <= 25  # some have an output of proj_size units (about one in seven), most do not
    assert 3 <= direct <= 25  # some cells read their input elementwise (about one in five), most do not
    assert 2 <= norms <= 25  # some normalise over the units (about one in eight), most do not
    # names that are prefixes / suffixes of each other, single letters, names ending in digits
    assert any(a != b and (b.startswith(a) or b.endswith(a)) for a in names for b in names)
    assert any(len(n) == 1 for n in names) and any(n[-1].isdigit() for n in names)


@pytest.mark.slow
def test_random_cells_match_eager_on_fused_and_lowered():
    assert_all_ok(backends.run(list(range(SEED, SEED + 150)), ("fused", "lowered"), chunk=75, report=quiet,
                               progress=False), 150)


def _seeds_where(count: int, tmp_path, holds) -> list[int]:
    """The first ``count`` seeds from SEED whose compiled cells satisfy ``holds``."""
    seeds = []
    for seed in range(SEED, SEED + 500):
        cell = random_cell(seed)
        path = tmp_path / f"{cell.name}.yaml"
        path.write_text(cell.text)
        if holds(compile_spec(path)):
            seeds.append(seed)
            if len(seeds) == count:
                return seeds
    raise AssertionError("too few cells of the kind asked for")  # pragma: no cover


def _elementwise_input_seeds(count: int, tmp_path) -> list[int]:
    return _seeds_where(count, tmp_path, lambda compiled: compiled.direct_input is not None)


@pytest.mark.slow
def test_random_cells_reading_their_input_elementwise_match_eager_everywhere(tmp_path):
    """Input size = hidden size for these (cellc.testing.input_size); the triton backend under the interpreter."""
    pytest.importorskip("triton")
    seeds = _elementwise_input_seeds(4, tmp_path)
    assert_all_ok(backends.run(seeds, ("fused", "compiled"), chunk=4, report=quiet, progress=False), 4)
    assert_all_ok(backends.run(seeds[:2], ("triton",), chunk=2, report=quiet, progress=False), 2)


@pytest.mark.slow
def test_random_cells_with_normalisations_match_eager_everywhere(tmp_path):
    """The C++ loops' reduction passes and the Triton kernels' whole-row means, under the interpreter."""
    pytest.importorskip("triton")
    seeds = _seeds_where(4, tmp_path, lambda compiled: ad.step_program(compiled).row_means)
    assert_all_ok(backends.run(seeds, ("fused", "compiled"), chunk=4, report=quiet, progress=False), 4)
    assert_all_ok(backends.run(seeds[:2], ("triton",), chunk=2, report=quiet, progress=False), 2)


@pytest.mark.slow
def test_random_cells_with_a_projected_output_match_eager(tmp_path):
    """Outputs of proj_size units that the previous-step products read (as torch.nn.LSTM(proj_size)'s gates read
    h): the fused and compiled loops; the triton backend refuses them (n/a), which is not a failure."""
    seeds = _seeds_where(4, tmp_path, lambda compiled: compiled.sizes.declared)
    assert_all_ok(backends.run(seeds, ("fused", "compiled"), chunk=4, report=quiet, progress=False), 4)
    summary = backends.run(seeds[:1], ("triton",), chunk=1, report=quiet, progress=False)
    assert summary["per_backend"]["triton"] == {"n/a": 1}


@pytest.mark.slow
def test_random_cells_match_eager_in_the_compiled_loops():
    # one C++ build for the chunk's cells (cellc.fuzz.backends.prebuild_compiled)
    assert_all_ok(backends.run(list(range(SEED, SEED + 12)), ("compiled",), chunk=12, report=quiet,
                               progress=False), 12)


@pytest.mark.slow
def test_random_cells_match_eager_in_the_triton_kernels():
    pytest.importorskip("triton")
    summary = backends.run(list(range(SEED, SEED + 6)), ("triton",), chunk=6, report=quiet, progress=False)
    assert_all_ok(summary, 6)


@pytest.mark.slow
def test_hostile_front_end_inputs_get_one_short_printable_message():
    summary = frontend.run(list(range(SEED, SEED + 3000)), report=quiet, progress=False)
    assert summary["inputs"] == 3000
    assert set(summary["statuses"]) <= {"ok", "refused"}, summary
    assert summary["statuses"].get("refused", 0) > 1000  # most hostile inputs are refused, with a message


def test_a_planted_wrong_backend_is_caught(tmp_path, monkeypatch):
    """The comparison is not vacuous: one output entry off by 1e-6 relative is a mismatch."""
    path = tmp_path / "plain.yaml"
    path.write_text("name: plain\nequations: |\n  y = tanh(W_y x + R_y y[-1] + b_y)\n")
    build = cellc.build

    def planted(spec, backend="auto"):
        cls = build(spec, backend=backend)
        if backend != "fused":
            return cls

        class Off(cls):
            def forward(self, *args, **kwargs):
                out, state = super().forward(*args, **kwargs)
                return out * (1 + 1e-6), state

        Off.__module__ = cls.__module__
        return Off

    monkeypatch.setattr(cellc, "build", planted)
    result = backends.check_spec(path, ("fused",))
    assert result["status"] == "mismatch" and result["backends"]["fused"]["error"] > 100, result  # 1e-6 against 1e-9


def test_a_crashing_worker_costs_only_its_case_and_a_full_pipe_blocks_nothing(tmp_path, monkeypatch):
    """The driver's protocol (START, then one JSON row) with a worker that dies by SIGSEGV on seed 3 and
    prints 200 KB on seed 5 (more than a pipe holds)."""
    (tmp_path / "fake_fuzz_worker.py").write_text(textwrap.dedent("""\
        import json, os, signal, sys
        seeds = [int(s) for s in sys.argv[sys.argv.index("--seeds") + 1].split(",")]
        for seed in seeds:
            print("START", seed, flush=True)
            if seed == 3:
                os.kill(os.getpid(), signal.SIGSEGV)
            if seed == 5:
                print("#" * 200_000, flush=True)
            print(json.dumps({"seed": seed, "status": "ok"}), flush=True)
        """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    rows, _ = run_in_workers("fake_fuzz_worker", list(range(8)), [], jobs=2, chunk=4, progress=False)
    assert [r["seed"] for r in rows] == list(range(8))
    assert [r["status"] for r in rows] == ["ok"] * 3 + ["crash"] + ["ok"] * 4
    assert "worker exit -11" in rows[3]["message"]


def test_the_fuzzers_refuse_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_:
        backends.main(["--backends", "fused,warp"])
    assert exit_.value.code == 2 and "unknown warp" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        frontend.main(["--inputs", "0"])
    assert exit_.value.code == 2 and "--inputs, --jobs and --chunk take positive numbers" in capsys.readouterr().err
