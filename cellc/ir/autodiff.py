"""Symbolic backward of one step, derived from the scheduled IR (no hand-written derivative per cell).

The scheduled equations (``CompiledCell.schedule.equations``) are first flattened into a
*step program*: a list of operations, each defining one target —

- ``Pointwise``: a target computed elementwise from leaves (slots of the scheduled GEMMs,
  values and temporaries of this step, previous-step states, parameter vectors, constants);
- ``CurrentGemm``: a current-step matrix product ``operand @ R^T`` (e.g. a GRU-style
  ``R (r * y[-1])``), which splits the pointwise work into stages.

Nested activations and matrix-product operands become temporaries so that every
activation's derivative is taken from its *output* (``cellc.ir.activations``) and every
matrix product's operand is available for the weight gradient.

Reverse mode over that program yields, per step, the gradient of every target, of every
GEMM slot (the pre-activations that feed the input and recurrent GEMMs), the per-step
contributions to the parameter vectors (biases outside the input GEMM, peepholes), and the
gradient flowing to each previous-step state. Which forward values the backward reads is
computed from the derived expressions: exactly those are saved per step (``saved``).

A normalisation, ``norm(u)``, expands into ``d = u - mean(u)``, ``r = rstd(mean(d * d))`` and ``d * r``,
where ``mean`` is a row mean (``ir.RowMean``: over the units, the same in every unit). The backward is
derived through that expansion: a row mean is its own adjoint, and ``rstd``'s derivative comes from its
output like an activation's; nothing is written by hand for the normalisation.

Backends print the same program: the fused Python backend as torch expressions, the
compiled backend as C++ element loops (with the row means hoisted into reduction passes,
:meth:`StepProgram.reduced`), the Triton kernels over whole rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cellc.ir import nodes as ir
from cellc.ir.activations import FUNCTIONS
from cellc.ir.params import Kind
from cellc.ir.pipeline import CompiledCell


@dataclass(frozen=True)
class Temp(ir.Expr):
    """An intermediate of the step (a nested activation, a product's operand or result)."""

    name: str


@dataclass(frozen=True)
class Grad(ir.Expr):
    """Gradient of the loss with respect to a target (a ``Value`` or a ``Temp``) at this step."""

    target: ir.Expr


@dataclass(frozen=True)
class Carry(ir.Expr):
    """Gradient arriving at state ``name`` from the next step (or the final state)."""

    name: str


@dataclass(frozen=True)
class OutGrad(ir.Expr):
    """Gradient arriving at this step's output from above."""


@dataclass(frozen=True)
class MatGrad(ir.Expr):
    """``Grad(result) @ R`` for current-step product ``index``: the gradient of its operand."""

    index: int


@dataclass(frozen=True)
class Pointwise:
    target: ir.Expr  # Value or Temp
    expr: ir.Expr


@dataclass(frozen=True)
class CurrentGemm:
    target: Temp  # = operand @ R^T
    param: str
    operand: ir.Expr  # Value or Temp
    index: int  # k-th current-step product (storage order follows schedule.current)


@dataclass(frozen=True)
class GradAssign:
    """Backward, pointwise: ``Grad(target) = expr``."""

    target: ir.Expr
    expr: ir.Expr


@dataclass(frozen=True)
class GradGemm:
    """Backward of a current-step product: ``MatGrad(index) = Grad(result) @ R``."""

    index: int
    param: str
    result: Temp


@dataclass(frozen=True)
class Reduce:
    """``target = mean(operand)`` over the units, the same in every unit: a row mean hoisted out of the
    expressions (:meth:`StepProgram.reduced`) for a backend that evaluates a stage element by element (C++),
    which must finish the whole row before any unit reads its mean. Like a current-step product, it splits
    the step into stages."""

    target: Temp
    operand: ir.Expr


BARRIERS = (CurrentGemm, GradGemm, Reduce)  # ops that need a whole row (or batch) of what precedes them


@dataclass(frozen=True)
class Reduced:
    """A direction's ops with every row mean hoisted into :class:`Reduce` ops (their operands first), and
    what the backward's tail sums to with those means read from their targets; ``plan`` splits them into
    stages at products and reductions alike."""

    ops: list
    plan: "StagePlan"
    slot_grads: dict[tuple[str, int], ir.Expr]
    param_grads: dict[str, ir.Expr]
    prev_grads: dict[str, ir.Expr]


@dataclass(frozen=True)
class StagePlan:
    """How a step's ops split into stages at its GEMMs (:meth:`StepProgram.stages`), and what a backend that
    runs each stage as its own pass must keep between them: ``crossing``, the targets (forward: values and
    temporaries; backward: their gradients) that a later stage reads, the state updates and the output
    included (they are written in the last stage)."""

    stages: list[list]
    stage_of: dict[int, int]  # id(op) -> its stage
    crossing: frozenset[ir.Expr]

    @property
    def last(self) -> int:
        return len(self.stages) - 1


def op_reads(op) -> list[ir.Expr]:
    """The leaves an op reads (a current-step product reads its operand, its backward the result's gradient)."""
    if isinstance(op, (Pointwise, GradAssign)):
        return list(_leaves(op.expr))
    if isinstance(op, CurrentGemm):
        return [op.operand]
    if isinstance(op, Reduce):
        return list(_leaves(op.operand))
    return [Grad(op.result)]


def _defines(op) -> list[ir.Expr]:
    """What an op defines, as the leaves that read it: a gradient for a backward assignment, nothing for a
    product's backward (its MatGrad lives in its own buffer), the target otherwise."""
    if isinstance(op, GradAssign):
        return [Grad(op.target)]
    if isinstance(op, GradGemm):
        return []
    return [op.target]


def _stage_plan(program: "StepProgram", ops: list, last_reads: list[ir.Expr]) -> StagePlan:
    stages = program.stages(ops)
    stage_of = {id(op): k for k, stage in enumerate(stages) for op in stage}
    last = len(stages) - 1
    define = {target: stage_of[id(op)] for op in ops for target in _defines(op)}
    uses = [(stage_of[id(op)], leaf) for op in ops for leaf in op_reads(op)] + [(last, leaf) for leaf in last_reads]
    crossing = frozenset(leaf for k, leaf in uses if leaf in define and define[leaf] != k)
    return StagePlan(stages, stage_of, crossing)


@dataclass
class StepProgram:
    forward: list  # Pointwise | CurrentGemm, in evaluation order
    backward: list  # GradAssign | GradGemm, in evaluation order
    slot_grads: dict[tuple[str, int], ir.Expr]  # gradient of each GEMM slot
    param_grads: dict[str, ir.Expr]  # per-step (B, N) contribution to each vector parameter
    prev_grads: dict[str, ir.Expr]  # pointwise gradient reaching each previous-step state
    saved: list[ir.Expr]  # Values and Temps the backward reads (kept per step)
    saved_slots: list[tuple[str, int]]  # GEMM slots the backward reads
    gemms: list[CurrentGemm] = field(default_factory=list)
    forward_states: frozenset[str] = frozenset()  # previous-step states the forward step reads
    backward_states: frozenset[str] = frozenset()  # previous-step states the backward step reads
    forward_end: list[ir.Expr] = field(default_factory=list)  # what the forward's last stage writes: states, output
    # targets whose value is the same in every unit (a row mean, the rstd of one): saved one per row
    row_values: frozenset = frozenset()
    # every forward target's size (cellc.ir.sizes' symbol): values as the spec says, temporaries from their use
    sizes: dict = field(default_factory=dict)
    _plans: dict[int, "StagePlan"] = field(default_factory=dict, repr=False, compare=False)
    _reduced: dict[str, "Reduced"] = field(default_factory=dict, repr=False, compare=False)

    def size_of(self, node: ir.Expr) -> str:
        """The size (N, P) of a forward target or of its gradient."""
        return self.sizes[node.target if isinstance(node, Grad) else node]

    @property
    def row_means(self) -> bool:
        """Does the step take means over the units (a normalisation)? Then each row must be whole where they
        are taken. (Every row mean of the forward is a row value's definition or inside one.)"""
        return bool(self.row_values)

    def stage_plan(self, ops: list) -> "StagePlan":
        """:meth:`stages` of ``ops`` (the forward or the backward), each op's stage, and what crosses a stage."""
        return self._plans[id(ops)]

    def tail_exprs(self) -> list[ir.Expr]:
        """The gradients the backward step ends with: each GEMM slot's, each vector parameter's, each previous
        state's."""
        return [*self.slot_grads.values(), *self.param_grads.values(), *self.prev_grads.values()]

    def backward_exprs(self) -> list[ir.Expr]:
        """Every expression the backward step evaluates: its assignments in order, then :meth:`tail_exprs`."""
        return [op.expr for op in self.backward if isinstance(op, GradAssign)] + self.tail_exprs()

    def stages(self, ops: list) -> list[list]:
        """Split a list of ops at every GEMM: [pointwise..., gemm, pointwise..., ...]; consecutive row
        reductions (:meth:`reduced`) share a stage of their own where none reads another's result. The last
        stage is pointwise (perhaps empty)."""
        out: list[list] = [[]]
        for op in ops:
            if isinstance(op, (CurrentGemm, GradGemm)):
                out.append([op])
                out.append([])
            elif isinstance(op, Reduce):
                stage = out[-1]
                defined = {op.target for op in stage} if stage and isinstance(stage[0], Reduce) else None
                if defined is not None and not defined.intersection(_leaves(op.operand)):
                    stage.append(op)
                else:
                    out.append([op])
            else:
                if out[-1] and isinstance(out[-1][0], Reduce):
                    out.append([])
                out[-1].append(op)
        if out[-1] and isinstance(out[-1][0], Reduce):
            out.append([])
        return out

    def reduced(self, direction: str) -> Reduced:
        """The forward's or the backward's ops with their row means hoisted (:class:`Reduce`), ordered so that
        independent reductions share a stage, and their stage plan. A direction without row means keeps its
        ops and plan as they are."""
        if direction not in self._reduced:
            self._reduced[direction] = _reduce(self, direction)
        return self._reduced[direction]


def _zero() -> ir.Const:
    return ir.Const(0.0)


def _sum(terms: list[ir.Expr]) -> ir.Expr:
    terms = [t for t in terms if not (isinstance(t, ir.Const) and t.value == 0.0)]
    if not terms:
        return _zero()
    return terms[0] if len(terms) == 1 else ir.Sum(tuple(terms))


def _prod(factors: list[ir.Expr]) -> ir.Expr:
    const = 1.0
    rest: list[ir.Expr] = []
    for f in factors:
        if isinstance(f, ir.Const):
            const *= f.value
        else:
            rest.append(f)
    if const == 0.0:
        return _zero()
    if const != 1.0:
        rest.insert(0, ir.Const(const))
    if not rest:
        return ir.Const(const)
    return rest[0] if len(rest) == 1 else ir.Prod(tuple(rest))


class _Flattener:
    def __init__(self, compiled: CompiledCell):
        self.compiled = compiled
        self.ops: list = []
        self.count = 0
        self.gemm_index = {name: k for k, name in enumerate(compiled.schedule.current)}

    def temp(self) -> Temp:
        self.count += 1
        return Temp(f"t{self.count - 1}")

    def leafify(self, node: ir.Expr) -> ir.Expr:
        """Pull nested activations and current-step products out into temporaries."""
        if isinstance(node, ir.MatMul):
            operand = self.leafify(node.operand)
            if not isinstance(operand, (ir.Value, Temp)):
                t = self.temp()
                self.ops.append(Pointwise(t, operand))
                operand = t
            result = self.temp()
            self.ops.append(CurrentGemm(result, node.param, operand, self.gemm_index[node.param]))
            return result
        if isinstance(node, ir.Act):
            t = self.temp()
            self.ops.append(Pointwise(t, ir.Act(node.fn, self.leafify(node.operand))))
            return t
        if isinstance(node, ir.Norm):
            return self.norm(self.leafify(node.operand))
        kids = ir.children(node)
        if kids:
            return ir.rebuild(node, tuple(self.leafify(k) for k in kids))
        return node

    def norm(self, u: ir.Expr) -> ir.Expr:
        """``norm(u)`` as the step computes it: d = u - mean(u), r = rstd(mean(d * d)), then d * r. Its
        backward is derived through these operations, so it is exact with no derivative written for it."""
        if ir.children(u):
            t = self.temp()
            self.ops.append(Pointwise(t, u))
            u = t
        mean, centred, rstd = self.temp(), self.temp(), self.temp()
        self.ops.append(Pointwise(mean, ir.RowMean(u)))
        self.ops.append(Pointwise(centred, ir.Sum((u, ir.Neg(mean)))))
        self.ops.append(Pointwise(rstd, ir.Act("rstd", ir.RowMean(ir.Prod((centred, centred))))))
        return ir.Prod((centred, rstd))

    def equation(self, eq: ir.Equation) -> None:
        expr = eq.expr
        if isinstance(expr, ir.Act):  # the equation's own activation: its output is the value
            expr = ir.Act(expr.fn, self.leafify(expr.operand))
        else:
            expr = self.leafify(expr)
        self.ops.append(Pointwise(ir.Value(eq.name), expr))


def flatten(compiled: CompiledCell) -> list:
    f = _Flattener(compiled)
    for eq in compiled.schedule.equations:
        f.equation(eq)
    return f.ops


def _leaves(node: ir.Expr):
    for n in _walk(node):
        if not _kids(n):
            yield n


def _kids(node: ir.Expr) -> tuple[ir.Expr, ...]:
    if isinstance(node, Grad):
        return ()
    return ir.children(node)


def _walk(node: ir.Expr):
    yield node
    for k in _kids(node):
        yield from _walk(k)


# What carries a batch dimension: an expression that reads none of these is the same for every sequence
# (``g = b_g``, ``o = 1`` after an override) and each backend broadcasts it to (B, N), so that every value,
# temporary and gradient has one shape (a current-step product's operand, a state, the output).
PER_BATCH = (ir.Input, ir.State, ir.Value, ir.Slot, ir.MatMul, Temp, Grad, Carry, OutGrad, MatGrad)


def reads_per_batch(expr: ir.Expr) -> bool:
    return any(isinstance(node, PER_BATCH) for node in _walk(expr))


def step_program(compiled: CompiledCell) -> StepProgram:
    """``compiled``'s step program and its backward, derived once per compiled cell (every backend reads this
    one; nothing else calls :func:`derive`)."""
    program = compiled.derived.get("step_program")
    if program is None:
        program = compiled.derived["step_program"] = derive(compiled)
    return program


def derive(compiled: CompiledCell) -> StepProgram:
    """The forward step program and its symbolic backward (backends: :func:`step_program`, the cached one)."""
    forward = flatten(compiled)
    params = compiled.params
    state_names = set(compiled.states)
    output = compiled.cell.output

    contribs: dict[ir.Expr, list[ir.Expr]] = {}  # target -> gradient terms
    slot_terms: dict[tuple[str, int], list[ir.Expr]] = {}
    param_terms: dict[str, list[ir.Expr]] = {}
    prev_terms: dict[str, list[ir.Expr]] = {}

    # Gradients entering the step from outside: the output and the carried states.
    for op in forward:
        if isinstance(op, Pointwise) and isinstance(op.target, ir.Value):
            name = op.target.name
            if name == output:
                contribs.setdefault(op.target, []).append(OutGrad())
            if name in state_names:
                contribs.setdefault(op.target, []).append(Carry(name))

    def push(node: ir.Expr, g: ir.Expr) -> None:
        if isinstance(g, ir.Const) and g.value == 0.0:
            return
        if isinstance(node, (ir.Value, Temp)):
            contribs.setdefault(node, []).append(g)
        elif isinstance(node, ir.State):
            prev_terms.setdefault(node.name, []).append(g)
        elif isinstance(node, ir.Slot):
            slot_terms.setdefault((node.stage, node.index), []).append(g)
        elif isinstance(node, ir.Param):
            kind = params[node.name].kind
            assert kind in (Kind.BIAS, Kind.ELEMENTWISE), node
            param_terms.setdefault(node.name, []).append(g)
        elif isinstance(node, ir.Const):
            pass
        elif isinstance(node, ir.Sum):
            for term in node.terms:
                push(term, g)
        elif isinstance(node, ir.Neg):
            push(node.operand, _prod([ir.Const(-1.0), g]))
        elif isinstance(node, ir.RowMean):
            # a row mean is the same in every unit; each unit's copy gets its own gradient term, and the
            # operand's gradient is their mean (the row mean is its own adjoint)
            push(node.operand, ir.RowMean(g))
        elif isinstance(node, ir.Prod):
            for i, factor in enumerate(node.factors):
                if isinstance(factor, ir.Const):
                    continue
                push(factor, _prod([g, *node.factors[:i], *node.factors[i + 1:]]))
        else:  # pragma: no cover - flatten() leaves no other node here
            raise AssertionError(f"cannot differentiate {node!r}")

    backward: list = []
    for op in reversed(forward):
        g_expr = _sum(contribs.get(op.target, []))
        backward.append(GradAssign(op.target, g_expr))
        g = Grad(op.target)
        if isinstance(op, CurrentGemm):
            backward.append(GradGemm(op.index, op.param, op.target))
            push(op.operand, MatGrad(op.index))
        elif isinstance(op.expr, ir.Act):
            # the derivative is an IR expression of the output, kept as one factor (its own rounding order)
            push(op.expr.operand, _prod([g, FUNCTIONS[op.expr.fn].derivative(op.target)]))
        else:
            push(op.expr, g)

    program = StepProgram(
        forward=forward,
        backward=backward,
        slot_grads={k: _sum(v) for k, v in slot_terms.items()},
        param_grads={k: _sum(v) for k, v in param_terms.items()},
        prev_grads={k: _sum(v) for k, v in prev_terms.items()},
        saved=[],
        saved_slots=[],
        gemms=[op for op in forward if isinstance(op, CurrentGemm)],
    )
    program.row_values = _row_values(forward)
    program.sizes = _target_sizes(forward, compiled)
    _plan_saves(program, compiled.states, output)
    return program


def _target_sizes(forward: list, compiled: CompiledCell) -> dict:
    """Each forward target's size: a value's is the spec's; a temporary takes the size of the op that reads it
    elementwise (walking the ops backwards, every reader comes first), a product's result its matrix's rows
    and a product's operand its matrix's columns."""
    sizes: dict = {}
    for op in reversed(forward):
        if isinstance(op.target, ir.Value):
            sizes[op.target] = compiled.sizes.values[op.target.name]
        if isinstance(op, CurrentGemm):
            rows, cols = compiled.sizes.params[op.param]
            sizes[op.target] = rows
            sizes.setdefault(op.operand, cols)
            continue
        for leaf in ir.walk(op.expr):
            if isinstance(leaf, Temp):
                sizes.setdefault(leaf, sizes[op.target])
    return sizes


def _row_values(forward: list) -> frozenset:
    """The forward's targets that hold one number per row (batch element), the same in every unit: a row mean,
    and what is computed from row values and constants alone (``rstd(mean(d * d))``)."""
    rows: set[ir.Expr] = set()

    def kind(e: ir.Expr) -> bool | None:  # True: a row value; None: a constant; False: per unit
        if isinstance(e, ir.RowMean):
            return True
        if isinstance(e, ir.Const):
            return None
        if isinstance(e, (ir.Value, Temp)):
            return e in rows
        kids = [kind(k) for k in ir.children(e)]
        if not kids or False in kids:
            return False
        return True if True in kids else None

    for op in forward:
        if isinstance(op, Pointwise) and kind(op.expr) is True:
            rows.add(op.target)
    return frozenset(rows)


def _plan_saves(program: StepProgram, states: list[str], output: str) -> None:
    """Keep exactly the forward values that the backward reads; note which states each direction reads, and
    each direction's stage plan."""
    exprs: list[ir.Expr] = program.backward_exprs()
    program.backward_states = frozenset(leaf.name for e in exprs for leaf in _leaves(e) if isinstance(leaf, ir.State))
    program.forward_states = frozenset(
        leaf.name for op in program.forward for leaf in _leaves(op.expr if isinstance(op, Pointwise) else op.operand)
        if isinstance(leaf, ir.State))
    program.forward_end = [ir.Value(s) for s in states] + [ir.Value(output)]  # written in the last stage
    program._plans[id(program.forward)] = _stage_plan(program, program.forward, program.forward_end)
    program._plans[id(program.backward)] = _stage_plan(
        program, program.backward, [leaf for e in program.tail_exprs() for leaf in _leaves(e)])
    # A current-step product's weight gradient needs its operand at every step.
    exprs += [g.operand for g in program.gemms]
    saved: list[ir.Expr] = []
    slots: list[tuple[str, int]] = []
    for e in exprs:
        for leaf in _leaves(e):
            if isinstance(leaf, (ir.Value, Temp)) and leaf not in saved:
                saved.append(leaf)
            elif isinstance(leaf, ir.Slot) and (leaf.stage, leaf.index) not in slots:
                slots.append((leaf.stage, leaf.index))
    program.saved = saved
    program.saved_slots = slots


def _reduce(program: StepProgram, direction: str) -> Reduced:
    ops = program.forward if direction == "forward" else program.backward
    tails = (program.slot_grads, program.param_grads, program.prev_grads)
    prefix = "rf" if direction == "forward" else "rb"
    means: dict[ir.Expr, Temp] = {}  # a row mean -> the temporary that holds it (each computed once)
    out: list = []

    def lift(expr: ir.Expr, target: ir.Expr | None = None) -> ir.Expr:
        def hoist(node: ir.Expr) -> ir.Expr | None:
            if not isinstance(node, ir.RowMean):
                return None
            if node not in means:
                # ``t = mean(u)`` reduces straight into t
                means[node] = target if node == expr and isinstance(target, Temp) else Temp(f"{prefix}{len(means)}")
                out.append(Reduce(means[node], node.operand))
            return means[node]
        return ir.transform(expr, hoist)

    for op in ops:
        if isinstance(op, Pointwise):
            expr = lift(op.expr, op.target)
            if expr != op.target:
                out.append(Pointwise(op.target, expr))
        elif isinstance(op, GradAssign):
            out.append(GradAssign(op.target, lift(op.expr)))
        else:
            out.append(op)
    lifted = [{k: lift(v) for k, v in tail.items()} if direction == "backward" else dict(tail) for tail in tails]
    if means:
        out = _by_phase(out)
    if direction == "forward":
        plan = _stage_plan(program, out, program.forward_end)
    else:
        plan = _stage_plan(program, out, [leaf for tail in lifted for e in tail.values() for leaf in _leaves(e)])
    return Reduced(out, plan, *lifted)


def _by_phase(ops: list) -> list:
    """``ops`` in an order that keeps every dependency and puts each op in the earliest stage it can take:
    an op's phase is the number of reductions or products on its longest chain of inputs; within a phase
    pointwise ops come first, then that phase's reductions and products. Independent normalisations then
    share their stages (a layer-normalised LSTM's nine make four reduction stages, not eighteen)."""
    phase_of: dict[ir.Expr, int] = {}  # a defined leaf -> phase at which a reader may use it
    keyed = []
    for index, op in enumerate(ops):
        phase = max((phase_of[leaf] for leaf in op_reads(op) if leaf in phase_of), default=0)
        barrier = isinstance(op, BARRIERS)
        for leaf in _defines(op):
            phase_of[leaf] = phase + barrier
        if isinstance(op, GradGemm):
            phase_of[MatGrad(op.index)] = phase + 1
        keyed.append(((phase, barrier, index), op))
    return [op for _, op in sorted(keyed, key=lambda item: item[0])]


def forward_leaves(expr: ir.Expr):
    """Every leaf of an expression (Grad, Carry, OutGrad and MatGrad count as leaves)."""
    return _leaves(expr)
