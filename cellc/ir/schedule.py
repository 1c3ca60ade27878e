"""Matrix-product scheduling: where every parameter lives and which GEMM computes it.

- Every product of the input (``W x``) becomes a slice of ONE GEMM over the whole sequence,
  computed before the time loop; a bias that sits in the same sum is folded into it.
- Every product of previous-step values (``R y[-1]``, ``R_if f[-1]``) becomes a slice of ONE
  GEMM per step. Products in the same sum share a slice (their matrices sit side by side
  over the concatenated previous-step values). When every such sum also holds an input
  product, the two are fused: ``addmm(xw[t], h, R^T)``.
- Products of current-step values (``R (r * y[-1])``) are computed where their operand is.
- The input read elementwise (``tanh(x)``, ``(1 - r) * x``) is one more x-slot, the last, with
  no matrix: the input itself, copied beside the GEMM's products (``Schedule.direct``).

Parameter storage per layer and direction follows this schedule, so the common cells need
no copying at all: ``weight_x`` (input matrices, slot order), ``weight_s`` (previous-step
matrices, slot order), ``weight_c`` (current-step matrices), ``bias`` (folded biases first,
in slot order), ``diag`` (elementwise vectors).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cellc.errors import Location
from cellc.ir import nodes as ir
from cellc.ir.params import Kind, ParamInfo
from cellc.ir.sizes import HIDDEN, INPUT, Dim, total

GROUPS = ("weight_x", "weight_s", "weight_c", "bias", "diag")


@dataclass(frozen=True)
class XSlot:
    matrix: str | None  # None: the direct slot, x itself (read elementwise, no matrix)
    bias: str | None
    size: str = HIDDEN  # its columns in xw: the product's rows (the direct slot: the input's size)


@dataclass(frozen=True)
class SSlot:
    products: tuple[tuple[str, str], ...]  # (matrix, state operand)
    paired_x: int | None  # index of the x-slot in the same sum (before reordering)
    size: str = HIDDEN  # its columns in the per-step GEMM's result: its products' rows


@dataclass(frozen=True)
class Placement:
    group: str
    index: int  # its order in the group (in a cell without declared sizes: rows [index*N, (index+1)*N))
    kind: Kind
    offset: Dim = Dim()  # its first row in the group
    rows: Dim = Dim.of(HIDDEN)

    @property
    def stop(self) -> Dim:
        return self.offset + self.rows


@dataclass
class Schedule:
    x_slots: list[XSlot]
    s_slots: list[SSlot]
    s_operands: list[str]  # distinct previous-step values the per-step GEMM reads, in order
    current: list[str]  # current-step matrices, storage order
    fused: bool  # every s-slot j is added to x-slot j: one addmm per step
    equations: tuple[ir.Equation, ...]  # with Slot nodes in place of scheduled products
    layout: dict[str, Placement] = field(default_factory=dict)
    group_sizes: dict[str, int] = field(default_factory=dict)  # parameters per group
    group_rows: dict[str, Dim] = field(default_factory=dict)  # rows per group
    # columns of the matrix groups: weight_x the input's (M), weight_s / weight_c the size their products read
    group_cols: dict[str, str] = field(default_factory=dict)
    # Where the cell reads its input elementwise (``tanh(x)``, ``(1 - r) * x``): the last x-slot holds x itself,
    # copied into the input GEMM's buffer beside the products (no matrix, no bias, never fused); None if nowhere.
    direct: int | None = None
    direct_at: Location | None = None  # where the spec first reads its input so

    @property
    def n_w(self) -> int:
        """x-slots with a matrix: the input GEMM's blocks (the direct slot, if any, follows them)."""
        return len(self.x_slots) - (self.direct is not None)

    def x_offset(self, k: int) -> Dim:
        """Where x-slot k's columns begin in xw."""
        return total([s.size for s in self.x_slots[:k]])

    def s_offset(self, j: int) -> Dim:
        """Where s-slot j's columns begin in the per-step GEMM's result."""
        return total([s.size for s in self.s_slots[:j]])

    @property
    def x_width(self) -> Dim:
        return total([s.size for s in self.x_slots])

    @property
    def w_width(self) -> Dim:
        """The input GEMM's columns (the matrix slots; the direct slot follows them)."""
        return self.x_offset(self.n_w)

    @property
    def s_width(self) -> Dim:
        return total([s.size for s in self.s_slots])

    @property
    def s_direct(self) -> bool:
        """weight_s is already the per-step GEMM matrix (one product per slot, one operand)."""
        return len(self.s_operands) == 1 and all(len(s.products) == 1 for s in self.s_slots)

    @property
    def x_bias_direct(self) -> bool:
        """bias[: n_w] is already the input GEMM's bias vector."""
        return self.n_w > 0 and all(s.bias is not None for s in self.x_slots[: self.n_w])


