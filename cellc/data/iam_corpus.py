"""IAM-OnDB: pen trajectories of handwritten text lines, their transcriptions and the t1 splits.

On disk: ``lineStrokes/**/<form>-NN.xml`` (WhiteboardCaptureSession > StrokeSet > Stroke >
Point with x, y, time), ``ascii/**/<form>.txt`` (the text lines of a form follow the
``CSR:`` line and one blank line; line NN of the form is the NN-th of them), and the
IAM-OnDB-t1 split lists ``trainset.txt``, ``testset_v.txt``, ``testset_t.txt`` (together
the validation set, as in the LSTM study) and ``testset_f.txt`` (test), one form id a
line. Malformed files are skipped, and every skip is reported by path and counted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellc.errors import DataError

SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("trainset.txt",),
    "valid": ("testset_v.txt", "testset_t.txt"),
    "test": ("testset_f.txt",),
}
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Stroke:
    points: np.ndarray  # float64 (n, 3): x, y, time (s)


@dataclass(frozen=True)
class TextLine:
    line_id: str  # e.g. "a01-000u-01"
    form_id: str  # e.g. "a01-000u"
    strokes: tuple[Stroke, ...]
    text: str

    @property
    def n_points(self) -> int:
        return sum(len(s.points) for s in self.strokes)


@dataclass
class LoadReport:
    """What was skipped while loading, by path and reason; ``count`` is shown to the user."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing_forms: dict[str, int] = field(default_factory=dict)

    def skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append((str(path), reason))

    @property
    def count(self) -> int:
        return len(self.skipped)

    def summary(self, limit: int = 5) -> str:
        if not self.skipped:
            return "no malformed files"
        shown = "; ".join(f"{p}: {r}" for p, r in self.skipped[:limit])
        more = f" (and {self.count - limit} more)" if self.count > limit else ""
        return f"{self.count} file(s) skipped: {shown}{more}"


# Pen coordinates are screen units and times seconds (even an epoch time in milliseconds is ~1e12): beyond
# this a value is corrupt (and past float32's range, 3.4e38, its features would be inf).
MAX_COORDINATE = 1e15


