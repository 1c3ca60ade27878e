"""Random *valid* cells for differential fuzzing of the backends.

A cell is drawn from a seed alone (same seed, same spec text): 1 to 6 values in an order where each reads
only earlier values at the current step, terms of every kind the language has (input products, previous-step
products, current-step products of a value or of an expression, peepholes, biases, plain reads, ``1 - g``,
constants, and in about one cell in five the input read elementwise: ``x``, ``tanh(x)``, ``(1 - g) * x``,
``p * x``, ``R (g * x)``; in about one in five, independently, normalisations ``p * norm(<terms>)`` and
``norm(<atom>)``), every activation, constant initial states and vector initialisations. Names are drawn to stress
the code generators' naming: prefixes and suffixes of each other and of the names the generators produce
(``v``, ``y_out``, ``t0``, ``sv_y``, ``k``, ``mg0``, ...), names equal to parameters' stems (``i`` beside
``W_i``), single letters, long names and names ending in digits.

Cells the front end refuses are not failures of the fuzzer's subject: :func:`random_cell` keeps each
cell live (every value reaches the output or a state, the input is read, a state is kept) so that
refusals are rare, and the runner counts them apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from cellc.ir.activations import ACTIVATIONS
from cellc.spec.identifiers import MAX_LENGTH, identifier_problem

ACTIVATION_NAMES = sorted(ACTIVATIONS)

# Names that look like what the generators produce, or like each other with a suffix cellc might add.
_STEMS = ["v", "s", "w", "m", "t", "c", "k", "d", "e", "b", "n", "r", "g", "h", "q", "z", "o", "f", "i", "y",
          "raw", "new", "acc", "out", "scr", "sv", "st", "dv", "dt", "mg0", "g0", "g1", "x0", "x1", "xg0", "xw",
          "gs", "S", "N", "B", "T", "K", "F", "carry", "zero", "ok", "pf", "hk0", "dslot", "dm", "mat", "acc0",
          "t0", "t1", "t2", "v0", "c0", "wok", "rT0", "rN0", "prev", "VEC", "SV", "CG", "DM", "MG", "ACC", "dg",
          "new_y", "k_y", "c_y", "raw_c", "sv_v", "d_v", "v_y", "y_t", "y_out", "y_scr", "c_t", "out_out"]
_SUFFIXES = ["_t", "_out", "_scr", "_0", "1", "_v", "_c", "_new", "_raw", "_k", "_acc", "_sv", "_d", "2", "_x"]
_PREFIXES = ["v_", "s_", "w_", "d_", "sv_", "c_", "k_", "raw_", "new_", "acc_", "t_", "m_", "dv_", "st_"]
# YAML would read these keys as booleans or null; the spec refuses them as keys, so keep them out of names
# that may become keys (initial: / init:), rather than quoting them everywhere.
_YAML_WORDS = {"y", "n", "on", "off", "yes", "no", "true", "false", "null"}


def _ok(name: str) -> bool:
    return len(name) <= MAX_LENGTH and identifier_problem(name) is None


def _draw_name(rng: random.Random, taken: set[str], others: list[str]) -> str:
    """A fresh identifier, most often a stress name built from generated-looking stems or from names
    already in the cell."""
    for _ in range(100):
        roll = rng.random()
        base = rng.choice(others) if others and rng.random() < 0.5 else rng.choice(_STEMS)
        if roll < 0.3:
            name = base
        elif roll < 0.55:
            name = base + rng.choice(_SUFFIXES)
        elif roll < 0.75:
            name = rng.choice(_PREFIXES) + base
        elif roll < 0.85:
            name = rng.choice("abcdefghjklmnopqrstuvwzABCDEFGHJKLMNOPQSTUVWZ")
        elif roll < 0.93:
            name = "L" + "".join(rng.choice("abcdefgh0123456789") for _ in range(rng.randint(20, MAX_LENGTH - 1)))
        else:
            name = base + str(rng.randint(0, 99))
        if name not in taken and _ok(name):
            return name
    raise AssertionError("no fresh name drawn")  # pragma: no cover - the pool is large


@dataclass
class _Builder:
    rng: random.Random
    values: list[str]
    input: str
    taken: set[str]
    params: dict[str, str] = field(default_factory=dict)  # name -> 'W' | 'R' | 'p' | 'b'
    reads: list[set[tuple[str, bool]]] = field(default_factory=list)  # per value: (name, previous step?)
    reads_input: list[bool] = field(default_factory=list)
    direct: bool = False  # may read the input elementwise (then the cell's modules have input_size == hidden_size)
    norms: bool = False  # may normalise over the units: ``p * norm(<sum>)``, ``norm(<atom>)``
    # the output of proj_size units (``<proj> = W_p <last value>``, sizes: {<proj>: proj_size}) that every
    # previous-step product reads, as torch.nn.LSTM(proj_size)'s gates read h; None: every value is N wide
    proj: str | None = None

    def param(self, letter: str, stem_hint: str) -> str:
        rng = self.rng
        for _ in range(100):
            roll = rng.random()
            if roll < 0.4:
                stem = stem_hint  # W_i beside the value i
            elif roll < 0.7:
                stem = stem_hint + rng.choice(_SUFFIXES)
            else:
                stem = rng.choice(_STEMS + self.values) + rng.choice(["", "1", "_0", "_t", "x"])
            name = f"{letter}_{stem}"
            if name not in self.taken and _ok(name):
                self.taken.add(name)
                self.params[name] = letter
                return name
        raise AssertionError("no fresh parameter name drawn")  # pragma: no cover

    # ---- pieces of an equation for value j -------------------------------------------------------
    def atom(self, j: int, reads: set) -> str:
        """A value read elementwise: an earlier value at this step, or any value at the previous step."""
        if j > 0 and self.rng.random() < 0.45:
            name = self.rng.choice(self.values[:j])
            reads.add((name, False))
            return name
        name = self.rng.choice(self.values)
        reads.add((name, True))
        return f"{name}[-1]"

    def term(self, j: int, reads: set, flags: dict, nested: bool = False) -> str:
        rng, target = self.rng, self.values[j]
        kinds = ["in", "prev", "cur", "expr", "peep", "bias", "atom", "scaled", "one_minus"]
        weights = [5, 4, 1.2, 1.2, 1.5, 2.5, 1.5, 0.6, 0.8]
        if self.direct:
            kinds, weights = kinds + ["direct"], weights + [2.0]
        if self.norms and not nested:
            kinds, weights = kinds + ["norm"], weights + [2.5]
        kind = rng.choices(kinds, weights)[0]
        if kind == "norm":  # a gain times the normalised sum, or an atom normalised alone
            if rng.random() < 0.7:  # led by a term that changes per step: norm(b) alone is refused
                if rng.random() < 0.5:
                    flags["input"] = True
                    lead = f"{self.param('W', target)} {self.input}"
                else:
                    lead = self.atom(j, reads)
                terms = [lead] + [self.term(j, reads, flags, nested=True) for _ in range(rng.randint(0, 2))]
                return f"{self.param('p', target)} * norm({' + '.join(terms)})"
            return f"norm({self.atom(j, reads)})"
        if kind == "direct":  # the input itself, elementwise
            flags["input"] = True
            x, form = self.input, rng.random()
            if form < 0.25:
                return x
            if form < 0.45:
                return f"{rng.choice(ACTIVATION_NAMES)}({x})"
            if form < 0.65:
                return f"(1 - {self.atom(j, reads)}) * {x}"
            if form < 0.85:
                return f"{self.param('p', target)} * {x}"
            return f"{self.param('R', target)} ({self.atom(j, reads)} * {x})"
        if kind == "in":
            flags["input"] = True
            return f"{self.param('W', target)} {self.input}"
        if kind == "prev":
            name = self.proj or rng.choice(self.values)  # one size for every previous-step matrix's operand
            reads.add((name, True))
            return f"{self.param('R', target)} {name}[-1]"
        if kind == "cur" and j > 0:
            name = rng.choice(self.values[:j])
            reads.add((name, False))
            return f"{self.param('R', target)} {name}"
        if kind == "expr":
            inner = rng.random()
            if inner < 0.4:
                operand = f"({self.atom(j, reads)} * {self.atom(j, reads)})"
            elif inner < 0.7:  # (identity(v[-1]) folds to v[-1]: a previous-step product, of N where proj is P)
                fn = rng.choice(ACTIVATION_NAMES)
                fn = "tanh" if self.proj and fn == "identity" else fn
                operand = f"{fn}({self.atom(j, reads)})"
            else:
                operand = f"(1 - {self.atom(j, reads)})"
            return f"{self.param('R', target)} {operand}"
        if kind == "peep":
            return f"{self.param('p', target)} * {self.atom(j, reads)}"
        if kind == "bias":
            return self.param("b", target)
        if kind == "scaled":
            return f"{rng.choice(['0.5', '2', '1.5e-1', '3.0'])} * {self.atom(j, reads)}"
        if kind == "one_minus":
            return f"(1 - {self.atom(j, reads)})"
        return self.atom(j, reads)

    def sum_(self, j: int, reads: set, flags: dict) -> str:
        terms = [self.term(j, reads, flags) for _ in range(self.rng.randint(1, 4))]
        text = terms[0]
        for t in terms[1:]:
            text += (" - " if self.rng.random() < 0.15 else " + ") + t
        return text

    def equation(self, j: int) -> str:
        rng, reads, flags = self.rng, set(), {"input": False}
        act = rng.choice(ACTIVATION_NAMES)
        form = rng.random()
        if form < 0.5:
            rhs = f"{act}({self.sum_(j, reads, flags)})"
        elif form < 0.7:
            rhs = f"{act}({self.sum_(j, reads, flags)}) * {rng.choice(ACTIVATION_NAMES)}({self.sum_(j, reads, flags)})"
        elif form < 0.85:  # a GRU-like interpolation
            gate = self.atom(j, reads)
            rhs = f"{gate} * {act}({self.sum_(j, reads, flags)}) + (1 - {gate}) * {self.atom(j, reads)}"
        else:
            rhs = self.sum_(j, reads, flags)
        self.reads.append(reads)
        self.reads_input.append(flags["input"])
        return f"{self.values[j]} = {rhs}"


def _live(builder: _Builder, output: str) -> set[str]:
    """Values that reach the output or a kept state (what the compiler's dead-code pass keeps)."""
    index = {v: k for k, v in enumerate(builder.values)}
    live, todo = set(), [output]
    while todo:
        v = todo.pop()
        if v in live or v not in index:  # (the projected output: it reads the last value, which stays live)
            continue
        live.add(v)
        todo += [name for name, _ in builder.reads[index[v]]]
    return live


@dataclass(frozen=True)
class RandomCell:
    seed: int
    name: str
    text: str  # the spec's YAML


def random_cell(seed: int, prefix: str = "fz") -> RandomCell:
    rng = random.Random(seed)
    taken: set[str] = set()
    n_values = rng.randint(1, 6)
    values: list[str] = []
    for _ in range(n_values):
        values.append(_draw_name(rng, taken | _YAML_WORDS, values))
        taken.add(values[-1])
    input_name = "x" if rng.random() < 0.6 else _draw_name(rng, taken | {"x"}, values)
    taken.add(input_name)
    # Drawn apart from the cell's stream, so that a cell without elementwise input reads are what they were.
    proj_rng = random.Random(f"{seed}:proj")
    proj = _draw_name(proj_rng, taken | _YAML_WORDS | {input_name}, values) if proj_rng.random() < 0.15 else None
    if proj:
        taken.add(proj)
    # (an input read elementwise must have the output's size: not in a cell with a projected output)
    b = _Builder(rng, values, input_name, taken,
                 direct=random.Random(f"{seed}:direct").random() < 0.2 and proj is None,
                 norms=random.Random(f"{seed}:norm").random() < 0.2, proj=proj)
    lines = [b.equation(j) for j in range(n_values)]
    output = values[-1]
    # Keep it live: every value feeds a later one or the output; the input and a state are read.
    out_reads = b.reads[-1]
    extra: list[str] = []
    for v in values[:-1]:
        if v not in _live(b, output):
            out_reads.add((v, True))  # read at the previous step: always allowed
            extra.append(f"{b.param('p', output)} * {v}[-1]")
    if not any(b.reads_input[values.index(v)] for v in _live(b, output)):
        extra.append(f"{b.param('W', output)} {input_name}")
    if not any(prev for v in _live(b, output) for _, prev in b.reads[values.index(v)]):
        extra.append(f"{b.param('R', output)} {proj or output}[-1]")
        out_reads.add((proj or output, True))
    if extra:
        lines[-1] += " + " + " + ".join(extra)
    states = sorted({name for v in _live(b, output) for name, prev in b.reads[values.index(v)] if prev})
    if proj:  # the output, projected to proj_size units
        lines.append(f"{proj} = {b.param('W', proj)} {output}")
        output = proj
    name = f"{prefix}{seed}"
    text = [f"name: {name}", f"description: random cell, seed {seed}"]
    if input_name != "x":
        text.append(f"input: {input_name}")
    if output != "y":
        text.append(f"output: {output}")
    initial = {s: rng.choice([0.5, -1, 0.25]) for s in states if rng.random() < 0.25 and s not in _YAML_WORDS}
    if initial:
        text.append("initial:")
        text += [f"  {s}: {v}" for s, v in initial.items()]
    vectors = [p for p, letter in b.params.items() if letter in ("b", "p") and rng.random() < 0.2]
    if vectors:
        text.append("init:")
        text += [f"  {p}: {rng.choice([1, -0.5, 2])}" for p in vectors]
    text.append("equations: |")
    text += [f"  {line}" for line in lines]
    if proj:
        text += ["sizes:", f"  {proj}: proj_size"]
    return RandomCell(seed, name, "\n".join(text) + "\n")
