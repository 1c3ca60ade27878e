"""Rebuild a JSB-Chorales-like data set from the Bach chorales that ship with music21.

Used only when no JSB data directory is found and music21 is installed (it is not a dependency
of cellc). Every number computed on this data is labelled ``"rebuilt from music21"``: it is *not*
the Boulanger-Lewandowski split, so results are not comparable with published ones.

Recipe (close to the original preparation): every chorale score in music21's ``bach`` corpus
(MusicXML files), repeats expanded where music21 can, transposed so that the analysed key's tonic
is C (C major / C minor), sampled on a quarter-note grid (at each quarter beat: the MIDI pitches
sounding in any part), then split by a fixed shuffle in the 229 / 76 / 77 proportions. The result
is cached as JSON (the same layout as ``jsb-chorales-quarter.json``) under the user data dir, so
the rebuild (a few minutes: music21 parses ~400 files) happens once.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from cellc.data.jsb_corpus import read_pieces, sequences_from_pieces
from cellc.tasks.base import Sequence, user_data_root

SOURCE_LABEL = "rebuilt from music21"
CACHE_DIR = "jsb-chorales-music21"
CACHE_FILE = "jsb-chorales-music21.json"
SPLIT_PROPORTIONS = (229, 76, 77)
SPLIT_SEED = 1012  # fixed: the split must be the same on every machine


def available() -> bool:
    try:
        import music21  # noqa: F401
    except ImportError:
        return False
    return True


def cache_path() -> Path:
    return user_data_root() / CACHE_DIR / CACHE_FILE


def chorale_grid(score: Any) -> list[list[int]]:
    """Quarter-note grid of sounding MIDI pitches, transposed to C major / C minor, repeats expanded."""
    try:
        score = score.expandRepeats()
    except Exception:  # music21 cannot expand some repeat structures; keep the score as written
        pass
    tonic = score.analyze("key").tonic.pitchClass
    shift = -tonic if tonic <= 6 else 12 - tonic  # the nearest transposition to C
    length = int(math.ceil(float(score.highestTime)))
    grid: list[set[int]] = [set() for _ in range(length)]
    for element in score.flatten().notes:
        start = float(element.offset)
        end = start + float(element.quarterLength)
        pitches = [p.midi + shift for p in element.pitches]
        for t in range(int(math.ceil(start)), min(length, int(math.ceil(end)))):
            grid[t].update(p for p in pitches if 21 <= p <= 108)
    return [sorted(step) for step in grid]


def rebuild() -> dict[str, list[list[list[int]]]]:
    """Parse every Bach chorale score in music21's corpus and split it (slow: minutes)."""
    from music21 import corpus

    pieces = []
    paths = sorted(p for p in corpus.getComposer("bach") if p.suffix in (".mxl", ".xml"))
    for path in paths:
        try:
            score = corpus.parse(path)
        except Exception:  # a file music21 itself cannot read is skipped, not fatal
            continue
        grid = chorale_grid(score)
        if len(grid) >= 2 and any(grid):
            pieces.append(grid)
    random.Random(SPLIT_SEED).shuffle(pieces)
    total = sum(SPLIT_PROPORTIONS)
    n_train = round(len(pieces) * SPLIT_PROPORTIONS[0] / total)
    n_valid = round(len(pieces) * SPLIT_PROPORTIONS[1] / total)
    return {
        "train": pieces[:n_train],
        "valid": pieces[n_train : n_train + n_valid],
        "test": pieces[n_train + n_valid :],
    }


def load_or_rebuild() -> tuple[dict[str, list[Sequence]], str]:
    """The cached rebuilt data set (rebuilding it first if needed) and the cache file's path."""
    path = cache_path()
    if not path.is_file():
        data = rebuild()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(data))
        partial.replace(path)  # atomic: an interrupted rebuild never leaves a half-written cache
    return sequences_from_pieces(read_pieces(path), str(path)), str(path)