class _Collector:
    def __init__(self, params: dict[str, ParamInfo]):
        self.params = params
        self.groups: list[tuple[list[str], str | None, list[tuple[str, str]]]] = []

    def is_bias(self, node: ir.Expr) -> bool:
        return isinstance(node, ir.Param) and self.params[node.name].kind is Kind.BIAS

    @staticmethod
    def scheduled(node: ir.Expr) -> bool:
        return isinstance(node, ir.MatMul) and isinstance(node.operand, (ir.Input, ir.State))

    def visit(self, node: ir.Expr) -> ir.Expr:
        if isinstance(node, ir.Sum):
            terms = [t if self.scheduled(t) else self.visit(t) for t in node.terms]
            return self.group(terms, node)
        if self.scheduled(node):
            return self.group([node], node)
        kids = ir.children(node)
        if kids:
            return ir.rebuild(node, tuple(self.visit(k) for k in kids))
        return node

    def group(self, terms: list[ir.Expr], node: ir.Expr) -> ir.Expr:
        x_terms = [t for t in terms if isinstance(t, ir.MatMul) and isinstance(t.operand, ir.Input)]
        s_terms = [t for t in terms if isinstance(t, ir.MatMul) and isinstance(t.operand, ir.State)]
        if not x_terms and not s_terms:
            return ir.Sum(tuple(terms), loc=node.loc) if len(terms) > 1 else terms[0]
        bias_terms = [t for t in terms if self.is_bias(t)]
        folded = bias_terms[0] if x_terms and bias_terms else None
        rest = [t for t in terms if t not in x_terms and t not in s_terms and t is not folded]
        # A slot's products read distinct operands (the per-step GEMM has one block per slot and operand):
        # a second product of the same previous-step value in this sum (R_a y[-1] + R_b y[-1]) opens a
        # slot of its own.
        parts: list[list[ir.MatMul]] = []
        for t in s_terms:
            part = next((p for p in parts if t.operand.name not in {q.operand.name for q in p}), None)
            if part is None:
                parts.append(part := [])
            part.append(t)
        placeholders = []
        for k, part in enumerate(parts or [[]]):
            placeholders.append(ir.Slot("group", len(self.groups), loc=node.loc))
            self.groups.append(
                ([t.param for t in x_terms] if k == 0 else [], folded.name if folded and k == 0 else None,
                 [(t.param, t.operand.name) for t in part])
            )
        out = [*placeholders, *rest]
        return ir.Sum(tuple(out), loc=node.loc) if len(out) > 1 else out[0]


