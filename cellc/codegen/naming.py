"""Names in generated code. Every spec name is prefixed, so no spec name can shadow a
local, a builtin or a module; the prefixes never start with an underscore."""

from __future__ import annotations

from cellc.spec import identifiers
from cellc.spec.identifiers import identifier_problem, spec_name_problem


def checked(name: str) -> str:
    """Defence in depth: the front end already validated every name."""
    problem = identifier_problem(name)
    if problem:
        raise ValueError(f"refusing to emit unvalidated name: {problem}")
    return name


def value_var(name: str) -> str:
    return f"v_{checked(name)}"


def state_var(name: str) -> str:
    return f"s_{checked(name)}"


def param_var(name: str) -> str:
    return f"w_{checked(name)}"


def current_matrix_var(name: str) -> str:
    return f"m_{checked(name)}"


def checked_spec_name(spec_name: str) -> str:
    """Defence in depth for a spec's own name (its rules are not an identifier's: see spec_name_problem)."""
    problem = spec_name_problem(spec_name)
    if problem:
        raise ValueError(f"refusing to emit unvalidated spec name: {problem}")
    return spec_name


def class_name(spec_name: str) -> str:
    """'vanilla' -> 'Vanilla', 'my_cell' -> 'MyCell'."""
    return identifiers.class_name(checked_spec_name(spec_name))
