"""Every class of bad spec: one clear message with file:line:column, the line and a caret,
exit code 2, no traceback (`cellc check <file>`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cellc.cli import main

GOOD_HEAD = "name: bad\n"

# (id, spec text, (line, column), message fragment). Line/column are 1-based in the file.
CASES = [
    (
        "undefined-name",
        GOOD_HEAD + "equations: |\n  z = tanh(W_z x + R_z y[-1] + q)\n  y = z\n",
        (3, 32),
        "undefined name 'q'",
    ),
    (
        "cycle",
        GOOD_HEAD + "equations: |\n  a = tanh(W_a x + R_a y[-1] + b)\n  b = a\n  y = b\n",
        (4, 7),
        "'a' is used before it is computed within a step (cycle a -> b -> a)",
    ),
    (
        "redefinition",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1])\n  y = tanh(W_b x)\n",
        (4, 3),
        "'y' is defined twice",
    ),
    (
        "unknown-activation",
        GOOD_HEAD + "equations: |\n  z = swish(W_b x)\n  y = tanh(W_a x + R_a y[-1]) * z\n",
        (3, 7),
        "unknown activation 'swish'",
    ),
    (
        "state-never-produced",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a q[-1])\n",
        (3, 24),
        "state 'q' is read as q[-1] but no equation produces it",
    ),
    (
        "unused-parameter",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1])\ninit:\n  b_f: 1\n",
        (5, 3),
        "init: parameter 'b_f' is not used by the cell (unused parameter)",
    ),
    (
        "bad-yaml",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1])\n bad: [1\n",
        (4, 2),
        "bad YAML",
    ),
    (
        "bad-yaml-tab",
        GOOD_HEAD + "equations: |\n\ty = tanh(W_a x + R_a y[-1])\n",
        (3, 1),
        "bad YAML: a tab character: YAML indents with spaces only",
    ),
    (
        "duplicate-key",
        GOOD_HEAD + "name: other\nequations: 'y = tanh(W_a x + R_a y[-1])'\n",
        (2, 1),
        "key 'name' appears twice",
    ),
    (
        "unknown-key",
        GOOD_HEAD + "colour: red\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n",
        (2, 1),
        "unknown key 'colour'",
    ),
    (
        "wrong-type",
        GOOD_HEAD + "extends: vanilla\nedits: drop gate i\n",
        (3, 8),
        "edits: Input should be a valid list",
    ),
    (
        "bad-identifier",
        GOOD_HEAD + "equations: |\n  y = tanh(W__a x + R_a y[-1])\n",
        (3, 12),
        "name 'W__a' has a leading, trailing or double underscore",
    ),
    (
        "bad-spec-name",
        "name: Bad-Name\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n",
        (1, 7),
        "spec names are lower case letters",
    ),
    (
        "syntax-error",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1])\n  z = * 2\n",
        (4, 7),
        "syntax error in equations: unexpected '*'",
    ),
    (
        "unclosed-paren",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1]\n",
        (3, 29),
        "syntax error in equations: unexpected end of line",
    ),
    (
        "older-step",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-2])\n",
        (3, 24),
        "only the previous step can be read",
    ),
    (
        "parameter-twice",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1] + R_a y[-1])\n",
        (3, 32),
        "parameter 'R_a' is used twice",
    ),
    (
        "no-state",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + b_a)\n",
        (2, 12),
        "the cell has no recurrent state",
    ),
    (
        "output-missing",
        GOOD_HEAD + "output: h\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n",
        (2, 9),
        "the output 'h' is not computed by any equation",
    ),
    (
        "initial-not-a-state",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1])\ninitial:\n  c: 1\n",
        (5, 3),
        "initial: 'c' is not a state of the cell",
    ),
    (
        "extends-missing",
        GOOD_HEAD + "extends: nosuch\n",
        (2, 10),
        "extends: no spec named 'nosuch'",
    ),
    (
        "extends-and-equations",
        GOOD_HEAD + "extends: vanilla\nequations: 'y = tanh(W_a x + R_a y[-1])'\n",
        (2, 10),
        "give either 'equations' or 'extends'",
    ),
    (
        "not-finite",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1]) * 1e999\n",
        (3, 33),
        "number 1e999 is not finite",
    ),
    (
        "folds-to-infinity",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1]) * 1e30 * 1e30\n",
        (3, 7),
        "combine to a number that is not finite in float32",
    ),
    (
        "nested-too-deep",
        GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1] + " + "(" * 300 + "b_a" + ")" * 300 + ")\n",
        None,
        "nested more than 100 operations deep",
    ),
    # names a spec may not take: the class it names would be a keyword, or replace the module's own names
    ("name-keyword", "name: class\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n", (1, 7), "'class' is a Python keyword"),
    ("name-trailing-underscore", "name: cell_\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n", (1, 7),
     "trailing or double underscore"),
    ("name-shadows-import", "name: path\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n", (1, 7),
     "would name its class 'Path', which the generated module uses itself"),
    ("name-shadows-constant", "name: n_a_t_i_v_e\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n", (1, 7),
     "would name its class 'NATIVE'"),
    ("name-shadows-builtin", "name: value_error\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n", (1, 7),
     "would name its class 'ValueError'"),
    ("name-shadows-module", "name: os\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n", (1, 7),
     "would name generated/os.py, which shadows the module 'os'"),
    # YAML that would say something unseen: merge keys, keys given twice at any depth, keys that are not names
    ("yaml-merge-key", GOOD_HEAD + "<<: {equations: 'y = tanh(W_a x + R_a y[-1])'}\n", (2, 1), "merge keys ('<<')"),
    ("yaml-nested-duplicate", GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1] + b_a)\ninit: {b_a: 1, b_a: 2}\n",
     (4, 16), "key 'b_a' appears twice"),
    ("yaml-null-key", GOOD_HEAD + "~: 1\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n", (2, 1), "keys are names"),
    ("yaml-boolean-key", GOOD_HEAD + "equations: |\n  on = tanh(W_a x + R_a on[-1])\n  y = on\ninitial:\n  on: 1\n",
     (6, 3), "key 'on' reads as a true/false value; quote it: 'on':"),
    ("misspelt-name-key", "nme: bad\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n", (1, 1), "unknown key 'nme'"),
    ("yaml-nul", GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1])\x00\n", (3, 30), "character U+0000"),
    # numbers: ASCII digits only, within float32
    ("unicode-digit", GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1]) * \uff10.5\n", (3, 33),
     "unexpected character"),
    ("beyond-float32", GOOD_HEAD + "equations: |\n  y = 1e39 * tanh(W_a x + R_a y[-1])\n", (3, 7),
     "number 1e39 is beyond the float32 range"),
    ("init-beyond-float32", GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1] + b_a)\ninit:\n  b_a: 1.0e+39\n",
     (5, 3), "init: value of 'b_a' is beyond the float32 range"),
    ("init-exponent-as-text", GOOD_HEAD + "equations: |\n  y = tanh(W_a x + R_a y[-1] + b_a)\ninit:\n  b_a: 1e5\n",
     (5, 3), "not the text '1e5' (YAML reads 1e5 as text: write 1.0e+5)"),
    # a cell whose output cannot depend on its input
    ("input-never-read", GOOD_HEAD + "equations: |\n  y = tanh(R_a y[-1] + b_a)\n", (2, 12), "never reads its input 'x'"),
    # a double-quoted block with escapes: positions in it cannot be mapped, so the message points at its start
    ("quoted-escapes", GOOD_HEAD + 'equations: "f = sigmoid(W_f x + R_f y[-1])\\ny = tanh(W_a x + R_a y[-1]) * q"\n',
     (2, 13), "undefined name 'q'"),
]

EDIT_CASES = [
    ("drop-gate", "vanilla", "drop gate q", "the cell has no value 'q' (values: z, i, f, c, o, y)"),
    ("drop-gate-output", "vanilla", "drop gate y", "'y' is the cell's output and cannot be dropped"),
    ("drop-gate-not-a-gate", "vanilla", "drop gate c", "'c' is not a gate (a gate is sigmoid(...) or hard_sigmoid(...))"),
    ("drop-activation-value", "vanilla", "drop activation in q", "the cell has no value 'q'"),
    ("drop-activation-absent", "vanilla", "drop activation sigmoid in z", "equation 'z' has no activation 'sigmoid'"),
    ("drop-activation-unknown", "vanilla", "drop activation swish in z", "unknown activation 'swish'"),
    ("drop-activation-twice", "niaf", "drop activation in z", "equation 'z' has no activation to drop"),
    ("couple", "vanilla", "couple q = 1 - z", "the cell has no value 'q'"),
    ("couple-constant", "vanilla", "couple f = 0.5", "a coupled gate must be computed from another value"),
    ("override", "vanilla", "override q = z", "the cell has no value 'q'"),
    ("remove-peepholes", "np", "remove peepholes", "the cell has no peepholes"),
    ("full-gate-recurrence", "fgr", "add full gate recurrence", "cannot add matrix 'R_ii': the name is taken"),
    ("unknown-edit", "vanilla", "frobnicate", "syntax error in edit: unexpected 'frobnicate'; edits are one of"),
]


def run_check(tmp_path, monkeypatch, capsys, text, name="bad.yaml"):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(text)
    code = main(["check", name])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def shown(text: str) -> str:
    """How a message shows a (short) source line: non-printable characters as Python escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def assert_located(err, text, file, line, column, fragment):
    lines = err.rstrip("\n").split("\n")
    assert lines[0].startswith(f"{file}:{line}:{column}: error: "), err
    assert fragment in lines[0], err
    source = text.split("\n")[line - 1].expandtabs(1)
    assert lines[1] == "    " + shown(source), err
    assert lines[2] == "    " + " " * len(shown(source[:column - 1])) + "^", err
    assert len(lines) == 3, err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_spec(tmp_path, monkeypatch, capsys, case):
    _, text, where, fragment = case
    code, out, err = run_check(tmp_path, monkeypatch, capsys, text)
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    if where is None:
        assert err.startswith("bad.yaml:") and fragment in err
    else:
        assert_located(err, text, "bad.yaml", *where, fragment)


