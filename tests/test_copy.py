"""`cellc copy`: SQLite -> PostgreSQL -> SQLite gives byte-identical reports; merging benches that ran the same
plan keeps each trial number once, completes failed trials, and refuses conflicting results."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pgserver import PASSWORD, pg_server, pg_url  # noqa: F401 - fixtures
from planted_bench import BENCH, plant_bench

from cellc.cli import main
from cellc.commands.report import write_report
from cellc.errors import UsageError
from cellc.harness.storage import open_storage
from cellc.harness.transfer import RUNNING_WHEN_COPIED, copy_benches

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage")]
TRIALS = 10  # per study, plus one failed trial that plant_bench adds last


def snapshot(url: str) -> dict[str, list[tuple]]:
    storage = open_storage(url, must_exist=True)
    return {s.study_name: [(t.number, t.state.name, t.values, t.params, t.user_attrs, t.datetime_start)
                           for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials()]
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}


def results(url: str) -> dict[str, list[tuple]]:
    """What a report reads of each trial, times aside."""
    return {name: [t[:5] for t in trials] for name, trials in snapshot(url).items()}


def report_bytes(url: str, folder: Path) -> dict[str, bytes]:
    """The report's files written from ``url`` into ``folder`` (emptied afterwards: the report names where its
    trials file ships, so reports compared byte for byte are written to the same place)."""
    write_report(url, BENCH, folder, command=f"cellc report --name {BENCH}")
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    shutil.rmtree(folder)
    return files


def derived(full_url: str, url: str, edit) -> str:
    """A storage with the planted bench's studies, each trial passed through ``edit(number, trial)``
    (None drops it and every later one: trial numbers stay contiguous)."""
    source, storage = open_storage(full_url), open_storage(url)
    for summary in optuna.get_all_study_summaries(source, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=source)
        target = optuna.create_study(study_name=summary.study_name, storage=storage, direction="minimize")
        for key, value in study.user_attrs.items():
            target.set_user_attr(key, value)
        for trial in study.get_trials():
            changed = edit(trial.number, copy.deepcopy(trial))
            if changed is None:
                break
            target.add_trial(changed)
    return url


def failed(trial):
    trial.state, trial.values, trial.datetime_complete = TrialState.FAIL, None, trial.datetime_start
    trial.set_user_attr("status", "interrupted")
    return trial


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    return plant_bench(folder, trials=TRIALS)


def test_sqlite_to_postgresql_and_back_gives_byte_identical_reports(planted, pg_url, tmp_path, capsys):
    first = report_bytes(planted, tmp_path / "report")
    assert main(["copy", "--from", planted, "--to", pg_url, "--name", BENCH]) == 0
    out = capsys.readouterr().out
    assert f"copied {BENCH} from sqlite:///" in out and PASSWORD not in out and "cellc:***@" in out
    back = f"sqlite:///{tmp_path / 'archive.db'}"
    assert main(["copy", "--from", pg_url, "--to", back]) == 0
    assert snapshot(back) == snapshot(pg_url) == snapshot(planted)  # numbers, states, values, attributes, times
    assert report_bytes(pg_url, tmp_path / "report") == first
    assert report_bytes(back, tmp_path / "report") == first
    # copying again merges: nothing changes
    assert main(["copy", "--from", planted, "--to", pg_url]) == 0
    assert "0 trial(s) added, 0 finished where they had failed" in capsys.readouterr().out
    assert snapshot(pg_url) == snapshot(planted)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_merging_keeps_each_trial_number_once_and_completes_failed_trials(planted, tmp_path, kind, request):
    # a: the first six trials, trial 3 interrupted; b: all trials, trial 2 interrupted
    a_url = request.getfixturevalue("pg_url") if kind == "postgresql" else f"sqlite:///{tmp_path / 'a.db'}"
    a = derived(planted, a_url, lambda n, t: None if n >= 6 else failed(t) if n == 3 else t)
    b = derived(planted, f"sqlite:///{tmp_path / 'b.db'}", lambda n, t: failed(t) if n == 2 else t)
    summary = copy_benches(b, a)
    assert summary.benches == [BENCH]
    assert all(line.endswith(f"merged, {TRIALS + 1 - 6} trial(s) added, 1 finished where they had failed")
               for line in summary.lines), summary.lines
    assert results(a) == results(planted)  # every number once, with its finished result
    again = results(a)
    copy_benches(b, a)
    copy_benches(a, b)  # the other way: b's trial 2 takes a's result
    assert results(a) == again == results(b)


def test_conflicting_results_or_settings_are_refused_and_nothing_is_written(planted, tmp_path, capsys):
    target = derived(planted, f"sqlite:///{tmp_path / 'a.db'}", lambda n, t: None if n >= 4 else t)
    before = snapshot(target)

    def worse(n, t):
        if n == 1 and t.state == TrialState.COMPLETE:
            t.values = [t.values[0] + 0.5]
            t.set_user_attr("best_valid", t.user_attrs["best_valid"] + 0.5)
        return t

    other = derived(planted, f"sqlite:///{tmp_path / 'c.db'}", worse)
    assert main(["copy", "--from", other, "--to", target]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "finished trial(s) have other results there" in err
    assert f"{BENCH}/jsb/vanilla trial 1 (value" in err and "nothing was written" in err
    assert snapshot(target) == before

    storage = open_storage(other)
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        study.set_user_attr("settings", {**study.user_attrs["settings"], "max_epochs": 99})
    with pytest.raises(UsageError, match=r"cannot merge into --to: study .* was created with different settings "
                       r"\(max_epochs\); nothing was written"):
        copy_benches(other, target)
    assert snapshot(target) == before


def test_a_running_trial_is_copied_as_interrupted_and_errors_are_one_message(planted, tmp_path, capsys):
    source = derived(planted, f"sqlite:///{tmp_path / 's.db'}", lambda n, t: t)
    study = optuna.load_study(study_name=f"{BENCH}/jsb/vanilla", storage=open_storage(source))
    running = study.ask(study.get_trials()[0].distributions)  # a bench's trial in flight
    target = f"sqlite:///{tmp_path / 't.db'}"
    summary = copy_benches(source, target, BENCH)
    assert any("(1 running in the source, stored as interrupted)" in line for line in summary.lines)
    copied = optuna.load_study(study_name=f"{BENCH}/jsb/vanilla", storage=open_storage(target)).get_trials()
    assert copied[running.number].state == TrialState.FAIL
    assert copied[running.number].user_attrs["status"] == "interrupted"
    assert copied[running.number].user_attrs["error"] == RUNNING_WHEN_COPIED
    # the source is only read
    assert optuna.load_study(study_name=f"{BENCH}/jsb/vanilla", storage=open_storage(source)).get_trials()[
        running.number].state == TrialState.RUNNING

    missing = tmp_path / "typo.db"
    for argv, expected in ((["--from", f"sqlite:///{missing}", "--to", target], "no such database file"),
                           (["--from", source, "--to", target, "--name", "nope"], "--name nope: no such bench"),
                           (["--from", source, "--to", "nosuchdialect://x"], "cannot open the study storage")):
        assert main(["copy", *argv]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not missing.exists()


def test_a_trials_file_carries_a_bench_to_another_storage_and_back(planted, tmp_path, capsys):
    """`cellc copy --from <trials file>`: a study committed as its trials file resumes on another machine. The
    imported storage exports the same file byte for byte, gives the same report, and importing into a storage
    holding part of the bench merges (each trial number once); a file whose trials are not numbered 0, 1, 2, ...
    is refused in one message."""
    exported = tmp_path / "trials.jsonl"
    assert main(["export", "--name", BENCH, "--storage", planted, "--output", str(exported)]) == 0
    imported = f"sqlite:///{tmp_path / 'imported.db'}"
    assert main(["copy", "--from", str(exported), "--to", imported]) == 0
    assert f"copied {BENCH} from {exported}" in capsys.readouterr().out
    again = tmp_path / "again.jsonl"
    assert main(["export", "--name", BENCH, "--storage", imported, "--output", str(again)]) == 0
    assert again.read_bytes() == exported.read_bytes()
    assert report_bytes(imported, tmp_path / "report") == report_bytes(planted, tmp_path / "report")
    part = derived(planted, f"sqlite:///{tmp_path / 'part.db'}", lambda n, t: None if n >= 4 else t)
    capsys.readouterr()
    assert main(["copy", "--from", str(exported), "--to", part]) == 0
    assert f"merged, {TRIALS + 1 - 4} trial(s) added" in capsys.readouterr().out
    merged = tmp_path / "merged.jsonl"
    assert main(["export", "--name", BENCH, "--storage", part, "--output", str(merged)]) == 0
    assert merged.read_bytes() == exported.read_bytes()  # every trial number once, as the report reads it
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    first = next(r["study"] for r in rows if r["record"] == "study")
    rows = [r for r in rows if not (r["record"] == "trial" and r["study"] == first and r["number"] == 2)]
    rows[0]["trials"] -= 1  # the header's count
    broken = tmp_path / "gap.jsonl"
    broken.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["copy", "--from", str(broken), "--to", f"sqlite:///{tmp_path / 'gap.db'}"]) != 0
    assert "has no trial 2" in capsys.readouterr().err
