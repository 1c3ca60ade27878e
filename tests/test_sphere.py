"""NIST SPHERE and RIFF reading: headers written byte for byte, byte orders, and bad files."""

from __future__ import annotations

import struct
import wave

import numpy as np
import pytest

from cellc.data.sphere import read_audio, read_sphere, sphere_header, write_sphere
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
