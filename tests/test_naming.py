"""One naming scheme for every code generator (cellc.codegen.naming): every generated identifier is either
``kind__identifier[__suffix]`` for one of the cell's own identifiers, or the generator's own vocabulary, which
never contains a spec name and never depends on one. Checked on every backend's output for the shipped specs,
for cells whose names are drawn to collide with generated ones, and on the cells that collided before."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from cellc.codegen import naming
from cellc.codegen.render import render_module
from cellc.codegen.support import unsupported
from cellc.fuzz.backends import check_spec
from cellc.fuzz.cells import random_cell
from cellc.ir.pipeline import compile_spec
from cellc.spec.loader import builtin_spec_names

BACKENDS = ("eager", "fused", "compiled", "triton")
SPECS = builtin_spec_names()
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HASH = re.compile(r"[0-9a-f]{8,}")  # a source digest (the extension's name) differs with the source
TEMP = re.compile(r"t[0-9]+|r[fb][0-9]+")  # the derived backward's temporaries and hoisted row means (cellc.ir.autodiff)

# The collisions the scheme removed (each made a backend compute wrong numbers or corrupt memory before):
# the C++ loops named the per-step pointer of value a's saved buffer like the buffer of value a_t (the inner
# declaration shadowed the outer: writes through the wrong pointer, heap corruption); the Triton kernels
# named the masked output of y like the value y_out (the state y_out was overwritten: final states 0.59 off).
COLLIDING = {
    "collide_saved": "equations: |\n  a = sigmoid(W_a x + R_a y[-1] + b_a)\n  a_t = sigmoid(W_at x + R_at y[-1] + b_at)\n"
                     "  y = tanh(a * a_t + W_y x)\n",
    "collide_out": "equations: |\n  y_out = sigmoid(W_o x + R_o y[-1] + b_o)\n  y = tanh(W_y x + R_y y_out[-1]) * y_out\n",
    "collide_kinds": "equations: |\n  v = sigmoid(W_v x + R_v y[-1] + b_v)\n  c_c = tanh(W_c x + R_c c[-1] + p_c * c_c[-1])\n"
                     "  c = v * c[-1] + c_c * v\n  k_c = sigmoid(W_k x + R_k y[-1])\n  y = tanh(c) * k_c + v_y[-1]\n"
                     "  v_y = sigmoid(W_vy x + R_vy y[-1] + b_vy)\n",
}


def cell_names(compiled) -> set[str]:
    cell = compiled.cell
    return set(compiled.params) | set(cell.values) | set(compiled.states) | {cell.input, cell.output}


def identifiers(source: str) -> tuple[set[str], set[str], set[str]]:
    """(names in Python code, identifiers inside embedded source text (C++, Triton), one-line string values)."""
    code, embedded, strings = set(), set(), set()
    docstrings = {node.body[0].value.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and token.start[0] in docstrings:
            continue  # prose: the docstrings quote the spec's equations and parameter names
        if token.type == tokenize.NAME:
            code.add(token.string)
        elif token.type == tokenize.STRING:
            if "\n" in token.string:
                embedded |= set(IDENT.findall(token.string))
            else:
                strings.add(token.string.strip("rbf'\""))
    return code, embedded, strings


def scheme_problems(source: str, names: set[str]) -> list[str]:
    """Identifiers outside the scheme. (The vocabulary may hold a word a spec also uses, such as x or c: spec
    names never stand in code as they are; that they never do is what the renaming test shows.)"""
    code, embedded, _ = identifiers(source)
    problems = []
    for ident in code | embedded:
        parsed = naming.parse(ident)
        if parsed is not None:
            kind, name, _ = parsed
            temp = kind in ("t", "dt", "st") and TEMP.fullmatch(name)
            if name not in names and not temp:
                problems.append(f"{ident}: scheme name of '{name}', not one of this cell's")
        elif not naming.is_vocabulary(ident):
            problems.append(f"{ident}: neither the scheme nor the generator's vocabulary")
    return problems


def vocabulary(source: str) -> set[str]:
    code, embedded, _ = identifiers(source)
    return {i for i in code | embedded if naming.parse(i) is None and not HASH.fullmatch(i)}


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n{body}")
    return path


def test_scheme_round_trips_and_keeps_kinds_apart():
    assert naming.parse(naming.spec_var("v", "y_out")) == ("v", "y_out", ())
    assert naming.parse(naming.suffixed(naming.value_var("y"), "out")) == ("v", "y", ("out",))
    assert naming.suffixed(naming.value_var("y"), "out") != naming.value_var("y_out")
    assert naming.suffixed(naming.spec_var("sv", "a"), "t") != naming.spec_var("sv", "a_t")
    assert naming.carry_var("c") != naming.value_var("c_c") != naming.spec_var("c", "c_c")
    assert naming.scratch_var("mg0") == "scr_mg0" and naming.is_vocabulary("scr_mg0")
    for bad in ("v__", "zz__y", "v__y__zz", "v___y", "v__y_"):
        assert naming.parse(bad) is None, bad
    with pytest.raises(ValueError):
        naming.spec_var("zz", "y")
    with pytest.raises(ValueError):
        naming.spec_var("v", "y", "zz")
    with pytest.raises(ValueError):
        naming.spec_var("v", "a__b")  # not an identifier a spec can have


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_generated_name_is_in_the_scheme_or_the_vocabulary(tmp_path, backend):
    cells = [compile_spec(s) for s in SPECS]
    cells += [compile_spec(write(tmp_path, name, body)) for name, body in COLLIDING.items()]
    for seed in range(12):
        cell = random_cell(seed)
        cells.append(compile_spec(write(tmp_path, cell.name, cell.text.split("\n", 1)[1])))
    for compiled in cells:
        if unsupported(compiled, backend):
            continue  # (the triton backend refuses cells with declared sizes)
        problems = scheme_problems(render_module(compiled, backend), cell_names(compiled))
        assert not problems, f"{compiled.name}: {problems[:5]}"


def renamed(text: str, names: set[str]) -> str:
    """The spec with every identifier replaced by a fresh one of the same role (parameters keep the letter
    before their underscore)."""
    mapping = {}
    for k, name in enumerate(sorted(names)):
        head, sep, _ = name.partition("_")
        mapping[name] = f"{head}_Qz{k}" if sep else f"Qz{k}"
    pattern = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
                         + r")(?![A-Za-z0-9_])")
    head, body = text.split("\n", 1)
    return head + "\n" + pattern.sub(lambda m: mapping[m.group(1)], body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_vocabulary_does_not_depend_on_the_spec_names(tmp_path, backend):
    """A generator that built a name from a spec name outside the scheme would show it here: the same cell
    under other names renders the same vocabulary."""
    for seed in range(8):
        cell = random_cell(seed)
        text = cell.text.split("\n", 1)[1]
        a = compile_spec(write(tmp_path, f"a{seed}", text))
        b = compile_spec(write(tmp_path, f"b{seed}", renamed(text, cell_names(a) - {a.cell.input})))  # the input keeps its default name
        if unsupported(a, backend):
            continue  # (the triton backend refuses cells with declared sizes)
        # the spec hash differs with the names; in prose a hash like 04533320791b6e03 would read as an identifier
        assert vocabulary(render_module(a, backend).replace(a.hash, "")) - {a.name, f"A{seed}"} == \
            vocabulary(render_module(b, backend).replace(b.hash, "")) - {b.name, f"B{seed}"}, seed


@pytest.mark.parametrize("name", sorted(COLLIDING))
def test_cells_that_collided_match_eager_on_the_cpu_backends(tmp_path, name):
    result = check_spec(write(tmp_path, name, COLLIDING[name]), ("fused", "compiled"))
    assert result["status"] == "ok", result


@pytest.mark.slow
def test_cells_that_collided_match_eager_in_the_triton_kernels(tmp_path):
    pytest.importorskip("triton")
    paths = [str(write(tmp_path, name, body)) for name, body in COLLIDING.items()]
    script = ("import json, sys\nfrom cellc.fuzz.backends import check_spec, fast_interpreter\n"
              "for k, path in enumerate(sys.argv[1:]):\n"
              "    for seed in range(3):  # each case in each kernel mode (step, persistent, tiled)\n"
              "        print(json.dumps(check_spec(path, ('triton',), seed)))\n")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("CELLC_TRITON_MODE", None)
    done = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 3 * len(paths)
    modes = set()
    for row in rows:
        assert row["status"] == "ok", row
        modes |= {m.split(":")[1] for m in row["backends"]["triton"]["modes"]}
    assert modes == {"step", "persistent", "tiled"}
