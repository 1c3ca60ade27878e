"""The spec file's schema (pydantic) and the resolved spec the compiler consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from cellc.spec import ast
from cellc.spec.identifiers import FLOAT32_MAX, identifier_problem, spec_name_problem


def _finite(number: float | int) -> float | int:
    try:
        as_float = float(number)
    except OverflowError:  # an integer beyond float range (10**400): a bad value, not a crash
        raise ValueError("is too large (beyond the float range)") from None
    if not math.isfinite(as_float):
        raise ValueError("is not finite")
    if abs(as_float) > FLOAT32_MAX:
        raise ValueError("is beyond the float32 range (about 3.4e38)")
    return number


# A setting's number: YAML's int or float (strict: no text, no booleans), finite.
Number = Annotated[float | int, AfterValidator(_finite)]


def _check_identifier(name: str) -> str:
    problem = identifier_problem(name)
    if problem:
        raise ValueError(problem)
    return name


class SpecFile(BaseModel):
    """What a spec YAML file may contain. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(description="spec name: lower case, digits, underscores")
    description: str = ""
    reference: str = ""
    extends: str | None = Field(default=None, description="the name of a spec to build on (beside this file or in specs/)")
    equations: str | None = Field(default=None, description="one step of the recurrence")
    edits: list[str] = Field(default_factory=list, description="edit directives applied in order")
    input: str = "x"
    output: str = "y"
    initial: dict[str, Number] = Field(
        default_factory=dict, description="initial value of a state (default 0)"
    )
    init: dict[str, Number] = Field(
        default_factory=dict, description="constant initial value of a vector parameter (e.g. b_f: 1)"
    )
    sizes: dict[str, str] = Field(
        default_factory=dict, description="a value's size other than hidden_size (e.g. y: proj_size)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = spec_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("input", "output")
    @classmethod
    def _ident(cls, value: str) -> str:
        return _check_identifier(value)

    @field_validator("initial", "init", "sizes", mode="before")
    @classmethod
    def _keys(cls, value):
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str):
                    _check_identifier(key)
        return value


@dataclass
class Spec:
    """A spec after parsing, `extends` and edits: the front end's product."""

    name: str
    file: str
    description: str
    reference: str
    input: str
    output: str
    equations: list[ast.Equation]
    initial: dict[str, float] = field(default_factory=dict)
    init: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, str] = field(default_factory=dict)  # value -> size name (`sizes:`; others: hidden_size)
    # Where each `initial` / `init` key was written, for errors about them.
    key_locations: dict[str, object] = field(default_factory=dict)
    lineage: list[str] = field(default_factory=list)  # this spec and the ones it extends
    # 'init.<p>' / 'initial.<s>' keys taken from a parent: dropped quietly when an edit removed
    # their parameter or state (a parent's `init: {b_f: 1}` must not break `drop gate f`).
    inherited_keys: set[str] = field(default_factory=set)
    edits: list[ast.Edit] = field(default_factory=list)  # this spec's own edits, for display
