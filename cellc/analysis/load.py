"""Reading a bench's stored studies or its trials file, and the tasks' facts (the only I/O in cellc.analysis)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from cellc.errors import UsageError
from cellc.harness.record import TrialRecord, study_records
from cellc.harness.storage import list_bench_studies, open_storage, shown_url

if TYPE_CHECKING:
    from cellc.analysis.outcomes import TaskFacts


@dataclass(frozen=True)
class StudyData:
    """One (task, cell) study: its user attributes and every stored trial."""

    name: str
    task: str
    cell: str
    attrs: dict[str, Any]
    records: list[TrialRecord]


def load_bench(storage_url: str, bench: str) -> list[StudyData]:
    """All studies of ``bench`` in the storage, in creation order."""
    storage = open_storage(storage_url, must_exist=True)  # a report reads; a mistyped path creates nothing
    summaries = list_bench_studies(storage, bench)
    if not summaries:
        raise UsageError(f"no studies named {bench}/... in {shown_url(storage_url)}; run `cellc bench` first or check --name")
    out = []
    for summary in summaries:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        attrs = dict(study.user_attrs)
        out.append(StudyData(summary.study_name, attrs.get("task", "?"), attrs.get("cell", "?"), attrs,
                             study_records(study)))
    return out


# ---------------------------------------------------------------------------------------------
# Task facts (the trivial predictor's score, the equivalence margin) and the trials file


def _task_class_facts(task: str) -> dict[str, Any]:
    from cellc.tasks import task_classes

    cls = task_classes().get(task)
    if cls is None:
        return {}
    return {"trivial_predictor": cls.trivial_predictor, "equivalence_margin": cls.equivalence_margin,
            "equivalence_reason": cls.equivalence_reason}


def compute_trivial(task: str, identity: dict[str, Any] | None) -> tuple[float | None, str]:
    """The task's trivial score from its data on this machine, for studies stored without one.

    (None, why) when the data are not here or differ from what the trials ran on (source or sizes)."""
    from cellc.errors import CellcError
    from cellc.tasks import task_classes

    cls = task_classes().get(task)
    if cls is None:
        return None, f"no task module named {task!r}"
    instance = cls()
    if hasattr(instance, "auto_generate"):
        instance.auto_generate = False  # a report never generates a corpus
    try:
        data = instance.load()
    except CellcError as err:
        return None, f"its data are not on this machine ({err})"
    if identity and (identity.get("source") != data.source or (identity.get("sizes") and identity["sizes"] != data.sizes())):
        return None, (f"the {task} data here ({data.source}, {data.sizes()}) are not what the trials ran on "
                      f"({identity.get('source')}, {identity.get('sizes')})")
    return instance.trivial_score(data), ""


def facts_from_studies(studies: list[StudyData]) -> dict[str, "TaskFacts"]:
    """One :class:`TaskFacts` per task: stored with its studies (newer benches), else from its task module."""
    from cellc.analysis.outcomes import TaskFacts

    out: dict[str, TaskFacts] = {}
    for study in studies:
        if study.task in out:
            continue
        info = dict(study.attrs.get("task_info") or {})
        known = {**_task_class_facts(study.task), **{k: v for k, v in info.items() if k in (
            "trivial_predictor", "equivalence_margin", "equivalence_reason")}}
        note = ""
        if info.get("trivial_score") is not None:
            trivial = float(info["trivial_score"])
        else:
            trivial, note = compute_trivial(study.task, study.attrs.get("data_identity"))
        out[study.task] = TaskFacts(
            task=study.task, lower_is_better=bool(info.get("lower_is_better", True)), trivial_score=trivial,
            trivial_predictor=str(known.get("trivial_predictor") or ""),
            margin=None if known.get("equivalence_margin") is None else float(known["equivalence_margin"]),
            margin_reason=str(known.get("equivalence_reason") or ""), note=note)
    return out


def load_trials(path: str | Path) -> tuple[str, list[StudyData], dict[str, "TaskFacts"]]:
    """A trials file as the report needs it: bench name, studies with their records, task facts."""
    from cellc.analysis.outcomes import TaskFacts
    from cellc.harness.trials_file import read_trials

    file = read_trials(Path(path))
    records: dict[str, list[TrialRecord]] = {s.study: [] for s in file.studies}
    for trial in file.trials:
        records[trial.study].append(trial.to_record())
    studies = [StudyData(s.study, s.task, s.cell, dict(s.attrs), records[s.study]) for s in file.studies]
    facts = {t.task: TaskFacts(task=t.task, lower_is_better=t.lower_is_better, trivial_score=t.trivial_score,
                               trivial_predictor=t.trivial_predictor, margin=t.equivalence_margin,
                               margin_reason=t.equivalence_reason)
             for t in file.tasks}
    missing = sorted({s.task for s in studies} - set(facts))
    if missing:
        raise UsageError(f"--trials {path}: no task record for {', '.join(missing)}")
    return file.header.bench, studies, facts
