"""cellc: a compiler and benchmark harness for recurrent cells.

Public API:

- ``load_spec(path_or_name)`` -> ``Spec`` (front end: YAML + Lark DSL, validated)
- ``compile_spec(spec)``      -> ``Cell`` IR after edits and passes
- ``build(spec_or_path, backend="auto")`` -> an ``nn.Module`` class shaped like torch.nn.LSTM
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_spec", "compile_spec", "build", "CellcError", "SpecError"]


def __getattr__(name: str):
    # Lazy so that `import cellc` stays cheap and torch is only imported when a module is built.
    if name in ("load_spec",):
        from cellc.spec.loader import load_spec

        return load_spec
    if name == "compile_spec":
        from cellc.ir.pipeline import compile_spec

        return compile_spec
    if name == "build":
        from cellc.codegen.build import build

        return build
    if name in ("CellcError", "SpecError"):
        from cellc import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'cellc' has no attribute {name!r}")
