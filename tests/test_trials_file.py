"""The trials file: `cellc export` writes every trial in the versioned schema, `cellc report --trials` rebuilds
the report byte for byte from it alone (no storage), the report's closing note recomputes a p-value from it with
scipy, and a malformed file is one clear message."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
from pathlib import Path

import pytest

from cellc.analysis.load import facts_from_studies, load_bench, load_trials
from cellc.cli import main
from cellc.harness.trials_file import TRIALS_FILE, TRIALS_SCHEMA, TRIALS_VERSION

from planted_bench import BENCH, plant_bench


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    plant_bench(root, trials=12)
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_writes_every_trial_in_the_documented_schema(planted, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(out)]) == 0
    assert "78 trials of 6 studies" in capsys.readouterr().out  # 12 + 1 interrupted per study
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"record": "header", "schema": TRIALS_SCHEMA, "version": TRIALS_VERSION, "bench": BENCH,
                       "studies": 6, "trials": 78}
    tasks = {r["task"]: r for r in rows if r["record"] == "task"}
    assert tasks["jsb"]["trivial_score"] == 11.0 and tasks["jsb"]["equivalence_margin"] == 0.1
    trials = [r for r in rows if r["record"] == "trial"]
    first = trials[0]
    for column in ("task", "cell", "spec_hash", "number", "hyperparams", "seed", "status", "failure", "train_curve",
                   "valid_curve", "best_valid", "best_epoch", "test_at_best", "test_secondary_at_best",
                   "wall_time_s", "cpu_time_s", "host", "code_commit"):
        assert column in first
    assert first["host"] == "host" and first["seed"] == 0
    diverged = [r for r in trials if r["status"] == "diverged"]
    assert diverged and all(r["failure"] == "diverged" for r in diverged)
    assert {r["failure"] for r in trials} >= {None, "diverged", "no better than trivial"}
    # the file round-trips to the very records the storage gives
    bench, studies, facts = load_trials(out)
    stored = load_bench(f"sqlite:///{planted / 'studies.db'}", BENCH)
    assert bench == BENCH and [s.records for s in studies] == [s.records for s in stored]
    assert facts == facts_from_studies(stored)
    capsys.readouterr()
    # the same trials again (what `cellc report` also writes beside the report): up to date, not an error
    assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out
    out.write_text(out.read_text().replace('"seed": 0', '"seed": 1', 1))  # other trials: not replaced silently
    assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(out)]) == 2
    assert "exists with other trials; give --force" in capsys.readouterr().err


@pytest.mark.slow
def test_report_from_the_trials_file_alone_is_byte_identical_and_its_p_value_recomputes(planted, tmp_path):
    from_storage = tmp_path / "a" / "reports"
    assert main(["report", "--name", BENCH, "--out", str(planted), "--report-dir", str(from_storage)]) == 0
    first = _snapshot(from_storage)
    (from_storage / f"{BENCH}.md").unlink()  # keep only the shipped trials file; the storage is never named
    for png in (from_storage / BENCH).glob("*.png"):
        png.unlink()
    assert main(["report", "--trials", str(from_storage / BENCH / TRIALS_FILE),
                 "--report-dir", str(from_storage)]) == 0
    assert _snapshot(from_storage) == first
    text = first[f"{BENCH}.md"].decode()
    # the closing note's snippet, run as printed, gives the table's p-value
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet, {})
    claimed = re.search(r"prints (\S+), the \*Wilcoxon p\*", text).group(1)
    assert float(printed.getvalue()) == float(claimed)


def test_a_malformed_trials_file_is_one_message(tmp_path, capsys):
    bad = tmp_path / "t.jsonl"
    cases = {
        "": "empty file",
        "not json\n": "line 1: not JSON",
        '{"record": "header", "schema": "other"}\n': "not a cellc trials file",
        f'{{"record": "header", "schema": "{TRIALS_SCHEMA}", "version": {TRIALS_VERSION + 1}}}\n': "schema version",
        f'{{"record": "header", "schema": "{TRIALS_SCHEMA}", "version": 1, "bench": "x", "studies": 1, "trials": 0}}\n':
            "truncated",
        f'{{"record": "header", "schema": "{TRIALS_SCHEMA}", "version": 1, "bench": "x", "studies": 0, "trials": 0}}\n'
        '{"record": "trial", "number": "seven"}\n': "line 2: bad trial record",
    }
    for content, message in cases.items():
        bad.write_text(content)
        assert main(["report", "--trials", str(bad), "--report-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, (content, err)
    assert main(["report", "--trials", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["report", "--trials", str(bad), "--name", "quick"]) == 2
    assert "leave out --name" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written


def test_a_version_1_file_without_devices_reads_as_the_cpu_in_float32(planted, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["device"] is None and r["precision"] is None for r in rows if r["record"] == "trial")
    old = tmp_path / "v1.jsonl"  # what cellc wrote before trials recorded their device
    rows[0]["version"] = 1
    for row in rows:
        for key in ("device", "device_name", "precision"):
            row.pop(key, None)
    old.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, studies, _ = load_trials(old)
    record = studies[0].records[0]
    assert record.placement("Some CPU") == ("cpu", "Some CPU", "float32")
    assert [s.records for s in studies] == [s.records for s in load_trials(out)[1]]


def test_the_report_counts_trial_rows_and_reruns_from_the_file(planted, tmp_path):
    from cellc.analysis.document import trial_numbering

    out = tmp_path / "t.jsonl"
    assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(out)]) == 0
    _, studies, _ = load_trials(out)
    # planted: 12 finished trials and one interrupted (run again under a new number) per study
    assert trial_numbering(studies) == (78, 0, 6)
    twice = [s if k else dataclasses.replace(s, records=[*s.records, s.records[0]]) for k, s in enumerate(studies)]
    assert trial_numbering(twice) == (79, 1, 6)


@pytest.mark.parametrize("suffix", [".xz", ".gz"])
def test_a_compressed_trials_file_is_reproducible_and_reads_like_the_plain_one(planted, tmp_path, capsys, suffix):
    import gzip
    import lzma

    plain, packed = tmp_path / "t.jsonl", tmp_path / f"t.jsonl{suffix}"
    for out in (plain, packed):
        assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(out)]) == 0
    data = packed.read_bytes()
    assert len(data) < len(plain.read_bytes()) / 4
    if suffix == ".gz":
        assert gzip.decompress(data) == plain.read_bytes()  # the same text, compressed
        assert data[4:8] == b"\0\0\0\0" and not data[3] & 0x08  # no time stamp, no file name in the header
    else:
        assert lzma.decompress(data) == plain.read_bytes()
    again = tmp_path / f"again.jsonl{suffix}"
    assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(again)]) == 0
    assert again.read_bytes() == data  # reproducible bytes
    assert load_trials(packed)[1] == load_trials(plain)[1]
    misnamed = tmp_path / "misnamed.jsonl"  # the reader tells the forms apart by their bytes, not their names
    misnamed.write_bytes(data)
    assert load_trials(misnamed)[1] == load_trials(plain)[1]
    # writing the same trials again leaves the file alone (whatever library this machine compresses with)
    other = (gzip.compress(plain.read_bytes(), compresslevel=1, mtime=12345) if suffix == ".gz"
             else lzma.compress(plain.read_bytes(), preset=0))
    assert other != data
    packed.write_bytes(other)
    capsys.readouterr()
    assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(packed)]) == 0
    assert "up to date" in capsys.readouterr().out and packed.read_bytes() == other
    # a plain file under a compressed name is rewritten compressed
    packed.write_bytes(plain.read_bytes())
    assert main(["export", "--name", BENCH, "--out", str(planted), "--output", str(packed), "--force"]) == 0
    assert packed.read_bytes() == data
    # a damaged compressed file is one message
    for damage in (data[: len(data) // 2], data[:10] + b"garbage" * 20):
        packed.write_bytes(damage)
        assert main(["report", "--trials", str(packed), "--report-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert "damaged compressed file" in err and "Traceback" not in err and err.count("\n") == 1, err


def test_a_string_holding_a_unicode_line_separator_stays_on_its_line(tmp_path):
    from cellc.harness.trials_file import read_trials

    header = {"record": "header", "schema": TRIALS_SCHEMA, "version": TRIALS_VERSION, "bench": "x", "studies": 1,
              "trials": 0}
    study = {"record": "study", "study": "x/jsb/vanilla", "task": "jsb", "cell": "vanilla",
             "attrs": {"command": "cellc bench\u2028--name x\u0085"}}
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in (header, study)), encoding="utf-8")
    assert read_trials(path).studies[0].attrs["command"] == "cellc bench\u2028--name x\u0085"


def test_a_report_replaces_the_plain_trials_file_it_shipped_before(planted, tmp_path):
    from cellc.harness.trials_file import LEGACY_TRIALS_FILE

    reports = tmp_path / "reports"
    assert main(["report", "--name", BENCH, "--out", str(planted), "--report-dir", str(reports)]) == 0
    legacy = reports / BENCH / LEGACY_TRIALS_FILE  # what an older cellc wrote there (untracked: no git here)
    legacy.write_text("old")
    assert main(["report", "--trials", str(reports / BENCH / TRIALS_FILE), "--report-dir", str(reports)]) == 0
    assert not legacy.exists() and (reports / BENCH / TRIALS_FILE).is_file()
