"""NIST SPHERE and RIFF reading: headers written byte for byte, byte orders, and bad files."""

from __future__ import annotations

import struct
import wave

import numpy as np
import pytest

from cellc.data.sphere import read_audio, read_riff, read_sphere, sphere_header, write_sphere
from cellc.errors import DataError


def handmade_sphere(samples: list[int], byte_format: str = "01", count: int | None = None, extra: str = "") -> bytes:
    """A TIMIT-style header typed out by hand, padded to 1024 bytes, then the samples."""
    n = len(samples) if count is None else count
    header = (
        "NIST_1A\n   1024\n"
        "database_id -s5 TIMIT\n"
        "database_version -s3 1.0\n"
        "utterance_id -s8 aks0_sa1\n"
        "channel_count -i 1\n"
        f"sample_count -i {n}\n"
        "sample_rate -i 16000\n"
        "sample_min -i -6037\n"
        "sample_max -i 5850\n"
        "sample_n_bytes -i 2\n"
        f"sample_byte_format -s2 {byte_format}\n"
        "sample_sig_bits -i 16\n"
        f"{extra}"
        "end_head\n"
    ).encode("ascii")
    header += b" " * (1024 - len(header))
    fmt = "<" if byte_format == "01" else ">"
    return header + struct.pack(f"{fmt}{len(samples)}h", *samples)


def test_reads_handmade_little_endian_header(tmp_path):
    path = tmp_path / "SA1.WAV"
    path.write_bytes(handmade_sphere([0, 1, -1, 32767, -32768, 1234]))
    audio = read_sphere(path)
    assert audio.sample_rate == 16000
    assert audio.samples.dtype == np.int16
    assert audio.samples.tolist() == [0, 1, -1, 32767, -32768, 1234]


