"""The trials file: every trial of a bench as one tidy, versioned JSON Lines file (schema ``cellc-trials``).

``cellc export`` writes it, ``cellc report`` ships it beside every report (``reports/<bench>/trials.jsonl.xz``)
and ``cellc report --trials FILE`` rebuilds the report from it alone, byte for byte. It is the one
documented exchange format for trials (``cellc copy`` reads and writes the same schema); this module
is its single definition: the pydantic models below *are* the schema, and :data:`TRIALS_VERSION` is
bumped on any change a reader of the previous version would misread.

Compression: a file is compressed when its name ends in ``.xz`` (what ``cellc export`` and ``cellc report`` write
by default; a paper-protocol bench's trials are several MB of text, its float curves compress about 3.3-fold
with xz against 2.5-fold with gzip) or ``.gz``; readers tell the forms apart by their magic bytes, not by the
name (``xzcat`` / ``zcat`` print the text; in Python ``lzma.open(path, "rt")``). A file whose trials are already
those to be written is left untouched, so rewriting a report never changes its trials file's bytes, whichever
liblzma or zlib this machine compresses with (a gzip file is written with no file name or time stamp).

Layout: one JSON object per line (UTF-8; numbers as Python's ``json`` writes them, so non-finite
values appear as ``NaN`` / ``Infinity``); every line has a ``record`` field saying what it is:

1. ``header`` (first line, once): ``schema`` (``"cellc-trials"``), ``version``, ``bench``, counts of
   ``studies`` and ``trials``.
2. ``task`` (one per task): the facts the analysis needs beside the trials, computed once from the
   task's training data by its task module (:meth:`cellc.tasks.base.Task.trivial_score`):
   ``trivial_score`` (test metric of the trivial predictor; null when unknown), ``trivial_predictor``
   (in words), ``equivalence_margin`` and ``equivalence_reason``, ``lower_is_better``.
3. ``study`` (one per (task, cell) study, in storage order): ``study`` (``"<bench>/<task>/<cell>"``),
   ``task``, ``cell`` and ``attrs``, the study's user attributes exactly as stored (see
   :mod:`cellc.harness.record`: settings, task_info, cell_identity, command, environment, ...).
4. ``trial`` (one per stored trial, in its study's trial-number order; a tidy row): ``study``, ``task``,
   ``cell``, ``spec_hash`` (the cell's ``cell_identity`` hash; null for older studies), ``number``
   (trial k runs the same setting and seed in every cell: the pairing key), ``state`` (Optuna's),
   ``status`` (``ok`` / ``diverged`` / ``failed`` / ``interrupted`` / ``running``), ``failure``
   (derived, see below), ``hyperparams`` (the setting: hidden, lr, momentum, noise), ``seed``,
   ``param_count``, ``train_curve`` / ``valid_curve`` (per epoch), ``best_valid``, ``best_epoch``,
   ``test_at_best`` and ``test_secondary_at_best`` (test scores with the best validation epoch's
   weights), ``epochs``, ``wall_time_s``, ``cpu_time_s``, ``host`` (from the trial's owner),
   ``code_commit`` (the cellc commit of the bench run that last worked on the study, null where not
   recorded), ``data_source``, ``error``, and where the trial trained: ``device`` (``cpu`` / ``cuda``),
   ``device_name`` (the CPU model or GPU name) and ``precision`` (``float32`` / ``bf16 autocast``), each
   null for trials stored before they were recorded (version 1 files), which all trained on the CPU in
   float32.

``failure`` is :func:`cellc.analysis.outcomes.failure_kind` of the trial: null (a usable trial, or one
not finished), ``"diverged"`` (NaN/inf, or no test score), or ``"no better than trivial"`` (its test
score is not better than the task's ``trivial_score``). It is written for readers of the file; the
report derives it again from the stored values, so the two always agree.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from cellc.errors import UsageError, short_path
from cellc.harness.record import TrialRecord

TRIALS_SCHEMA = "cellc-trials"
TRIALS_VERSION = 2  # 2: the trial rows' device, device_name and precision (version 1 files read as the CPU, float32)
TRIALS_FILE = "trials.jsonl.xz"  # the name a report's trials file ships under, and `cellc export`'s default
LEGACY_TRIALS_FILE = "trials.jsonl"  # what reports shipped before: still read; replaced where untracked
_DAMAGED = (EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError)  # what decompressing a damaged file raises


class HeaderLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    record: Literal["header"] = "header"
    schema_name: str = TRIALS_SCHEMA
    version: int = TRIALS_VERSION
    bench: str
    studies: int
    trials: int


class TaskLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    record: Literal["task"] = "task"
    task: str
    lower_is_better: bool
    trivial_score: float | None
    trivial_predictor: str
    equivalence_margin: float | None
    equivalence_reason: str


class StudyLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    record: Literal["study"] = "study"
    study: str
    task: str
    cell: str
    attrs: dict[str, Any]


class TrialLine(TrialRecord):
    """A :class:`TrialRecord` (every field the analysis reads) plus the row's identifying columns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    record: Literal["trial"] = "trial"
    study: str
    spec_hash: str | None
    failure: str | None
    code_commit: str | None

    def to_record(self) -> TrialRecord:
        return TrialRecord(**{name: getattr(self, name) for name in TrialRecord.model_fields})


