"""`cellc copy`: move a bench between storages (SQLite <-> PostgreSQL), or merge it into another's copy."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    copy = subparsers.add_parser(
        "copy", help="copy a bench's studies to another storage, or merge them into the same bench there")
    copy.add_argument("--from", dest="source", required=True, metavar="URL|FILE",
                      help="storage to read (SQLAlchemy URL, e.g. sqlite:///runs/studies.db), or a trials file "
                           "(reports/<bench>/trials.jsonl.xz, from `cellc export`) to resume its bench from")
    copy.add_argument("--to", dest="dest", required=True, metavar="URL",
                      help="storage to write (e.g. postgresql://user@host/db); created where it is an SQLite file")
    copy.add_argument("--name", help="the bench to copy (default: every bench in --from)")
    copy.set_defaults(func=run_copy)


def run_copy(args: argparse.Namespace) -> int:
    from cellc.harness.record import checked_bench_name
    from cellc.harness.transfer import copy_benches, describe, import_trials_file, is_trials_file

    if args.name is not None:
        checked_bench_name(args.name)
    if is_trials_file(args.source):
        summary = import_trials_file(Path(args.source), args.dest, args.name)
    else:
        summary = copy_benches(args.source, args.dest, args.name)
    for line in describe(args.source, args.dest, summary):
        print(line)
    return 0
