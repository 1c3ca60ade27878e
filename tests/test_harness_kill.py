"""Really kill `cellc bench` mid-study (SIGKILL and SIGTERM), rerun it, and check nothing is lost or doubled."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from bench_db import finished_count

from cellc.harness.storage import default_storage_url, open_storage

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGET = 4
CELLS = ("vanilla", "nfg")


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "cellc.cli", "bench", "--tasks", "jsb", "--cells", ",".join(CELLS),
            "--profile", "smoke", "--trials", str(TARGET), "--max-epochs", "3", "--train-subset", "30",
            "--workers", "2", "--out", str(out), "--no-report", "--data-dir", str(DATA_ROOT)]


def trials_by_study(out: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = open_storage(default_storage_url(out))
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
            for s in optuna.get_all_study_summaries(storage)}


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_ROOT / "jsb-chorales").is_dir(), reason="../shared/data missing")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_bench_resumes_keeping_each_finished_trial_once(tmp_path, sig):
    out = tmp_path / "runs"
    proc = subprocess.Popen(command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while finished_count(out / "studies.db") < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "bench made no progress"
        time.sleep(0.1)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0  # really interrupted, not finished
    time.sleep(1.5)  # orphaned workers notice their coordinator is gone and exit

    before = {name: {t.number: (t.state.name, t.params, t.user_attrs) for t in trials
                     if t.state.name in ("COMPLETE", "PRUNED")}
              for name, trials in trials_by_study(out).items()}
    assert 2 <= sum(len(v) for v in before.values()) < TARGET * len(CELLS)
    running = [t for ts in trials_by_study(out).values() for t in ts if t.state.name == "RUNNING"]
    if sig == signal.SIGTERM:  # the coordinator had time to mark its in-flight trials itself
        assert running == []
    failed_before = sum(1 for ts in trials_by_study(out).values() for t in ts if t.state.name == "FAIL")

    rerun = subprocess.run(command(out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr

    after = trials_by_study(out)
    # Trials a SIGKILL left RUNNING are now FAIL ("interrupted"); no new failures otherwise.
    failed_after = sum(1 for ts in after.values() for t in ts if t.state.name == "FAIL")
    assert failed_after == failed_before + len(running)
    assert sorted(after) == [f"smoke/jsb/{cell}" for cell in sorted(CELLS)]
    for name, trials in after.items():
        finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(finished) == TARGET  # target met, nothing doubled
        assert len({t.number for t in trials}) == len(trials)
        assert not [t for t in trials if t.state.name == "RUNNING"]
        for t in trials:
            if t.state.name == "FAIL":
                assert t.user_attrs["status"] == "interrupted"
        # Every trial finished before the kill is still there, unchanged, exactly once.
        now = {t.number: (t.state.name, t.params, t.user_attrs) for t in finished}
        for number, record in before[name].items():
            assert now[number] == record
