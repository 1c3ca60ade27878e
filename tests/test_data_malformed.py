"""Malformed data a user's copy can hold: each is one DataError naming the file (and line), never a traceback,
a hang, or training on wrong labels in silence; and what a load skipped reaches the user."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest

from cellc.data.iam_corpus import LoadReport, read_strokes
from cellc.data.inventory import timit_samples
from cellc.data.proxy_handwriting import form_id
from cellc.data.sphere import read_audio, write_sphere
from cellc.data.timit_corpus import read_phn
from cellc.errors import DataError
from cellc.tasks.jsb import read_pieces
from cellc.tasks.timit import size_notes
from test_sphere import handmade_sphere


@pytest.mark.parametrize("text,message", [
    ("1600 3200 s\n0 1600 h#\n", "begins before the previous one"),  # out of order
    ("0 3000 h#\n100 200 s\n", "begins before the previous one"),  # one segment inside another
    ("1000 1100 b\n950 3000 ae\n", "begins before the previous one"),  # going back, within the slack
    ("0 99999999 h#\n", "ends after the audio (48000 samples)"),  # another utterance's labels
])
def test_phone_segments_in_order_and_within_the_audio(tmp_path, text, message):
    path = tmp_path / "SX1.PHN"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"SX1.PHN:\d: .*{re.escape(message)}"):
        read_phn(path, n_samples=48000)


def test_phone_segments_may_touch_and_overlap_or_overrun_a_little(tmp_path):
    path = tmp_path / "ok.PHN"
    path.write_text("0 1600 h#\n1600 3200 s\n3190 48100 h#\n")  # touching, 10 samples overlap, 100 past the end
    assert [s.phone for s in read_phn(path, n_samples=48000)] == ["h#", "s", "h#"]


@pytest.mark.parametrize("point", ['x="1e39" y="1" time="0"', 'x="1" y="nan" time="0"', 'x="inf" y="1" time="0"'])
def test_stroke_points_must_be_finite_and_sane(tmp_path, point):
    path = tmp_path / "a01-000-01.xml"
    path.write_text(f'<WhiteboardCaptureSession><StrokeSet><Stroke><Point {point}/></Stroke></StrokeSet>'
                    '</WhiteboardCaptureSession>')
    with pytest.raises(DataError, match="a01-000-01.xml: a Point has a non-finite or huge"):
        read_strokes(path)


def test_sphere_header_with_an_absurd_channel_count(tmp_path):
    path = tmp_path / "SX1.WAV"
    path.write_bytes(handmade_sphere([1, 2, 3, 4], extra="channel_count -i 1000000000000000000000000000000\n"))
    with pytest.raises(DataError, match="channel_count is 1000000000000000000000000000000"):
        read_audio(path)


def test_wave_format_extensible_riff_is_read(tmp_path):
    samples = np.array([0, 1000, -1000, 32767], dtype="<i2")
    pcm_guid = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 32000, 2, 16) + struct.pack("<HHI", 22, 16, 4) + pcm_guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 8) + samples.tobytes()
    path = tmp_path / "SX1.WAV"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    audio = read_audio(path)
    assert audio.sample_rate == 16000 and audio.samples.tolist() == samples.tolist()


@pytest.mark.parametrize("content", ["[" * 200000, '{"train": [[[1' + "0" * 5000 + "]]]}"])
def test_jsb_json_nested_absurdly_or_with_a_huge_number(tmp_path, content):
    path = tmp_path / "jsb.json"
    path.write_text(content)
    with pytest.raises(DataError, match="jsb.json: corrupt JSON"):
        read_pieces(path)


def test_inventory_reads_a_file_whose_header_does_not_match_it(tmp_path):
    """`cellc data info` counts from headers, but not a header that claims more than its file holds."""
    good = tmp_path / "good.WAV"
    write_sphere(good, np.zeros(100, dtype=np.int16), 16000)
    assert timit_samples(good) == (100, 16000)
    lying = tmp_path / "lying.WAV"
    lying.write_bytes(handmade_sphere([1, 2, 3], count=10**9))
    with pytest.raises(DataError, match="truncated"):
        timit_samples(lying)
    odd = tmp_path / "odd.WAV"
    odd.write_bytes(handmade_sphere([1, 2, 3], extra="sample_count -s3 abc\n"))
    with pytest.raises(DataError):
        timit_samples(odd)


def test_proxy_form_ids_never_collide():
    taken: dict[str, str] = {}
    for w in range(400):
        for f in range(50):
            form = form_id(f"w{w:03d}", f, taken)
            assert form not in taken
            taken[form] = f"w{w:03d}"
    assert form_id("w000", 0, {}) == "p00-000"  # the default corpus's ids are unchanged


def test_what_a_load_skipped_reaches_the_user():
    assert size_notes("proxy", {"train": 4, "valid": 2, "test": 2}) == ()
    assert size_notes("real", {"train": 3696, "valid": 400, "test": 192}) == ()
    (note,) = size_notes("real", {"train": 3500, "valid": 400, "test": 192})
    assert "3500/400/192 utterances" in note and "3696/400/192" in note
    report = LoadReport()
    report.skip("a01-000-01.xml", "malformed XML")
    assert "1 file(s) skipped: a01-000-01.xml: malformed XML" in report.summary()
