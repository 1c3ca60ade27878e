"""A proxy for IAM-OnDB: text lines rendered as pen trajectories from single-stroke fonts.

Glyph outlines come from the Hershey single-stroke fonts (``hershey-fonts`` package): each
glyph stroke is a pen-down movement. Every writer has a style: font, slant, letter height,
extra spacing, baseline drift, hand jitter (smooth random wobble), and pen speed; points
are sampled along each stroke at the pen's sampling rate, so the time stamps follow the
pen speed and pen-up moves take time too. Output: IAM-OnDB's layout (``lineStrokes``
XML, ``ascii`` transcriptions after ``CSR:``, and the four t1 split lists), split by writer.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from tqdm import tqdm

from cellc.data import proxy_corpus, proxy_text
from cellc.errors import DataError

FONTS = ("futural", "scripts", "cursive", "rowmans")
SAMPLING_HZ = 60.0  # pen reports per second; IAM-OnDB's are denser, fewer points keep trials quick
MAX_LINE_CHARS = 26  # short lines keep quick-profile trials quick (real IAM-OnDB lines are longer)
GENERATOR = "Hershey single-stroke fonts via hershey-fonts"


class ProxyHandwritingConfig(BaseModel):
    """Size and seed of the handwriting proxy. The default suits the harness's quick profile."""

    seed: int = 0
    train_writers: int = Field(16, ge=1, le=500)
    valid_writers: int = Field(4, ge=1, le=500)
    test_writers: int = Field(4, ge=1, le=500)
    forms_per_writer: int = Field(2, ge=1, le=50)
    lines_per_form: int = Field(6, ge=1, le=30)


class Writer(BaseModel):
    font: str
    slant: float  # x shear per unit of height
    height: float  # letter height in whiteboard units
    spacing: float  # extra advance between letters, in letter heights
    drift: float  # baseline slope
    jitter: float  # hand wobble, in letter heights
    speed: float  # pen speed, letter heights per second


def make_writer(rng: random.Random) -> Writer:
    return Writer(
        font=rng.choice(FONTS),
        slant=rng.uniform(-0.05, 0.45),
        height=rng.uniform(70.0, 140.0),
        spacing=rng.uniform(-0.05, 0.2),
        drift=rng.uniform(-0.02, 0.02),
        jitter=rng.uniform(0.005, 0.03),
        speed=rng.uniform(8.0, 14.0),
    )


class _Fonts:
    """Loaded Hershey fonts by name (loading parses a tar member, so do it once per run)."""

    def __init__(self) -> None:
        try:
            from HersheyFonts import HersheyFonts
        except ImportError:
            raise DataError("the handwriting proxy needs `pip install hershey-fonts`") from None
        self._cls = HersheyFonts
        self._loaded: dict[str, object] = {}

    def strokes(self, font: str, text: str) -> list[np.ndarray]:
        if font not in self._loaded:
            f = self._cls()
            f.load_default_font(font)
            f.normalize_rendering(1.0)
            self._loaded[font] = f
        return [np.asarray(s, dtype=np.float64) for s in self._loaded[font].strokes_for_text(text)]  # type: ignore[attr-defined]


