"""`cellc compile | check | show | list`, standalone generated modules, and the README/CI contract."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cellc
from cellc.cli import main
from cellc.spec.loader import builtin_spec_names

REPO = Path(__file__).resolve().parent.parent
SPEC_NAMES = builtin_spec_names()


def test_compile_one_spec_writes_a_standalone_module(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    assert main(["compile", "specs/nog.yaml", "--out", str(out)]) == 0
    assert "3N(M+N) + 5N" in capsys.readouterr().out
    path = out / "nog.py"
    assert path.is_file()
    assert path.read_text() == (REPO / "generated" / "nog.py").read_text()

    tree = ast.parse(path.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"torch", "math", "__future__"}

    # Import it by file path in a fresh interpreter where cellc cannot be imported at all.
    script = textwrap.dedent(f"""
        import importlib.abc, importlib.util, sys
        class NoCellc(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "cellc" or name.startswith("cellc."):
                    raise ImportError("cellc must not be needed")
        sys.meta_path.insert(0, NoCellc())
        repo = {str(REPO)!r}
        sys.path = [p for p in sys.path if p and (not p.startswith(repo) or "site-packages" in p)]
        spec = importlib.util.spec_from_file_location("nog", {str(path)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        import torch
        layer = module.Nog(3, 4, num_layers=2, bidirectional=True)
        out, (y, c) = layer(torch.randn(5, 2, 3))
        out.sum().backward()
        assert out.shape == (5, 2, 8) and y.shape == (4, 2, 4)
        assert "cellc" not in sys.modules
        print("standalone ok", module.SPEC_HASH)
    """)
    proc = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "standalone ok " + cellc.compile_spec("nog").hash in proc.stdout


def test_compile_all_check_passes_on_the_repo(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["compile", "--all", "--check"]) == 0
    assert f"{len(SPEC_NAMES)} generated modules match their specs" in capsys.readouterr().out


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    shutil.copytree(REPO / "specs", tmp_path / "specs")
    shutil.copytree(REPO / "generated", tmp_path / "generated")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("damage", ["edit", "delete", "extra"])
def test_compile_all_check_fails_on_a_stale_copy(repo_copy, capsys, damage):
    assert main(["compile", "--all", "--check"]) == 0
    capsys.readouterr()
    target = repo_copy / "generated" / "nog.py"
    if damage == "edit":
        target.write_text(target.read_text().replace("torch.tanh", "torch.sigmoid", 1))
    elif damage == "delete":
        target.unlink()
    else:
        (repo_copy / "generated" / "old_cell.py").write_text("# left over\n")
    assert main(["compile", "--all", "--check"]) == 1
    out = capsys.readouterr().out
    assert "stale generated files" in out
    assert ("old_cell.py (no spec, and not written by cellc" if damage == "extra" else "nog.py") in out
    if damage != "extra":  # compiling repairs it, bit for bit
        assert main(["compile", "--all"]) == 0
        assert target.read_bytes() == (REPO / "generated" / "nog.py").read_bytes()
        assert main(["compile", "--all", "--check"]) == 0


def test_compile_all_removes_its_own_modules_whose_spec_is_gone_and_nothing_else(repo_copy, tmp_path, capsys):
    """A user's spec compiled into generated/ made `--all --check` fail, and `compile --all` (what the message
    said to run) left it there: now it removes modules cellc wrote, and only those."""
    mine = tmp_path / "elsewhere" / "janet.yaml"
    mine.parent.mkdir()
    mine.write_text("name: janet\nequations: |\n  y = tanh(W_y x + R_y y[-1] + b_y)\n")
    assert main(["compile", str(mine)]) == 0
    (repo_copy / "generated" / "notes.py").write_text("# my own helper\n")
    capsys.readouterr()
    assert main(["compile", "--all", "--check"]) == 1
    out = capsys.readouterr().out
    assert "janet.py (no spec: `cellc compile --all` removes it)" in out and "notes.py (no spec, and not written" in out
    assert main(["compile", "--all"]) == 0
    captured = capsys.readouterr()
    assert "removed generated/janet.py" in captured.out and ", 1 removed" in captured.out
    assert "notes.py has no spec and was not written by cellc; left as it is" in captured.err
    assert not (repo_copy / "generated" / "janet.py").exists() and (repo_copy / "generated" / "notes.py").exists()


def test_compile_is_reproducible_and_idempotent(repo_copy, capsys):
    assert main(["compile", "--all", "--out", "again"]) == 0
    assert f"{len(SPEC_NAMES)} file(s) written" in capsys.readouterr().out
    for name in SPEC_NAMES:
        assert (repo_copy / "again" / f"{name}.py").read_bytes() == (REPO / "generated" / f"{name}.py").read_bytes()
    assert main(["compile", "--all", "--out", "again"]) == 0
    assert f"0 file(s) written, {len(SPEC_NAMES)} unchanged" in capsys.readouterr().out


def test_compile_argument_errors(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["compile"]) == 2
    assert "name at least one spec" in capsys.readouterr().err
    assert main(["compile", "nog", "--all"]) == 2
    assert main(["compile", "nog", "--backend", "nope", "--check"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err


def test_compile_output_errors_are_usage_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    assert main(["compile", "nog", "--out", "afile"]) == 2
    err = capsys.readouterr().err
    assert "--out afile: cannot write afile/nog.py" in err and "Traceback" not in err
    # two specs of one name would write one module: refused before anything is written
    (tmp_path / "copy.yaml").write_text((REPO / "specs" / "nog.yaml").read_text())
    assert main(["compile", "vanilla", "nog", "copy.yaml", "--out", "out"]) == 2
    assert "are both named 'nog'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # the same file named twice (overlapping globs) is compiled once
    assert main(["compile", "nog", str(REPO / "specs" / "nog.yaml"), "--out", "out"]) == 0
    assert "1 file(s) written" in capsys.readouterr().out


def test_show_vanilla(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["show", "vanilla"]) == 0
    out = capsys.readouterr().out
    for line in [
        "z = tanh(W_z x + R_z y[-1] + b_z)",
        "i = sigmoid(W_i x + R_i y[-1] + p_i * c[-1] + b_i)",
        "f = sigmoid(W_f x + R_f y[-1] + p_f * c[-1] + b_f)",
        "c = z * i + c[-1] * f",
        "o = sigmoid(W_o x + R_o y[-1] + p_o * c + b_o)",
        "y = tanh(c) * o",
    ]:
        assert f"  {line}\n" in out
    assert "4N(M+N) + 7N" in out
    assert "= 56,300 at M=39, N=100" in out  # 4*100*139 + 700
    assert "state: y, c   output: y" in out


def test_show_edited_spec_and_latex(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["show", "specs/cifg.yaml"]) == 0
    out = capsys.readouterr().out
    assert "extends vanilla <- cifg; edits: couple f = 1 - i" in out
    assert "  f = 1 - i\n" in out and "  c = z * i + c[-1] * f\n" in out
    assert "W_f" not in out
    assert main(["show", "nog", "--latex"]) == 0
    out = capsys.readouterr().out
    assert "\\begin{aligned}" in out and "\\end{aligned}" in out
    assert "y_{t} &= \\tanh\\left(c_{t}\\right)" in out
    assert main(["show", "nog", "-N", "0"]) == 2


def test_list(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert set(rows) == set(SPEC_NAMES)
    assert "vanilla" in rows["nig"] and "3N(M+N) + 5N" in rows["nig"]
    assert "4NM + 13N^2 + 7N" in rows["fgr"]


def test_list_names_where_a_broken_spec_breaks(tmp_path, monkeypatch, capsys):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "good.yaml").write_text("name: good\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n")
    (tmp_path / "specs" / "broken.yaml").write_text("name: broken\nequations: |\n  y = tanh(W_a x + R_a y[-1] + q)\n")
    monkeypatch.chdir(tmp_path)
    assert main(["list"]) == 2  # a listing with a broken spec is not a clean bill
    captured = capsys.readouterr()
    rows = {line.split()[0]: line for line in captured.out.splitlines()[2:] if line.strip()}
    assert "ERROR: does not compile (below)" in rows["broken"] and "N(M+N)" in rows["good"]
    # where it breaks goes below the table, so that a long message does not widen every row
    assert captured.err.startswith("error: specs/broken.yaml:3:32: undefined name 'q'") and captured.err.count("\n") == 1
    assert max(len(line) for line in captured.out.splitlines()) < 100


def test_show_states_the_init_values_and_the_initial_state(tmp_path, monkeypatch, capsys):
    (tmp_path / "fb.yaml").write_text("name: fb\nextends: vanilla\ninit:\n  b_f: 1.0\ninitial:\n  c: 0.5\n")
    monkeypatch.chdir(tmp_path)
    assert main(["show", "fb.yaml"]) == 0
    out = capsys.readouterr().out
    assert "extends vanilla <- fb\n" in out  # no empty "edits:" after it
    assert "initial state: y = 0, c = 0.5" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1] in "WRbp" and "N" in line}
    assert rows["b_f"][-1] == "1" and rows["b_i"][-1] == "random" and rows["W_z"][-1] == "random"
    assert main(["show", "vanilla"]) == 0
    assert "initial state" not in capsys.readouterr().out  # all zero: nothing to say


def test_check_ok(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["check", "specs/gru.yaml", "mgu"]) == 0
    out = capsys.readouterr().out
    assert "specs/gru.yaml: ok (gru: 4 equations, 10 parameters, states y)" in out
    assert "mgu.yaml: ok" in out


def test_python_api():
    spec = cellc.load_spec(REPO / "specs" / "nig.yaml")
    assert spec.name == "nig" and spec.lineage == ["nig", "vanilla"]
    cls = cellc.build(spec)
    assert cls is cellc.build("nig")  # cached per spec hash
    assert cls.__name__ == "Nig" and cls.spec_hash == cellc.compile_spec("nig").hash
    with pytest.raises(cellc.SpecError):
        cellc.load_spec("no_such_spec")


def test_generated_header_names_spec_hash_and_equations():
    text = (REPO / "generated" / "cifg.py").read_text()
    compiled = cellc.compile_spec("cifg")
    assert "from the spec 'cifg'" in text.splitlines()[0]
    assert f"Spec hash: {compiled.hash}" in text
    for line in compiled.equations_text:
        assert f"    {line}\n" in text


def _readme_test_command() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"Set up and run the tests:\s*```bash\n(.+?)\n```", readme, re.S)
    assert match, "README has a 'Set up and run the tests' bash block"
    return match.group(1).strip()


def test_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    command = _readme_test_command()
    assert ci[-1].strip() == command
    assert "torch==2.13.0" in command and "pytest" in command


# --- a regular (non-editable) install has no checkout beside it --------------------------------

def test_installed_package_uses_its_own_specs_copy(tmp_path, monkeypatch):
    from cellc.spec import loader

    package = tmp_path / "site-packages" / "cellc"
    (package / "specs").mkdir(parents=True)
    shutil.copy(REPO / "specs" / "nog.yaml", package / "specs" / "nog.yaml")
    monkeypatch.setattr(loader, "PACKAGE_DIR", package)
    monkeypatch.chdir(tmp_path)  # no specs/ in the working directory
    assert loader.builtin_specs_dir() == package / "specs"
    assert loader.find_spec("nog") == package / "specs" / "nog.yaml"


def test_no_specs_anywhere_names_where_they_were_looked_for(tmp_path, monkeypatch, capsys):
    from cellc.spec import loader

    monkeypatch.setattr(loader, "PACKAGE_DIR", tmp_path / "site-packages" / "cellc")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "nog"]) == 2
    err = capsys.readouterr().err
    assert "no specs in" in err and str(tmp_path / "specs") in err and str(tmp_path / "site-packages") in err
    assert main(["compile", "--all"]) == 2
    assert "looked in" in capsys.readouterr().err


@pytest.mark.slow
def test_wheel_carries_the_builtin_specs(tmp_path):
    """`pip install .` (not -e) must ship specs/*.yaml inside the package (setup.py's build hook)."""
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy: an in-tree build would leave build/ and *.egg-info here
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("cellc", "specs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             str(source), "-w", str(tmp_path / "wheel")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import zipfile

    (wheel,) = (tmp_path / "wheel").glob("cellc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.startswith("cellc/specs/")) == [f"cellc/specs/{s}.yaml" for s in SPEC_NAMES]
    assert "cellc/spec/cell.lark" in names and "cellc/codegen/templates/module.py.j2" in names


def test_an_equation_the_output_never_uses_is_reported_not_silently_dropped(tmp_path, capsys):
    spec = tmp_path / "unused.yaml"
    spec.write_text("name: unused\nequations: |\n  q = tanh(W_q x)\n  y = tanh(W_a x + R_a y[-1] + b_a)\n")
    assert main(["check", str(spec)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {spec}:3:3: 'q' is never used by the output 'y'" in err
    # What a dropped gate leaves unused is the edit's intent: no warning for nig.
    assert main(["check", "nig"]) == 0
    assert "warning" not in capsys.readouterr().err
