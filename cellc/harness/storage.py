"""Opening the study storage, creating / resuming studies, and cleaning up after killed runs."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.trial import TrialState

from cellc.errors import CellcError, UsageError
from cellc.harness.record import DATA_IDENTITY_KEYS, STUDY_FORMAT, StudySettings, owner_is_alive, study_name

HEARTBEAT_S = 20  # in-flight trials are marked alive this often (at most; see heartbeat_s)
GRACE_S = 120  # a trial of another machine without a heartbeat for this long is failed ($CELLC_GRACE_S)
RETRY_S = 900  # how long a bench retries an unreachable storage before it stops ($CELLC_STORAGE_RETRY_S)
CONNECT_TIMEOUT_S = 10  # a database server that does not answer a connection in this time is unreachable
MAX_BACKOFF_S = 8.0  # the longest wait between two tries (a restarted server is seen at most this late)

optuna.logging.set_verbosity(logging.WARNING)
# SQLAlchemy's pool logs a traceback when it cannot reset a connection the server has cut (a server restart);
# StorageRetry below says what happened in one line instead.
logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)

T = TypeVar("T")


def _seconds_from_env(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"${name}: expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise UsageError(f"${name}: must be positive, got {text!r}")
    return value


def grace_s() -> float:
    """How long a RUNNING trial may go without a heartbeat before another process fails and reruns it."""
    return _seconds_from_env("CELLC_GRACE_S", GRACE_S)


def heartbeat_s() -> float:
    """How often a bench records heartbeats: HEARTBEAT_S, or a third of a shorter grace period."""
    return min(HEARTBEAT_S, grace_s() / 3)


def default_storage_url(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'studies.db').resolve()}"


def open_storage(url: str, must_exist: bool = False) -> optuna.storages.RDBStorage:
    """An RDB storage (SQLite file, PostgreSQL, ...) with heartbeats for stale-trial detection.
    must_exist: a reader's (``cellc report``): an SQLite file that is not there is an error, not a new
    empty database."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
        path = _sqlite_file(url)
        if must_exist and path is not None and not path.is_file():
            raise UsageError(f"--storage {shown_url(url)}: no such database file")
        if path is not None and not must_exist:  # a writer's new file: its folder too (runs/ on a fresh clone)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UsageError(f"--storage {shown_url(url)}: cannot create {path.parent} ({err.strerror})") from None
    else:
        # A server restarted under a running bench leaves dead connections in the pool: test each before use.
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql"):  # an unreachable host fails in seconds, not after TCP's minutes
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    grace = int(round(grace_s()))
    try:
        with _creation_lock(url):
            for attempt in range(3):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        return optuna.storages.RDBStorage(
                            url, engine_kwargs=engine_kwargs, heartbeat_interval=max(1, int(heartbeat_s())),
                            grace_period=max(1, grace),
                        )
                except Exception as err:
                    # Processes that open a new database at the same moment race to create its tables
                    # (on a server; SQLite files are locked below): the loser's CREATE fails where the
                    # tables are there now.
                    if not any(text in str(err) for text in ("already exists", "UNIQUE constraint")) or attempt == 2:
                        raise
                    time.sleep(0.2 * (attempt + 1))
    except CellcError:
        raise
    except Exception as err:  # bad URL, unreachable server, unreadable file, missing driver
        raise UsageError(f"--storage {shown_url(url)}: cannot open the study storage ({storage_problem(err)})") from None


@contextlib.contextmanager
def _creation_lock(url: str):
    """For an SQLite file: one process at a time creates or upgrades its tables (Optuna's CREATE TABLE and
    its schema version row race otherwise: 'table studies already exists', 'UNIQUE constraint failed')."""
    path = _sqlite_file(url)
    try:
        handle = open(f"{path}.lock", "a") if path is not None and path.parent.is_dir() else None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError:  # a folder this process may only read (it creates no tables there either), or a file
        handle = None  # system without locks: go on as before there was a lock
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # closing releases the lock


def _sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL (None for other databases and in-memory ones)."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # not a URL at all: RDBStorage says so
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def is_connection_error(err: BaseException) -> bool:
    """A lost or refused connection to the database (worth retrying), as opposed to a bug or bad data.

    Optuna wraps SQLAlchemy's errors inside a session in StorageInternalError; SQLAlchemy wraps the
    driver's. SQLite's "database is locked" is an OperationalError too, and waiting is right for it as well.
    """
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            # SQLite reports a missing table or column as an OperationalError too: no wait mends those
            return not any(text in str(err.orig) for text in ("no such table", "no such column", "syntax error"))
        if isinstance(err, sqlalchemy.exc.DBAPIError) and err.connection_invalidated:
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


