"""The LDC TIMIT tree: find utterances, read .PHN files, and make the study's splits.

Layout: ``ROOT/{TRAIN,TEST}/DR1..DR8/<SPEAKER>/<SENTENCE>.{WAV,PHN,TXT}``, in upper or
lower case (both occur in the wild); ROOT may also be one or two folders above TRAIN/TEST
(e.g. the LDC disc's ``timit/TIMIT``). Splits as in Greff et al.: SA sentences dropped;
train = all of TRAIN (3696 utterances); validation = the 50-speaker development set
(400 utterances); test = the 24-speaker core test set (192 utterances), both from TEST.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cellc.data.timit_phones import PHONE_INDEX
from cellc.errors import DataError

# The core test set: 2 male and 1 female speaker per dialect region (TIMIT documentation).
CORE_TEST_SPEAKERS: tuple[str, ...] = (
    "MDAB0", "MWBT0", "FELC0", "MTAS1", "MWEW0", "FPAS0", "MJMP0", "MLNT0", "FPKT0",
    "MLLL0", "MTLS0", "FJLM0", "MBPM0", "MKLT0", "FNLP0", "MCMJ0", "MJDH0", "FMGD0",
    "MGRT0", "MNJM0", "FDHC0", "MJLN0", "MPAM0", "FMLD0",
)
# The standard 50-speaker development set drawn from TEST outside the core test set
# (Halberstadt 1998; the list used by Kaldi's TIMIT recipe and most framewise studies).
DEV_SPEAKERS: tuple[str, ...] = (
    "FAKS0", "FDAC1", "FJEM0", "MGWT0", "MJAR0", "MMDB1", "MMDM2", "MPDF0", "FCMH0", "FKMS0",
    "MBDG0", "MBWM0", "MCSH0", "FADG0", "FDMS0", "FEDW0", "MGJF0", "MGLB0", "MRTK0", "MTAA0",
    "MTDT0", "MTHC0", "MWJG0", "FNMR0", "FREW0", "FSEM0", "MBNS0", "MMJR0", "MDLS0", "MDLF0",
    "MDVC0", "MERS0", "FMAH0", "FDRW0", "MRCS0", "MRJM4", "FCAL1", "MMWH0", "FJSJ0", "MAJC0",
    "MJSW0", "MREB0", "FGJD0", "FJMG0", "MROA0", "MTEB0", "MJFC0", "MRJR0", "FMML0", "MRWS1",
)
EXPECTED_COUNTS = {"train": 3696, "valid": 400, "test": 192}
SPLITS = ("train", "valid", "test")

_DIALECT = re.compile(r"^dr[1-8]$", re.IGNORECASE)


@dataclass(frozen=True)
class Utterance:
    """One TIMIT sentence: where its files are and who said it."""

    part: str  # "TRAIN" or "TEST"
    dialect: str  # "DR1".."DR8"
    speaker: str  # upper case, e.g. "FCJF0"
    sentence: str  # upper case, e.g. "SI1027"
    wav: Path
    phn: Path

    @property
    def uid(self) -> str:
        return f"{self.part}/{self.dialect}/{self.speaker}/{self.sentence}"


@dataclass(frozen=True)
class PhoneSegment:
    begin: int  # first sample
    end: int  # one past the last sample
    phone: str


def _child(parent: Path, name: str) -> Path | None:
    """The child of ``parent`` called ``name`` in any letter case, or None."""
    exact = parent / name
    if exact.is_dir():
        return exact
    for entry in parent.iterdir() if parent.is_dir() else ():
        if entry.is_dir() and entry.name.lower() == name.lower():
            return entry
    return None


def find_timit_root(root: Path | str) -> Path:
    """The folder holding TRAIN and TEST: ``root`` itself or up to two levels below it."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: TIMIT folder not found")
    candidates = [root]
    for _ in range(2):
        if any(_child(c, "TRAIN") and _child(c, "TEST") for c in candidates):
            break
        candidates = [d for c in candidates for d in sorted(c.iterdir()) if d.is_dir()]
    for candidate in candidates:
        if _child(candidate, "TRAIN") and _child(candidate, "TEST"):
            return candidate
    raise DataError(f"{root}: no TRAIN and TEST folders (the LDC TIMIT layout) here or in the two levels below")


def _file_with_suffix(stem_files: dict[str, Path], suffix: str) -> Path | None:
    return stem_files.get(suffix.lower())