def _resample(stroke: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` along the polyline, both ends kept."""
    seg = np.hypot(*np.diff(stroke, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] <= step:
        return stroke[[0, -1]] if len(stroke) > 1 and arc[-1] > 0 else stroke[:1]
    where = np.append(np.arange(0.0, arc[-1], step), arc[-1])
    return np.column_stack([np.interp(where, arc, stroke[:, 0]), np.interp(where, arc, stroke[:, 1])])


def render_line(text: str, writer: Writer, fonts: _Fonts, rng: np.random.Generator, origin: tuple[float, float], start_time: float) -> list[np.ndarray]:
    """Pen strokes for one line: a list of (n, 3) arrays of x, y (whiteboard units, y down), time (s)."""
    glyph_strokes = fonts.strokes(writer.font, text)
    step = writer.speed / SAMPLING_HZ  # distance covered between two pen samples, in letter heights
    t = start_time
    previous_end: np.ndarray | None = None
    out: list[np.ndarray] = []
    stretch = 1.0 + writer.spacing
    for glyph in glyph_strokes:
        if len(glyph) == 0:
            continue
        pts = glyph.copy()
        pts[:, 0] = pts[:, 0] * stretch + writer.slant * pts[:, 1]
        pts = _resample(pts, step * rng.uniform(0.8, 1.25))
        wobble = np.cumsum(rng.normal(0.0, writer.jitter, size=pts.shape), axis=0)
        wobble -= np.linspace(0.0, 1.0, len(pts))[:, None] * wobble[-1:]  # anchored, so it stays small
        pts = pts + wobble + rng.normal(0.0, writer.jitter / 3, size=pts.shape)
        if previous_end is not None:  # pen-up travel takes time too
            t += float(np.hypot(*(pts[0] - previous_end))) / (2.0 * writer.speed) + rng.uniform(0.03, 0.12)
        previous_end = pts[-1]
        times = t + np.arange(len(pts)) / SAMPLING_HZ
        t = float(times[-1]) + 1.0 / SAMPLING_HZ
        x = origin[0] + pts[:, 0] * writer.height
        y = origin[1] - (pts[:, 1] + writer.drift * pts[:, 0]) * writer.height
        out.append(np.column_stack([np.round(x), np.round(y), np.round(times, 2)]))
    return out


def stroke_xml(strokes: list[np.ndarray]) -> str:
    """An IAM-OnDB lineStrokes document."""
    allpts = np.concatenate(strokes)
    xmax, ymax = int(allpts[:, 0].max()) + 50, int(allpts[:, 1].max()) + 50
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        "<WhiteboardCaptureSession>",
        "  <WhiteboardDescription>",
        '    <SensorLocation corner="top_left"/>',
        f'    <DiagonallyOppositeCoords x="{xmax}" y="{ymax}"/>',
        f'    <VerticallyOppositeCoords x="0" y="{ymax}"/>',
        f'    <HorizontallyOppositeCoords x="{xmax}" y="0"/>',
        "  </WhiteboardDescription>",
        "  <StrokeSet>",
    ]
    for s in strokes:
        parts.append(f'    <Stroke colour="black" start_time="{s[0, 2]:.2f}" end_time="{s[-1, 2]:.2f}">')
        parts.extend(f'      <Point x="{int(x)}" y="{int(y)}" time="{tm:.2f}"/>' for x, y, tm in s)
        parts.append("    </Stroke>")
    parts += ["  </StrokeSet>", "</WhiteboardCaptureSession>", ""]
    return "\n".join(parts)


def transcription_text(lines: list[str]) -> str:
    """An IAM-OnDB ascii file: OCR section, then the lines after ``CSR:`` and a blank line."""
    body = "\n".join(lines)
    return f"OCR:\n\n{body}\n\nCSR:\n\n{body}\n"


def form_prefix(writer_id: str) -> str:
    number = int(writer_id[1:])
    return f"p{number % 100:02d}" if number < 100 else f"q{number % 100:02d}"


def form_id(writer_id: str, f: int, taken) -> str:
    """Form ``f`` of a writer, in IAM's style (a01-000): a suffix letter where the number is taken, as IAM's
    own ids have (a01-000u, a01-000x). Never two writers' forms under one id: their files would overwrite
    each other, and one id could land in two splits."""
    number = int(writer_id[1:])
    base = f"{form_prefix(writer_id)}-{number // 100 * 100 + f * 5:03d}"
    form = next((c for c in [base, *(base + s for s in "xyzwvutsrq")] if c not in taken), None)
    if form is None:
        raise DataError(f"proxy handwriting: {len(taken)} forms outrun its form ids; use fewer writers or forms "
                        "per writer")
    return form


def generate_handwriting_proxy(root: Path | str, config: ProxyHandwritingConfig = ProxyHandwritingConfig(), progress: bool = True) -> Path:
    """Write the proxy corpus under ``root`` (replacing an older proxy there). Deterministic in ``config``."""
    root = Path(root)
    fonts = _Fonts()
    proxy_corpus.prepare_target(root)
    counts = {"train": config.train_writers, "valid": config.valid_writers, "test": config.test_writers}
    writer_ids: dict[str, list[str]] = {}
    number = 0
    for split, n in counts.items():
        writer_ids[split] = [f"w{number + k:03d}" for k in range(n)]
        number += n
    total = number * config.forms_per_writer * config.lines_per_form
    bar = tqdm(total=total, desc="iam proxy: writing lines", unit="line", disable=None if progress else True)
    split_forms: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    writer_of: dict[str, str] = {}
    for split, writers in writer_ids.items():
        for w_index, writer_id in enumerate(writers):
            wrng = random.Random(f"{config.seed}/{writer_id}")
            writer = make_writer(wrng)
            prefix = form_prefix(writer_id)
            for f in range(config.forms_per_writer):
                form = form_id(writer_id, f, writer_of)
                writer_of[form] = writer_id
                split_forms[split].append(form)
                nrng = np.random.default_rng([config.seed, int(writer_id[1:]), f])
                texts = [proxy_text.text_line(wrng, max_chars=MAX_LINE_CHARS) for _ in range(config.lines_per_form)]
                stroke_dir = root / "lineStrokes" / prefix / form[:7]
                stroke_dir.mkdir(parents=True, exist_ok=True)
                t = round(float(nrng.uniform(100.0, 2000.0)), 2)
                for k, text in enumerate(texts, start=1):
                    origin = (float(nrng.uniform(300, 900)), float(nrng.uniform(800, 1400)))
                    strokes = render_line(text, writer, fonts, nrng, origin, t)
                    t = float(strokes[-1][-1, 2]) + float(nrng.uniform(1.0, 3.0))
                    (stroke_dir / f"{form}-{k:02d}.xml").write_text(stroke_xml(strokes), encoding="latin-1")
                    bar.update(1)
                text_dir = root / "ascii" / prefix / form[:7]
                text_dir.mkdir(parents=True, exist_ok=True)
                (text_dir / f"{form}.txt").write_text(transcription_text(texts), encoding="latin-1")
    bar.close()
    valid = split_forms["valid"]
    lists = {
        "trainset.txt": split_forms["train"],
        "testset_v.txt": valid[: (len(valid) + 1) // 2],
        "testset_t.txt": valid[(len(valid) + 1) // 2 :],
        "testset_f.txt": split_forms["test"],
    }
    for name, forms in lists.items():
        # the real lists carry a leading space on each line; the proxy keeps that quirk
        (root / name).write_text("".join(f" {form}\n" for form in forms), encoding="ascii")
    proxy_corpus.finish(
        root,
        {
            "task": "iam",
            "source": proxy_corpus.PROXY_LABEL,
            "generator": GENERATOR,
            "config": config.model_dump(),
            "writers": writer_ids,
            "writer_of_form": writer_of,
        },
    )
    return root
