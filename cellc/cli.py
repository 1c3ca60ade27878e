"""The `cellc` command line: one entry point, subcommands contributed by each part of the tool.

Every part (compiler, harness, tasks, analysis, speed) owns a module with a
``register(subparsers)`` function; this file only wires them together and turns
user errors into one clear message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from cellc import __version__
from cellc.errors import CellcError

# Modules contributing subcommands, in help order. A module that does not exist yet is skipped.
COMMAND_MODULES = (
    "cellc.commands.compiler",
    "cellc.commands.harness",
    "cellc.commands.data",
    "cellc.commands.report",
    "cellc.commands.copy",
    "cellc.commands.speed",
    "cellc.commands.plan",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellc",
        description="Compile recurrent-cell specs to PyTorch modules and rerun the LSTM Odyssey study.",
    )
    parser.add_argument("--version", action="version", version=f"cellc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports torch: seconds, during which a Ctrl-C is likely
    except KeyboardInterrupt:
        print("interrupted before anything ran", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for reports that name their command
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CellcError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted; stored results are kept", file=sys.stderr)
        return 130
    except Exception as err:
        # A database that goes away under a command (benches retry; a report or a copy does not): one line.
        from cellc.harness.storage import is_connection_error, storage_problem

        if not is_connection_error(err):
            raise
        print(f"error: the study storage became unreachable ({storage_problem(err)}); stored results are kept: "
              "rerun the command once it is back", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
