"""Storage: owners of RUNNING trials, abandoned-trial recovery, reproducible sampling, study settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from cellc.errors import UsageError
from cellc.harness import storage as storage_module
from cellc.harness.profiles import SearchSpace
from cellc.harness.record import StudySettings, owner_id, owner_is_alive
from cellc.harness.search import SeededRandomSampler, distributions, hyperparameters
from cellc.harness.storage import fail_abandoned_trials, list_bench_studies, open_storage, open_study

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def settings(**overrides) -> StudySettings:
    base = dict(profile="smoke", trials=2, max_epochs=2, patience=2, train_subset=8, batch_size=1,
                init_std=0.1, backend="auto", space=SearchSpace(), seed=0)
    return StudySettings(**{**base, **overrides})


@pytest.fixture
def storage(tmp_path):
    return open_storage(f"sqlite:///{tmp_path / 'studies.db'}")


def make_study(storage, **overrides):
    return open_study(storage, "b", "jsb", "vanilla", settings(**overrides), {"task": "jsb", "cell": "vanilla"},
                      SeededRandomSampler(0), "minimize")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_liveness():
    assert owner_is_alive(owner_id()) is True
    assert owner_is_alive(f"{socket.gethostname()}:{dead_pid()}:123") is False
    assert owner_is_alive(f"{socket.gethostname()}:{os.getpid()}:not-my-start-time") is False  # pid reused
    assert owner_is_alive("some-other-host:1:1") is None
    assert owner_is_alive("garbage") is False


def test_abandoned_local_trials_fail_but_other_hosts_live_trials_stay(storage, monkeypatch):
    study = make_study(storage)
    dead = study.ask(distributions(SearchSpace()))
    dead.set_user_attr("owner", f"{socket.gethostname()}:{dead_pid()}:1")
    remote = study.ask(distributions(SearchSpace()))
    remote.set_user_attr("owner", "other-host:42:7")
    storage.record_heartbeat(remote._trial_id)
    mine = study.ask(distributions(SearchSpace()))
    mine.set_user_attr("owner", owner_id())
    # asked by another process a moment ago, its owner not recorded yet: not abandoned (failing it crashed
    # that process's next write)
    just_asked = study.ask(distributions(SearchSpace()))
    assert fail_abandoned_trials(study) == 1
    states = {t.number: (t.state, t.user_attrs.get("status")) for t in study.get_trials()}
    assert states[dead.number] == (TrialState.FAIL, "interrupted")
    assert states[remote.number][0] == TrialState.RUNNING
    assert states[mine.number][0] == TrialState.RUNNING
    assert states[just_asked.number][0] == TrialState.RUNNING


def test_trials_with_a_stale_heartbeat_fail_as_interrupted(tmp_path, monkeypatch):
    # A bench killed between asking for a trial and naming itself its owner leaves a trial without an owner
    # (and maybe without a heartbeat, which it records first). It is failed like any interrupted trial once
    # its heartbeat is stale, the missing heartbeat recorded on first sight (else it ran forever: its slot
    # was taken for a day); as is another host's trial. (Optuna's own check failed them without a status.)
    monkeypatch.setattr(storage_module, "GRACE_S", 3)  # seconds: slack for a loaded machine
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    study = make_study(storage)
    space = distributions(SearchSpace())
    bare = study.ask(space)  # killed before its heartbeat
    ownerless = study.ask(space)  # killed after it
    storage.record_heartbeat(ownerless._trial_id)
    remote = study.ask(space)
    remote.set_user_attr("owner", "other-host:42:7")
    storage.record_heartbeat(remote._trial_id)
    live = study.ask(space)
    live.set_user_attr("owner", "other-host:43:7")
    storage.record_heartbeat(live._trial_id)
    assert fail_abandoned_trials(study) == 0
    assert storage_module.with_heartbeat(storage, [bare._trial_id]) == {bare._trial_id}  # its clock started
    time.sleep(4.5)  # past the grace period (SQLite's clock has whole seconds)
    storage.record_heartbeat(live._trial_id)  # its process lives on
    assert fail_abandoned_trials(study) == 3
    states = {t.number: (t.state, t.user_attrs.get("status")) for t in study.get_trials()}
    for trial in (bare, ownerless, remote):
        assert states[trial.number] == (TrialState.FAIL, "interrupted")
    assert states[live.number] == (TrialState.RUNNING, None)
    assert fail_abandoned_trials(study) == 0


def test_sampler_draws_depend_only_on_trial_number(storage, tmp_path):
    space = distributions(SearchSpace())
    first = [make_study(storage).ask(space).params for _ in range(3)]
    other = open_storage(f"sqlite:///{tmp_path / 'other.db'}")
    second = [make_study(other).ask(space).params for _ in range(3)]
    assert first == second and len({p["lr"] for p in first}) == 3
    for params in first:
        hp = hyperparameters(params)
        assert 20 <= hp["hidden"] <= 200 and 1e-6 <= hp["lr"] <= 1e-2
        assert 0 <= hp["momentum"] <= 0.99 and 0 <= hp["noise"] <= 1


def test_resuming_with_other_settings_is_refused_but_target_may_change(storage):
    make_study(storage)
    make_study(storage, trials=5)  # a new target is fine
    with pytest.raises(UsageError, match="different settings \\(backend, patience\\)"):
        make_study(storage, patience=9, backend="eager")


def test_bad_storage_url():
    with pytest.raises(UsageError, match="cannot open the study storage"):
        open_storage("nosuchdialect://x")


def test_storage_errors_are_one_line_keep_the_file_and_hide_passwords(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 400)
    with pytest.raises(UsageError) as info:
        open_storage(f"sqlite:///{garbage}")
    assert "(file is not a database)" in str(info.value) and "\n" not in str(info.value)
    assert garbage.read_bytes() == b"not a database" * 400
    # a reader (cellc report) creates no database where a mistyped path points
    with pytest.raises(UsageError, match="no such database file"):
        open_storage(f"sqlite:///{tmp_path / 'typo.db'}", must_exist=True)
    assert not (tmp_path / "typo.db").exists()
    for url in ("postgresql://user:secret@localhost:1/db", "postgresql://user:sec/ret@localhost:1/db"):
        with pytest.raises(UsageError) as info:
            open_storage(url)
        assert "secret" not in str(info.value) and "sec/ret" not in str(info.value) and "user:***@" in str(info.value)
    # an SQLite URL's options are not part of its file name
    with pytest.raises(UsageError, match="no such database file"):
        open_storage(f"sqlite:///{tmp_path / 'typo.db'}?mode=ro", must_exist=True)


def test_a_writer_creates_the_folder_of_a_new_sqlite_file(tmp_path):
    # `cellc copy --to sqlite:///runs/studies.db` on a fresh clone, where runs/ is not there yet
    url = f"sqlite:///{tmp_path / 'runs' / 'deeper' / 'studies.db'}"
    optuna.create_study(storage=open_storage(url), study_name="s")
    assert (tmp_path / "runs" / "deeper" / "studies.db").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot create") as info:
        open_storage(f"sqlite:///{blocker / 'studies.db'}")
    assert "\n" not in str(info.value) and blocker.read_text() == "x"


def test_bench_listing_matches_the_bench_name_exactly(storage):
    for bench in ("a", "a/b", "ab"):
        open_study(storage, bench, "jsb", "vanilla", settings(), {"bench": bench, "task": "jsb", "cell": "vanilla"},
                   SeededRandomSampler(0), "minimize")
    optuna.create_study(storage=storage, study_name="a/timit/vanilla")  # stored without attributes
    names = sorted(s.study_name for s in list_bench_studies(storage, "a"))
    assert names == ["a/jsb/vanilla", "a/timit/vanilla"]
    assert [s.study_name for s in list_bench_studies(storage, "a/b")] == ["a/b/jsb/vanilla"]


def test_bench_names_are_checked_like_spec_names():
    from cellc.harness.record import checked_bench_name

    assert checked_bench_name("quick-2_x") == "quick-2_x"
    for bad in ("..", "a/b", "", "Quick", "a.b", "-x", "a\nb"):
        with pytest.raises(UsageError):
            checked_bench_name(bad)


def test_storing_a_trial_another_process_failed_is_not_an_error(storage):
    from cellc.harness.bench import store_outcome
    from cellc.harness.train import TrialOutcome

    study = make_study(storage)
    trial = study.ask(distributions(SearchSpace()))
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # e.g. failed as stale elsewhere
    outcome = TrialOutcome(status="ok", param_count=1, train_curve=[1.0], valid_curve=[1.0], best_valid=1.0,
                           best_epoch=1, test_at_best=1.0, epochs=1, wall_time_s=0.0, cpu_time_s=0.0)
    assert store_outcome(study, trial, outcome) is False
    assert study.get_trials()[0].state == TrialState.FAIL
    fresh = study.ask(distributions(SearchSpace()))
    assert store_outcome(study, fresh, outcome) is True
    assert study.get_trials()[1].state == TrialState.COMPLETE


def identity_attrs(source="proxy", location="/a/timit-proxy", seed=0, cell_hash="h1"):
    from cellc.harness.record import data_identity

    marker = None if source != "proxy" else {"generator": "g", "config": {"seed": seed, "speakers": 4}}
    return {"task": "jsb", "cell": "vanilla",
            "data_identity": data_identity(source, location, {"train": 4, "valid": 2, "test": 2}, marker),
            "cell_identity": {"hash": cell_hash, "equations_text": ["y = x"]}}


def open_with(storage, attrs):
    return open_study(storage, "b", "jsb", "vanilla", settings(), attrs, SeededRandomSampler(0), "minimize")


@pytest.mark.parametrize("changed, expected", [
    ({"source": "real"}, "other jsb data (source, proxy differ"),
    ({"seed": 1}, "other jsb data (proxy differ"),
    ({"cell_hash": "h2"}, "another definition of cell 'vanilla' (spec hash h1, now h2)"),
])
def test_resuming_with_other_data_or_cell_is_refused_and_writes_nothing(storage, changed, expected):
    study = open_with(storage, identity_attrs())
    before = dict(study.user_attrs)
    with pytest.raises(UsageError, match=r"use a new --name \(or --out\)") as err:
        open_with(storage, {**identity_attrs(**changed), "command": "changed"})
    assert expected in str(err.value)
    assert optuna.load_study(study_name="b/jsb/vanilla", storage=storage).user_attrs == before
    open_with(storage, identity_attrs(location="/elsewhere/timit-proxy"))  # another machine's path: fine


def test_studies_without_identities_resume(storage):
    open_with(storage, {"task": "jsb", "cell": "vanilla"})  # stored before identities existed
    study = open_with(storage, identity_attrs())
    assert "data_identity" not in study.user_attrs  # still unknown, not claimed
