"""TIMIT's 61 phone labels and the standard folding to 39 classes (Lee & Hon 1989)."""

from __future__ import annotations

# The 61 labels of TIMIT's .PHN files, in a fixed order (class index = position).
PHONES_61: tuple[str, ...] = (
    "aa", "ae", "ah", "ao", "aw", "ax", "ax-h", "axr", "ay", "b", "bcl", "ch", "d", "dcl",
    "dh", "dx", "eh", "el", "em", "en", "eng", "epi", "er", "ey", "f", "g", "gcl", "h#",
    "hh", "hv", "ih", "ix", "iy", "jh", "k", "kcl", "l", "m", "n", "ng", "nx", "ow", "oy",
    "p", "pau", "pcl", "q", "r", "s", "sh", "t", "tcl", "th", "uh", "uw", "ux", "v", "w",
    "y", "z", "zh",
)
PHONE_INDEX: dict[str, int] = {p: i for i, p in enumerate(PHONES_61)}

# Lee & Hon's folding. Closures, pauses and epenthetic silence become silence; the glottal
# stop "q" is deleted (None): its frames are left out of the folded score.
_FOLD: dict[str, str | None] = {
    "ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l",
    "em": "m", "en": "n", "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw",
    "pcl": "sil", "tcl": "sil", "kcl": "sil", "bcl": "sil", "dcl": "sil", "gcl": "sil",
    "h#": "sil", "pau": "sil", "epi": "sil", "q": None,
}
PHONES_39: tuple[str, ...] = tuple(
    sorted({_FOLD.get(p, p) for p in PHONES_61} - {None})  # type: ignore[arg-type]
)
FOLD_61_TO_39: dict[str, str | None] = {p: _FOLD.get(p, p) for p in PHONES_61}


def fold_index_table() -> list[int]:
    """For each of the 61 class indices, its 39-class index, or -1 for deleted classes."""
    index39 = {p: i for i, p in enumerate(PHONES_39)}
    return [index39[f] if (f := FOLD_61_TO_39[p]) is not None else -1 for p in PHONES_61]


assert len(PHONES_61) == 61 and len(set(PHONES_61)) == 61
assert len(PHONES_39) == 39
