"""Per-split counts of a corpus on disk, for ``cellc data info``: cheap (headers and label
files only, no feature extraction), so users can check their copy before a long study."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from cellc.data.features import FeatureConfig, frame_count
from cellc.data.iam_corpus import LoadReport, charset, load_iam
from cellc.data.sphere import parse_sphere_header, read_audio
from cellc.data.timit_corpus import EXPECTED_COUNTS, SPLITS, load_splits, read_phn


class SplitCounts(BaseModel):
    split: str
    sequences: int
    steps: int  # frames or pen points
    classes: int  # distinct labels present in the split
    groups: int  # speakers or forms
    expected: int | None = None  # sequence count of the real corpus, when known


def _timit_samples(path: Path) -> tuple[int, int]:
    """(sample count, rate) from the SPHERE header alone; RIFF files are read whole."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"NIST_1A"):
        fields, size = parse_sphere_header(head, path)
        if "sample_count" in fields and "sample_rate" in fields:
            return int(fields["sample_count"]), int(fields["sample_rate"])
    audio = read_audio(path)
    return len(audio.samples), audio.sample_rate


def timit_counts(root: Path, real: bool) -> list[SplitCounts]:
    cfg = FeatureConfig()
    rows = []
    for name, utterances in load_splits(root).items():
        frames, phones = 0, set()
        for utt in utterances:
            samples, _rate = _timit_samples(utt.wav)
            frames += frame_count(samples, cfg)
            phones.update(seg.phone for seg in read_phn(utt.phn))
        rows.append(
            SplitCounts(
                split=name, sequences=len(utterances), steps=frames, classes=len(phones),
                groups=len({u.speaker for u in utterances}), expected=EXPECTED_COUNTS[name] if real else None,
            )
        )
    return rows


def iam_counts(root: Path, splits_dir: Path | None, report: LoadReport) -> tuple[list[SplitCounts], int]:
    """Rows per split and the size of the training character set."""
    data = load_iam(root, splits_dir, report)
    rows = [
        SplitCounts(
            split=name, sequences=len(lines), steps=sum(line.n_points for line in lines),
            classes=len(charset(lines)), groups=len({line.form_id for line in lines}),
        )
        for name, lines in data.items()
    ]
    return rows, len(charset(data["train"]))


assert tuple(SPLITS) == ("train", "valid", "test")
