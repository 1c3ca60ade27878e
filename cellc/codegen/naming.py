"""Names in generated code: one scheme for every backend (eager, fused, C++, Triton).

A generated name that carries a spec identifier is always

    <kind>__<identifier>[__<suffix>]...

with ``kind`` from :data:`KINDS` and each suffix from :data:`SUFFIXES`. Spec identifiers never contain a
double underscore and never start or end with an underscore (cellc.spec.identifiers), so the first ``__``
ends the kind and the next one ends the identifier: two such names are equal only when kind, identifier and
suffixes are all equal. Every other generated name (``xw``, ``g0``, ``mg1``, ``dslot_dxw0``) is the code
generator's own vocabulary: it never holds a spec identifier and never contains ``__`` (Python's dunders
aside). So no spec name can equal a generated one, and no two spec names can make equal generated names,
whatever suffixes a backend adds: a backend never concatenates text onto a name itself, it asks this module.

tests/test_naming.py checks every backend's output against these rules (:func:`parse`), on the shipped
specs and on random cells whose names are drawn to collide.
"""

from __future__ import annotations

import re

from cellc.spec import identifiers
from cellc.spec.identifiers import identifier_problem, spec_name_problem

SEP = "__"

# What each kind names. A kind never contains SEP; kinds are distinct strings, so names of different
# kinds never meet.
KINDS: dict[str, str] = {
    "v": "a value the step computes",
    "s": "a state as the step reads it (the value at the previous step)",
    "w": "a vector parameter (peephole or bias) as the step reads it",
    "m": "a current-step matrix (eager backend)",
    "t": "a temporary of the derived backward (its name comes from cellc.ir.autodiff, not from the spec)",
    "dv": "the gradient of a value",
    "dt": "the gradient of a temporary",
    "sv": "the saved buffer of a value",
    "st": "the saved buffer of a temporary",
    "c": "the carried gradient of a state, masked",
    "raw": "the carried gradient of a state as stored (Triton)",
    "new": "the next step's carried gradient of a state (Triton)",
    "k": "a state's carried gradient or value held in registers (Triton persistent and tiled kernels)",
    "acc": "a vector parameter's gradient accumulator",
}

# Suffixes a backend may add to a name of the scheme.
SUFFIXES: dict[str, str] = {
    "t": "a per-step pointer into a (T, B, N) buffer (C++)",
    "scr": "a (B, N) scratch row (C++)",
    "out": "the output of a step after masking (Triton)",
}

_KIND_RE = "|".join(sorted(map(re.escape, KINDS), key=len, reverse=True))
_SCHEME = re.compile(rf"({_KIND_RE}){SEP}([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*)((?:{SEP}[a-z]+)*)\Z")


def checked(name: str) -> str:
    """Defence in depth: the front end already validated every name."""
    problem = identifier_problem(name)
    if problem:
        raise ValueError(f"refusing to emit unvalidated name: {problem}")
    return name


def spec_var(kind: str, name: str, *suffixes: str) -> str:
    """The one way a generated name is made from a spec identifier."""
    if kind not in KINDS:
        raise ValueError(f"unknown name kind {kind!r}")
    for suffix in suffixes:
        if suffix not in SUFFIXES:
            raise ValueError(f"unknown name suffix {suffix!r}")
    return SEP.join((kind, checked(name), *suffixes))


def suffixed(var: str, suffix: str) -> str:
    """``var`` (a name of the scheme) with one more suffix."""
    parsed = parse(var)
    if parsed is None:
        raise ValueError(f"{var!r} is not a name of the scheme")
    kind, name, suffixes = parsed
    return spec_var(kind, name, *suffixes, suffix)


def parse(identifier: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(kind, spec identifier, suffixes) of a name of the scheme, or None for any other identifier."""
    match = _SCHEME.fullmatch(identifier)
    if match is None:
        return None
    kind, name, rest = match.groups()
    suffixes = tuple(rest.split(SEP)[1:]) if rest else ()
    if identifier_problem(name) or any(s not in SUFFIXES for s in suffixes):
        return None
    return kind, name, suffixes


def is_vocabulary(identifier: str) -> bool:
    """Is this a name of the generator's own vocabulary (no spec identifier in it)? Such names have no
    double underscore except as a Python dunder (``__init__``)."""
    core = identifier[2:-2] if identifier.startswith(SEP) and identifier.endswith(SEP) else identifier
    return SEP not in core


def value_var(name: str) -> str:
    return spec_var("v", name)


def state_var(name: str) -> str:
    return spec_var("s", name)


def param_var(name: str) -> str:
    return spec_var("w", name)


def current_matrix_var(name: str) -> str:
    return spec_var("m", name)


def carry_var(state: str) -> str:
    return spec_var("c", state)


def acc_var(param: str) -> str:
    return spec_var("acc", param)


def scratch_var(var: str) -> str:
    """The C++ scratch row of ``var``: a name of the scheme takes the suffix, the generator's own
    (``mg0``) a prefix (it stays in the vocabulary)."""
    if parse(var) is not None:
        return suffixed(var, "scr")
    if not is_vocabulary(var):
        raise ValueError(f"{var!r} is neither a name of the scheme nor of the generator's vocabulary")
    return f"scr_{var}"


def checked_spec_name(spec_name: str) -> str:
    """Defence in depth for a spec's own name (its rules are not an identifier's: see spec_name_problem)."""
    problem = spec_name_problem(spec_name)
    if problem:
        raise ValueError(f"refusing to emit unvalidated spec name: {problem}")
    return spec_name


def class_name(spec_name: str) -> str:
    """'vanilla' -> 'Vanilla', 'my_cell' -> 'MyCell'."""
    return identifiers.class_name(checked_spec_name(spec_name))