@pytest.mark.parametrize("case", EDIT_CASES, ids=[c[0] for c in EDIT_CASES])
def test_bad_edit(tmp_path, monkeypatch, capsys, case):
    _, parent, edit, fragment = case
    # A valid edit first, so the failing one is the second list item (line 5).
    text = f"name: bad\nextends: {parent}\nedits:\n  - drop activation tanh in y\n  - {edit}\n"
    code, out, err = run_check(tmp_path, monkeypatch, capsys, text)
    assert code == 2, err
    assert "Traceback" not in err
    assert_located(err, text, "bad.yaml", 5, 5, fragment)
    if "syntax" not in fragment:
        assert f"edit '{edit}': " in err


def test_full_gate_recurrence_needs_gates(tmp_path, monkeypatch, capsys):
    (tmp_path / "plain.yaml").write_text("name: plain\nequations: |\n  y = tanh(W_a x + R_a y[-1] + b_a)\n")
    text = "name: bad\nextends: plain\nedits:\n  - add full gate recurrence\n"
    code, _, err = run_check(tmp_path, monkeypatch, capsys, text)
    assert code == 2
    assert_located(err, text, "bad.yaml", 4, 5, "the cell has no gates")


def test_error_in_parent_points_into_the_parent(tmp_path, monkeypatch, capsys):
    (tmp_path / "parent.yaml").write_text("name: parent\nequations: |\n  y = tanh(W_a x + R_a y[-1] + q)\n")
    code, _, err = run_check(tmp_path, monkeypatch, capsys, "name: child\nextends: parent\n")
    assert code == 2
    assert err.startswith("parent.yaml:3:32: error: undefined name 'q'")


