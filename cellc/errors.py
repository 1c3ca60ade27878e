"""Errors a user can cause. The CLI prints them as one message and exits non-zero."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path


# A message quotes user input (a spec's names and lines, arguments, file contents): whatever it holds, what
# reaches the terminal is printable and short. Every message passes through printable(); a quoted source line
# is cut to a window around the error's column.
MAX_MESSAGE = 1000  # characters of one message, before the source line
SOURCE_WINDOW = 80  # characters of the source line shown on each side of the error's column
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` with every non-printable character escaped (control and format characters, including
    terminal escape sequences, bidi overrides and newlines), cut to ``limit`` characters."""
    out = "".join(ch if ch.isprintable() else _escape(ch) for ch in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 1] + "…"


def source_window(line: str, column: int) -> tuple[str, int]:
    """(the printable part of ``line`` around 1-based ``column``, the column in it) for a caret display."""
    line = line.rstrip("\n").expandtabs(1)
    start = max(column - 1 - SOURCE_WINDOW, 0)
    end = column - 1 + SOURCE_WINDOW
    before = ("…" if start else "") + printable(line[start:column - 1], limit=4 * SOURCE_WINDOW)
    after = printable(line[column - 1:end], limit=4 * SOURCE_WINDOW) + ("…" if end < len(line) else "")
    return before + after, len(before) + 1


class CellcError(Exception):
    """Base class for every error caused by user input (specs, data, arguments).

    ``exit_code`` is what the CLI returns: 2 for bad input (specs, arguments), 1 otherwise.
    """

    exit_code = 1

    def render(self) -> str:
        return f"error: {printable(str(self))}"


@dataclass(frozen=True)
class Location:
    """A place in a user's file, 1-based line and column."""

    file: str
    line: int
    column: int
    source_line: str | None = None

    def render(self) -> str:
        return f"{printable(self.file, limit=200)}:{self.line}:{self.column}"


class SpecError(CellcError):
    """A bad cell spec: the message names file, line and column and shows the line with a caret."""

    exit_code = 2

    def __init__(self, message: str, location: Location | None = None):
        super().__init__(message)
        self.message = message
        self.location = location

    def render(self) -> str:
        if self.location is None:
            return f"error: {printable(self.message)}"
        loc = self.location
        text = f"{loc.render()}: error: {printable(self.message)}"
        if loc.source_line is not None:
            line, column = source_window(loc.source_line, loc.column)
            text += f"\n    {line}\n    {' ' * max(column - 1, 0)}^"
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


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'vanilla'?)' for the closest of ``choices`` to a misspelled ``word``, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
