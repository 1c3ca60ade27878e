"""`cellc bench`: smoke profile, resume, refusing mixed settings, clear data errors, crashes, divergence."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest

from cellc.cli import main
from cellc.errors import CellcError
from cellc.harness.bench import BenchOptions, run_bench
from cellc.harness.profiles import get_profile
from cellc.harness.storage import default_storage_url, open_storage

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA_ROOT / "jsb-chorales").is_dir(), reason="../shared/data missing")


def bench(tmp_path: Path, *args: str, data_dir: Path | str = DATA_ROOT) -> int:
    return main(["bench", "--tasks", "jsb", "--profile", "smoke", "--out", str(tmp_path / "runs"),
                 "--report-dir", str(tmp_path / "reports"), "--data-dir", str(data_dir), *args])


def stored(tmp_path: Path, name: str = "smoke") -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = open_storage(default_storage_url(tmp_path / "runs"))
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
        for s in optuna.get_all_study_summaries(storage)
        if s.study_name.startswith(f"{name}/")
    }


def snapshot(tmp_path: Path) -> dict[str, list[tuple]]:
    return {k: [(t.number, t.state.name, t.params, t.user_attrs) for t in v] for k, v in stored(tmp_path).items()}


def test_smoke_profile_with_two_workers_writes_report(tmp_path):
    assert bench(tmp_path, "--cells", "vanilla,nfg", "--workers", "2") == 0
    studies = stored(tmp_path)
    assert sorted(studies) == ["smoke/jsb/nfg", "smoke/jsb/vanilla"]
    for trials in studies.values():
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
        for t in trials:
            attrs = t.user_attrs
            assert attrs["status"] == "ok" and attrs["epochs"] == len(attrs["valid_curve"]) >= 1
            assert t.value == attrs["best_valid"] == min(attrs["valid_curve"])
            assert attrs["test_at_best"] > 0 and attrs["param_count"] > 0 and attrs["data_source"] == "real"
            assert 8 <= attrs["hyperparams"]["hidden"] <= 16
    study = optuna.load_study(study_name="smoke/jsb/vanilla", storage=open_storage(default_storage_url(tmp_path / "runs")))
    assert study.user_attrs["environment"]["workers"] == 2 and study.user_attrs["data_source"] == "real"
    assert study.user_attrs["settings"]["profile"] == "smoke" and study.user_attrs["task"] == "jsb"
    # the start-up estimate is kept with every study of the run, and the report sets it beside the cost spent
    (estimate,) = study.user_attrs["estimates"]
    assert estimate["trials"] == 4 and estimate["workers"] == 2 and estimate["cpu_hours"] > 0
    report = (tmp_path / "reports" / "smoke.md").read_text()
    assert f"- Start-up estimates recorded by the bench runs (before their trials ran): {estimate['date']}" in report
    assert "- Trial numbers: 4 trial rows in 2 studies, each trial number stored once per study; 0 trial(s)" in report
    assert "| vanilla " in report and "| nfg " in report and "**real**" in report
    assert "cellc bench --tasks jsb --cells vanilla,nfg --profile smoke" in report


def test_rerun_resumes_and_keeps_each_trial_once(tmp_path):
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0", "--trials", "2") == 0
    before = snapshot(tmp_path)["smoke/jsb/vanilla"]
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0", "--trials", "2") == 0
    assert snapshot(tmp_path)["smoke/jsb/vanilla"] == before  # nothing rerun
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0", "--trials", "3") == 0
    after = snapshot(tmp_path)["smoke/jsb/vanilla"]
    assert after[:2] == before and len(after) == 3 and after[2][1] == "COMPLETE"


def test_same_trial_number_draws_same_hyperparameters(tmp_path):
    assert bench(tmp_path / "a", "--cells", "vanilla", "--workers", "0", "--no-report") == 0
    assert bench(tmp_path / "b", "--cells", "vanilla", "--workers", "0", "--no-report") == 0
    params = [[t.params for t in stored(tmp_path / d)["smoke/jsb/vanilla"]] for d in "ab"]
    assert params[0] == params[1] and params[0][0] != params[0][1]


def test_changed_settings_are_refused(tmp_path, capsys):
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0") == 0
    before = snapshot(tmp_path)
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0", "--max-epochs", "3") == 2
    assert "different settings (max_epochs)" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_changed_cell_definition_is_refused(tmp_path, capsys):
    spec = tmp_path / "fb.yaml"
    spec.write_text("name: fb\nextends: vanilla\ninit:\n  b_f: 1\n")
    assert bench(tmp_path, "--cells", str(spec), "--workers", "0", "--trials", "1", "--no-report") == 0
    before = snapshot(tmp_path)
    stored_cell = next(iter(stored(tmp_path)))
    storage = open_storage(default_storage_url(tmp_path / "runs"))
    identity = optuna.load_study(study_name=stored_cell, storage=storage).user_attrs["cell_identity"]
    assert len(identity["hash"]) == 16 and any(line.startswith("f = ") for line in identity["equations_text"])
    data = optuna.load_study(study_name=stored_cell, storage=storage).user_attrs["data_identity"]
    assert data["source"] == "real" and data["sizes"]["train"] > 0 and data["proxy"] is None
    spec.write_text("name: fb\nextends: vanilla\ninit:\n  b_f: 2\n")
    assert bench(tmp_path, "--cells", str(spec), "--workers", "0", "--trials", "2", "--no-report") == 2
    err = capsys.readouterr().err
    assert "another definition of cell" in err and "new --name" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_missing_data_dir_clear_message_study_intact(tmp_path, capsys):
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0") == 0
    before = snapshot(tmp_path)
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0", "--trials", "4",
                 data_dir=tmp_path / "no-such-dir") == 2
    err = capsys.readouterr().err
    assert f"jsb: --data-dir {tmp_path / 'no-such-dir'}: folder not found" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_corrupt_data_file_clear_message_study_intact(tmp_path, capsys):
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0") == 0
    before = snapshot(tmp_path)
    bad = tmp_path / "bad"
    (bad / "jsb-chorales").mkdir(parents=True)
    (bad / "jsb-chorales" / "jsb-chorales-quarter.json").write_text('{"train": [[[60], [61]]], "valid": ')
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0", "--trials", "4", data_dir=bad) == 2
    err = capsys.readouterr().err
    assert "jsb-chorales-quarter.json: corrupt JSON" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_diverging_trials_are_recorded_and_counted(tmp_path):
    args = ["--cells", "vanilla", "--workers", "0", "--space", "lr=1e35:1e35", "--space", "one_minus_momentum=1:1"]
    assert bench(tmp_path, *args) == 0
    trials = stored(tmp_path)["smoke/jsb/vanilla"]
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(t.user_attrs["status"] == "diverged" for t in trials)
    report = (tmp_path / "reports" / "smoke.md").read_text()
    assert "| vanilla | 2        | 2/2 (100 %; 2 div., 0 triv.) " in report


CRASH_MARKER = "CELLC_TEST_CRASH_MARKER"


def crash_once_factory(cell: str, backend: str):
    """Layer factory whose first instantiation (per marker file) kills its worker process."""
    import cellc

    real = cellc.build("vanilla", backend=backend)

    class CrashOnce(real):
        def __init__(self, *args, **kwargs):
            marker = Path(os.environ[CRASH_MARKER])
            if not marker.exists():
                marker.write_text("crashed")
                os._exit(9)
            super().__init__(*args, **kwargs)

    return CrashOnce


def test_crashing_worker_loses_only_its_trial(tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_MARKER, str(tmp_path / "marker"))
    profile = get_profile("smoke").model_copy(update={"trials": 3})
    (tmp_path / "runs").mkdir()
    options = BenchOptions(name="smoke", tasks=["jsb"], cells=["vanilla"], profile=profile, workers=2,
                           storage=default_storage_url(tmp_path / "runs"), data_dir=str(DATA_ROOT),
                           layer_factory="test_harness_bench:crash_once_factory", estimate=False)
    summary = run_bench(options, log=lambda text: None)
    assert summary.complete and summary.failed == 1 and summary.ran == 3
    trials = stored(tmp_path)["smoke/jsb/vanilla"]
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 3 + ["FAIL"]
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert "worker process died (exit code 9)" in failed.user_attrs["error"]


def failing_factory(cell: str, backend: str):
    """Layer factory whose layers cannot be built: every trial fails with the same error."""
    import cellc

    real = cellc.build("vanilla", backend=backend)

    class Broken(real):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("CELLC_TEST_BROKEN layer")

    return Broken


def test_two_processes_sharing_a_new_storage_stop_at_the_target(tmp_path):
    """Two benches started together on one new SQLite file: neither fails creating its tables, no trial
    fails, each trial number is run once, and together they stop exactly at the target (they count and ask
    under the study's claim lock)."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "cellc.cli", "bench", "--tasks", "jsb", "--cells", "vanilla,nfg", "--profile",
               "smoke", "--trials", "3", "--workers", "0", "--out", str(tmp_path / "runs"), "--no-report",
               "--data-dir", str(DATA_ROOT)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    for name, trials in stored(tmp_path).items():
        states = [t.state.name for t in trials]
        assert states == ["COMPLETE"] * 3, (name, states)
        assert sorted(t.number for t in trials) == list(range(len(trials)))


def test_failing_trials_stop_the_bench_after_max_failures_keeping_what_finished(tmp_path, capsys):
    assert bench(tmp_path, "--cells", "vanilla", "--workers", "0", "--trials", "1", "--no-report") == 0
    before = snapshot(tmp_path)["smoke/jsb/vanilla"]
    profile = get_profile("smoke").model_copy(update={"trials": 20})
    options = BenchOptions(name="smoke", tasks=["jsb"], cells=["vanilla"], profile=profile, workers=0,
                           storage=default_storage_url(tmp_path / "runs"), data_dir=str(DATA_ROOT),
                           layer_factory="test_harness_bench:failing_factory", estimate=False)
    with pytest.raises(CellcError, match="5 trials failed in a row .*CELLC_TEST_BROKEN layer.*Finished trials are stored"):
        run_bench(options, log=lambda text: None)
    trials = stored(tmp_path)["smoke/jsb/vanilla"]
    assert [(t.number, t.state.name, t.params, t.user_attrs) for t in trials[:1]] == before  # untouched
    assert [t.state.name for t in trials[1:]] == ["FAIL"] * 5
    assert all("CELLC_TEST_BROKEN layer" in t.user_attrs["error"] for t in trials[1:])


@pytest.mark.parametrize("args, expected", [
    (["--space", "lr=0:1e-2"], "LOW must be positive"),
    (["--space", "hidden=50"], "expected LOW:HIGH"),
    (["--space", "depth=1:2"], "KEY in hidden"),
    (["--space", "hidden=1.5:3"], "--space hidden: LOW and HIGH must be whole numbers"),
    (["--space", "lr=nan:1"], "--space lr: LOW and HIGH must be finite numbers"),
    (["--trials", "0"], "--trials must be at least 1"),
    (["--tasks", "nope"], "unknown task 'nope'"),
    (["--profile", "huge"], "unknown profile 'huge'"),
    (["--init-std", "-1"], "--init-std: Input should be greater than 0 (got -1.0)"),
    (["--name", ".."], "--name '..': a bench name is"),
    (["--name", "a/b"], "--name 'a/b': a bench name is"),
])
def test_bad_bench_settings_are_one_line_errors(tmp_path, capsys, args, expected):
    assert main(["bench", "--out", str(tmp_path / "runs"), "--no-report", "--data-dir", str(DATA_ROOT),
                 "--profile", "smoke", "--cells", "vanilla", *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "studies.db").exists()


def test_task_sizes_profile_and_command_line_wins(tmp_path, monkeypatch):
    from cellc.tasks.jsb import JSBChorales

    monkeypatch.setattr(JSBChorales, "profile_overrides", {"smoke": {"max_epochs": 1, "patience": 1}})
    assert bench(tmp_path / "a", "--cells", "vanilla", "--workers", "0", "--no-report") == 0
    assert [t.user_attrs["epochs"] for t in stored(tmp_path / "a")["smoke/jsb/vanilla"]] == [1, 1]
    assert bench(tmp_path / "b", "--cells", "vanilla", "--workers", "0", "--no-report", "--max-epochs", "3",
                 "--patience", "3") == 0
    assert [t.user_attrs["epochs"] for t in stored(tmp_path / "b")["smoke/jsb/vanilla"]] == [3, 3]


def test_output_dir_that_cannot_be_created_is_one_message(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(["bench", "--out", str(tmp_path / "file" / "runs"), "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "cannot create the output directory" in err and "Traceback" not in err


def test_reproducing_command_names_data_dir_and_out_never_the_storage_url():
    import argparse

    from cellc.commands.harness import reproducing_command

    def args(**given):
        base = dict(profile="smoke", trials=None, max_epochs=None, patience=None, warmup=None, train_subset=None,
                    batch_size=None, space=[], init_std=0.1, seed=0, backend="auto", device="cpu", amp=None,
                    data_dir=None, out="runs",
                    storage=None)
        return argparse.Namespace(**{**base, **given})

    plain = reproducing_command(args(), ["jsb"], ["vanilla"], "smoke")
    assert "--data-dir" not in plain and "--out" not in plain
    local = reproducing_command(args(data_dir="/d a", out="elsewhere"), ["jsb"], ["vanilla"], "smoke")
    assert local.endswith("--data-dir '/d a' --out elsewhere")
    remote = reproducing_command(args(storage="postgresql://u:secret@h/db", out="x"), ["jsb"], ["vanilla"], "smoke")
    assert "secret" not in remote and remote.endswith("--storage <URL>") and "--out" not in remote


def test_inline_trials_record_heartbeats_while_training(monkeypatch):
    import time

    from cellc.harness.workers import Event, InlinePool, Job

    beats = []
    pool = InlinePool(lambda: beats.append(time.monotonic()), interval=0.05)

    def slow_run(job, send):
        time.sleep(0.4)
        return Event("done", job.job_id, {})

    monkeypatch.setattr(pool._runner, "run", slow_run)
    pool.submit(0, Job(job_id=7, task="jsb", data_dir=None, cell="vanilla", backend="auto", config={}))
    events = pool.events(timeout=0.5)
    assert [e.job_id for e in events] == [7]
    assert len(beats) >= 3  # beats kept coming while the trial ran
    count = len(beats)
    time.sleep(0.15)
    assert len(beats) == count  # and stopped with it


def test_trials_of_a_dead_machine_are_taken_over_during_the_run(tmp_path, monkeypatch):
    from cellc.harness import storage as store
    from cellc.harness.profiles import SearchSpace
    from cellc.harness.record import StudySettings
    from cellc.harness.search import SeededRandomSampler, distributions

    monkeypatch.setattr(store, "HEARTBEAT_S", 1)
    monkeypatch.setattr(store, "GRACE_S", 3)
    url = default_storage_url(tmp_path)
    storage = open_storage(url)
    smoke = get_profile("smoke")
    settings = StudySettings(profile="smoke", trials=2, max_epochs=smoke.max_epochs, patience=smoke.patience,
                             warmup=smoke.warmup, train_subset=smoke.train_subset, batch_size=1, init_std=0.1,
                             backend="auto", space=smoke.space, seed=0)
    study = store.open_study(storage, "smoke", "jsb", "vanilla", settings, {"bench": "smoke"},
                             SeededRandomSampler(0), "minimize")
    remote = study.ask(distributions(smoke.space))
    remote.set_user_attr("owner", "machine-that-died:42:7")
    storage.record_heartbeat(remote._trial_id)  # alive at the start: not failed up front
    options = BenchOptions(name="smoke", tasks=["jsb"], cells=["vanilla"], profile=smoke, workers=0,
                           storage=url, data_dir=str(DATA_ROOT))
    summary = run_bench(options, log=lambda text: None)
    assert summary.complete and summary.ran == 2 and summary.recovered == 1
    states = [(t.state.name, t.user_attrs.get("status")) for t in study.get_trials()]
    assert states == [("FAIL", "interrupted"), ("COMPLETE", "ok"), ("COMPLETE", "ok")]
