"""Per-split counts of a corpus on disk, for ``cellc data info``: cheap (headers and label
files only, no feature extraction), so users can check their copy before a long study."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from cellc.data.features import FeatureConfig, frame_count
from cellc.data.iam_corpus import LoadReport, charset, load_iam
from cellc.data.sphere import SHORTEN_MAGIC, header_int, parse_sphere_header, read_audio
from cellc.data.timit_corpus import EXPECTED_COUNTS, SPLITS, load_splits, read_phn
from cellc.errors import DataError


class SplitCounts(BaseModel):
    split: str
    sequences: int
    steps: int  # frames or pen points
    classes: int  # distinct labels present in the split
    groups: int  # speakers or forms
    expected: int | None = None  # sequence count of the real corpus, when known


def timit_samples(path: Path) -> tuple[int, int]:
    """(sample count, rate) from the SPHERE header alone where it is plain PCM and the file is as long as it
    says; anything else (RIFF, shorten, a short or odd file) is read whole, which names what is wrong."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
        file_size = path.stat().st_size
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if head.startswith(b"NIST_1A"):
        fields, size = parse_sphere_header(head, path)
        if "sample_count" in fields and "sample_rate" in fields and str(fields.get("sample_coding", "pcm")) == "pcm":
            count = header_int(fields, "sample_count", 0, 0, path)
            rate = header_int(fields, "sample_rate", 0, 1, path)
            width = header_int(fields, "sample_n_bytes", 2, 1, path) * header_int(fields, "channel_count", 1, 1, path)
            if size + count * width <= file_size and head[size:size + 4] != SHORTEN_MAGIC:
                return count, rate
    audio = read_audio(path)
    return len(audio.samples), audio.sample_rate


def timit_counts(root: Path, real: bool) -> list[SplitCounts]:
    cfg = FeatureConfig()
    rows = []
    for name, utterances in load_splits(root).items():
        frames, phones = 0, set()
        for utt in utterances:
            samples, _rate = timit_samples(utt.wav)
            frames += frame_count(samples, cfg)
            phones.update(seg.phone for seg in read_phn(utt.phn, samples))
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