def _dump(model: BaseModel) -> str:
    data = model.model_dump()
    if isinstance(model, HeaderLine):  # "schema" shadows a BaseModel attribute: stored under its file name
        data = {"record": "header", "schema": data.pop("schema_name"), **{k: v for k, v in data.items() if k != "record"}}
    return json.dumps(data, ensure_ascii=False)


def file_text(lines: Iterable[BaseModel]) -> str:
    """The file's text: one JSON object per line."""
    return "".join(_dump(line) + "\n" for line in lines)


class _Codec(NamedTuple):
    suffix: str
    magic: bytes
    name: str  # as the report names it ("xz-compressed")
    module: str  # the standard-library module that reads it: <module>.open(path, "rt")
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


def _gzip(data: bytes) -> bytes:
    buffer = io.BytesIO()  # no file name and no time stamp in the header: the same text, the same bytes
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as out:
        out.write(data)
    return buffer.getvalue()


_CODECS = (
    _Codec(".xz", b"\xfd7zXZ\x00", "xz", "lzma", lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
    _Codec(".gz", b"\x1f\x8b", "gzip", "gzip", _gzip, gzip.decompress),
)


def _codec_named(path: Path) -> _Codec | None:
    """The compression the file's name asks for (None: plain text)."""
    return next((c for c in _CODECS if path.suffix == c.suffix), None)


def compression(path: str | Path) -> tuple[str, str] | None:
    """How a trials file at ``path`` is written: (the compression's name, the Python module that reads it),
    or None for plain text."""
    codec = _codec_named(Path(path))
    return (codec.name, codec.module) if codec else None


def _codec_of(data: bytes) -> _Codec | None:
    """The compression the bytes are in, by their magic bytes (None: plain text)."""
    return next((c for c in _CODECS if data.startswith(c.magic)), None)


def _encode(text: str, path: Path) -> bytes:
    """The bytes of a file at ``path`` holding ``text``: UTF-8, compressed as its name asks."""
    codec = _codec_named(path)
    data = text.encode("utf-8")
    return codec.compress(data) if codec else data


def _decoded(data: bytes) -> str:
    codec = _codec_of(data)
    return (codec.decompress(data) if codec else data).decode("utf-8")


def read_text(path: Path) -> str:
    """A trials file's text, compressed or not (told apart by the magic bytes). OSError, UnicodeDecodeError,
    or one of ``_DAMAGED`` on a damaged compressed file."""
    return _decoded(path.read_bytes())


def holds(path: Path, text: str) -> bool:
    """Whether ``path`` exists in the form its name asks for (compressed or not) and holds ``text``."""
    try:
        data = path.read_bytes()
        return _codec_of(data) == _codec_named(path) and _decoded(data) == text
    except (OSError, UnicodeDecodeError, *_DAMAGED):
        return False


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (a temporary file beside it, then renamed): a reader never sees half a file.

    Compressed when the name ends in ``.xz`` or ``.gz``; left as it is when it already holds ``text``."""
    if holds(path, text):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(_encode(text, path))
    partial.replace(path)


def write_lines(path: Path, lines: Iterable[BaseModel]) -> None:
    """:func:`write_text` of the lines' :func:`file_text`."""
    write_text(path, file_text(lines))


class TrialsFile(BaseModel):
    """A trials file as read: its header, task facts, studies and trials (in file order)."""

    model_config = ConfigDict(frozen=True)

    header: HeaderLine
    tasks: list[TaskLine]
    studies: list[StudyLine]
    trials: list[TrialLine]


_KINDS: dict[str, type[BaseModel]] = {"task": TaskLine, "study": StudyLine, "trial": TrialLine}


def _objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    shown = short_path(path)
    try:
        text = read_text(path)
    except _DAMAGED as err:  # before OSError, of which BadGzipFile is one
        raise UsageError(f"--trials {shown}: a damaged compressed file ({err or 'it ends early'})") from None
    except OSError as err:
        raise UsageError(f"--trials {shown}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--trials {shown}: not a UTF-8 text file") from None
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as err:
            raise UsageError(f"--trials {shown}, line {number}: not JSON ({err})") from None
        if not isinstance(obj, dict):
            raise UsageError(f"--trials {shown}, line {number}: not a JSON object")
        yield number, obj


def read_trials(path: Path) -> TrialsFile:
    """Read and validate a trials file (UsageError naming the file and line on anything malformed)."""
    shown = short_path(path)
    header: HeaderLine | None = None
    parts: dict[str, list[Any]] = {"task": [], "study": [], "trial": []}
    for number, obj in _objects(path):
        kind = obj.get("record")
        if header is None:
            if kind != "header" or obj.get("schema") != TRIALS_SCHEMA:
                raise UsageError(f"--trials {shown}: not a cellc trials file (its first line is no "
                                 f"{TRIALS_SCHEMA} header; write one with `cellc export`)")
            version = obj.get("version")
            if not isinstance(version, int) or version > TRIALS_VERSION:
                raise UsageError(f"--trials {shown}: schema version {version!r}; this cellc reads up to "
                                 f"{TRIALS_VERSION}")
            body = {k: v for k, v in obj.items() if k not in ("record", "schema")}
            try:
                header = HeaderLine(**body)
            except (ValidationError, TypeError) as err:
                raise UsageError(f"--trials {shown}, line {number}: bad header ({_first_error(err)})") from None
            continue
        model = _KINDS.get(str(kind))
        if model is None:
            raise UsageError(f"--trials {shown}, line {number}: unknown record {kind!r}")
        try:
            parts[str(kind)].append(model.model_validate(obj))
        except ValidationError as err:
            raise UsageError(f"--trials {shown}, line {number}: bad {kind} record ({_first_error(err)})") from None
    if header is None:
        raise UsageError(f"--trials {shown}: empty file")
    if len(parts["trial"]) != header.trials or len(parts["study"]) != header.studies:
        raise UsageError(f"--trials {shown}: truncated ({len(parts['study'])} studies and {len(parts['trial'])} "
                         f"trials; the header announces {header.studies} and {header.trials})")
    names = {s.study for s in parts["study"]}
    stray = next((t for t in parts["trial"] if t.study not in names), None)
    if stray is not None:
        raise UsageError(f"--trials {shown}: trial {stray.number} names study {stray.study!r}, which the file lacks")
    return TrialsFile(header=header, tasks=parts["task"], studies=parts["study"], trials=parts["trial"])


def _first_error(err: Exception) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(err)