def test_reads_big_endian(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(handmade_sphere([258, -2, 7], byte_format="10"))
    assert read_audio(path).samples.tolist() == [258, -2, 7]


def test_sample_count_limits_what_is_read(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(handmade_sphere([5, 6, 7, 8], count=3))
    assert read_sphere(path).samples.tolist() == [5, 6, 7]


def test_truncated_body_names_file(tmp_path):
    path = tmp_path / "short.wav"
    path.write_bytes(handmade_sphere([1, 2], count=10))
    with pytest.raises(DataError, match="short.wav.*truncated"):
        read_sphere(path)


def test_malformed_header_names_file(tmp_path):
    path = tmp_path / "BAD.WAV"
    path.write_bytes(handmade_sphere([1, 2, 3]).replace(b"channel_count -i 1", b"channel_count 1  "))
    with pytest.raises(DataError, match=r"BAD\.WAV: malformed SPHERE header line"):
        read_sphere(path)


def test_header_without_end_head_names_file(tmp_path):
    path = tmp_path / "NOEND.WAV"
    path.write_bytes(handmade_sphere([1]).replace(b"end_head\n", b"         "))
    with pytest.raises(DataError, match=r"NOEND\.WAV: .*end_head"):
        read_audio(path)


def test_bad_header_size_names_file(tmp_path):
    path = tmp_path / "SIZE.WAV"
    path.write_bytes(handmade_sphere([1]).replace(b"   1024\n", b"   abcd\n", 1))
    with pytest.raises(DataError, match=r"SIZE\.WAV: .*header size"):
        read_audio(path)


def test_shorten_file_says_how_to_convert(tmp_path):
    path = tmp_path / "SI1.WAV"
    path.write_bytes(handmade_sphere([1, 2], extra="sample_coding -s26 pcm,embedded-shorten-v2.00\n"))
    with pytest.raises(DataError, match=r"SI1\.WAV: it is shorten-compressed.*sph2pipe"):
        read_audio(path)


def test_shorten_detected_by_magic_bytes(tmp_path):
    path = tmp_path / "SI2.WAV"
    path.write_bytes(handmade_sphere([]) + b"ajkg\x02\x00")
    with pytest.raises(DataError, match="sph2pipe"):
        read_audio(path)


def test_riff_copy_is_accepted(tmp_path):
    path = tmp_path / "SA1.WAV"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(struct.pack("<3h", 10, -20, 30))
    audio = read_audio(path)
    assert (audio.sample_rate, audio.samples.tolist()) == (16000, [10, -20, 30])


def test_neither_format_names_file(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(b"hello world")
    with pytest.raises(DataError, match="junk.wav: neither"):
        read_audio(path)


def test_writer_round_trips_and_header_is_1024_bytes(tmp_path):
    path = tmp_path / "out.wav"
    samples = np.array([3, -3, 100, -100], dtype=np.int16)
    write_sphere(path, samples, 16000, extra={"utterance_id": "abc_sx1"})
    data = path.read_bytes()
    assert data.startswith(b"NIST_1A\n   1024\n") and len(data) == 1024 + 8
    assert b"utterance_id -s7 abc_sx1\n" in data[:1024]
    assert read_audio(path).samples.tolist() == samples.tolist()
    assert len(sphere_header({"a": 1})) == 1024


@pytest.mark.parametrize("line, field", [
    (b"channel_count -i 1", b"channel_count -i 0"),
    (b"channel_count -i 1", b"channel_count -i -2"),
    (b"channel_count -i 1", b"channel_count -s1 x"),
    (b"channel_count -i 1", b"channel_count -r nan"),
    (b"sample_rate -i 16000", b"sample_rate -i 0    "),
    (b"sample_rate -i 16000", b"sample_rate -r 15.5 "),
    (b"sample_count -i 3", b"sample_count -i -3"),
    (b"sample_n_bytes -i 2", b"sample_n_bytes -r inf"),
])
def test_impossible_counts_name_file(tmp_path, line, field):
    path = tmp_path / "ZERO.WAV"
    data = handmade_sphere([1, 2, 3])
    assert line in data
    path.write_bytes(data.replace(line, field))
    name = field.split(b" ")[0].decode()
    with pytest.raises(DataError, match=rf"ZERO\.WAV: malformed SPHERE header: {name} is"):
        read_audio(path)


def test_sphere_rate_written_as_a_whole_real_is_accepted(tmp_path):
    path = tmp_path / "REAL.WAV"
    path.write_bytes(handmade_sphere([4, 5]).replace(b"sample_rate -i 16000", b"sample_rate -r 16000.0"))
    assert read_sphere(path).sample_rate == 16000


def test_unreadable_file_names_file(tmp_path):
    folder = tmp_path / "DIR.WAV"  # reading a directory fails with OSError for every user, root included
    folder.mkdir()
    for reader in (read_sphere, read_riff, read_audio):
        with pytest.raises(DataError, match=r"DIR\.WAV: cannot read"):
            reader(folder)
    with pytest.raises(DataError, match=r"MISSING\.WAV: cannot read"):
        read_sphere(tmp_path / "MISSING.WAV")


def handmade_riff(channels: int, rate: int = 16000, data: bytes = b"\x01\x00\x02\x00", declared: int | None = None) -> bytes:
    """A RIFF WAV file typed out field by field (the wave module would refuse to write these)."""
    frame = max(channels, 1) * 2
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * frame, frame, 16)
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("data, message", [
    (handmade_riff(0), "malformed RIFF WAV"),
    (handmade_riff(1, rate=0), "malformed RIFF WAV"),
    (handmade_riff(2, data=b"\x01\x00\x02\x00\x03\x00", declared=8), "truncated RIFF WAV"),
    (handmade_riff(1, data=b"\x01\x00\x02", declared=4), "truncated RIFF WAV"),
], ids=["no-channels", "rate-0", "half-frame", "half-sample"])
def test_bad_riff_names_file(tmp_path, data, message):
    path = tmp_path / "RIFF.WAV"
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"RIFF\.WAV: {message}"):
        read_audio(path)


def test_handmade_riff_two_channels_reads_the_first(tmp_path):
    path = tmp_path / "TWO.WAV"
    path.write_bytes(handmade_riff(2, data=struct.pack("<4h", 7, -7, 8, -8)))
    assert read_audio(path).samples.tolist() == [7, 8]
