"""Audio files as TIMIT ships them: NIST SPHERE (``NIST_1A`` header), or RIFF WAV copies.

SPHERE: a text header (first line ``NIST_1A``, second line the header size in bytes,
usually 1024), then ``name -type value`` lines up to ``end_head``; the samples follow the
header. Types: ``-i`` integer, ``-r`` real, ``-sN`` string of N characters.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellc.errors import DataError

SPHERE_MAGIC = b"NIST_1A"
RIFF_MAGIC = b"RIFF"
SHORTEN_MAGIC = b"ajkg"
CONVERT_HINT = (
    "it is shorten-compressed; decompress it first with NIST's sph2pipe, e.g. "
    "`sph2pipe -f sph IN.WAV OUT.WAV` (SPHERE) or `sph2pipe -f wav IN.WAV OUT.WAV` (RIFF); "
    "both are accepted"
)


@dataclass(frozen=True)
class Audio:
    """Mono 16-bit PCM samples and their rate."""

    samples: np.ndarray  # int16, shape (n,)
    sample_rate: int


def parse_sphere_header(data: bytes, path: Path | str) -> tuple[dict[str, int | float | str], int]:
    """Return (fields, header_size). Raises DataError naming ``path`` when malformed."""
    if not data.startswith(SPHERE_MAGIC):
        raise DataError(f"{path}: not a NIST SPHERE file (no 'NIST_1A' at the start)")
    lines = data[:64].split(b"\n")
    try:
        header_size = int(lines[1].strip())
    except (IndexError, ValueError):
        raise DataError(f"{path}: malformed SPHERE header: the second line must be the header size") from None
    if header_size < 16 or header_size > len(data):
        raise DataError(f"{path}: malformed SPHERE header: header size {header_size} does not fit the file")
    text = data[:header_size].decode("latin-1")
    fields: dict[str, int | float | str] = {}
    ended = False
    for lineno, line in enumerate(text.split("\n")[2:], start=3):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line.strip() == "end_head":
            ended = True
            break
        parts = line.split(" ", 2)
        if len(parts) < 3 or not parts[1].startswith("-"):
            raise DataError(f"{path}: malformed SPHERE header line {lineno}: {line.strip()!r}")
        name, kind, value = parts
        try:
            if kind == "-i":
                fields[name] = int(value.strip())
            elif kind == "-r":
                fields[name] = float(value.strip())
            elif kind.startswith("-s"):
                fields[name] = value[: int(kind[2:])]
            else:
                raise ValueError(kind)
        except ValueError:
            raise DataError(f"{path}: malformed SPHERE header line {lineno}: {line.strip()!r}") from None
    if not ended:
        raise DataError(f"{path}: malformed SPHERE header: no 'end_head' within {header_size} bytes")
    return fields, header_size


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


MAX_CHANNELS = 32  # TIMIT is mono; a header claiming more than this is corrupt


def header_int(fields: dict[str, int | float | str], name: str, default: int, minimum: int, path: Path) -> int:
    """A whole-number header field of at least ``minimum`` (channel_count 0 would divide by zero)."""
    value = fields.get(name, default)
    if isinstance(value, float) and value.is_integer():  # '-r 2.0'; never nan or inf
        value = int(value)
    if not isinstance(value, int) or value < minimum:
        raise DataError(f"{path}: malformed SPHERE header: {name} is {value!r} (a whole number >= {minimum} expected)")
    return int(value)


def read_sphere(path: Path | str) -> Audio:
    """Read a NIST SPHERE file of 16-bit (or 8-bit linear) PCM; the first channel if several."""
    path = Path(path)
    data = _read_bytes(path)
    fields, header_size = parse_sphere_header(data, path)
    coding = str(fields.get("sample_coding", "pcm"))
    body = data[header_size:]
    if "shorten" in coding or body[:4] == SHORTEN_MAGIC:
        raise DataError(f"{path}: {CONVERT_HINT}")
    if not coding.startswith("pcm"):
        raise DataError(f"{path}: unsupported SPHERE sample_coding {coding!r} (only linear PCM is read)")
    n_bytes = header_int(fields, "sample_n_bytes", 2, 0, path)
    channels = header_int(fields, "channel_count", 1, 1, path)
    if channels > MAX_CHANNELS:
        raise DataError(f"{path}: malformed SPHERE header: channel_count is {channels} (at most {MAX_CHANNELS})")
    if n_bytes not in (1, 2):
        raise DataError(f"{path}: unsupported SPHERE sample_n_bytes {n_bytes} (1 or 2 expected)")
    if "sample_rate" not in fields:
        raise DataError(f"{path}: malformed SPHERE header: no sample_rate")
    sample_rate = header_int(fields, "sample_rate", 0, 1, path)
    byte_format = str(fields.get("sample_byte_format", "01" if n_bytes == 2 else "1"))
    if n_bytes == 2 and byte_format not in ("01", "10"):
        raise DataError(f"{path}: unsupported SPHERE sample_byte_format {byte_format!r} ('01' or '10' expected)")
    frame_bytes = n_bytes * channels
    count = header_int(fields, "sample_count", len(body) // frame_bytes, 0, path)
    if count * frame_bytes > len(body):
        raise DataError(
            f"{path}: truncated: header says {count} samples, the file holds {len(body) // frame_bytes}"
        )
    if n_bytes == 2:
        dtype = "<i2" if byte_format == "01" else ">i2"
        samples = np.frombuffer(body, dtype=dtype, count=count * channels)
    else:
        samples = (np.frombuffer(body, dtype=np.int8, count=count * channels).astype(np.int16)) << 8
    samples = samples.reshape(count, channels)[:, 0].astype(np.int16)
    return Audio(samples=samples, sample_rate=sample_rate)


def read_riff(path: Path | str) -> Audio:
    """Read a RIFF WAV file of 16-bit PCM (the first channel if several), plain or WAVE_FORMAT_EXTENSIBLE (as
    ffmpeg and libsndfile write it; Python 3.11's wave module refuses that form)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError(f"{path}: malformed RIFF WAV file (no RIFF/WAVE header)")
    fmt = frames = None
    at = 12
    while at + 8 <= len(data):
        kind, size = data[at:at + 4], struct.unpack("<I", data[at + 4:at + 8])[0]
        body = data[at + 8:at + 8 + size]
        if kind == b"fmt ":
            fmt = body
        elif kind == b"data":
            frames = body
        at += 8 + size + (size & 1)  # chunks are word-aligned
    if fmt is None or len(fmt) < 16 or frames is None:
        raise DataError(f"{path}: malformed RIFF WAV file (no fmt or data chunk)")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real format is the subformat's first two bytes
        tag = struct.unpack("<H", fmt[24:26])[0]
    if tag != 1:
        raise DataError(f"{path}: unsupported RIFF WAV format {tag} (linear PCM expected)")
    if bits != 16:
        raise DataError(f"{path}: unsupported RIFF WAV sample width {bits} bits (16 expected)")
    if channels < 1 or rate < 1:
        raise DataError(f"{path}: malformed RIFF WAV file (channel count {channels}, sample rate {rate} Hz)")
    if len(frames) % (2 * channels):
        raise DataError(f"{path}: truncated RIFF WAV file (the data ends inside a frame)")
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)[:, 0].astype(np.int16)
    return Audio(samples=samples, sample_rate=rate)