def schedule(cell: ir.Cell, params: dict[str, ParamInfo], gate_order: tuple[str, ...] = (),
             shapes: dict[str, tuple[str, str | None]] | None = None, direct_size: str | None = None) -> Schedule:
    """``shapes``: each parameter's (rows, columns) size symbols (cellc.ir.sizes; all N by default);
    ``direct_size``: the input's size where the cell reads it elementwise. ``gate_order``: input matrices in the order their gates' blocks should be stored (torch's gate
    order, for a cell that lowers onto torch's kernels: its storage then IS torch's weights)."""
    shapes = shapes or {}

    def rows(name: str | None) -> str:
        return shapes.get(name, (HIDDEN, None))[0] if name else HIDDEN

    collector = _Collector(params)
    equations = [ir.Equation(eq.name, collector.visit(eq.expr), loc=eq.loc) for eq in cell.equations]
    # Slots follow the groups' order of appearance, or gate_order (a stable sort: groups without a listed
    # input matrix keep their order, after the rest).
    groups = sorted(enumerate(collector.groups), key=lambda g: gate_order.index(g[1][0][0])
                    if g[1][0] and g[1][0][0] in gate_order else len(gate_order))

    # x-slots and s-slots per group, in that order.
    x_slots: list[XSlot] = []
    s_slots: list[SSlot] = []
    group_slots: dict[int, tuple[list[int], int | None]] = {}  # group id (its placeholder's index) -> slots
    for gid, (matrices, bias, products) in groups:
        xs = []
        for k, matrix in enumerate(matrices):
            xs.append(len(x_slots))
            x_slots.append(XSlot(matrix, bias if k == 0 else None, rows(matrix)))
        s_index = None
        if products:
            s_index = len(s_slots)
            s_slots.append(SSlot(tuple(products), xs[0] if xs else None, rows(products[0][0])))
        group_slots[gid] = (xs, s_index)

    fused = bool(s_slots) and all(s.paired_x is not None for s in s_slots)
    # Fused: x-slot order follows s-slot order so that xw[t][:, :K*N] lines up with the GEMM.
    if fused:
        order = [s.paired_x for s in s_slots] + [k for k in range(len(x_slots)) if k not in
                                                  {s.paired_x for s in s_slots}]
    else:
        order = list(range(len(x_slots)))
    new_x_index = {old: new for new, old in enumerate(order)}
    x_slots = [x_slots[old] for old in order]

    def resolve(node: ir.Expr) -> ir.Expr | None:
        if not (isinstance(node, ir.Slot) and node.stage == "group"):
            return None
        xs, s_index = group_slots[node.index]
        xs = [new_x_index[k] for k in xs]
        parts: list[ir.Expr] = []
        if fused and s_index is not None:
            parts.append(ir.Slot("xs", s_index, loc=node.loc))
            xs = xs[1:]  # the first x-slot is inside the fused slot
        elif s_index is not None:
            parts.append(ir.Slot("s", s_index, loc=node.loc))
        parts = [ir.Slot("x", k, loc=node.loc) for k in xs] + parts
        return parts[0] if len(parts) == 1 else ir.Sum(tuple(parts), loc=node.loc)

    def flatten(node: ir.Expr) -> ir.Expr | None:
        if isinstance(node, ir.Sum) and any(isinstance(t, ir.Sum) for t in node.terms):
            terms = []
            for t in node.terms:
                terms.extend(t.terms if isinstance(t, ir.Sum) else (t,))
            return ir.Sum(tuple(terms), loc=node.loc)
        return None

    # The input where it is read elementwise (every product of x is a Slot by now): one more x-slot, last.
    direct, direct_at = None, None
    elementwise = [n for eq in equations for n in ir.walk(eq.expr) if isinstance(n, ir.Input)]
    if elementwise:
        direct, direct_at = len(x_slots), elementwise[0].loc
        x_slots.append(XSlot(None, None, direct_size or HIDDEN))

    def direct_slot(node: ir.Expr) -> ir.Expr | None:
        return ir.Slot("x", direct, loc=node.loc) if isinstance(node, ir.Input) else None

    equations = [
        ir.Equation(eq.name, ir.transform(ir.transform(ir.transform(eq.expr, resolve), flatten), direct_slot),
                    loc=eq.loc)
        for eq in equations
    ]

    s_operands: list[str] = []
    for slot in s_slots:
        for _, state in slot.products:
            if state not in s_operands:
                s_operands.append(state)
    current = [p.name for p in params.values() if p.kind is Kind.CURRENT_MATRIX]

    layout: dict[str, Placement] = {}
    for k, slot in enumerate(s for s in x_slots if s.matrix is not None):
        layout[slot.matrix] = Placement("weight_x", k, Kind.INPUT_MATRIX)
    k = 0
    for slot in s_slots:
        for matrix, _ in slot.products:
            layout[matrix] = Placement("weight_s", k, Kind.STATE_MATRIX)
            k += 1
    for k, name in enumerate(current):
        layout[name] = Placement("weight_c", k, Kind.CURRENT_MATRIX)
    biases = [s.bias for s in x_slots if s.bias] + [
        p.name for p in params.values() if p.kind is Kind.BIAS and p.name not in {s.bias for s in x_slots}
    ]
    for k, name in enumerate(biases):
        layout[name] = Placement("bias", k, Kind.BIAS)
    for k, name in enumerate(p.name for p in params.values() if p.kind is Kind.ELEMENTWISE):
        layout[name] = Placement("diag", k, Kind.ELEMENTWISE)
    assert set(layout) == set(params), "every parameter is placed exactly once"
    sizes = {g: sum(1 for p in layout.values() if p.group == g) for g in GROUPS}
    # Row offsets follow the order within each group.
    group_rows = {g: Dim() for g in GROUPS}
    for name, place in sorted(list(layout.items()), key=lambda item: (GROUPS.index(item[1].group), item[1].index)):
        height = Dim.of(rows(name))
        layout[name] = Placement(place.group, place.index, place.kind, group_rows[place.group], height)
        group_rows[place.group] = group_rows[place.group] + height

    def columns(kind: Kind) -> str:
        return next((shapes.get(p.name, (HIDDEN, HIDDEN))[1] or HIDDEN for p in params.values() if p.kind is kind),
                    HIDDEN)

    group_cols = {"weight_x": INPUT, "weight_s": columns(Kind.STATE_MATRIX), "weight_c": columns(Kind.CURRENT_MATRIX)}

    return Schedule(
        x_slots=x_slots,
        s_slots=s_slots,
        s_operands=s_operands,
        current=current,
        fused=fused,
        equations=tuple(equations),
        layout=layout,
        group_sizes=sizes,
        group_rows=group_rows,
        group_cols=group_cols,
        direct=direct,
        direct_at=direct_at,
    )
