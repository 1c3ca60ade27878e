"""Which backend runs which cell: a backend that does not run a construct yet refuses it with one message, and
``auto`` picks the fastest backend that runs the cell."""

from __future__ import annotations

from cellc.ir.pipeline import CompiledCell

# Backends that print every value N units wide (their kernels take one size). The lowered backend runs a cell with
# declared sizes where it is torch's (lstmp: torch.nn.LSTM with proj_size) and refuses any other cell anyway.
ONE_SIZE = ("triton",)


def unsupported(compiled: CompiledCell, backend: str) -> str | None:
    """Why ``backend`` cannot run ``compiled`` (one line), or None if it can."""
    if compiled.sizes.declared and backend in ONE_SIZE:
        sizes = ", ".join(f"{value}: {size}" for value, size in compiled.sizes.declarations().items())
        return (f"the {backend} backend runs cells whose values all have hidden_size units; '{compiled.name}' "
                f"declares sizes ({sizes}): use backend 'compiled' (or 'fused', 'eager', 'auto')")
    return None


def fastest(compiled: CompiledCell, preferred: str) -> str:
    """``preferred`` (what 'auto' resolves to on this machine) where it runs the cell, else the compiled backend
    (its C++ loops on CPU tensors, the fused loops on others)."""
    return preferred if unsupported(compiled, preferred) is None else "compiled"
