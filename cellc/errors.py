"""Errors a user can cause. The CLI prints them as one message and exits non-zero."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class CellcError(Exception):
    """Base class for every error caused by user input (specs, data, arguments).

    ``exit_code`` is what the CLI returns: 2 for bad input (specs, arguments), 1 otherwise.
    """

    exit_code = 1

    def render(self) -> str:
        return f"error: {self}"


@dataclass(frozen=True)
class Location:
    """A place in a user's file, 1-based line and column."""

    file: str
    line: int
    column: int
    source_line: str | None = None

    def render(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SpecError(CellcError):
    """A bad cell spec: the message names file, line and column and shows the line with a caret."""

    exit_code = 2

    def __init__(self, message: str, location: Location | None = None):
        super().__init__(message)
        self.message = message
        self.location = location

    def render(self) -> str:
        if self.location is None:
            return f"error: {self.message}"
        loc = self.location
        text = f"{loc.render()}: error: {self.message}"
        if loc.source_line is not None:
            line = loc.source_line.rstrip("\n").expandtabs(1)
            text += f"\n    {line}\n    {' ' * max(loc.column - 1, 0)}^"
        return text


class UsageError(CellcError):
    """A bad command-line argument or setting."""

    exit_code = 2


class DataError(CellcError):
    """Missing or corrupt data files."""

    exit_code = 2


def short_path(path: str | Path) -> str:
    """A path as the user is likely to recognise it: relative to the CWD when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
