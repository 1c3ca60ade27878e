"""Render a compiled cell into the source of a standalone PyTorch module (Jinja templates)."""

from __future__ import annotations

from functools import lru_cache

import jinja2

from cellc.codegen import naming
from cellc.codegen.eager import number, step_context
from cellc.ir.pipeline import CompiledCell
from cellc.ir.schedule import GROUPS

BACKENDS = ("eager", "fused", "compiled", "triton", "lowered")
TEMPLATES = {"eager": "module.py.j2", "fused": "fused.py.j2", "compiled": "compiled.py.j2",
             "triton": "triton.py.j2", "lowered": "lowered.py.j2"}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cellc.codegen", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Python source, not HTML: safety comes from validated names and numbers
    )
    env.filters["number"] = number
    env.filters["tuple_text"] = lambda items: _tuple([f'"{naming.checked(i)}"' for i in items])
    env.filters["tuple_numbers"] = lambda items: _tuple([number(v) for v in items])
    return env


def _tuple(parts: list[str]) -> str:
    return "(" + parts[0] + ",)" if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def _parameter_table(compiled: CompiledCell) -> list[str]:
    rows = []
    width = max(len(n) for n in compiled.params) if compiled.params else 0
    for name, place in compiled.schedule.layout.items():
        info = compiled.params[name]
        where = f"{place.group}[{place.index}N:{place.index + 1}N]"
        rows.append(f"{name.ljust(width)}  {info.kind.value:<22} {info.kind.shape():<6} {where}")
    return rows


def render_module(compiled: CompiledCell, backend: str = "eager") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    cell = compiled.cell
    a, b, c = compiled.formula()
    context = {
        "backend": backend,
        "spec_name": naming.checked_spec_name(cell.name),
        "class_name": naming.class_name(cell.name),
        "spec_hash": compiled.hash,
        "equations_text": compiled.equations_text,
        "formula": compiled.formula_text(),
        "formula_tuple": (a, b, c),
        "parameter_table": _parameter_table(compiled),
        "state_names": compiled.states,
        "initial": [cell.initial.get(s, 0.0) for s in compiled.states],
        "placements": [(naming.checked(n), p.group, p.index) for n, p in compiled.schedule.layout.items()],
        "group_blocks": [(g, compiled.schedule.group_sizes[g]) for g in GROUPS],
        "constant_init": [(naming.checked(p.name), p.init) for p in compiled.params.values() if p.init is not None],
        "first_param": next(iter(compiled.params), ""),
        **step_context(compiled),
    }
    if backend in ("fused", "compiled", "triton"):  # the step program (cellc/codegen/fused.py)
        from cellc.codegen.fused import backend_context

        context.update(backend_context(compiled, "compiled" if backend == "triton" else backend))
    if backend in ("triton", "lowered"):  # torch's own kernels where the cell is exactly LSTM / GRU
        from cellc.codegen.lowered import lowered_context

        context.update(lowered_context(compiled, required=backend == "lowered"))
    if backend == "triton":  # GPU kernels generated from the same step program (cellc/codegen/triton_gen.py)
        from cellc.codegen.triton_gen import triton_context

        context.update(triton_context(compiled))
    return _environment().get_template(TEMPLATES[backend]).render(**context)
