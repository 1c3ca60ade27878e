"""Moving benches between storages (``cellc copy``): SQLite -> PostgreSQL to continue a laptop's study on a
cluster, and back to archive it; and merging benches that ran the same plan on different storages.

A study that the destination lacks is copied whole by Optuna's own ``optuna.copy_study`` (study
attributes, every trial with its number, parameters, attributes and times), so that a report from the copy
is byte-identical to one from the source. A trial still RUNNING in the source (a bench working on it, or
one that was killed) is stored in the copy as FAIL ``"interrupted"``: the copy has no process to finish
it, and a bench resuming there reruns its slot.

A study that the destination already has is merged trial number by trial number (the plan is the same:
same settings, data and cell, checked as a resuming bench checks them, and trial k draws the same setting
and seed everywhere):

- the destination lacks trial k: the source's is appended, with the same number;
- both finished (ok or diverged): their results must agree (state, value, curves, test scores; not the
  wall time or the machine), else the merge is refused in one message before anything is written;
- the destination's trial k failed or is unfinished and the source's finished: the destination's takes the
  source's result (its parameters are the same);
- otherwise the destination's trial k stays as it is.

So each trial number is there once, and merging again changes nothing. Writes into a study happen under
its claim lock (:func:`cellc.harness.storage.claim_lock`), which a bench sharing that storage also takes
before asking for a trial, so a bench running on the destination does not take a number being copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from cellc.errors import UsageError, short_path
from cellc.harness import storage as store
from cellc.harness.record import StudySettings, record_from_trial
from cellc.harness.train import TrialOutcome

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# What a trial's result is, for comparing two runs of the same trial: not where or how fast it ran.
RESULT_KEYS = tuple(k for k in TrialOutcome.model_fields if k not in ("wall_time_s", "cpu_time_s")) + (
    "seed", "hyperparams")
RUNNING_WHEN_COPIED = "running in the source storage when copied"


@dataclass
class StudyPlan:
    name: str
    new: bool  # the destination lacks the study: copied whole
    append: list[FrozenTrial] = field(default_factory=list)  # source trials, numbers from len(destination)
    complete: list[tuple[int, FrozenTrial]] = field(default_factory=list)  # (destination trial id, source trial)
    running: int = 0  # source trials still RUNNING that are written (as interrupted)


@dataclass
class CopySummary:
    benches: list[str]
    lines: list[str]


def _outcome(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's result as a report reads it (:func:`cellc.harness.record.record_from_trial`: an attribute an
    older bench did not store reads as its default), not where or how fast it ran."""
    record = record_from_trial(trial, {}).model_dump()
    return {key: record.get(key) for key in RESULT_KEYS}


def _result(trial: FrozenTrial) -> tuple:
    """What must agree between two runs of a trial. The setting is compared as trained (``hyperparams``), not
    as Optuna's raw draw: a trial imported from a trials file has the same setting, its ``one_minus_momentum``
    rebuilt from the momentum to within a rounding."""
    return trial.state.name, trial.values, _outcome(trial)


def _same_setting(a: FrozenTrial, b: FrozenTrial) -> bool:
    """Whether two trials drew the same setting: the same parameters, to within a rounding (a trial imported
    from a trials file rebuilds ``one_minus_momentum`` from the momentum it trained with)."""
    return a.params.keys() == b.params.keys() and all(
        math.isclose(a.params[k], b.params[k], rel_tol=1e-12, abs_tol=0.0) for k in a.params)


def _difference(a: FrozenTrial, b: FrozenTrial) -> str:
    if a.state != b.state:
        return f"{a.state.name.lower()} here, {b.state.name.lower()} there"
    first, second = _outcome(a), _outcome(b)
    if first["hyperparams"] != second["hyperparams"]:
        return "other hyper-parameters"
    if a.values != b.values:
        return f"value {a.values[0] if a.values else None} vs {b.values[0] if b.values else None}"
    keys = [k for k in RESULT_KEYS if first[k] != second[k]]
    return f"{', '.join(keys)} differ"


def _plan(source: optuna.Study, dest_trials: list[FrozenTrial] | None) -> tuple[StudyPlan, list[str]]:
    """What merging ``source`` into a destination study with ``dest_trials`` (None: no such study) writes,
    and the conflicts that forbid it."""
    src_trials = source.get_trials(deepcopy=False)
    plan = StudyPlan(name=source.study_name, new=dest_trials is None)
    if dest_trials is None:
        plan.running = sum(1 for t in src_trials if t.state == TrialState.RUNNING)
        return plan, []
    conflicts = []
    by_number = {t.number: t for t in dest_trials}
    for trial in src_trials:
        mine = by_number.get(trial.number)
        if mine is None:
            plan.append.append(trial)
            plan.running += trial.state == TrialState.RUNNING
        elif not _same_setting(mine, trial) and TrialState.RUNNING not in (trial.state, mine.state):
            conflicts.append(f"{source.study_name} trial {trial.number} (other hyper-parameters)")
        elif mine.state in FINISHED and trial.state in FINISHED:
            if _result(mine) != _result(trial):
                conflicts.append(f"{source.study_name} trial {trial.number} ({_difference(mine, trial)})")
        elif trial.state in FINISHED and _same_setting(mine, trial):
            plan.complete.append((mine._trial_id, trial))  # noqa: SLF001
    return plan, conflicts


