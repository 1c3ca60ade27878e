"""The JSB Chorales files: ``jsb-chorales-quarter.json`` (or the original ``.pkl``, read with a restricted
unpickler) as validated piano-roll sequences. :mod:`cellc.tasks.jsb` trains on them; :mod:`cellc.data.jsb_music21`
rebuilds the same file from the chorales shipped with music21."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cellc.errors import DataError, short_path
from cellc.tasks.base import Sequence
from cellc.tasks.safe_pickle import safe_load_pickle

LOWEST_PITCH = 21  # A0
UNITS = 88  # piano keys, MIDI 21..108
SPLITS = ("train", "valid", "test")
JSON_FILE = "jsb-chorales-quarter.json"
PICKLE_FILE = "jsb-chorales-quarter.pkl"


def piano_roll(piece: list[Any], where: str) -> torch.Tensor:
    """A piece (list of time steps, each an iterable of MIDI pitches) as a (T, 88) 0/1 tensor."""
    if not isinstance(piece, (list, tuple)) or len(piece) < 2:
        raise DataError(f"{where}: a piece must be a list of at least two time steps")
    roll = torch.zeros(len(piece), UNITS)
    for t, step in enumerate(piece):
        if not isinstance(step, (list, tuple)):
            raise DataError(f"{where}, time step {t}: expected a list of MIDI pitches, got {type(step).__name__}")
        for pitch in step:
            if not isinstance(pitch, int) or isinstance(pitch, bool) or not LOWEST_PITCH <= pitch < LOWEST_PITCH + UNITS:
                raise DataError(f"{where}, time step {t}: {pitch!r} is not a MIDI pitch in 21..108")
            roll[t, pitch - LOWEST_PITCH] = 1.0
    return roll


def sequences_from_pieces(raw: Any, path: str) -> dict[str, list[Sequence]]:
    """Validate the ``{"train"|"valid"|"test": [piece, ...]}`` structure and build next-step pairs."""
    if not isinstance(raw, dict) or any(split not in raw for split in SPLITS):
        raise DataError(f"{path}: expected a mapping with keys 'train', 'valid' and 'test'")
    out: dict[str, list[Sequence]] = {}
    for split in SPLITS:
        pieces = raw[split]
        if not isinstance(pieces, list) or not pieces:
            raise DataError(f"{path}: split {split!r} must be a non-empty list of pieces")
        seqs = []
        for k, piece in enumerate(pieces):
            roll = piano_roll(piece, f"{path}: {split} piece {k}")
            seqs.append(Sequence(inputs=roll[:-1].contiguous(), targets=roll[1:].contiguous()))
        out[split] = seqs
    return out


def read_pieces(path: Path) -> Any:
    """The raw split mapping from a JSON or pickle file (DataError if unreadable)."""
    shown = short_path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{shown}: cannot read ({err.strerror})") from None
    if path.suffix == ".json":
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as err:  # malformed, not UTF-8, nested absurdly, a 5000-digit number
            raise DataError(f"{shown}: corrupt JSON ({type(err).__name__}: {str(err)[:200]})") from None
    return safe_load_pickle(shown, data)
