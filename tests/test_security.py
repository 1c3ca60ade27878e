"""Spec text is untrusted: only validated identifiers and finite numbers reach generated code.

Hostile specs are rejected with a clear SpecError; what is accepted renders to source whose
every identifier is either the template's own or a prefixed, validated spec name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
import yaml

import cellc
from cellc.codegen import naming
from cellc.codegen.eager import number
from cellc.codegen.render import render_module
from cellc.errors import SpecError
from cellc.ir.pipeline import compile_spec
from cellc.spec.loader import builtin_spec_names
from cellc.spec.yaml_source import MAX_SPEC_BYTES

BODY = "  y = tanh(W_a x + R_a y[-1] + b_a)\n"


def spec(tmp_path, text, name="hostile.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def rejected(path, fragment):
    with pytest.raises(SpecError) as info:
        compile_spec(path)
    assert fragment in info.value.message, info.value.message
    return info.value


HOSTILE_VALUES = ["__import__", "os", "sys", "self", "torch", "nn", "import", "lambda", "class", "None",
                  "exec", "eval", "getattr", "match", "print", "sum", "x__y", "_x", "F", "builtins"]


@pytest.mark.parametrize("name", HOSTILE_VALUES)
def test_hostile_value_names(tmp_path, name):
    path = spec(tmp_path, f"name: h\nequations: |\n  {name} = tanh(W_a x + R_a y[-1])\n  y = {name}\n")
    err = rejected(path, name[:40])
    assert err.location is not None and err.location.line == 3


@pytest.mark.parametrize("name", ["__class___x", "W__a", "b_", "_W_a", "W_a__", "W_" + "a" * 40])
def test_hostile_parameter_names(tmp_path, name):
    path = spec(tmp_path, f"name: h\nequations: |\n  y = tanh(W_a x + R_a y[-1] + {name})\n")
    rejected(path, "name")


@pytest.mark.parametrize("field", ["input", "output"])
@pytest.mark.parametrize("value", ['x"; import os; "', "a\\nb", "a;b", "__import__", "self", "o s", "'q'"])
def test_hostile_input_output_names(tmp_path, field, value):
    path = spec(tmp_path, f"name: h\n{field}: \"{value}\"\nequations: |\n{BODY}")
    with pytest.raises(SpecError) as info:
        compile_spec(path)
    assert info.value.location is not None and info.value.location.line == 2


@pytest.mark.parametrize("value", ['a"; import os; "', "../../evil", "A", "a b", "a\\nb", "__init__", "x" * 40,
                                   "a.b", "a/b", ""])
def test_hostile_spec_names(tmp_path, value):
    path = spec(tmp_path, yaml.safe_dump({"name": value.replace("\\n", "\n"), "equations": BODY}))
    rejected(path, "spec names are lower case")


@pytest.mark.parametrize("key", ["initial", "init"])
@pytest.mark.parametrize("name", ['y"; import os; "', "__class__", "os", "a b"])
def test_hostile_mapping_keys(tmp_path, key, name):
    path = spec(tmp_path, f"name: h\nequations: |\n{BODY}{key}:\n  '{name}': 1\n")
    with pytest.raises(SpecError) as info:
        compile_spec(path)
    assert info.value.location is not None


# Python's `$` matches before a trailing newline: "evil\n" must fail the name checks, or it would
# name generated/evil\n.py and break the generated source.
TRAILING_NEWLINE = ["a\n", "W_i\n", "y\n", "vanilla\n"]


@pytest.mark.parametrize("name", TRAILING_NEWLINE)
def test_name_checks_reject_a_trailing_newline(name):
    from cellc.spec.identifiers import SPEC_NAME, identifier_problem, is_parameter_name

    assert identifier_problem(name) is not None
    assert not is_parameter_name(name)
    assert not SPEC_NAME.match(name) and not SPEC_NAME.fullmatch(name)
    with pytest.raises(ValueError):
        naming.checked(name)


@pytest.mark.parametrize("value", ["a\n", "h\n", "vanilla\n"])
def test_spec_name_with_trailing_newline(tmp_path, monkeypatch, value):
    from cellc.cli import main

    path = spec(tmp_path, yaml.safe_dump({"name": value, "equations": BODY}))
    rejected(path, "spec names are lower case")
    monkeypatch.chdir(tmp_path)
    assert main(["compile", str(path), "--out", "out"]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field", ["input", "output"])
@pytest.mark.parametrize("value", ["x\n", "y\n", "a\n", "W_i\n"])
def test_input_output_with_trailing_newline(tmp_path, field, value):
    path = spec(tmp_path, yaml.safe_dump({"name": "h", field: value, "equations": BODY}))
    rejected(path, "not a valid name")


@pytest.mark.parametrize("key", ["initial", "init"])
@pytest.mark.parametrize("name", ["y\n", "a\n", "b_a\n", "W_i\n"])
def test_mapping_keys_with_trailing_newline(tmp_path, key, name):
    path = spec(tmp_path, yaml.safe_dump({"name": "h", "equations": BODY, key: {name: 1}}))
    rejected(path, "not a valid name")


@pytest.mark.parametrize("ref", ["vanilla\n", "a\n"])
def test_extends_with_trailing_newline(tmp_path, ref):
    spec(tmp_path, f"name: a\nequations: |\n{BODY}", "a.yaml")  # a real sibling 'a' must not be found
    path = spec(tmp_path, yaml.safe_dump({"name": "h", "extends": ref}))
    rejected(path, "is not a spec name")


@pytest.mark.parametrize("text,fragment", [
    ("initial:\n  y: .nan\n", "initial: value of 'y' is not finite"),
    ("initial:\n  y: .inf\n", "initial: value of 'y' is not finite"),
    ("initial:\n  y: -.inf\n", "initial: value of 'y' is not finite"),
    ("init:\n  b_a: .nan\n", "init: value of 'b_a' is not finite"),
    ("initial:\n  y: 1e400\n", "initial: value of 'y' must be a number, not the text '1e400'"),
    ("init:\n  b_a: '1'\n", "init: value of 'b_a' must be a number, not the text '1'"),
    ("init:\n  b_a: true\n", "init: value of 'b_a' must be a number, not True"),
])
def test_non_finite_or_non_numeric_settings(tmp_path, text, fragment):
    path = spec(tmp_path, f"name: h\nequations: |\n{BODY}{text}")
    err = rejected(path, fragment)
    assert err.location is not None and err.location.line == 5  # the setting's own line


@pytest.mark.parametrize("key,name", [("initial", "y"), ("init", "b_a")])
@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["1e400", "-1e400"])
def test_huge_integer_settings_are_spec_errors(tmp_path, capsys, key, name, value):
    from cellc.cli import main

    path = spec(tmp_path, f"name: h\nequations: |\n{BODY}{key}:\n  {name}: {value}\n")
    err = rejected(path, f"value of '{name}' is too large")
    assert err.location is not None and err.location.line == 5  # the key
    assert main(["check", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("expr,fragment", [
    ("1e999", "number 1e999 is not finite"),
    ("1e30 * 1e30", "constants combine to a number that is not finite in float32"),
    ("(3e38 + 3e38)", "constants combine to a number that is not finite in float32"),
    ("nan", "undefined name 'nan'"),
    ("inf", "undefined name 'inf'"),
])
def test_non_finite_numbers_in_equations(tmp_path, expr, fragment):
    path = spec(tmp_path, f"name: h\nequations: |\n  y = tanh(W_a x + R_a y[-1]) * {expr}\n")
    err = rejected(path, fragment)
    assert err.location is not None and err.location.line == 3


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/etc/passwd", "specs/vanilla", "vanilla.yaml", "..", ".",
                                 "~", "Vanilla", "vanilla; rm -rf /", "$HOME", ""])
def test_extends_takes_names_not_paths(tmp_path, ref):
    path = spec(tmp_path, f"name: h\nextends: \"{ref}\"\n")
    err = rejected(path, "extends")
    assert err.location is not None and err.location.line == 2


def test_yaml_tags_and_huge_or_binary_files(tmp_path):
    rejected(spec(tmp_path, f"name: !!python/object/apply:os.system ['true']\nequations: |\n{BODY}"),
             "bad YAML")
    big = tmp_path / "big.yaml"
    big.write_text("name: h\ndescription: '" + "a" * (MAX_SPEC_BYTES + 1) + "'\n")
    rejected(big, "larger than")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: h\n\xff\xfe\x00")
    rejected(binary, "not UTF-8")
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    rejected(deep, "nested too deeply")


def test_output_file_name_comes_only_from_a_validated_spec_name(tmp_path, monkeypatch, capsys):
    from cellc.cli import main

    monkeypatch.chdir(tmp_path)
    spec(tmp_path, f"name: ../escape\nequations: |\n{BODY}", "esc.yaml")
    assert main(["compile", "esc.yaml", "--out", "out"]) == 2
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "out").exists()


# --- what reaches generated code ----------------------------------------------------------

INJECTED = "__import__('os').system('echo pwned')"


def identifiers(source: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.alias):
            out.add(node.asname or node.name)
    return out


def prefixed(ident: str, names: set[str]) -> bool:
    """``ident`` is one of ``names`` in the generated-name scheme (cellc.codegen.naming): kind, the name, suffixes."""
    parsed = naming.parse(ident)
    return parsed is not None and parsed[1] in names

# Every name this spec chooses carries the marker "Zq", so its traces in the source can be found.
MARKED = (
    "name: zq_cell\ninput: Zqin\noutput: Zqout\ninitial:\n  Zqout: 0.5\ninit:\n  b_Zq1: 1\n"
    "equations: |\n"
    "  ZqGate = sigmoid(W_Zq1 Zqin + R_Zq1 Zqout[-1] + b_Zq1)\n"
    "  ZqC = ZqGate * ZqC[-1] + tanh(W_Zq2 Zqin + R_Zq2 (ZqGate * Zqout[-1])) + p_Zq * ZqC[-1]\n"
    "  Zqout = tanh(ZqC) * ZqGate\n"
)


@pytest.mark.parametrize("backend", ["eager", "fused", "compiled", "triton"])
def test_spec_names_reach_the_source_only_prefixed_or_as_plain_name_strings(tmp_path, backend):
    compiled = compile_spec(spec(tmp_path, MARKED))
    source = render_module(compiled, backend)
    names = set(compiled.params) | set(compiled.cell.values)
    assert {"W_Zq2", "R_Zq2", "p_Zq", "ZqC"} <= names  # all kinds are present
    for ident in identifiers(source):
        if "Zq" in ident or "zq" in ident:
            assert ident == "ZqCell" or prefixed(ident, names | {"Zqin"}), ident
    tree = ast.parse(source)
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "Zq" in node.value:
            if id(node) in docstrings:  # docstrings list equations and parameters as text
                continue
            if "\n" in node.value:  # embedded source (C++ time loops, Triton kernels): token by token
                for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", node.value):
                    if "Zq" in token or "zq" in token:
                        assert token in ("zq_cell", "ZqCell") or prefixed(token, names | {"Zqin"}), token
            else:
                assert node.value in names, node.value
    namespace: dict = {}
    exec(compile(source, "<zq>", "exec"), namespace)  # it is valid, runnable Python
    assert namespace["ZqCell"](2, 3).spec_parameter("W_Zq2").shape == (3, 2)


@pytest.mark.parametrize("name", builtin_spec_names())
def test_generated_modules_import_only_torch_and_math(name):
    tree = ast.parse(render_module(compile_spec(name)))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("exec", "eval", "compile", "__import__", "open"), node.func.id
    assert imported <= {"torch", "math", "__future__"}


def test_codegen_refuses_unvalidated_names_and_numbers():
    with pytest.raises(ValueError):
        naming.value_var("__import__")
    with pytest.raises(ValueError):
        naming.param_var("a;b")
    with pytest.raises(ValueError):
        number(float("nan"))
    with pytest.raises(ValueError):
        number(float("inf"))


def test_build_of_hostile_spec_never_executes_it(tmp_path, capfd):
    # free text (description, reference) that would break out of a docstring or a string, were it emitted
    breakout = f'x"""\n{INJECTED}\n"""\' + "{INJECTED}" + \''
    text = yaml.safe_dump({"name": "h", "description": breakout, "reference": breakout, "equations": BODY})
    path = spec(tmp_path, text)
    for backend in ("eager", "fused", "compiled", "triton"):
        assert "pwned" not in render_module(compile_spec(path), backend)
    cls = cellc.build(path)
    assert cls.__name__ == "H"
    cls(2, 3)(torch.randn(2, 1, 2))
    assert "pwned" not in capfd.readouterr().out


def test_generated_globals_lists_every_name_a_class_could_replace():
    """A spec's class is bound at the generated module's top level; GENERATED_GLOBALS, which spec names are
    checked against, must hold every top-level name of every backend that a class name could equal."""
    from cellc.spec.identifiers import GENERATED_GLOBALS

    class_shaped = re.compile(r"([A-Z][a-z0-9]*)+")
    found = set()
    for name in ("vanilla", "gru", "mgu", "fgr"):  # plain, lowerable, staged, full gate recurrence
        compiled = compile_spec(name)
        for backend in ("eager", "fused", "compiled", "triton", "lowered"):
            if backend == "lowered" and compiled.lowering is None:
                continue
            module = ast.parse(render_module(compiled, backend))
            for node in module.body:  # top-level statements, those under if / try included
                for sub in ast.walk(node):
                    if isinstance(sub, ast.alias):
                        found.add((sub.asname or sub.name).split(".")[0])
                    elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store) and sub in _top_level(node):
                        found.add(sub.id)
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name != naming.class_name(name):
                    found.add(node.name)
    reachable = {n for n in found if class_shaped.fullmatch(n)}
    assert {"PackedSequence", "NATIVE"} <= reachable  # the scan sees imports and constants
    assert reachable <= GENERATED_GLOBALS, reachable - GENERATED_GLOBALS


def _top_level(node):
    """Names a top-level statement binds in the module (not inside the functions and classes it defines)."""
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return []
    return [sub for sub in ast.walk(node) if isinstance(sub, ast.Name)]


def test_spec_file_that_is_not_a_regular_file(tmp_path):
    rejected(tmp_path, "is not a regular file")  # a directory
    if Path("/dev/zero").exists():  # endless: must not be read whole
        rejected(Path("/dev/zero"), "is not a regular file")
