"""Builds tiny TIMIT trees in the LDC layout, byte for byte, for the loader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellc.data.sphere import write_sphere

# (part, dialect, speaker, sentences): FAKS0 is a development speaker, MDAB0 a core test
# speaker, MABC0 neither (its utterances belong to no split).
SPEAKERS = [
    ("TRAIN", "DR1", "FCJF0", ["SA1", "SA2", "SI1027", "SX127"]),
    ("TRAIN", "DR2", "MKLW0", ["SA1", "SX38", "SI1571"]),
    ("TEST", "DR1", "FAKS0", ["SA1", "SI943", "SX43"]),
    ("TEST", "DR1", "MDAB0", ["SA2", "SI1366", "SX16"]),
    ("TEST", "DR2", "MABC0", ["SX1"]),
]
PHN = "0 800 h#\n800 1760 iy\n1760 2400 sh\n2400 3200 h#\n"
N_SAMPLES = 3200


def build_tree(root: Path, lower: bool = False) -> Path:
    rng = np.random.default_rng(0)
    case = str.lower if lower else str.upper
    for part, dialect, speaker, sentences in SPEAKERS:
        folder = root / case(part) / case(dialect) / case(speaker)
        folder.mkdir(parents=True)
        for sentence in sentences:
            samples = (3000 * np.sin(np.arange(N_SAMPLES) * 0.3) + rng.normal(0, 50, N_SAMPLES)).astype(np.int16)
            write_sphere(folder / case(f"{sentence}.WAV"), samples, 16000)
            (folder / case(f"{sentence}.PHN")).write_text(PHN)
            (folder / case(f"{sentence}.TXT")).write_text(f"0 {N_SAMPLES} A test.\n")
            (folder / case(f"{sentence}.WRD")).write_text(f"800 2400 test\n")
    return root
