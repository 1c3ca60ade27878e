"""Reading a bench's stored studies (the only I/O in cellc.analysis; see cellc.harness.record)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from cellc.errors import UsageError
from cellc.harness.record import TrialRecord, study_records
from cellc.harness.storage import list_bench_studies, open_storage, shown_url


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
