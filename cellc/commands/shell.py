"""Commands as a report prints them, so that a reader can rerun them."""

from __future__ import annotations

import argparse
import shlex

_URL = "<URL>"


def storage_args(args: argparse.Namespace) -> list[str]:
    """Where the studies are: --out, or --storage as a placeholder (a URL may hold a password)."""
    if args.storage:
        return ["--storage", _URL]
    if args.out != "runs":
        return ["--out", args.out]
    return []


def join_command(parts: list[str]) -> str:
    return shlex.join(parts).replace(f"'{_URL}'", _URL)
