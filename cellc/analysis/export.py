"""A bench's studies as the lines of a trials file (:mod:`cellc.harness.trials_file`; pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from cellc.analysis.load import StudyData
from cellc.analysis.outcomes import TaskFacts, failure_kind
from cellc.harness.trials_file import HeaderLine, StudyLine, TaskLine, TrialLine


def trials_lines(bench: str, studies: Sequence[StudyData], facts: Mapping[str, TaskFacts]) -> list[BaseModel]:
    """Header, one task line per task (first-seen order), the studies, then every trial of every study."""
    tasks = list(dict.fromkeys(s.task for s in studies))
    lines: list[BaseModel] = [HeaderLine(bench=bench, studies=len(studies), trials=sum(len(s.records) for s in studies))]
    for task in tasks:
        f = facts[task]
        lines.append(TaskLine(task=task, lower_is_better=f.lower_is_better, trivial_score=f.trivial_score,
                              trivial_predictor=f.trivial_predictor, equivalence_margin=f.margin,
                              equivalence_reason=f.margin_reason))
    lines += [StudyLine(study=s.name, task=s.task, cell=s.cell, attrs=s.attrs) for s in studies]
    for s in studies:
        identity = s.attrs.get("cell_identity") or {}
        environment = s.attrs.get("environment") or {}
        for r in s.records:
            lines.append(TrialLine(**r.model_dump(), study=s.name, spec_hash=identity.get("hash"),
                                   failure=failure_kind(r, facts[s.task]), code_commit=environment.get("commit")))
    return lines
