"""Hypothesis: random text and random mutations of the real specs, fed to the loader and the
compiler, end in success or in cellc's own SpecError; never anything else. Whatever is
accepted renders to valid Python."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellc.codegen.render import render_module
from cellc.errors import SpecError
from cellc.fuzz.frontend import TOKENS  # syntax, names, numbers, YAML structure, hostile characters
from cellc.ir.pipeline import compile_spec
from cellc.spec.ast import Origin
from cellc.spec.loader import builtin_specs_dir
from cellc.spec.parser import parse_edit, parse_equations

SPEC_TEXTS = sorted(p.read_text() for p in builtin_specs_dir().glob("*.yaml"))


settings.register_profile("cellc-fuzz", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"


def compile_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        compiled = compile_spec(path)
    except SpecError as err:
        assert err.message
        err.render()  # rendering the message must not fail either
        return
    source = render_module(compiled)
    compile(source, "<fuzz>", "exec")  # anything accepted becomes valid Python


@st.composite
def mutated_spec(draw):
    text = draw(st.sampled_from(SPEC_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dup_line", "drop_line"]))
        pos = draw(st.integers(0, len(text)))
        if kind == "insert":
            text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 8)):]
        elif kind == "replace":
            text = text[:pos] + draw(st.text(max_size=4)) + text[pos + draw(st.integers(0, 4)):]
        else:
            lines = text.split("\n")
            k = draw(st.integers(0, len(lines) - 1))
            lines = lines[:k] + ([lines[k]] if kind == "dup_line" else []) + lines[k:]
            if kind == "drop_line":
                del lines[k]
            text = "\n".join(lines)
    return text


@settings(settings.get_profile("cellc-fuzz"))
@given(text=mutated_spec())
def test_mutated_specs(spec_file, text):
    compile_text(spec_file, text)


@settings(settings.get_profile("cellc-fuzz"))
@given(text=st.one_of(st.text(max_size=200), st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)))
def test_random_text_as_spec_file(spec_file, text):
    compile_text(spec_file, text)


@settings(settings.get_profile("cellc-fuzz"))
@given(body=st.lists(st.sampled_from(TOKENS), max_size=30).map("".join))
def test_random_equations_under_a_valid_header(spec_file, body):
    """Past the YAML layer: random equation text reaches the Lark front end and the passes."""
    indented = "\n".join("  " + line for line in body.split("\n"))
    compile_text(spec_file, f"name: fuzz\nequations: |\n  y = tanh(W_a x + R_a y[-1])\n{indented}\n")


@settings(settings.get_profile("cellc-fuzz"))
@given(text=st.one_of(st.text(max_size=80), st.lists(st.sampled_from(TOKENS), max_size=20).map("".join)))
def test_parser_entry_points(text):
    for parse in (parse_equations, parse_edit):
        try:
            parse(text, Origin("<fuzz>", text.splitlines(), 1, 0))
        except SpecError as err:
            assert err.message
            err.render()
