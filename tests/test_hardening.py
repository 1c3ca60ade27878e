"""The compiler-hardening defect classes (alias bombs, raw input in messages, hard_sigmoid's float64
gradient), each as it was reproduced: these tests fail on the main before the fix. (Generated names that
collide with spec names: tests/test_naming.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import cellc

BODY = "equations: |\n  y = tanh(W_a x + R_a y[-1] + b_a)\n"


def bomb(levels: int = 9, width: int = 10) -> str:
    """A 'billion laughs' document of anchors: ``width ** levels`` strings once every alias is unfolded."""
    return "".join(f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}" if k else "'lol'"] * width) + "]\n"
                   for k in range(levels))


def check_here(path, capsys) -> tuple[int, str]:
    from cellc.cli import main

    code = main(["check", str(path)])
    return code, capsys.readouterr().err


def check_in_subprocess(path, limit_bytes: int = 1 << 30) -> subprocess.CompletedProcess:
    """``cellc check`` in a process limited to 1 GiB of address space, 60 s at most (a guard against a hang,
    not a timing claim: a refusal takes a few seconds, mostly importing torch)."""
    code = ("import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({limit_bytes}, {limit_bytes}))\n"
            "from cellc.cli import main\n"
            "sys.exit(main(['check', sys.argv[1]]))\n")
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.parametrize("where", ["initial", "init", "description", "edits", "top-level key"])
def test_an_alias_bomb_is_refused_before_anything_unfolds_it(tmp_path, where):
    """Before: the bomb as an ``initial:`` or ``init:`` value ran for over a minute and past 2.5 GB, then died
    with a pydantic traceback whose message held repr() of the whole unfolded structure."""
    defs = bomb()
    if where == "initial":
        text = f"name: boom\n{defs}initial:\n  y: *l8\n{BODY}"
    elif where == "init":
        text = f"name: boom\n{defs}init:\n  b_a: *l8\n{BODY}"
    elif where == "description":
        text = f"name: boom\n{defs}description: *l8\n{BODY}"
    elif where == "edits":
        text = f"name: boom\n{defs}edits: *l8\n{BODY}"
    else:
        text = f"name: boom\n{BODY}{defs}"
    path = tmp_path / "boom.yaml"
    path.write_text(text)
    done = check_in_subprocess(path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 3 and len(done.stderr) < 2000
    first = text[:text.index("&l0")].count("\n") + 1
    assert f"boom.yaml:{first}:" in lines[0] and "anchor" in lines[0]  # the first anchor, where it stands


@pytest.mark.parametrize("key", ["extends", "name", "a key", "an equation"])
@pytest.mark.parametrize("raw", ["\x1b[2J\x1b[31mred", "bell\x07", "nul\x00byte", "del\x7f", "csi\x9b31m"])
def test_messages_never_carry_raw_control_characters(tmp_path, capsys, key, raw):
    """Before: ESC sequences, BEL and NUL in a key, in ``extends:`` or in a name reached the terminal as
    they were."""
    if key == "extends":
        text = f"name: bad\nextends: {raw!r}\n".replace("'", '"')
    elif key == "name":
        text = f'name: "{raw.encode("unicode_escape").decode()}"\n{BODY}'
    elif key == "a key":
        text = f'name: bad\n"{raw.encode("unicode_escape").decode()}": 1\n{BODY}'
    else:
        text = f"name: bad\nequations: |\n  y = tanh(W_a x + R_a y[-1] + {raw})\n"
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    code, shown = check_here(path, capsys)
    assert code == 2, shown[-2000:]
    assert not any(not c.isprintable() and c != "\n" for c in shown), repr(shown)
    assert len(shown) < 2000 and len(shown.strip().splitlines()) <= 3


@pytest.mark.parametrize("where", ["equation", "comment", "description"])
def test_a_long_line_is_shown_as_a_window_around_the_error(tmp_path, capsys, where):
    """Before: one 240 KB line gave 480 KB of stderr (the line and a caret line as long)."""
    pad = "a" * 240_000
    if where == "equation":
        text = f"name: bad\nequations: |\n  y = tanh(W_a x + R_a y[-1] + {pad} + ?)\n"
    elif where == "comment":
        text = f"name: bad\nequations: |\n  y = tanh(W_a x + R_a y[-1] + ?)  # {pad}\n"
    else:
        text = f"name: bad\ndescription: [{pad}\n{BODY}"
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, shown = check_here(path, capsys)
    assert code == 2
    assert len(shown) < 2000, len(shown)
    lines = shown.rstrip("\n").splitlines()
    if len(lines) == 3:  # message, source window, caret: the caret stands under the offending character
        source, caret = lines[1], lines[2]
        column = caret.index("^")
        assert source[column] in "?[" or where == "description", (source[column - 5:column + 5], caret)


def hard_sigmoid_cell(tmp_path):
    path = tmp_path / "hs.yaml"
    path.write_text(textwrap.dedent("""\
        name: hs
        equations: |
          g = hard_sigmoid(W_g x + R_g y[-1] + b_g)
          y = g * tanh(W_y x + R_y y[-1])
        """))
    return path


@pytest.mark.parametrize("backend", ["eager", "fused", "compiled"])
def test_hard_sigmoids_float64_gradient_is_exact(tmp_path, backend):
    """Before: the eager backend, the reference every other backend is checked against, used
    torch.nn.functional.hardsigmoid, whose backward multiplies by a float32 1/6 (5e-9 off in float64).
    One step from a zero state, d sum(g * tanh(W_y x)) / d b_g = tanh(W_y x) / 6 where 0 < g < 1."""
    torch.manual_seed(0)
    layer = cellc.build(hard_sigmoid_cell(tmp_path), backend=backend)(3, 4).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-0.3, 0.3)
    x = torch.rand(1, 5, 3, dtype=torch.float64) - 0.5
    out, _ = layer(x)
    out.sum().backward()
    module = sys.modules[type(layer).__module__]

    def grad(name):
        group, start, stop = module.PARAMETERS[name]
        rows = slice(module._span(start, layer._sizes), module._span(stop, layer._sizes))
        return getattr(layer, group + layer._suffix(0, 0)).grad[rows]

    with torch.no_grad():
        gate = x[0] @ layer.spec_parameter("W_g").T + layer.spec_parameter("b_g")
        assert bool(((gate > -3) & (gate < 3)).all()), "the draw stays in the linear part"
        expected = (torch.tanh(x[0] @ layer.spec_parameter("W_y").T) / 6).sum(0)
    torch.testing.assert_close(grad("b_g"), expected, rtol=0, atol=1e-15)
