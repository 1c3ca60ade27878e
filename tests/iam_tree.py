"""Builds a tiny IAM-OnDB tree by hand: two writers' forms, transcriptions, t1 split lists."""

from __future__ import annotations

from pathlib import Path

XML_HEAD = """<?xml version="1.0" encoding="ISO-8859-1"?>
<WhiteboardCaptureSession>
  <WhiteboardDescription>
    <SensorLocation corner="top_left"/>
    <DiagonallyOppositeCoords x="6512" y="1376"/>
    <VerticallyOppositeCoords x="966" y="1376"/>
    <HorizontallyOppositeCoords x="6512" y="787"/>
  </WhiteboardDescription>
  <StrokeSet>
"""
XML_TAIL = """  </StrokeSet>
</WhiteboardCaptureSession>
"""


def stroke_xml(strokes: list[list[tuple[int, int, float]]]) -> str:
    body = ""
    for points in strokes:
        body += f'    <Stroke colour="black" start_time="{points[0][2]}" end_time="{points[-1][2]}">\n'
        body += "".join(f'      <Point x="{x}" y="{y}" time="{t}"/>\n' for x, y, t in points)
        body += "    </Stroke>\n"
    return XML_HEAD + body + XML_TAIL


# Form a01-000u (writer 1, train): two lines; a01-007 (writer 1, train): one line;
# b02-010 (writer 2, validation v), b02-011 (writer 2, validation t), c03-000 (writer 2, test).
FORMS = {
    "a01-000u": ["A MOVE to stop", "Mr. Gaitskell"],
    "a01-007": ["from nominating"],
    "b02-010": ["any more Labour"],
    "b02-011": ["life Peers"],
    "c03-000": ["is to be made"],
}
LINE_STROKES = [[(1073, 1058, 769.05), (1072, 1074, 769.06), (1070, 1090, 769.07)], [(1100, 1060, 769.30), (1130, 1061, 769.32)]]


def transcription(lines: list[str]) -> str:
    body = "\n".join(lines)
    return f"OCR:\n\n{body}\n\nCSR:\n\n{body}\n"


def build_tree(root: Path) -> Path:
    for form, lines in FORMS.items():
        prefix = form[:3]
        stroke_dir = root / "lineStrokes" / prefix / form[:7]
        stroke_dir.mkdir(parents=True, exist_ok=True)
        for k in range(1, len(lines) + 1):
            (stroke_dir / f"{form}-{k:02d}.xml").write_text(stroke_xml(LINE_STROKES))
        text_dir = root / "ascii" / prefix / form[:7]
        text_dir.mkdir(parents=True, exist_ok=True)
        (text_dir / f"{form}.txt").write_text(transcription(lines), encoding="latin-1")
    # stray whitespace, as in the distributed lists
    (root / "trainset.txt").write_text(" a01-000u\n a01-007  \n\n")
    (root / "testset_v.txt").write_text("b02-010\r\n")
    (root / "testset_t.txt").write_text("\tb02-011\n")
    (root / "testset_f.txt").write_text(" c03-000\n z99-999\n")  # z99-999 has no files
    return root