def _check_same_plan(dest: optuna.storages.BaseStorage, source: optuna.Study) -> None:
    attrs = source.user_attrs
    bench, task, cell = (attrs.get(k) for k in ("bench", "task", "cell"))
    stored = attrs.get("settings")
    if None in (bench, task, cell) or stored is None:
        return  # a study without cellc's attributes: nothing to compare
    try:
        store.check_resumable(dest, str(bench), str(task), str(cell), StudySettings.model_validate(stored), attrs)
    except UsageError as err:
        raise UsageError(f"cannot merge into --to: {str(err).split('; ')[0]}; nothing was written") from None
    dest_study = optuna.load_study(study_name=source.study_name, storage=dest)
    if dest_study.directions != source.directions:
        raise UsageError(f"cannot merge into --to: study {source.study_name!r} optimizes in the other direction "
                         "there; nothing was written")


def _dest_trials(dest: optuna.storages.BaseStorage, name: str) -> list[FrozenTrial] | None:
    try:
        study = optuna.load_study(study_name=name, storage=dest)
    except KeyError:
        return None
    return study.get_trials(deepcopy=False)


def _as_interrupted(trial: FrozenTrial) -> FrozenTrial:
    return FrozenTrial(
        number=trial.number, state=TrialState.FAIL, value=None, values=None, datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_start, params=trial.params, distributions=trial.distributions,
        user_attrs={**trial.user_attrs, "status": "interrupted", "error": RUNNING_WHEN_COPIED},
        system_attrs=trial.system_attrs, intermediate_values=trial.intermediate_values, trial_id=0,
    )


def _complete_in_place(dest: optuna.storages.RDBStorage, trial_id: int, source: FrozenTrial) -> None:
    """Give the destination's failed (or unfinished) trial the source's result: reopen it (the one write
    Optuna's API has no call for), then store attributes and state through Optuna. Interrupted half-way, it
    is left RUNNING without a heartbeat, is failed as interrupted by the next bench, and a rerun of the
    copy completes it again."""
    from optuna.storages._rdb.models import TrialModel

    with dest.engine.begin() as connection:
        connection.execute(
            sqlalchemy.update(TrialModel)
            .where(TrialModel.trial_id == trial_id, TrialModel.state.not_in([s for s in FINISHED]))
            .values(state=TrialState.RUNNING, datetime_complete=None)
        )
    for key, value in source.user_attrs.items():
        dest.set_trial_user_attr(trial_id, key, value)
    dest.set_trial_state_values(trial_id, source.state, source.values)


def _fail_copied_running(dest: optuna.storages.RDBStorage, name: str) -> None:
    study = optuna.load_study(study_name=name, storage=dest)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        dest.set_trial_user_attr(trial._trial_id, "error", RUNNING_WHEN_COPIED)  # noqa: SLF001
        store._fail_interrupted(dest, trial._trial_id)  # noqa: SLF001


def copy_benches(from_url: str, to_url: str, name: str | None = None) -> CopySummary:
    """Copy (or merge) every bench of ``from_url``, or only ``name``, into ``to_url``."""
    source = store.open_storage(from_url, must_exist=True)
    summaries = optuna.get_all_study_summaries(source, include_best_trial=False)
    benches = sorted({store.study_bench(s) for s in summaries})
    if name is not None:
        if name not in benches:
            raise UsageError(f"--name {name}: no such bench in --from {store.shown_url(from_url)}"
                             f"{' (it has ' + ', '.join(benches) + ')' if benches else ' (it has none)'}")
        benches = [name]
    if not benches:
        raise UsageError(f"--from {store.shown_url(from_url)}: no benches to copy")
    dest = store.open_storage(to_url)
    studies = [optuna.load_study(study_name=s.study_name, storage=source)
               for bench in benches for s in store.list_bench_studies(source, bench)]
    # Everything is checked before anything is written: a refused merge leaves the destination as it was.
    conflicts: list[str] = []
    for study in studies:
        existing = _dest_trials(dest, study.study_name)
        if existing is not None:
            _check_same_plan(dest, study)
        conflicts += _plan(study, existing)[1]
    if conflicts:
        raise UsageError(
            f"cannot merge into --to {store.shown_url(to_url)}: {len(conflicts)} finished trial(s) have other "
            f"results there, e.g. {conflicts[0]}: the benches did not run the same plan (or ran it on other "
            "hardware); nothing was written"
        )
    lines = []
    for study in studies:
        with store.claim_lock(dest, to_url, study.study_name):
            plan, conflicts = _plan(study, _dest_trials(dest, study.study_name))
            if conflicts:  # a bench wrote there since the check above
                raise UsageError(f"cannot merge {study.study_name}: {conflicts[0]} changed meanwhile; rerun the copy")
            if plan.new:
                optuna.copy_study(from_study_name=study.study_name, from_storage=source, to_storage=dest)
                _fail_copied_running(dest, study.study_name)
                line = f"{study.study_name}: copied {len(study.get_trials(deepcopy=False))} trial(s)"
            else:
                target = optuna.load_study(study_name=study.study_name, storage=dest)
                for trial in plan.append:
                    target.add_trial(_as_interrupted(trial) if trial.state == TrialState.RUNNING else trial)
                for trial_id, trial in plan.complete:
                    _complete_in_place(dest, trial_id, trial)
                line = (f"{study.study_name}: merged, {len(plan.append)} trial(s) added, {len(plan.complete)} "
                        "finished where they had failed")
            if plan.running:
                line += f" ({plan.running} running in the source, stored as interrupted)"
            lines.append(line)
    return CopySummary(benches=benches, lines=lines)


