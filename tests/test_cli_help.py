"""Every option of every subcommand explains itself: a help text, its default, its choices."""

from __future__ import annotations

import argparse

import pytest

from cellc.cli import build_parser
from cellc.codegen.render import BACKENDS
from cellc.tasks import task_classes


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (nested) subcommand parser by its full name, e.g. 'data prepare'."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:  # noqa: SLF001 (argparse keeps them here)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                out[name] = sub
                out.update({f"{name} {inner}": p for inner, p in subcommands(sub).items()})
    return out


PARSERS = subcommands(build_parser())


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_has_help_with_its_default_and_choices(command):
    problems = []
    for action in PARSERS[command]._actions:  # noqa: SLF001
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):  # noqa: SLF001
            continue
        name = "/".join(action.option_strings) or action.dest
        text = action.help or ""
        if not text or text == argparse.SUPPRESS:
            problems.append(f"{name}: no help")
            continue
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            problems.append(f"{name}: default {action.default!r} not in its help")
        if action.choices and not all(str(choice) in text for choice in action.choices):
            problems.append(f"{name}: choices {list(action.choices)} not all in its help")
    assert not problems, f"cellc {command}: " + "; ".join(problems)


def test_train_and_bench_name_their_task_and_backend_choices():
    for command in ("train", "bench"):
        text = PARSERS[command].format_help()
        for choice in (*task_classes(), "auto", *BACKENDS):
            assert choice in text, (command, choice)