def walk_timit(root: Path | str) -> list[Utterance]:
    """Every utterance with both a .WAV and a .PHN file, sorted by part/dialect/speaker/sentence."""
    base = find_timit_root(root)
    found: list[Utterance] = []
    for part in ("TRAIN", "TEST"):
        part_dir = _child(base, part)
        assert part_dir is not None
        for dialect_dir in sorted(d for d in part_dir.iterdir() if d.is_dir() and _DIALECT.match(d.name)):
            for speaker_dir in sorted(d for d in dialect_dir.iterdir() if d.is_dir()):
                by_stem: dict[str, dict[str, Path]] = {}
                for f in speaker_dir.iterdir():
                    if f.is_file() and "." in f.name:
                        stem, _, suffix = f.name.partition(".")
                        by_stem.setdefault(stem.upper(), {})[suffix.lower()] = f
                for stem, files in sorted(by_stem.items()):
                    wav = _file_with_suffix(files, "wav")
                    phn = _file_with_suffix(files, "phn")
                    if wav is None or phn is None:
                        continue
                    found.append(
                        Utterance(part, dialect_dir.name.upper(), speaker_dir.name.upper(), stem, wav, phn)
                    )
    return found


def split_utterances(utterances: list[Utterance]) -> dict[str, list[Utterance]]:
    """The study's train / valid / test split (SA sentences dropped)."""
    dev, core = set(DEV_SPEAKERS), set(CORE_TEST_SPEAKERS)
    splits: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    for utt in utterances:
        if utt.sentence.startswith("SA"):
            continue
        if utt.part == "TRAIN":
            splits["train"].append(utt)
        elif utt.speaker in dev:
            splits["valid"].append(utt)
        elif utt.speaker in core:
            splits["test"].append(utt)
    return splits


def load_splits(root: Path | str) -> dict[str, list[Utterance]]:
    """Walk ``root`` and split it; a split left empty is an error naming the folder."""
    splits = split_utterances(walk_timit(root))
    for name, items in splits.items():
        if not items:
            who = {"train": "TRAIN", "valid": "TEST (development speakers)", "test": "TEST (core test speakers)"}[name]
            raise DataError(f"{root}: no utterances for the {name} split (looked in {who}; SA sentences are dropped)")
    return splits


# TIMIT's segments tile the utterance, each beginning where the previous ends; this much overlap (10 ms, one
# frame hop) is tolerated, more is an error, as is a segment ending this far past the audio.
PHN_SLACK = 160


def read_phn(path: Path | str, n_samples: int | None = None) -> list[PhoneSegment]:
    """Read a .PHN file of ``begin end phone`` lines (sample indices at 16 kHz), in order and not overlapping;
    with ``n_samples``, within the audio. Out of order, a frame would take the wrong phone without a word."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read phone file ({err})") from None
    segments: list[PhoneSegment] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise DataError(f"{path}:{lineno}: expected 'begin end phone', got {line.strip()!r}")
        try:
            begin, end = int(parts[0]), int(parts[1])
        except ValueError:
            raise DataError(f"{path}:{lineno}: sample indices must be integers: {line.strip()!r}") from None
        phone = parts[2].lower()
        if phone not in PHONE_INDEX:
            raise DataError(f"{path}:{lineno}: unknown phone {parts[2]!r} (not one of TIMIT's 61)")
        if end <= begin or begin < 0:
            raise DataError(f"{path}:{lineno}: empty or negative segment {begin}..{end}")
        if segments and (begin < segments[-1].end - PHN_SLACK or begin <= segments[-1].begin):
            raise DataError(f"{path}:{lineno}: segment {begin}..{end} begins before the previous one "
                            f"({segments[-1].begin}..{segments[-1].end}) ends")
        if n_samples is not None and end > n_samples + PHN_SLACK:
            raise DataError(f"{path}:{lineno}: segment {begin}..{end} ends after the audio ({n_samples} samples)")
        segments.append(PhoneSegment(begin, end, phone))
    if not segments:
        raise DataError(f"{path}: no phone segments")
    return segments


def write_phn(path: Path | str, segments: list[PhoneSegment]) -> None:
    Path(path).write_text("".join(f"{s.begin} {s.end} {s.phone}\n" for s in segments), encoding="ascii")


assert len(DEV_SPEAKERS) == 50 and len(set(DEV_SPEAKERS)) == 50
assert len(CORE_TEST_SPEAKERS) == 24 and not set(DEV_SPEAKERS) & set(CORE_TEST_SPEAKERS)