def read_strokes(path: Path | str) -> tuple[Stroke, ...]:
    """Read one lineStrokes XML file. Raises DataError naming the file when malformed."""
    path = Path(path)
    try:
        tree = ET.parse(path)
    except ET.ParseError as err:
        raise DataError(f"{path}: malformed XML ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    stroke_set = tree.getroot().find(".//StrokeSet")
    if stroke_set is None:
        raise DataError(f"{path}: no StrokeSet element")
    strokes: list[Stroke] = []
    for stroke in stroke_set.findall("Stroke"):
        try:
            pts = [(float(p.attrib["x"]), float(p.attrib["y"]), float(p.attrib["time"])) for p in stroke.findall("Point")]
        except (KeyError, ValueError) as err:
            raise DataError(f"{path}: a Point lacks a numeric x, y or time ({err})") from None
        if pts:
            points = np.array(pts, dtype=np.float64)
            if not np.all(np.abs(points) <= MAX_COORDINATE):  # nan, inf, or beyond what float32 features hold
                raise DataError(f"{path}: a Point has a non-finite or huge x, y or time "
                                f"({points[~(np.abs(points) <= MAX_COORDINATE)][0]})")
            strokes.append(Stroke(points))
    if not strokes:
        raise DataError(f"{path}: no points in the StrokeSet")
    return tuple(strokes)


def read_transcription(path: Path | str) -> list[str]:
    """The text lines after ``CSR:`` (skipping the blank line(s) that follow it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "CSR:"]
    if not starts:
        raise DataError(f"{path}: no 'CSR:' section")
    body = lines[starts[0] + 1 :]
    while body and not body[0].strip():
        body = body[1:]
    while body and not body[-1].strip():
        body = body[:-1]
    if not body:
        raise DataError(f"{path}: the 'CSR:' section is empty")
    return [line.strip() for line in body]


def read_split_list(path: Path | str) -> list[str]:
    """Form ids, one a line; surrounding whitespace and blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split list not found")
    return [line.strip() for line in path.read_text(encoding="latin-1").splitlines() if line.strip()]


def split_lists_in(root: Path) -> Path | None:
    """The folder holding trainset.txt & co: ``root`` or a folder just below it (None if neither)."""
    for candidate in [root, *sorted(d for d in root.iterdir() if d.is_dir())]:
        if (candidate / "trainset.txt").is_file():
            return candidate
    return None


def find_split_dir(root: Path, splits_dir: Path | None = None) -> Path:
    """Where trainset.txt & co are: ``splits_dir`` if given, else :func:`split_lists_in`, else ``root``."""
    if splits_dir is not None:
        return splits_dir
    return split_lists_in(root) or root


def _index(root: Path, folder: str, pattern: str) -> dict[str, Path]:
    base = root / folder
    if not base.is_dir():
        raise DataError(f"{base}: folder not found (expected the IAM-OnDB layout with lineStrokes/ and ascii/)")
    return {p.stem: p for p in sorted(base.rglob(pattern))}


def load_iam(
    root: Path | str, splits_dir: Path | str | None = None, report: LoadReport | None = None
) -> dict[str, list[TextLine]]:
    """Load the three splits of IAM-OnDB-t1 from ``root``; skipped files go to ``report``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: IAM-OnDB folder not found")
    report = report if report is not None else LoadReport()
    split_dir = find_split_dir(root, Path(splits_dir) if splits_dir else None)
    forms = {name: [f for file in files for f in read_split_list(split_dir / file)] for name, files in SPLIT_FILES.items()}
    stroke_files = _index(root, "lineStrokes", "*.xml")
    text_files = _index(root, "ascii", "*.txt")
    by_form: dict[str, list[str]] = {}
    for line_id in stroke_files:
        form, _, number = line_id.rpartition("-")
        if form and number.isdigit():
            by_form.setdefault(form, []).append(line_id)
    result: dict[str, list[TextLine]] = {}
    for name in SPLITS:
        lines: list[TextLine] = []
        for form in forms[name]:
            if form not in text_files or form not in by_form:
                report.missing_forms[name] = report.missing_forms.get(name, 0) + 1
                continue
            try:
                texts = read_transcription(text_files[form])
            except DataError as err:
                report.skip(text_files[form], str(err).split(": ", 1)[-1])
                continue
            for line_id in sorted(by_form[form]):
                number = int(line_id.rpartition("-")[2])
                if not 1 <= number <= len(texts):
                    report.skip(stroke_files[line_id], f"no line {number} in {text_files[form]}")
                    continue
                try:
                    strokes = read_strokes(stroke_files[line_id])
                except DataError as err:
                    report.skip(stroke_files[line_id], str(err).split(": ", 1)[-1])
                    continue
                lines.append(TextLine(line_id, form, strokes, texts[number - 1]))
        if not lines:
            raise DataError(
                f"{root}: no text lines for the {name} split (forms from {', '.join(SPLIT_FILES[name])} in {split_dir})"
            )
        result[name] = lines
    return result


def point_features(line: TextLine) -> np.ndarray:
    """Per point: Δx, Δy (from the previous point, across pen-up moves), time since the
    stroke began, and a pen-lifted flag (1 on a stroke's last point). float32 (n, 4)."""
    pieces = []
    for stroke in line.strokes:
        pts = stroke.points
        lifted = np.zeros(len(pts))
        lifted[-1] = 1.0
        pieces.append(np.column_stack([pts[:, 0], pts[:, 1], pts[:, 2] - pts[0, 2], lifted]))
    raw = np.concatenate(pieces, axis=0)
    delta = np.diff(raw[:, :2], axis=0, prepend=raw[:1, :2])
    return np.column_stack([delta, raw[:, 2:]]).astype(np.float32)


@dataclass(frozen=True)
class PointNormaliser:
    """Zero mean, unit variance for Δx, Δy and stroke time from training statistics; the flag stays 0/1."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, sequences: list[np.ndarray]) -> "PointNormaliser":
        total = np.concatenate(sequences, axis=0).astype(np.float64)
        mean, std = total.mean(axis=0), total.std(axis=0)
        mean[3], std[3] = 0.0, 1.0
        return cls(mean=mean, std=np.where(std > 1e-8, std, 1.0))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)


def charset(lines: list[TextLine]) -> list[str]:
    """The sorted characters of the training transcriptions (CTC adds a blank at index 0)."""
    return sorted({ch for line in lines for ch in line.text})
