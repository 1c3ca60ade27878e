"""The package's shape (issue 22): no import cycle anywhere in cellc/ (function-level imports count too: a
lazy import hides a cycle, it does not remove it), and one call site derives a cell's backward."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx  # a dependency of torch
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cellc"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> nx.DiGraph:
    """Module -> every cellc module it imports, at any depth of its code (``from a.b import c`` counts as an
    import of ``a.b``, and of ``a.b.c`` where that is a module)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            graph.add_edges_from((name, target) for target in targets if target in files and target != name)
    return graph


def test_the_walker_sees_function_level_imports_and_finds_a_planted_cycle(tmp_path):
    root = tmp_path / "cellc"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "a.py").write_text("from cellc.sub.b import f\n")
    (root / "sub" / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    graph = import_graph(root)
    assert graph.has_edge("cellc.sub.a", "cellc.sub.b") and graph.has_edge("cellc.sub.b", "cellc.sub.a")
    assert sorted(nx.find_cycle(graph)) == sorted([("cellc.sub.a", "cellc.sub.b"), ("cellc.sub.b", "cellc.sub.a")])


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert graph.number_of_nodes() > 50 and graph.has_edge("cellc.codegen.native", "cellc.codegen.layout")
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("called", ["derive(", "Layout("])
def test_one_call_site_derives_the_backward_and_builds_the_layout(called):
    """Backends read ``step_program`` / ``layout_of`` (computed once per compiled cell); only those two call
    the constructors."""
    sites = [f"{path.relative_to(PACKAGE.parent)}:{number}" for path in PACKAGE.rglob("*.py")
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if called in line and not line.lstrip().startswith(("def ", "class ", "#", '"""'))
             and f"_{called}" not in line and f".{called}" not in line.replace("ad.derive(", "derive(")]
    assert len(sites) == 1, sites


def test_the_step_program_and_layout_are_computed_once_per_cell():
    from cellc.codegen.layout import layout_of
    from cellc.codegen.render import render_module
    from cellc.ir import autodiff
    from cellc.ir.pipeline import compile_spec

    compiled = compile_spec("vanilla")
    calls = []
    original = autodiff.derive
    autodiff.derive = lambda cell: calls.append(cell) or original(cell)
    try:
        for backend in ("fused", "compiled", "triton"):
            render_module(compiled, backend)
    finally:
        autodiff.derive = original
    assert len(calls) == 1 and layout_of(compiled) is layout_of(compiled)
    assert layout_of(compiled).program is autodiff.step_program(compiled)


TEMPLATES = PACKAGE / "codegen" / "templates"


def test_templates_hold_text_and_python_decides():
    """The layout decisions live in cellc/codegen (blocks.py, layout.py, the backends' printers): no template
    tests or filters its way to a layout (select, length, index, `is none`, comparing an item of a tuple), and
    the `{% if %}` count stays under half of the 67 the templates once had."""
    import re

    texts = {path.name: path.read_text(encoding="utf-8") for path in TEMPLATES.glob("*.j2")}
    assert len(texts) >= 9
    deciding = re.compile(r"\{[{%][^}]*(select\(|\|\s*length|\.index\(|\[\d\]\s*==|\bis (none|defined)\b)[^}]*[}%]\}")
    found = [(name, match.group(0)) for name, text in texts.items() for match in deciding.finditer(text)]
    assert not found
    ifs = sum(len(re.findall(r"\{%-?\s*(if|elif)\s", text)) for text in texts.values())
    assert ifs <= 33, ifs


def test_a_shared_block_is_printed_by_one_function_for_every_backend_that_uses_it():
    """The weight-gradient tail of the fused / compiled backends and of the Triton module comes from
    blocks.weight_grads: the same GEMMs, printed with each backend's buffer names."""
    from cellc.codegen.render import render_module
    from cellc.ir.pipeline import compile_spec

    compiled = compile_spec("mut3")  # current-step products and a tiled recurrent matrix
    fused = render_module(compiled, "fused")
    triton = render_module(compiled, "triton")
    assert "torch.mm(dM[0].view(T * B, N).t(), saved[" in fused
    assert "torch.mm(DM[0].view(T * B, N).t(), SV[" in triton and ").to(weight_c.dtype)," in triton
