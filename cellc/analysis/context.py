"""What a report needs besides the stored trials: the cells' equations and where the report was made.

The equations come from the studies (``cell_identity``, what ran) when stored; older studies
lack them and the cell is recompiled from the current spec (the report says which).

This is the one place in :mod:`cellc.analysis` (besides :mod:`cellc.analysis.load`) that reads
anything: spec files (through the compiler), ``git`` and ``/proc/cpuinfo``. Everything it returns
is stable for a given checkout and machine, so regenerating a report gives the same bytes.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

import cellc
from cellc.machine import cpu_model


class CellInfo(BaseModel):
    """A cell as the compiler sees it (rendered from the IR, not retyped)."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    equations_latex: list[str] = []
    equations_text: list[str] = []
    formula: str = ""
    error: str | None = None  # why the cell could not be compiled now (e.g. spec removed)
    stored: bool = False  # True: from the studies' cell_identity (what ran); False: recompiled now


class Machine(BaseModel):
    model_config = ConfigDict(frozen=True)

    cpu: str
    cores: int
    system: str
    python: str


class ReportContext(BaseModel):
    """Facts about the code and machine that generate the report (not about the bench's runs)."""

    model_config = ConfigDict(frozen=True)

    version: str
    commit: str  # last commit that changed cellc/, "+ uncommitted changes" when the tree differs
    command: str
    machine: Machine
    cells: dict[str, CellInfo]


def describe_cell(name: str, stored: Mapping[str, Any] | None = None) -> CellInfo:
    """The cell as stored with its studies (``cell_identity``), else as the current spec compiles."""
    from cellc.errors import CellcError
    from cellc.ir.printer import equation_latex

    if stored and stored.get("equations_text"):
        return CellInfo(
            name=name,
            description=str(stored.get("description") or ""),
            equations_latex=[str(eq) for eq in stored.get("equations_latex") or []],
            equations_text=[str(eq) for eq in stored["equations_text"]],
            formula=str(stored.get("formula") or ""),
            stored=True,
        )
    try:
        compiled = cellc.compile_spec(name)
    except CellcError as err:
        return CellInfo(name=name, error=str(err))
    spec = compiled.spec
    return CellInfo(
        name=name,
        description=str(getattr(spec, "description", "") or ""),
        equations_latex=[equation_latex(eq) for eq in compiled.cell.equations],
        equations_text=list(compiled.equations_text),
        formula=compiled.formula_text(),
    )


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_commit() -> str:
    """The last commit that changed the package (stable across commits of reports or docs)."""
    package = Path(cellc.__file__).resolve().parent
    commit = _git(["log", "-1", "--format=%H", "--", "."], package)
    if not commit:
        return "unknown (not a git checkout)"
    dirty = _git(["status", "--porcelain", "--untracked-files=no", "--", "."], package)
    return commit + (" + uncommitted changes" if dirty else "")


def this_machine() -> Machine:
    cpu = cpu_model()
    return Machine(cpu=cpu, cores=os.cpu_count() or 1, system=f"{platform.system()} {platform.machine()}",
                   python=platform.python_version())


def gather_context(cells: Iterable[str], command: str,
                   stored: Mapping[str, Mapping[str, Any] | None] | None = None) -> ReportContext:
    """``stored``: cell -> the ``cell_identity`` its studies recorded (None / absent: recompile)."""
    stored = stored or {}
    return ReportContext(
        version=cellc.__version__,
        commit=code_commit(),
        command=command,
        machine=this_machine(),
        cells={name: describe_cell(name, stored.get(name)) for name in sorted(set(cells))},
    )
