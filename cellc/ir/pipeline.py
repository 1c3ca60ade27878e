"""Front end to backends: Spec -> IR -> passes -> parameters -> schedule."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from cellc.errors import Location, SpecError
from cellc.ir import nodes as ir
from cellc.ir.lower import lower
from cellc.ir.lowering import LoweringPlan, plan_lowering
from cellc.ir.params import ParamInfo, format_monomials, formula_monomials, infer_parameters
from cellc.ir.passes import eliminate_dead_code, fold_constants
from cellc.ir.printer import cell_text
from cellc.ir.schedule import Schedule, schedule
from cellc.ir.sizes import HIDDEN, INPUT, SYMBOL_NAMES, CellSizes, infer_sizes
from cellc.spec.loader import load_spec
from cellc.spec.model import Spec


@dataclass
class CompiledCell:
    """Everything a backend needs. The IR is the single source backends read."""

    spec: Spec
    cell: ir.Cell
    params: dict[str, ParamInfo]
    schedule: Schedule
    hash: str
    sizes: CellSizes
    lowering: LoweringPlan | None = None  # how the cell maps onto torch.nn.LSTM / GRU, when it is exactly one
    # Things the spec's author should hear about that are not errors (shown by `cellc check` / `compile`).
    notes: list[str] = field(default_factory=list)
    # Facts later stages derive from this cell, each computed once and kept here (the step program and its
    # backward: cellc.ir.autodiff.step_program; the buffer layout: cellc.codegen.layout.layout_of).
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.cell.name

    @property
    def direct_input(self) -> Location | None:
        """Where the cell reads its input elementwise (its modules need input_size == hidden_size), or None."""
        return self.schedule.direct_at

    @property
    def remarks(self) -> list[str]:
        """Facts about a valid cell worth a line in `cellc check` (``notes`` are what its author should fix)."""
        where = self.direct_input
        if self.schedule.direct is None:
            return []
        return [f"{'' if where is None else where.render() + ': '}reads the input '{self.cell.input}' elementwise, "
                f"not through a matrix: its modules need input_size == {self.direct_size_name}"]

    @property
    def direct_size_name(self) -> str:
        """The size the input must have where the cell reads it elementwise (the output's): hidden_size, proj_size."""
        return SYMBOL_NAMES[self.sizes.direct or HIDDEN]

    @property
    def states(self) -> list[str]:
        return self.cell.states

    @property
    def equations_text(self) -> list[str]:
        return cell_text(self.cell)

    def formula(self) -> dict[str, int]:
        """Parameters per layer and direction as {monomial: count}: {"NM": 4, "NN": 4, "N": 4} is 4NM + 4N^2 + 4N
        (cellc.ir.params.MONOMIALS)."""
        return formula_monomials(self.params, self.sizes.params)

    def shape_text(self, name: str) -> str:
        """A parameter's shape: "N x M", "P x N", "N"."""
        rows, cols = self.sizes.params[name]
        return rows if cols is None else f"{rows} x {cols}"

    def formula_text(self) -> str:
        return format_monomials(self.formula())

    def parameter_count(self, input_size: int, hidden_size: int, proj_size: int | None = None) -> int:
        """Parameters of one layer in one direction (``proj_size``: for a cell with values of that size)."""
        values = {INPUT: input_size, HIDDEN: hidden_size, "P": proj_size}
        if "P" in self.sizes.symbols and proj_size is None:
            raise ValueError(f"{self.name} has values of size proj_size: give proj_size")
        return sum(k * math.prod(values[s] for s in term) for term, k in self.formula().items())


def _check_state(cell: ir.Cell, spec: Spec) -> ir.Cell:
    """A recurrent cell needs state and must read its input; drop inherited `initial` entries for states
    edits removed."""
    if not cell.states:
        raise SpecError(
            f"the cell has no recurrent state: no value is read at the previous step "
            f"(e.g. {cell.output}[-1]), so it is not a recurrent cell",
            spec.key_locations.get("output"),
        )
    if not any(isinstance(node, ir.Input) for eq in cell.equations for node in ir.walk(eq.expr)):
        # e.g. `y = tanh(R_y y[-1] + b_y)`, or every gate dropped: the output would not depend on the input
        raise SpecError(
            f"the cell never reads its input '{cell.input}' (e.g. W_a {cell.input}), so its output would not "
            "depend on the sequence it is given",
            spec.key_locations.get("output"),
        )
    initial = {k: v for k, v in cell.initial.items()
               if k in cell.states or f"initial.{k}" not in spec.inherited_keys}
    cell = ir.Cell(cell.name, cell.input, cell.output, cell.equations, initial)
    _check_initial(cell, spec)
    return cell


def _init_in_use(cell: ir.Cell, spec: Spec) -> dict[str, float]:
    """The spec's `init`, less inherited entries whose parameter an edit removed."""
    used = {n.param if isinstance(n, ir.MatMul) else n.name
            for eq in cell.equations for n in ir.walk(eq.expr) if isinstance(n, (ir.MatMul, ir.Param))}
    return {k: v for k, v in spec.init.items() if k in used or f"init.{k}" not in spec.inherited_keys}


def _check_initial(cell: ir.Cell, spec: Spec) -> None:
    states = set(cell.states)
    for name in cell.initial:
        if name not in states:
            raise SpecError(
                f"initial: '{name}' is not a state of the cell (states: {', '.join(cell.states) or 'none'})",
                spec.key_locations.get(f"initial.{name}"),
            )


def canonical_hash(cell: ir.Cell, params: dict[str, ParamInfo], sizes: CellSizes | None = None) -> str:
    """Identity of the compiled cell: same equations, names and settings -> same hash."""
    payload = {
        "name": cell.name,
        "input": cell.input,
        "output": cell.output,
        "equations": cell_text(cell),
        "initial": sorted(cell.initial.items()),
        "init": sorted((p.name, p.init) for p in params.values() if p.init is not None),
    }
    if sizes is not None and sizes.declared:  # a cell without declared sizes keeps the hash it always had
        payload["sizes"] = sorted(sizes.values.items())
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def compile_spec(spec_or_path: Spec | str | Path) -> CompiledCell:
    spec = spec_or_path if isinstance(spec_or_path, Spec) else load_spec(spec_or_path)
    cell = lower(spec)
    notes = _unused_equations(cell)
    cell = eliminate_dead_code(fold_constants(cell))
    cell = _check_state(cell, spec)
    params = infer_parameters(cell, _init_in_use(cell, spec), spec.key_locations)
    sizes = infer_sizes(cell, spec.sizes, spec.key_locations, spec.inherited_keys, {eq.target for eq in spec.equations})
    lowering = plan_lowering(cell, params, sizes)
    # A cell that is torch's stores its gates in torch's order, so torch's weights are views of its storage.
    sched = schedule(cell, params, gate_order=lowering.weight_ih if lowering else (), shapes=sizes.params,
                     direct_size=sizes.direct)
    return CompiledCell(spec=spec, cell=cell, params=params, schedule=sched,
                        hash=canonical_hash(cell, params, sizes), sizes=sizes, lowering=lowering, notes=notes)


def _unused_equations(cell: ir.Cell) -> list[str]:
    """Equations the author wrote that the output never needs (before folding: what a dropped gate
    leaves unused is the edit's intent and goes without a word)."""
    live = {eq.name for eq in eliminate_dead_code(cell).equations}
    return [f"{'' if eq.loc is None else eq.loc.render() + ': '}'{eq.name}' is never used by the output "
            f"'{cell.output}' (neither at its step nor, through a state, at the next); it is left out"
            for eq in cell.equations if eq.name not in live]