def is_trials_file(source: str) -> bool:
    """Whether ``cellc copy --from`` names a trials file (a path) rather than a storage (a URL)."""
    return "://" not in source


def import_trials_file(path: Path, to_url: str, name: str | None = None) -> CopySummary:
    """Copy (or merge) the bench of a trials file into ``to_url``: the file is stored as it was exported
    (every study with its attributes, every trial with its number, state, results and attributes) in a
    private SQLite file, which is then copied or merged like a storage (:func:`copy_benches`). So a study
    carried between machines in a committed trials file resumes where it stopped, and each trial number
    stays there once."""
    import tempfile

    from cellc.harness.record import StudySettings
    from cellc.harness.search import distributions
    from cellc.harness.trials_file import read_trials

    trials_file = read_trials(path)
    bench = trials_file.header.bench
    if name is not None and name != bench:
        raise UsageError(f"--name {name}: {short_path(path)} holds bench {bench!r}")
    lower = {t.task: t.lower_is_better for t in trials_file.tasks}
    with tempfile.TemporaryDirectory(prefix="cellc-import-") as folder:
        staging_url = f"sqlite:///{Path(folder) / 'studies.db'}"
        staging = store.open_storage(staging_url)
        for line in trials_file.studies:
            study = optuna.create_study(storage=staging, study_name=line.study,
                                        direction="minimize" if lower.get(line.task, True) else "maximize")
            for key, value in line.attrs.items():
                study.set_user_attr(key, value)
            space = distributions(StudySettings.model_validate(line.attrs["settings"]).space)
            rows = sorted((t for t in trials_file.trials if t.study == line.study), key=lambda t: t.number)
            for expected, row in enumerate(rows):
                if row.number != expected:
                    raise UsageError(f"{short_path(path)}: {line.study} has no trial {expected} (its trials must be "
                                     "numbered 0, 1, 2, ... as a bench stores them)")
                study.add_trial(_trial_from_row(row, space))
        return copy_benches(staging_url, to_url, bench)


def _trial_from_row(row: Any, space: dict[str, Any]) -> FrozenTrial:
    """An Optuna trial holding what a trials-file row holds (a row still running becomes interrupted, as a copy
    stores a running trial)."""
    from cellc.harness.record import TrialRecord

    state = TrialState[row.state]
    attrs = {key: getattr(row, key) for key in TrialRecord.model_fields
             if key not in ("number", "state", "task", "cell", "host")}
    if row.host is not None:
        attrs["owner"] = f"{row.host}:0:0"  # the host is what a record reads from the owner
    if state == TrialState.RUNNING:
        state, attrs = TrialState.FAIL, {**attrs, "status": "interrupted", "error": RUNNING_WHEN_COPIED}
    values = dict(row.hyperparams)
    params = {}
    for key, distribution in space.items():
        value = values.get(key) if key != "one_minus_momentum" else (
            None if values.get("momentum") is None else 1.0 - values["momentum"])
        if value is None:  # a trial stored before it drew its setting
            continue
        low, high = distribution.low, distribution.high  # 1 - (1 - x) may round just outside the range
        params[key] = int(round(value)) if isinstance(distribution, optuna.distributions.IntDistribution) \
            else min(max(float(value), low), high)
    return optuna.trial.create_trial(
        state=state, value=row.best_valid if state == TrialState.COMPLETE else None, params=params,
        distributions={key: space[key] for key in params}, user_attrs=attrs)


def describe(from_url: str, to_url: str, summary: CopySummary) -> list[str]:
    return [*summary.lines, f"copied {', '.join(summary.benches)} from {store.shown_url(from_url)} "
            f"to {store.shown_url(to_url)}"]