def test_extends_cycle(tmp_path, monkeypatch, capsys):
    (tmp_path / "one.yaml").write_text("name: one\nextends: two\n")
    (tmp_path / "two.yaml").write_text("name: two\nextends: one\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "one.yaml"]) == 2
    err = capsys.readouterr().err
    assert "a cycle of 'extends'" in err and ":2:10:" in err


def test_missing_file_and_unknown_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["check", "nothere.yaml"]) == 2
    assert "spec file not found: nothere.yaml" in capsys.readouterr().err
    assert main(["show", "nosuchspec"]) == 2
    err = capsys.readouterr().err
    assert "no spec named 'nosuchspec'" in err and "vanilla" in err


def test_compile_reports_spec_errors_too(tmp_path, monkeypatch, capsys):
    code, _, _ = run_check(tmp_path, monkeypatch, capsys, CASES[0][1])
    assert main(["compile", "bad.yaml", "--out", str(tmp_path / "out")]) == 2
    assert "undefined name 'q'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a fresh interpreter importing every CLI part: several seconds
def test_subprocess_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(CASES[1][1]))
    proc = subprocess.run([sys.executable, "-m", "cellc.cli", "check", str(bad)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("bad.yaml:4:7: error: 'a' is used before it is computed")
    assert proc.stdout == ""


def test_equations_written_in_reverse_order_beyond_the_recursion_limit(tmp_path):
    """Evaluation order is found without recursion: a chain longer than Python's recursion limit, written
    output first, compiles and runs."""
    import torch

    import cellc

    n = sys.getrecursionlimit() + 200
    lines = ["name: chain", "equations: |", f"  y = a{n - 1}"]
    lines += [f"  a{k} = sigmoid(a{k - 1})" for k in range(n - 1, 0, -1)]
    lines.append("  a0 = tanh(W_a x + R_a y[-1])")
    path = tmp_path / "chain.yaml"
    path.write_text("\n".join(lines) + "\n")
    compiled = cellc.compile_spec(path)
    assert [eq.name for eq in compiled.cell.equations][:2] == ["a0", "a1"]
    assert compiled.cell.equations[-1].name == "y"
    out, _ = cellc.build(path, backend="eager")(2, 3)(torch.zeros(1, 1, 2))
    expected = torch.zeros(1)  # a0 = tanh(0) = 0, then sigmoid applied n - 1 times
    for _ in range(n - 1):
        expected = torch.sigmoid(expected)
    torch.testing.assert_close(out.flatten(), expected.expand(3))


def test_edits_that_leave_the_input_unread_point_at_the_edits(tmp_path, monkeypatch, capsys):
    text = ("name: bad\nextends: vanilla\nedits:\n  - drop gate i\n  - drop gate f\n  - drop gate o\n"
            "  - override z = tanh(R_z y[-1])\n")
    code, _, err = run_check(tmp_path, monkeypatch, capsys, text)
    assert code == 2
    assert_located(err, text, "bad.yaml", 3, 1, "the cell never reads its input 'x'")


@pytest.mark.parametrize("name", ["diag", "match", "step", "max", "output", "self"])
def test_spec_names_that_break_nothing_are_accepted(tmp_path, monkeypatch, capsys, name):
    """A spec name is a file name, a string and a class name: words the equations may not use are fine here."""
    code, out, err = run_check(tmp_path, monkeypatch, capsys, f"name: {name}\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n")
    assert code == 0, err
    assert main(["compile", "bad.yaml", "--out", "out"]) == 0
    namespace: dict = {}
    exec(compile((tmp_path / "out" / f"{name}.py").read_text(), name, "exec"), namespace)  # it runs
    import torch

    import cellc

    out_, _ = cellc.build(tmp_path / "bad.yaml", backend="compiled")(2, 3)(torch.zeros(2, 1, 2))
    assert out_.shape == (2, 1, 3)


@pytest.mark.parametrize("text", [
    "name: bad\ndescription: &a [*a]\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n",  # an alias of itself
    "name: bad\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n"  # nine levels of ten aliases: 10**9 nodes unfolded
    + "".join(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}" if k else "'lol'"] * 10) + "]\n" for k in range(9)),
])
def test_aliases_are_walked_once(tmp_path, monkeypatch, capsys, text):
    code, _, err = run_check(tmp_path, monkeypatch, capsys, text)  # quickly, with one message
    assert code == 2 and "Traceback" not in err


# YAML's indentation mistakes, in plain words and at the line that holds the mistake (issue: a mis-indented
# list item was blamed on the line before as "unexpected '-'", a mis-indented key showed PyYAML's
# "expected <block end>, but found '<block mapping start>'").
YAML_MISTAKES = [
    ("item-under-item", "name: bad\nextends: vanilla\nedits:\n  - drop gate i\n    - remove peepholes\n", (5, 5),
     "YAML joined this line to the one above it"),
    ("item-under-item-far", "name: bad\nextends: vanilla\nedits:\n  - drop gate i\n      - remove peepholes\n",
     (5, 7), "YAML joined this line to the one above it"),
    ("item-outdented", "name: bad\nedits:\n  - drop gate i\n - remove peepholes\nextends: vanilla\n", (4, 2),
     "indented differently from the block above it"),
    ("key-under-value", "name: bad\n  description: hi\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n", (2, 14),
     "a ':' where no key can start"),
    ("key-indented-deeper", "name: bad\nextends: vanilla\ninitial:\n  c: 1\n   y: 2\n", (5, 5),
     "a ':' where no key can start"),
    ("line-without-colon", "name: bad\nextends: vanilla\ninit:\n  b_f: 1\n  oops\n", (5, 3),
     "neither 'key: value' nor a '- ' item"),
    ("tab", "name: bad\nextends: vanilla\ninitial:\n\tc: 1\n", (4, 1), "a tab character: YAML indents with spaces"),
]


@pytest.mark.parametrize("case", YAML_MISTAKES, ids=[c[0] for c in YAML_MISTAKES])
def test_yaml_mistakes_in_plain_words_at_their_line(tmp_path, monkeypatch, capsys, case):
    _, text, (line, column), fragment = case
    code, _, err = run_check(tmp_path, monkeypatch, capsys, text)
    assert code == 2, err
    first = err.splitlines()[0]
    assert first.startswith(f"bad.yaml:{line}:{column}: error: ") and fragment in first, first
    assert "<block" not in err and "Traceback" not in err


def test_a_folded_edit_maps_positions_back_to_each_of_its_lines(tmp_path, monkeypatch, capsys):
    """A plain scalar YAML folded over lines: an error in its second line is shown on that line."""
    text = "name: bad\nextends: vanilla\nedits:\n  - drop gate\n    i + ?\n"
    code, _, err = run_check(tmp_path, monkeypatch, capsys, text)
    assert code == 2 and err.splitlines()[0].startswith("bad.yaml:5:"), err
    assert "joined this line" not in err  # the error is not at the start of the folded line


def test_a_misspelled_name_suggests_the_closest(capsys):
    """A cell or task name one typo away names the one meant; a name like none of them suggests nothing."""
    from cellc.cli import main

    assert main(["show", "vanila"]) != 0
    assert "no spec named 'vanila' (did you mean 'vanilla'?)" in capsys.readouterr().err
    assert main(["bench", "--tasks", "jbs", "--profile", "smoke", "--estimate"]) != 0
    assert "unknown task 'jbs' (did you mean 'jsb'?)" in capsys.readouterr().err
    assert main(["show", "qqqqqq"]) != 0
    assert "did you mean" not in capsys.readouterr().err
