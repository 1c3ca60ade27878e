"""Is this cell exactly torch.nn.LSTM's or torch.nn.GRU's? Decided from the IR, never from a name.

Each value that is state or output is fully inlined (every current-step value replaced by
its definition) and matched against the same inlining of torch's formulation (one bias
per gate; torch's second bias is zero, except the GRU's ``b_hn`` which sits inside the
reset product). Sums and products match in any order, value names are free, and every
spec parameter must bind to exactly one of torch's. The result says, for each of torch's
weight tensors, which spec parameter fills each gate block, in torch's gate order.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from typing import Iterator

from cellc.ir import nodes as ir
from cellc.ir.params import ParamInfo
from cellc.ir.sizes import CellSizes


@dataclass(frozen=True)
class LoweringPlan:
    """How a cell maps onto torch.lstm / torch.gru (one layer, one direction)."""

    mode: str  # 'lstm' | 'gru'
    weight_ih: tuple[str, ...]  # spec parameter per gate block, torch's gate order
    weight_hh: tuple[str, ...]
    bias_ih: tuple[str | None, ...]  # None: a zero block
    bias_hh: tuple[str | None, ...]
    states: tuple[str, ...]  # spec state for each of torch's states: (h, c) or (h,)
    weight_hr: str | None = None  # the projection (torch.nn.LSTM's proj_size): h = W_hr (o * tanh(c))


def _mm(param: str, operand: ir.Expr) -> ir.MatMul:
    return ir.MatMul(param, operand)


def _gate(fn: str, gate: str, extra: tuple[ir.Expr, ...] = ()) -> ir.Act:
    terms = (_mm(f"W_i{gate}", ir.Input("x")), _mm(f"W_h{gate}", ir.State("h")), ir.Param(f"b_i{gate}"))
    return ir.Act(fn, ir.Sum(terms + extra))


def _torch_lstm() -> dict[str, ir.Expr]:
    i, f, g, o = _gate("sigmoid", "i"), _gate("sigmoid", "f"), _gate("tanh", "g"), _gate("sigmoid", "o")
    c = ir.Sum((ir.Prod((f, ir.State("c"))), ir.Prod((i, g))))
    return {"h": ir.Prod((o, ir.Act("tanh", c))), "c": c}


def _torch_lstmp() -> dict[str, ir.Expr]:
    """torch.nn.LSTM with proj_size: h is the projection of o * tanh(c)."""
    lstm = _torch_lstm()
    return {"h": _mm("W_proj", lstm["h"]), "c": lstm["c"]}  # (not W_hr: the GRU's reset gate is W_hr)


def _torch_gru() -> dict[str, ir.Expr]:
    r, z = _gate("sigmoid", "r"), _gate("sigmoid", "z")
    hn = ir.Sum((_mm("W_hn", ir.State("h")), ir.Param("b_hn")))
    n = ir.Act("tanh", ir.Sum((_mm("W_in", ir.Input("x")), ir.Param("b_in"), ir.Prod((r, hn)))))
    one_minus_z = ir.Sum((ir.Const(1.0), ir.Neg(z)))
    return {"h": ir.Sum((ir.Prod((one_minus_z, n)), ir.Prod((z, ir.State("h")))))}


def _plan_for(mode: str, params: dict[str, str], states: dict[str, str]) -> LoweringPlan:
    gates = "rzn" if mode == "gru" else "ifgo"
    hh_bias = tuple(params["b_hn"] if (mode == "gru" and g == "n") else None for g in gates)
    return LoweringPlan(
        mode=mode,
        weight_ih=tuple(params[f"W_i{g}"] for g in gates),
        weight_hh=tuple(params[f"W_h{g}"] for g in gates),
        bias_ih=tuple(params[f"b_i{g}"] for g in gates),
        bias_hh=hh_bias,
        states=tuple(states[s] for s in (("h",) if mode == "gru" else ("h", "c"))),
        weight_hr=params.get("W_proj"),
    )


def _inline(cell: ir.Cell) -> dict[str, ir.Expr]:
    """Every value's expression with current-step values replaced by their definitions."""
    done: dict[str, ir.Expr] = {}
    for eq in cell.equations:
        done[eq.name] = ir.transform(eq.expr, lambda n: done[n.name] if isinstance(n, ir.Value) else None)
    return done