def read_audio(path: Path | str) -> Audio:
    """Read a TIMIT audio file, SPHERE or RIFF, told apart by its first bytes."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if head.startswith(SPHERE_MAGIC):
        return read_sphere(path)
    if head.startswith(RIFF_MAGIC):
        return read_riff(path)
    raise DataError(f"{path}: neither NIST SPHERE ('NIST_1A') nor RIFF WAV")


def sphere_header(fields: dict[str, int | float | str], header_size: int = 1024) -> bytes:
    """Render a SPHERE header of exactly ``header_size`` bytes (space padded, as NIST does)."""
    lines = ["NIST_1A", f"{header_size:7d}"]
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"SPHERE field {name}: unsupported value {value!r}")
        if isinstance(value, int):
            lines.append(f"{name} -i {value}")
        elif isinstance(value, float):
            lines.append(f"{name} -r {value}")
        else:
            lines.append(f"{name} -s{len(value)} {value}")
    lines.append("end_head")
    text = ("\n".join(lines) + "\n").encode("latin-1")
    if len(text) > header_size:
        raise ValueError(f"SPHERE header needs {len(text)} bytes, more than {header_size}")
    return text + b" " * (header_size - len(text))


def write_sphere(path: Path | str, samples: np.ndarray, sample_rate: int, extra: dict[str, int | str] | None = None) -> None:
    """Write mono 16-bit little-endian PCM as a TIMIT-style SPHERE file."""
    pcm = np.asarray(samples, dtype=np.int16)
    fields: dict[str, int | float | str] = dict(extra or {})
    fields.update(
        channel_count=1,
        sample_count=int(pcm.size),
        sample_rate=int(sample_rate),
        sample_min=int(pcm.min()) if pcm.size else 0,
        sample_max=int(pcm.max()) if pcm.size else 0,
        sample_n_bytes=2,
        sample_byte_format="01",
        sample_sig_bits=16,
    )
    Path(path).write_bytes(sphere_header(fields) + pcm.astype("<i2").tobytes())
