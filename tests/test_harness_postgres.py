"""`cellc bench` against a real PostgreSQL server (tests/pgserver.py starts one): storage errors in one
message, results kept across a server restart, and a bench whose server goes away for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pgserver import PASSWORD, free_port, pg_server, pg_url  # noqa: F401 - fixtures

from cellc.cli import main
from cellc.errors import CellcError, UsageError
from cellc.harness import storage as store
from cellc.harness.bench import store_outcome
from cellc.harness.profiles import SearchSpace
from cellc.harness.record import StudySettings, owner_id
from cellc.harness.search import SeededRandomSampler, distributions
from cellc.harness.train import TrialOutcome

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA_ROOT / "jsb-chorales").is_dir(), reason="../shared/data missing")
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def settings() -> StudySettings:
    return StudySettings(profile="smoke", trials=2, max_epochs=2, patience=2, train_subset=8, batch_size=1,
                         init_std=0.1, backend="auto", space=SearchSpace(), seed=0)


def outcome() -> TrialOutcome:
    return TrialOutcome(status="ok", param_count=10, train_curve=[2.0, 1.5], valid_curve=[1.8, 1.2],
                        best_valid=1.2, best_epoch=2, test_at_best=1.3, epochs=2, wall_time_s=1.0, cpu_time_s=1.0)


def test_storage_errors_are_one_line_and_never_show_the_password(pg_server, pg_url, capsys):
    # wrong password, refused connection (nothing listens on that port), unknown database, unknown driver
    wrong = pg_server.url(pg_url.rsplit("/", 1)[1], password="not-the-password")
    refused = pg_server.url(port=free_port())
    for url, problem in ((wrong, "password authentication failed"), (refused, "Connection refused"),
                         (pg_server.url("no_such_db"), 'database "no_such_db" does not exist'),
                         (pg_url.replace("postgresql://", "postgresql+nosuchdriver://"), "cannot open")):
        with pytest.raises(UsageError) as info:
            store.open_storage(url)
        message = str(info.value)
        assert problem in message and "\n" not in message, message
        assert PASSWORD not in message and "not-the-password" not in message and ":***@" in message
    # the same through the command line: exit 2, one line, no traceback, nothing printed but the message
    for url in (wrong, refused):
        assert main(["report", "--name", "x", "--storage", url]) == 2
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
        assert PASSWORD not in captured.err + captured.out and "not-the-password" not in captured.err


@needs_data
def test_a_bench_with_a_wrong_password_or_a_refused_connection_stops_at_once(pg_server, pg_url, tmp_path, capsys):
    wrong = pg_server.url(pg_url.rsplit("/", 1)[1], password="not-the-password")
    for url, problem in ((wrong, "password authentication failed"), (pg_server.url(port=free_port()), "refused")):
        code = main(["bench", "--tasks", "jsb", "--cells", "vanilla", "--profile", "smoke", "--workers", "0",
                     "--storage", url, "--report-dir", str(tmp_path / "reports"), "--data-dir", str(DATA_ROOT)])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == ""
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and problem in lines[0]
        assert lines[0].startswith("error: --storage postgresql://cellc:***@")
        assert "not-the-password" not in captured.err and PASSWORD not in captured.err
    assert optuna.get_all_study_summaries(store.open_storage(pg_url)) == []  # nothing created
    assert not (tmp_path / "reports").exists()


def test_a_result_finished_while_the_server_is_down_is_stored_when_it_returns(pg_server, pg_url):
    # The coordinator holds a worker's result while the database is away and writes it once it is back
    # (rather than failing the trial and running it again).
    storage = store.open_storage(pg_url)
    study = store.open_study(storage, "b", "jsb", "vanilla", settings(), {"task": "jsb", "cell": "vanilla"},
                             SeededRandomSampler(0), "minimize")
    trial = study.ask(distributions(SearchSpace()))
    trial.set_user_attr("owner", owner_id())
    lines: list[str] = []
    retry = store.StorageRetry(pg_url, lines.append, limit_s=120)
    pg_server.stop()
    restart = threading.Timer(3.0, pg_server.start)
    restart.start()
    try:
        assert retry(store_outcome, study, trial, outcome(), what="storing jsb/vanilla trial 0") is True
    finally:
        restart.join()
    assert retry.outages == 1 and len(lines) == 2
    assert "unreachable (storing jsb/vanilla trial 0)" in lines[0] and "retrying with backoff" in lines[0]
    assert lines[1].startswith("storage reachable again after") and PASSWORD not in "".join(lines)
    stored = optuna.load_study(study_name="b/jsb/vanilla", storage=store.open_storage(pg_url)).get_trials()
    assert [(t.number, t.state, t.value, t.user_attrs["status"]) for t in stored] == [
        (0, TrialState.COMPLETE, 1.2, "ok")]
    # storing it again (a retry whose first answer was lost) counts as stored, and writes nothing twice
    assert store_outcome(study, trial, outcome()) is True
    assert len(optuna.load_study(study_name="b/jsb/vanilla", storage=storage).get_trials()) == 1


def test_a_storage_that_stays_away_ends_in_one_message(pg_server, pg_url):
    storage = store.open_storage(pg_url)
    retry = store.StorageRetry(pg_url, lambda line: None, limit_s=1.5)
    pg_server.stop()
    try:
        with pytest.raises(CellcError) as info:
            retry(optuna.get_all_study_summaries, storage, include_best_trial=False)
    finally:
        pg_server.start()
    message = str(info.value)
    assert "unreachable for" in message and "rerun the same command to resume" in message and "\n" not in message
    assert PASSWORD not in message
    with pytest.raises(ValueError):  # other errors are not retried
        retry(int, "x")


def bench_command(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cellc.cli", "bench", "--tasks", "jsb", "--cells", "vanilla", "--profile", "smoke",
            "--trials", "6", "--max-epochs", "2", "--train-subset", "16", "--workers", "1", "--storage", url,
            "--no-report", "--data-dir", str(DATA_ROOT), *extra]


def finished(url: str, study: str = "smoke/jsb/vanilla") -> list[optuna.trial.FrozenTrial]:
    try:
        trials = optuna.load_study(study_name=study, storage=store.open_storage(url)).get_trials()
    except (KeyError, CellcError):
        return []
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.slow
@needs_data
def test_a_server_that_disappears_stops_the_bench_with_one_message_and_loses_nothing(pg_server, pg_url, tmp_path):
    env = dict(os.environ, CELLC_STORAGE_RETRY_S="4")
    err = tmp_path / "err.txt"
    with open(err, "w") as handle:
        proc = subprocess.Popen(bench_command(pg_url), stdout=subprocess.DEVNULL, stderr=handle, env=env)
    try:
        deadline = time.monotonic() + 240
        while len(finished(pg_url)) < 1:
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the bench made no progress"
            time.sleep(0.2)
        before = {t.number: (t.params, t.user_attrs) for t in finished(pg_url)}
        pg_server.stop()
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        pg_server.start()
    text = err.read_text()
    assert code == 1, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "unreachable for" in lines[0] and "rerun the same command" in lines[0], text
    assert "Traceback" not in text and PASSWORD not in text
    after = {t.number: (t.params, t.user_attrs) for t in finished(pg_url)}
    assert all(after[number] == record for number, record in before.items())  # nothing lost or changed
    # and the rerun completes the bench, each finished trial kept once
    rerun = subprocess.run(bench_command(pg_url), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    done = finished(pg_url)
    assert len(done) == 6 and len({t.number for t in done}) == 6
    assert {t.number: (t.params, t.user_attrs) for t in done if t.number in before} == before


HOSTS = {"h1": 1, "h2": 2, "h3": 1}  # --host -> --workers
TARGET = 8
CELLS = ("vanilla", "nfg")


def trials_of(url: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = store.open_storage(url)
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}


def running_on(url: str, host: str) -> list[optuna.trial.FrozenTrial]:
    return [t for trials in trials_of(url).values() for t in trials
            if t.state == TrialState.RUNNING and str(t.user_attrs.get("owner", "")).startswith(f"{host}:")]


@pytest.mark.slow
@needs_data
def test_three_hosts_share_one_study_through_a_kill_and_a_server_restart(pg_server, pg_url, tmp_path):
    """Three benches as three hosts on one PostgreSQL study: (a) one is SIGKILLed mid-trial, (b) the server
    stops for 10-20 s mid-study; every (task, cell) still ends with exactly TARGET finished trials, each
    trial number and setting once, and the report is written."""
    from datetime import datetime

    # others fail the killed host's trial 45 s after its last heartbeat (longer than the outage below, so that
    # no live host's trial goes stale meanwhile)
    env = dict(os.environ, CELLC_GRACE_S="45")
    procs, logs = {}, {}
    for host, workers in HOSTS.items():
        logs[host] = tmp_path / f"{host}.err"
        with open(logs[host], "w") as handle:
            procs[host] = subprocess.Popen(
                [sys.executable, "-m", "cellc.cli", "bench", "--tasks", "jsb", "--cells", ",".join(CELLS),
                 # trials long enough (about a second) that the hosts are still at work when the test strikes:
                 # at the online trainer's speed, smoke-sized trials let a host finish the study first
                 "--profile", "smoke", "--trials", str(TARGET), "--max-epochs", "6", "--patience", "6",
                 "--train-subset", "0", "--space", "hidden=100:200",
                 "--name", "multi", "--host", host, "--workers", str(workers), "--storage", pg_url,
                 "--report-dir", str(tmp_path / "reports"), "--data-dir", str(DATA_ROOT)],
                stdout=subprocess.DEVNULL, stderr=handle, env=env)

    def wait_for(condition, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for host, proc in procs.items():
                assert host == "h3" or proc.poll() is None, f"{host} ended early: {logs[host].read_text()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    try:
        # (a) SIGKILL h3 while it runs a trial, and (b) at once stop the server while h1 or h2 runs one
        while True:
            wait_for(lambda: sum(len(finished(pg_url, f"multi/jsb/{c}")) for c in CELLS) >= 1 and
                     running_on(pg_url, "h3") and (running_on(pg_url, "h1") or running_on(pg_url, "h2")),
                     "a finished trial, and trials running on h3 and on h1 or h2")
            # frozen first (h3's results are stored by this process): a trial seen running now stays running
            procs["h3"].send_signal(signal.SIGSTOP)
            killed = {t._trial_id for t in running_on(pg_url, "h3")}
            if killed:
                break
            procs["h3"].send_signal(signal.SIGCONT)  # its trial finished meanwhile: wait for the next one
        procs["h3"].send_signal(signal.SIGKILL)
        procs["h3"].wait(timeout=60)
        assert killed <= {t._trial_id for t in running_on(pg_url, "h3")}
        # 10 s, or longer on a slow machine: long enough for the trials running now to finish meanwhile
        longest = max(t.user_attrs["wall_time_s"] for c in CELLS for t in finished(pg_url, f"multi/jsb/{c}"))
        stopped = datetime.now()
        pg_server.stop()
        time.sleep(min(20.0, max(10.0, 2 * longest + 2)))
        pg_server.start()
        restarted = datetime.now()
        for host in ("h1", "h2"):
            assert procs[host].wait(timeout=600) == 0, logs[host].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        if not pg_server.running():
            pg_server.start()

    studies = trials_of(pg_url)
    assert sorted(studies) == [f"multi/jsb/{cell}" for cell in sorted(CELLS)]
    owners = set()
    for name, trials in studies.items():
        done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(done) == TARGET, (name, [(t.number, t.state.name) for t in trials])  # exact, not one more
        assert len({t.number for t in trials}) == len(trials)  # each trial number once
        settings_run = [tuple(sorted(t.params.items())) for t in done]
        assert len(set(settings_run)) == TARGET  # no setting run twice
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        for t in trials:
            if t.state == TrialState.FAIL:
                assert t.user_attrs["status"] == "interrupted"
        owners |= {str(t.user_attrs["owner"]).split(":")[0] for t in done}
    assert owners <= set(HOSTS) and {"h1", "h2"} <= owners
    # h3's trial was failed as interrupted (by h1 or h2, after the grace period) and its slot rerun
    failed = {t._trial_id: t for trials in studies.values() for t in trials if t.state == TrialState.FAIL}
    assert killed <= set(failed)
    # a result that finished while the server was down was held and stored when it came back
    held = [t for trials in studies.values() for t in trials if t.state == TrialState.COMPLETE
            and t.datetime_start < stopped and t.datetime_complete > restarted
            and t.datetime_start.timestamp() + t.user_attrs["wall_time_s"] < restarted.timestamp()]
    assert held, "no trial finished during the outage"
    texts = {host: logs[host].read_text() for host in ("h1", "h2")}
    assert any("unreachable" in text and "storage reachable again" in text for text in texts.values()), texts
    assert not any("Traceback" in text or PASSWORD in text for text in texts.values()), texts
    report = (tmp_path / "reports" / "multi.md").read_text()  # written by the last bench to finish
    assert all(f"| {cell} " in report for cell in CELLS)


def test_a_storage_lost_under_any_command_is_one_message(monkeypatch, capsys, tmp_path):
    import sqlalchemy

    import cellc.commands.report as report

    def lost(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(report, "write_report", lost)
    assert main(["report", "--name", "x", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "storage became unreachable (server closed the connection unexpectedly)" in err


def test_retry_backs_off_and_a_stop_signal_ends_the_waiting():
    import sqlalchemy

    calls, slept, lines = [], [], []

    def down():
        calls.append(1)
        if len(calls) < 6:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
        return "ok"

    retry = store.StorageRetry("postgresql://u:pw@h/db", lines.append, limit_s=1000, sleep=slept.append)
    assert retry(down, what="counting trials") == "ok"
    assert len(calls) == 6 and sum(slept) == 0.5 + 1 + 2 + 4 + 8 and max(slept) <= 0.5  # slices of <= 0.5 s
    assert "unreachable (counting trials): connection refused" in lines[0] and "pw" not in lines[0]
    retry.cancelled = lambda: True
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        retry(down)
    assert len(calls) == 1


def test_only_connection_errors_are_retried(tmp_path):
    import sqlite3

    import sqlalchemy

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(sqlalchemy.exc.OperationalError) as missing, engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT * FROM no_table"))
    assert not store.is_connection_error(missing.value)
    locked = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    wrapped = optuna.exceptions.StorageInternalError("during the commit")
    wrapped.__cause__ = locked
    assert store.is_connection_error(locked) and store.is_connection_error(wrapped)
    assert not store.is_connection_error(ValueError("x"))