def _flat(node: ir.Expr) -> tuple[ir.Expr, ...]:
    """Terms of a sum or factors of a product, nested ones of the same kind spliced in."""
    kind = type(node)
    items = node.terms if isinstance(node, ir.Sum) else node.factors
    out: list[ir.Expr] = []
    for item in items:
        out.extend(_flat(item) if type(item) is kind else (item,))
    return tuple(out)


def _bind(table: dict[str, str], key: str, value: str) -> dict[str, str] | None:
    if key in table:
        return table if table[key] == value else None
    if value in table.values():
        return None  # a spec parameter binds once
    return {**table, key: value}


def _match(a: ir.Expr, b: ir.Expr, params: dict[str, str], states: dict[str, str]) -> Iterator[dict[str, str]]:
    """Bindings of torch's parameter names (in ``a``) to the spec's (in ``b``) that make them equal."""
    if isinstance(a, ir.Const):
        if isinstance(b, ir.Const) and b.value == a.value:
            yield params
    elif isinstance(a, ir.Input):
        if isinstance(b, ir.Input):
            yield params
    elif isinstance(a, ir.State):
        if isinstance(b, ir.State) and states.get(a.name) == b.name:
            yield params
    elif isinstance(a, ir.Param):
        if isinstance(b, ir.Param) and (bound := _bind(params, a.name, b.name)) is not None:
            yield bound
    elif isinstance(a, ir.MatMul):
        if isinstance(b, ir.MatMul) and (bound := _bind(params, a.param, b.param)) is not None:
            yield from _match(a.operand, b.operand, bound, states)
    elif isinstance(a, (ir.Act, ir.Neg)):
        if type(b) is type(a) and (not isinstance(a, ir.Act) or a.fn == b.fn):
            yield from _match(a.operand, b.operand, params, states)
    elif isinstance(a, (ir.Sum, ir.Prod)):
        if type(b) is type(a):
            left, right = _flat(a), _flat(b)
            if len(left) == len(right):
                for order in permutations(right):
                    yield from _match_all(left, order, params, states)


def _match_all(left, right, params, states) -> Iterator[dict[str, str]]:
    if not left:
        yield params
        return
    for bound in _match(left[0], right[0], params, states):
        yield from _match_all(left[1:], right[1:], bound, states)


def plan_lowering(cell: ir.Cell, params: dict[str, ParamInfo], sizes: CellSizes | None = None) -> LoweringPlan | None:
    """The mapping onto torch's LSTM (with or without proj_size) or GRU, or None when the cell is anything else
    (the pipeline keeps it as ``CompiledCell.lowering``); ``sizes``: the cell's (cellc.ir.sizes)."""
    spec_states = list(cell.states)
    if cell.output not in spec_states:
        return None
    inlined = _inline(cell)
    for mode, reference in (("lstm", _torch_lstm()), ("gru", _torch_gru()), ("lstmp", _torch_lstmp())):
        if len(reference) != len(spec_states):
            continue
        others = [s for s in spec_states if s != cell.output]
        states = {"h": cell.output, **({"c": others[0]} if mode != "gru" else {})}
        names = list(reference)
        for bound in _match_all(tuple(reference[n] for n in names),
                                 tuple(inlined[states[n]] for n in names), {}, states):
            # torch.lstm tells a projection by h's size (its mode is LSTM's either way): the projected form is
            # torch's only where h has proj_size units and c hidden_size (sizes: {y: proj_size}); the others only
            # where every state has hidden_size units
            want = {"h": "P" if mode == "lstmp" else "N", "c": "N"}
            found = {n: (sizes.values[s] if sizes is not None else "N") for n, s in states.items()}
            if len(bound) == len(params) and all(found[n] == want[n] for n in found):
                return _plan_for("gru" if mode == "gru" else "lstm", bound, states)
    return None
