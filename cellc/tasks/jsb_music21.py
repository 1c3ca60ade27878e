"""Rebuild JSB Chorales from the Bach chorales that ship with music21 (used only when no data is found).

Not yet able to rebuild: ``available()`` reports False until the rebuild lands, so a missing data
directory ends in a clear DataError that says how to provide the data.
"""

from __future__ import annotations

SOURCE_LABEL = "rebuilt from music21"


def available() -> bool:
    return False


def load_or_rebuild():  # pragma: no cover - unreachable while available() is False
    raise NotImplementedError
