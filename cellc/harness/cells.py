"""Turning a cell name from the command line into a compiled layer class."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from cellc.errors import UsageError, short_path


@lru_cache(maxsize=None)
def layer_class(cell: str, backend: str = "auto") -> type[torch.nn.Module]:
    """The compiled layer class for ``cell`` (a spec name or path); cached per process."""
    import cellc

    return cellc.build(cell, backend=backend)


def cell_identity(cell: str) -> dict[str, object]:
    """What defines ``cell`` as compiled now (stored with a study; resuming needs the same ``hash``).

    ``hash`` is :attr:`cellc.ir.pipeline.CompiledCell.hash` (equations, names, initial state,
    ``init:`` constants); the rendered equations let a report show what actually ran.
    """
    import cellc
    from cellc.ir.printer import equation_latex

    compiled = cellc.compile_spec(cell)
    return {
        "hash": compiled.hash,
        "equations_text": list(compiled.equations_text),
        "equations_latex": [equation_latex(eq) for eq in compiled.cell.equations],
        "formula": compiled.formula_text(),
        "description": str(getattr(compiled.spec, "description", "") or ""),
    }


SPECS_PATH_ENV = "CELLC_SPECS_PATH"


def user_spec_dirs(specs_dirs: list[str] | None = None) -> list[Path]:
    """Folders of user specs: each ``--specs-dir``, then ``$CELLC_SPECS_PATH`` (``os.pathsep``-separated).
    A folder that is not there is a user error naming the setting."""
    named = [(d, "--specs-dir") for d in specs_dirs or []]
    named += [(d, f"${SPECS_PATH_ENV}") for d in os.environ.get(SPECS_PATH_ENV, "").split(os.pathsep) if d.strip()]
    out: list[Path] = []
    for text, setting in named:
        path = Path(text).expanduser()
        if not path.is_dir():
            raise UsageError(f"{setting} {text}: folder not found")
        if path.resolve() not in [p.resolve() for p in out]:
            out.append(path)
    return out


def spec_files(dirs: list[Path]) -> dict[str, Path]:
    """The specs of ``dirs`` (``*.yaml`` / ``*.yml``) by their ``name:``, built-in specs included; two files
    giving the same name are an error naming both (a name must say which cell it is). A file that does
    not load is left out here (`cellc check` / `cellc list` show why)."""
    from cellc.errors import SpecError
    from cellc.spec.loader import load_spec, spec_search_dirs

    found: dict[str, Path] = {}
    for folder in [*dirs, *spec_search_dirs()]:
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            try:
                name = load_spec(path).name
            except SpecError:
                continue
            other = found.get(name)
            if other is not None and other.resolve() != path.resolve():
                raise UsageError(f"two specs are named '{name}': {short_path(other)} and {short_path(path)}; "
                                 "rename one (its name: line)")
            found.setdefault(name, path)
    return found


def resolve_cell(ref: str, dirs: list[Path]) -> tuple[str, str]:
    """(label, what to build) for a ``--cell`` / ``--cells`` item: a spec file is labelled by its ``name:``
    (not by the path as typed); a name is looked up in ``dirs``, then as ``./<name>.yaml``, then among
    the built-in specs (which the compiler finds by name itself)."""
    from cellc.spec.loader import load_spec

    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return load_spec(path).name, str(path.resolve())
    if dirs:
        files = spec_files(dirs)
        if ref in files and files[ref].parent.resolve() in [d.resolve() for d in dirs]:
            return ref, str(files[ref].resolve())
    local = Path(f"{ref}.yaml")
    if local.is_file():
        return load_spec(local).name, str(local.resolve())
    return ref, ref


def resolve_cells(refs: list[str], dirs: list[Path]) -> dict[str, str]:
    """label -> what to build, for ``--cells``; two items naming the same cell are an error naming both."""
    out: dict[str, str] = {}
    typed: dict[str, str] = {}
    for ref in refs:
        label, target = resolve_cell(ref, dirs)
        if label in out and out[label] != target:
            raise UsageError(f"--cells: {typed[label]!r} and {ref!r} are both named '{label}'; rename one "
                             "(its name: line)")
        out.setdefault(label, target)
        typed.setdefault(label, ref)
    return out


def elementwise_input_at(target: str) -> str | None:
    """Where the cell ``target`` (a spec name or path) reads its input elementwise ("file:line:col"), or None:
    such a cell's hidden size must equal its input size."""
    import cellc

    where = cellc.compile_spec(target).direct_input
    return None if where is None else where.render()


def refuse_elementwise_input(refs: dict[str, str], flag: str, why: str) -> None:
    """Refuse, before anything runs, each cell of ``refs`` (label -> target) that reads its input elementwise,
    where the command (``why``) cannot give it hidden size == input size."""
    for label, target in refs.items():
        where = elementwise_input_at(target)
        if where is not None:
            raise UsageError(f"{flag}: '{label}' reads its input elementwise ({where}), so its hidden size must "
                             f"equal its input size; {why}")
