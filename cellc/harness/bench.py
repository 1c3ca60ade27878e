"""Run a bench: random search over every (task, cell) pair, resumable, with parallel workers.

The coordinator (this module) owns the storage: it asks Optuna for a trial, hands its
hyper-parameters to a worker, and stores the outcome when the worker reports back. Trials are
dispatched round-robin over the (task, cell) studies so that an interrupted bench has spread
its work evenly. Resuming: finished trials (``ok`` and ``diverged``) count toward each study's
target; trials left RUNNING by a dead process are marked FAIL ("interrupted") and their slots
are run again with fresh trial numbers, so no finished trial is run or stored twice.

Several processes (machines) may share one storage: each counts and asks for trials under the study's
claim lock (:func:`cellc.harness.storage.claim_lock`), so together they run exactly the target. While
the database is unreachable (a server restart), every storage step is retried with backoff
(:class:`cellc.harness.storage.StorageRetry`): the workers go on training, and a result that finishes
meanwhile waits in this process and is stored when the database is back.
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict, ValidationError
from tqdm import tqdm

from cellc.data.proxy_corpus import read_marker
from cellc.errors import CellcError, UsageError
from cellc.harness import progress as progress_text
from cellc.harness import storage as store
from cellc.harness.cells import cell_identity
from cellc.harness.device import Placement
from cellc.harness.profiles import Profile, apply_overrides
from cellc.harness.record import StudySettings, checked_bench_name, data_identity, environment, owner_id
from cellc.harness.search import SeededRandomSampler, distributions, hyperparameters
from cellc.harness.train import EpochReport, TrainConfig, TrialOutcome
from cellc.harness.workers import DEFAULT_LAYER_FACTORY, Event, InlinePool, Job, ProcessPool, _resolve
from cellc.tasks import get_task

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class BenchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    tasks: list[str]
    cells: list[str]  # labels: spec names
    cell_refs: dict[str, str] = {}  # label -> the spec file to build, for cells that are not built-in names
    profile: Profile  # the named profile, before task sizing and command-line overrides
    overrides: dict[str, Any] = {}  # command-line overrides of Profile fields (win over the task's)
    workers: int = 2  # 0 = inline in this process with all torch threads
    storage: str
    data_dir: str | None = None
    backend: str = "auto"
    init_std: float | None = 0.1
    seed: int = 0
    verbose: bool = False
    command: str = ""
    max_failures: int = 5  # consecutive failed trials before the bench gives up
    layer_factory: str = DEFAULT_LAYER_FACTORY
    report: str | None = None  # where the report will go (for the start-up plan)
    estimate: bool = True  # time calibration epochs for the plan's estimate and the ETA (cellc.harness.cost)
    placement: Placement = Placement()  # where trials train (--device, --amp); calibration epochs too


class BenchSummary(BaseModel):
    ran: int
    failed: int
    recovered: int  # abandoned RUNNING trials of earlier runs marked FAIL
    complete: bool  # every study reached its target


class _Unit:
    """One (task, cell) study and its bookkeeping during this run.

    Counts of finished trials and of trials running elsewhere (other processes sharing the
    storage) are read from storage by ``refresh`` (at start, every few seconds, and before each
    trial is asked for; not on every loop turn: loading trials with their curves is not free at
    paper scale).
    """

    def __init__(self, task: str, cell: str, study: optuna.Study, target: int) -> None:
        self.task, self.cell, self.study, self.target = task, cell, study, target
        self.in_flight = 0
        self.finished = 0
        self.running_elsewhere = 0
        self.refresh()

    def refresh(self) -> None:
        mine = owner_id()
        trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        self.finished = sum(1 for t in trials if t.state in FINISHED)
        self.running_elsewhere = sum(
            1 for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("owner") != mine
        )

    def wanted(self) -> int:
        return self.target - self.finished - self.in_flight - self.running_elsewhere


class _StopFlag:
    """Set by SIGINT / SIGTERM; the coordinator loop checks it between events.

    A flag rather than an exception, so that a signal never lands between asking Optuna for a
    trial and recording it as in flight: every trial this process started is either stored
    or marked "interrupted" before exiting.
    """

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.raised:  # a second signal: stop now, even inside an inline trial
            raise KeyboardInterrupt
        self.raised = True


@contextmanager
def _stop_on_signals() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    previous = {sig: signal.signal(sig, flag) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _TaskInfo(BaseModel):
    source: str
    info: dict[str, Any]
    profile: Profile  # the profile as this task runs it
    data_identity: dict[str, Any]
    notes: tuple[str, ...] = ()  # what loading skipped or found amiss


class _Inputs(BaseModel):
    tasks: dict[str, _TaskInfo]
    cells: dict[str, dict[str, Any]]  # cell -> cell_identity


def _check_inputs(options: BenchOptions) -> _Inputs:
    """Load every task's data and build every cell before touching the storage (clear errors first)."""
    checked_bench_name(options.name)
    tasks: dict[str, _TaskInfo] = {}
    for name in options.tasks:
        task = get_task(name, options.data_dir)
        try:
            profile = apply_overrides(
                options.profile, task.profile_overrides.get(options.profile.name), options.overrides
            )
        except ValueError as err:
            raise UsageError(f"bad settings for task {name}: {err}") from None
        _check_train_config(options, profile, name)
        data = task.load()
        marker = read_marker(Path(data.location)) if data.location and Path(data.location).is_dir() else None
        identity = data_identity(data.source, data.location, data.sizes(), marker)
        info = {**task.describe(), "trivial_score": task.trivial_score(data)}  # computed once, from this data
        tasks[name] = _TaskInfo(source=data.source, info=info, profile=profile, data_identity=identity,
                                notes=data.notes)
    factory = _resolve(options.layer_factory)
    cells = {}
    for cell in options.cells:
        factory(options.cell_refs.get(cell, cell), options.backend)
        cells[cell] = cell_identity(options.cell_refs.get(cell, cell))
    return _Inputs(tasks=tasks, cells=cells)