class StorageRetry:
    """Calls storage operations, retrying with exponential backoff while the database is unreachable.

    ``retry(fn, *args, what="...")``: a connection error (server restarting, network gone) is logged once
    in one line, then ``fn`` is called again after 0.5, 1, 2, ... (at most MAX_BACKOFF_S) seconds until it
    works or the storage has been unreachable for ``limit_s`` in a row (default ``$CELLC_STORAGE_RETRY_S`` or
    RETRY_S): then one CellcError says so (finished trials are stored; a rerun resumes). Other errors
    pass through. ``fn`` must be safe to call again after a failure (Optuna's writes are one transaction
    each; callers make their multi-write steps so). ``cancelled()`` true (a stop signal) ends the waiting
    with KeyboardInterrupt.
    """

    def __init__(self, url: str, log: Callable[[str], None], limit_s: float | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url, self.log, self.sleep = url, log, sleep
        self.limit_s = _seconds_from_env("CELLC_STORAGE_RETRY_S", RETRY_S) if limit_s is None else limit_s
        self.outages = 0  # how many times the storage went away and came back
        self.cancelled: Callable[[], bool] = lambda: False

    def __call__(self, fn: Callable[..., T], *args: Any, what: str = "", **kwargs: Any) -> T:
        down_since = None
        delay = 0.5
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as err:
                if not is_connection_error(err):
                    raise
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    self.log(f"storage {shown_url(self.url)} unreachable{f' ({what})' if what else ''}: "
                             f"{storage_problem(err)}; retrying with backoff for up to {self.limit_s:.0f}s")
                elif now - down_since > self.limit_s:
                    raise CellcError(
                        f"storage {shown_url(self.url)} unreachable for {now - down_since:.0f}s "
                        f"({storage_problem(err)}); finished trials are stored there: rerun the same command to "
                        "resume once it is back"
                    ) from None
                waited = 0.0
                while waited < delay:  # in slices, so that a stop signal is seen within half a second
                    if self.cancelled():
                        raise KeyboardInterrupt
                    self.sleep(min(0.5, delay - waited))
                    waited += 0.5
                delay = min(2 * delay, MAX_BACKOFF_S)
                continue
            if down_since is not None:
                self.outages += 1
                self.log(f"storage reachable again after {time.monotonic() - down_since:.0f}s"
                         f"{f' ({what} done)' if what else ''}")
            return result


@contextlib.contextmanager
def claim_lock(storage: optuna.storages.BaseStorage, url: str, study: str) -> Iterator[None]:
    """One process at a time counts a study's trials and asks for a new one, so that processes sharing the
    storage never run more trials than the target (two that counted at the same instant each asked one).

    PostgreSQL: a session advisory lock keyed by the study's name (released by the server if the holder's
    connection dies). SQLite: the database file's lock file. Other databases: no lock (a rare extra trial).
    """
    if url.startswith("postgresql"):
        rdb = getattr(storage, "_backend", storage)
        key = zlib.crc32(f"cellc-claim:{study}".encode()) - 2**31  # a signed 32-bit key
        with rdb.engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                try:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                except sqlalchemy.exc.DBAPIError:
                    pass  # the connection is gone, and the server released the lock with it
    elif url.startswith("sqlite"):
        with _creation_lock(url):
            yield
    else:
        yield


def shown_url(url: str) -> str:
    """The URL with any password masked, for messages (a URL may hold one)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read: show what cannot hold a password as such
        return re.sub(r"(://[^@]*:)[^@]*@", r"\1***@", url)


def storage_problem(err: BaseException) -> str:
    """The cause in one line: SQLAlchemy appends the SQL and a link, Optuna hides a missing driver's name."""
    cause = err.__cause__ or err.__context__
    if isinstance(cause, ModuleNotFoundError):
        return f"its database driver is not installed: pip install {cause.name}"
    # The database's own error (orig) under SQLAlchemy's wrapper, maybe under Optuna's StorageInternalError.
    inner: BaseException | None = err
    for _ in range(5):
        if inner is None or getattr(inner, "orig", None) is not None:
            break
        inner = inner.__cause__
    original = getattr(inner, "orig", None)
    lines = str(original if original is not None else err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def open_study(
    storage: optuna.storages.RDBStorage,
    bench: str,
    task: str,
    cell: str,
    settings: StudySettings,
    attrs: dict[str, Any],
    sampler: optuna.samplers.BaseSampler,
    direction: str,
) -> optuna.Study:
    """Create the (bench, task, cell) study or resume it, refusing to mix different settings."""
    name = study_name(bench, task, cell)
    check_resumable(storage, bench, task, cell, settings, attrs)
    study = optuna.create_study(
        storage=storage, study_name=name, sampler=sampler, direction=direction, load_if_exists=True
    )
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("format", STUDY_FORMAT)
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        study.set_user_attr("settings", settings.model_dump())
    else:
        previous = StudySettings.model_validate(stored)
        if previous.trials != settings.trials:
            study.set_user_attr("settings", settings.model_dump())
        for key in ("command", "environment"):  # describe the latest run
            if attrs.get(key):
                study.set_user_attr(key, attrs[key])
    return study


def check_resumable(
    storage: optuna.storages.RDBStorage, bench: str, task: str, cell: str, settings: StudySettings,
    attrs: dict[str, Any],
) -> None:
    """Refuse (UsageError, nothing written) to resume a stored study with other settings, data or cell.

    ``attrs`` may carry ``data_identity`` and ``cell_identity``; a stored study without them
    (made before they were recorded) is accepted for that part.
    """
    name = study_name(bench, task, cell)
    try:
        stored_attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    except KeyError:
        return  # a new study
    hint = "use a new --name (or --out) to start a separate bench"
    stored = stored_attrs.get("settings")
    if stored is not None:
        previous = StudySettings.model_validate(stored)
        if previous.comparable() != settings.comparable():
            changed = sorted(k for k, v in settings.comparable().items() if previous.comparable().get(k) != v)
            raise UsageError(
                f"study {name!r} was created with different settings ({', '.join(changed)}); "
                f"rerun with the same settings to resume, or {hint}"
            )
    old_data, new_data = stored_attrs.get("data_identity"), attrs.get("data_identity")
    if old_data is not None and new_data is not None:
        changed = [k for k in DATA_IDENTITY_KEYS if old_data.get(k) != new_data.get(k)]
        if changed:
            raise UsageError(
                f"study {name!r} was created with other {task} data ({', '.join(changed)} differ: stored "
                f"{old_data.get('source')} data from {old_data.get('location')}, now {new_data.get('source')} "
                f"data from {new_data.get('location')}); its trials cannot be mixed with these, {hint}"
            )
    old_cell, new_cell = stored_attrs.get("cell_identity"), attrs.get("cell_identity")
    if old_cell is not None and new_cell is not None and old_cell.get("hash") != new_cell.get("hash"):
        raise UsageError(
            f"study {name!r} was created with another definition of cell {cell!r} (spec hash "
            f"{old_cell.get('hash')}, now {new_cell.get('hash')}); its trials cannot be mixed with these, {hint}"
        )


def fail_abandoned_trials(study: optuna.Study) -> int:
    """Mark RUNNING trials of dead processes as FAIL ("interrupted") so that their slots are run again.

    A trial owned by a process on this host that no longer exists is failed at once (a killed
    ``cellc bench``); any other (another host's, or one whose owner was never recorded) is failed when
    its heartbeat is stale. Returns how many trials were failed.
    """
    storage = study._storage  # noqa: SLF001 - optuna exposes no public per-trial state setter
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    # Optuna's own fail_stale_trials would fail these too, but without the status every failed trial carries.
    stale = set(storage._get_stale_trial_ids(study._study_id))  # noqa: SLF001
    # A bench killed between asking for a trial and naming itself its owner (a window of a few storage
    # writes, hit by a kill just after a trial ends) left it without an owner, and maybe without a
    # heartbeat, which it records first. Such a trial gets a heartbeat here: if its process lives, it
    # goes on recording them; if not, the trial is stale GRACE_S later. (Its start time cannot say: it is
    # the asking host's clock, compared with this one's.)
    ownerless = [t._trial_id for t in running if "owner" not in t.user_attrs]  # noqa: SLF001
    for trial_id in set(ownerless) - with_heartbeat(storage, ownerless):
        storage.record_heartbeat(trial_id)
    failed = 0
    for trial in running:
        owner = trial.user_attrs.get("owner")
        if trial._trial_id in stale or (owner is not None and owner_is_alive(str(owner)) is False):  # noqa: SLF001
            failed += _fail_interrupted(storage, trial._trial_id)  # noqa: SLF001
    return failed


def with_heartbeat(storage: optuna.storages.RDBStorage, trial_ids: list[int]) -> set[int]:
    """Those of these trials that have a heartbeat recorded."""
    if not trial_ids:
        return set()
    from optuna.storages._rdb.models import TrialHeartbeatModel

    query = sqlalchemy.select(TrialHeartbeatModel.trial_id).where(TrialHeartbeatModel.trial_id.in_(trial_ids))
    rdb = getattr(storage, "_backend", storage)  # optuna wraps a study's RDBStorage in a cache
    with rdb.engine.connect() as connection:
        return {row[0] for row in connection.execute(query)}


def _fail_interrupted(storage: optuna.storages.RDBStorage, trial_id: int) -> bool:
    """Fail one RUNNING trial as interrupted; False where another process finished it first."""
    try:
        storage.set_trial_user_attr(trial_id, "status", "interrupted")
        return storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def study_bench(summary: optuna.study.StudySummary) -> str:
    """The bench a study belongs to: its ``bench`` attribute, else (older studies) the name's first part."""
    bench = summary.user_attrs.get("bench")
    return str(bench) if bench is not None else summary.study_name.split("/", 1)[0]


def list_bench_studies(storage: optuna.storages.RDBStorage, bench: str) -> list[optuna.study.StudySummary]:
    """Studies of exactly ``bench`` (bench "a" does not pick up the studies of a bench "a/b")."""
    return [s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
            if s.study_name.startswith(f"{bench}/") and study_bench(s) == bench]
