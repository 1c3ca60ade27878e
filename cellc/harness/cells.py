"""Turning a cell name from the command line into a compiled layer class."""

from __future__ import annotations

from functools import lru_cache

import torch


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