def _check_train_config(options: BenchOptions, p: Profile, task: str) -> None:
    """Build one TrainConfig as a trial would (search-space corner) so that a bad setting
    (e.g. ``--init-std -1``) is one message before any trial runs, not a failure per trial."""
    space = p.space
    try:
        TrainConfig(
            hidden=int(space.hidden.low), lr=space.lr.low, momentum=1.0 - space.one_minus_momentum.high,
            noise=space.noise.low, batch_size=p.batch_size, max_epochs=p.max_epochs, patience=p.patience,
            warmup=p.warmup, train_subset=p.train_subset, init_std=options.init_std, seed=options.seed,
        )
    except ValidationError as err:
        problems = "; ".join(
            f"--{'-'.join(str(part) for part in item['loc']).replace('_', '-')}: "
            f"{item['msg'].removeprefix('Value error, ')} (got {item.get('input')!r})"
            for item in err.errors()
        )
        raise UsageError(f"bad training setting for task {task}: {problems}") from None


def _settings(options: BenchOptions, p: Profile) -> StudySettings:
    return StudySettings(
        profile=p.name,
        trials=p.trials,
        max_epochs=p.max_epochs,
        patience=p.patience,
        warmup=p.warmup,
        train_subset=p.train_subset,
        batch_size=p.batch_size,
        init_std=options.init_std,
        backend=options.backend,
        space=p.space,
        seed=options.seed,
    )


def run_bench(options: BenchOptions, log: Callable[[str], None] | None = None) -> BenchSummary:
    """Run (or resume) the bench until every study has its target number of finished trials."""
    log = log or (lambda text: tqdm.write(text, file=sys.stderr))
    return _Coordinator(options, log).run()


class _Coordinator:
    """One bench run, by responsibility: :meth:`_open` checks the inputs and opens (or resumes) the studies;
    :meth:`_dispatch` hands idle workers new trials, round-robin over the studies that want some;
    :meth:`_handle` stores what a worker reports; :meth:`_upkeep` sends heartbeats and takes over stale trials;
    :meth:`_close` stops the workers and marks what was in flight as interrupted."""

    def __init__(self, options: BenchOptions, log: Callable[[str], None]) -> None:
        self.options, self.log = options, log
        self.retry = store.StorageRetry(options.storage, log)
        self.flights: dict[int, tuple[_Unit, optuna.Trial]] = {}
        self.ran = self.failed = self.consecutive_failures = self.recovered = 0
        self.next_job = self.cursor = 0

    # -- opening ---------------------------------------------------------------------------------
    def _open(self) -> None:
        options, retry, log = self.options, self.retry, self.log
        inputs = _check_inputs(options)
        self.task_info = task_info = inputs.tasks
        for info in task_info.values():
            for note in info.notes:
                log(f"note: {note}")
        self.settings = settings = {task: _settings(options, task_info[task].profile) for task in options.tasks}
        self.storage = storage = store.open_storage(options.storage)
        sampler = SeededRandomSampler(options.seed)
        machine = environment(options.workers)
        attrs = {
            (task, cell): {"bench": options.name, "task": task, "cell": cell, "task_info": task_info[task].info,
                           "data_source": task_info[task].source, "data_identity": task_info[task].data_identity,
                           "cell_identity": inputs.cells[cell], "command": options.command, "environment": machine}
            for task in options.tasks for cell in options.cells
        }
        # Every study is checked before any is created or updated: a refused resume writes nothing.
        for (task, cell), study_attrs in attrs.items():
            retry(store.check_resumable, storage, options.name, task, cell, settings[task], study_attrs,
                  what="reading the stored studies")
        self.units: list[_Unit] = []
        for task in options.tasks:
            direction = "minimize" if task_info[task].info["lower_is_better"] else "maximize"
            for cell in options.cells:
                study = retry(store.open_study, storage, options.name, task, cell, settings[task], attrs[task, cell],
                              sampler, direction, what="opening the studies")
                self.recovered += retry(store.fail_abandoned_trials, study, what="checking for stopped trials")
                self.units.append(retry(_Unit, task, cell, study, settings[task].trials, what="counting trials"))
        if self.recovered:
            log(f"marked {self.recovered} trial(s) left running by an interrupted run as failed; they will be rerun")
        for note in _placement_notes(self.units, options.placement):
            log(f"note: {note}")
        self.progress = progress_text.start(options, self.units, task_info,
                                            storage_shown=store.shown_url(options.storage), log=log)
        if self.progress.estimate is not None:  # kept with the studies: a report sets the cost spent beside it
            for unit in self.units:
                retry(_record_estimate, unit.study, self.progress.estimate, what="recording the estimate")
        self.spaces = {task: distributions(settings[task].space) for task in options.tasks}
        self.total = sum(u.target for u in self.units)

    def _heartbeat(self) -> None:
        for _unit, trial in list(self.flights.values()):
            self.storage.record_heartbeat(trial._trial_id)  # noqa: SLF001

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> BenchSummary:
        options = self.options
        self._open()
        if options.workers == 0:
            self.pool: InlinePool | ProcessPool = InlinePool(self._heartbeat, interval=store.heartbeat_s() / 2)
        else:
            self.pool = ProcessPool(options.workers, threads=1)
        units = self.units
        self.bar = progress_text.BenchProgress(options.name, self.progress.units,
                                               sum(min(u.finished, u.target) for u in units), self.total,
                                               self.progress.model, options.workers, self.log)
        self.last_upkeep = time.monotonic()
        try:
            with _stop_on_signals() as stop:
                self.retry.cancelled = lambda: stop.raised  # Ctrl-C / SIGTERM during an outage stops the waiting
                while not stop.raised:
                    self._dispatch(stop)
                    if not self.flights and all(u.finished >= u.target or u.running_elsewhere == 0 for u in units):
                        break  # done; or nothing left to run or to wait for (e.g. a stop at max_failures)
                    # With nothing in flight here but trials still running elsewhere, keep waiting: they
                    # either finish, or go stale and are taken over by the periodic upkeep.
                    for event in self.pool.events(timeout=0.5):
                        self._handle(event)
                    if time.monotonic() - self.last_upkeep > store.heartbeat_s() / 2:
                        self._upkeep()
                    self.bar.tick()
                interrupted = stop.raised
        finally:
            marked = self._close()
        if interrupted:
            raise progress_text.BenchInterrupted(sum(min(u.finished, u.target) for u in units), self.total, marked)
        for unit in units:
            self.retry(unit.refresh, what="counting trials")
        complete = all(u.finished >= u.target for u in units)
        note = self.bar.closing_note() if complete and self.ran else None
        if note:
            self.log(f"bench {options.name}: {note}")
        return BenchSummary(ran=self.ran, failed=self.failed, recovered=self.recovered, complete=complete)

    def _dispatch(self, stop: _StopFlag) -> None:
        """Fill idle workers round-robin over the studies that still want trials."""
        options, units = self.options, self.units
        for slot in self.pool.idle_slots():
            unit = trial = None
            for step in range(len(units)):
                candidate = units[(self.cursor + step) % len(units)]
                if candidate.wanted() > 0:
                    # Counted again from storage, under the study's claim lock, just before asking: another
                    # process sharing the storage may have started or finished trials since the last refresh
                    # (without this, two processes ran 7 trials for a target of 4).
                    trial = self.retry(_claim, self.storage, options.storage, candidate, self.spaces[candidate.task],
                                       [], what=f"asking {candidate.task}/{candidate.cell} for a trial")
                if trial is not None:
                    unit, self.cursor = candidate, (self.cursor + step + 1) % len(units)
                    break
            if unit is None or trial is None:
                return
            self.flights[self.next_job] = (unit, trial)
            unit.in_flight += 1
            if stop.raised:  # came while asking: the trial is stored as interrupted when closing
                return
            self.pool.submit(slot, self._job(unit, trial))

    def _job(self, unit: _Unit, trial: optuna.Trial) -> Job:
        """The job of a claimed trial: its setting and seed recorded, then what a worker needs to train it."""
        options = self.options
        hp = hyperparameters(trial.params)
        seed = options.seed + trial.number
        self.retry(_describe, trial, {"seed": seed, "hyperparams": hp, "data_source": self.task_info[unit.task].source},
                   what=f"recording {unit.task}/{unit.cell} trial {trial.number}")
        run = self.settings[unit.task]
        config = TrainConfig(
            **hp, batch_size=run.batch_size, max_epochs=run.max_epochs, patience=run.patience,
            warmup=run.warmup, train_subset=run.train_subset, init_std=run.init_std, seed=seed,
        )
        job = Job(job_id=self.next_job, task=unit.task, data_dir=options.data_dir,
                  cell=options.cell_refs.get(unit.cell, unit.cell),
                  backend=options.backend, config=config.model_dump(),
                  report_epochs=options.verbose, layer_factory=options.layer_factory,
                  placement=options.placement.model_dump())
        self.bar.started(self.next_job, unit.task, unit.cell, trial.number, hp["hidden"])
        self.next_job += 1
        return job

    def _handle(self, event: Event) -> None:
        """Store what a worker reports: an epoch (shown with -v), a finished trial, or a failure."""
        if event.job_id not in self.flights:
            return
        log, retry = self.log, self.retry
        unit, trial = self.flights[event.job_id]
        if event.kind == "epoch":
            report = EpochReport(**event.payload)
            log(f"  {unit.task}/{unit.cell} trial {trial.number} epoch {report.epoch}: "
                f"train {report.train:.4f} valid {report.valid:.4f} ({report.seconds:.1f}s)")
            return
        del self.flights[event.job_id]
        unit.in_flight -= 1
        if event.kind == "done":
            outcome = TrialOutcome(**event.payload)
            if not retry(store_outcome, unit.study, trial, outcome,
                         what=f"storing {unit.task}/{unit.cell} trial {trial.number}"):
                log(f"warning: {unit.task}/{unit.cell} trial {trial.number} was already marked "
                    "failed by another process (stale heartbeat?); its result is not stored and "
                    "the slot is run again")
                self.bar.failed(event.job_id)
                return
            unit.finished += 1
            self.ran += 1
            self.consecutive_failures = 0
            self.bar.finished(event.job_id, outcome.status, outcome.epochs, outcome.wall_time_s)
            if self.options.verbose:
                log(f"{unit.task}/{unit.cell} trial {trial.number}: {outcome.status}, "
                    f"best valid {outcome.best_valid}, test {outcome.test_at_best}, "
                    f"{outcome.epochs} epochs, {outcome.wall_time_s:.0f}s")
            return
        retry(_store_failure, unit.study, trial, str(event.payload),
              what=f"storing {unit.task}/{unit.cell} trial {trial.number}'s failure")
        self.failed += 1
        self.consecutive_failures += 1
        self.bar.failed(event.job_id)
        log(f"{unit.task}/{unit.cell} trial {trial.number} failed: {event.payload}")
        if self.consecutive_failures >= self.options.max_failures:
            raise CellcError(
                f"{self.consecutive_failures} trials failed in a row (last: {event.payload}); "
                "stopping. Finished trials are stored; fix the cause and rerun to resume"
            )

    def _upkeep(self) -> None:
        """Heartbeats for this run's trials; trials of a dead process or machine (no heartbeat for the grace
        period) failed, so that this run takes their slots over instead of ending short of the target; counts
        read again."""
        retry = self.retry
        retry(self._heartbeat, what="recording heartbeats")
        taken = sum(retry(store.fail_abandoned_trials, unit.study, what="checking for stopped trials")
                    for unit in self.units)
        if taken:
            self.recovered += taken
            self.log(f"marked {taken} trial(s) of a stopped process as failed; they will be rerun")
        for unit in self.units:
            retry(unit.refresh, what="counting trials")
        self.last_upkeep = time.monotonic()

    def _close(self) -> int:
        """Stop the workers; every trial still in flight is stored as interrupted (it runs again on resume).
        Returns how many were."""
        self.pool.close()
        marked = len(self.flights)
        for unit, trial in self.flights.values():
            try:
                _store_failure(unit.study, trial, "interrupted", status="interrupted")
            except Exception:  # storage unreachable: the trial goes stale and is failed as interrupted later
                pass
        self.bar.close()
        return marked


def _placement_notes(units: list[_Unit], placement: Placement) -> list[str]:
    """One line per study whose finished trials trained elsewhere than this run will (another device or
    precision): the study then mixes them, which its report says too."""
    here = placement.describe()
    notes = []
    for unit in units:
        kinds: dict[tuple[str, str], int] = {}
        for trial in unit.study.get_trials(deepcopy=False, states=FINISHED):
            key = (trial.user_attrs.get("device") or "cpu", trial.user_attrs.get("precision") or "float32")
            kinds[key] = kinds.get(key, 0) + 1
        other = {key: n for key, n in kinds.items() if key != (here["device"], here["precision"])}
        if other and unit.finished < unit.target:
            ran = ", ".join(f"{n} on {device} in {precision}" for (device, precision), n in sorted(other.items()))
            notes.append(f"{unit.task}/{unit.cell}: finished trials ran {ran}; this run trains on {here['device']} "
                         f"in {here['precision']}, so the study will mix them (its report says so)")
    return notes


def estimate_bench(options: BenchOptions, target_hours: float, log: Callable[[str], None] | None = None) -> str:
    """``cellc bench --estimate``: the whole study's cost on this machine, nothing run or stored."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    task_info = _check_inputs(options).tasks
    return progress_text.estimate(options, {task: task_info[task].profile for task in options.tasks},
                                  {task: info.source for task, info in task_info.items()}, target_hours, log)


def _claim(storage: optuna.storages.BaseStorage, url: str, unit: _Unit,
           space: dict[str, optuna.distributions.BaseDistribution], asked: list[optuna.Trial]) -> optuna.Trial | None:
    """A new trial of ``unit``'s study owned by this process, or None if the study has all it wants.

    Counting and asking happen under the study's claim lock, so that processes sharing the storage never
    overshoot the target. Called again after a lost connection with the same ``asked`` list, it goes on
    with the trial it already asked for. (A trial whose creation reached the database but whose answer did
    not is counted as running elsewhere, gets a heartbeat from whoever sees it, and is failed as
    interrupted a grace period later: a retry never doubles a slot.)
    """
    with store.claim_lock(storage, url, unit.study.study_name):
        if not asked:
            unit.refresh()
            if unit.wanted() <= 0:
                return None
            with warnings.catch_warnings():
                # Optuna warns that heartbeats are meant for Study.optimize; we record them ourselves.
                warnings.simplefilter("ignore", UserWarning)
                asked.append(unit.study.ask(space))
        trial = asked[0]
        # A first heartbeat at once: a trial without any is never detected as stale.
        storage.record_heartbeat(trial._trial_id)  # noqa: SLF001
        trial.set_user_attr("owner", owner_id())
    return trial


def _record_estimate(study: optuna.Study, estimate: dict[str, Any]) -> None:
    """Append this run's start-up estimate to the study's ``estimates`` (one entry per bench run that made one)."""
    known = study.user_attrs.get("estimates", [])
    if not known or known[-1] != estimate:  # a retry after a lost connection appends it once
        study.set_user_attr("estimates", [*known, estimate])


def _describe(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def store_outcome(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> bool:
    """Store a finished trial; False when it was already finished elsewhere (e.g. failed as stale).

    Safe to call again after a lost connection: where the first call's final write reached the database
    but its answer did not, the trial is found finished with this outcome, which counts as stored.
    """
    try:
        for key, value in outcome.model_dump().items():
            trial.set_user_attr(key, value)
        if outcome.status == "ok" and outcome.best_valid is not None:
            study.tell(trial, outcome.best_valid)
        else:  # diverged: kept and counted, but it has no objective value
            study.tell(trial, state=TrialState.PRUNED)
    except (RuntimeError, ValueError):  # optuna: UpdateFinishedTrialError / "already finished"
        stored = study._storage.get_trial(trial._trial_id)  # noqa: SLF001
        if stored.state == TrialState.RUNNING:
            raise  # not the already-finished case: a real error
        return stored.state in FINISHED and stored.user_attrs.get("owner") == owner_id() and \
            stored.user_attrs.get("status") == outcome.status
    return True


def _store_failure(study: optuna.Study, trial: optuna.Trial, message: str, status: str = "failed") -> None:
    try:
        trial.set_user_attr("status", status)
        trial.set_user_attr("error", message)
        study.tell(trial, state=TrialState.FAIL)
    except Exception as err:  # already finished elsewhere (e.g. marked stale); nothing to undo
        if store.is_connection_error(err):
            raise  # the caller retries

