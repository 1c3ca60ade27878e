"""User specs: labelled by their name:, found in --specs-dir / $CELLC_SPECS_PATH / ./NAME.yaml, listed."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from cellc.cli import main
from cellc.errors import UsageError
from cellc.harness.cells import resolve_cell, resolve_cells, user_spec_dirs
from cellc.harness.storage import default_storage_url, open_storage

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JANET = "name: janet\nextends: vanilla\nedits:\n  - drop gate o\n"
OTHER_JANET = "name: janet\nextends: vanilla\nedits:\n  - drop gate i\n"


@pytest.fixture
def specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CELLC_SPECS_PATH", raising=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "janet-v1.yaml").write_text(JANET)
    return tmp_path


def test_a_spec_file_is_labelled_by_its_name_not_its_path(specs):
    for typed in ("mine/janet-v1.yaml", str(specs / "mine" / "janet-v1.yaml")):
        label, target = resolve_cell(typed, [])
        assert label == "janet" and Path(target) == (specs / "mine" / "janet-v1.yaml").resolve()


def test_names_are_found_in_specs_dirs_the_environment_and_the_current_folder(specs, monkeypatch):
    assert resolve_cell("janet", user_spec_dirs(["mine"]))[0] == "janet"
    assert Path(resolve_cell("janet", user_spec_dirs(["mine"]))[1]).name == "janet-v1.yaml"
    monkeypatch.setenv("CELLC_SPECS_PATH", str(specs / "mine"))
    assert Path(resolve_cell("janet", user_spec_dirs())[1]).name == "janet-v1.yaml"
    monkeypatch.delenv("CELLC_SPECS_PATH")
    assert resolve_cell("janet", []) == ("janet", "janet")  # not found: left to the compiler's own lookup
    (specs / "janet.yaml").write_text(JANET)
    assert Path(resolve_cell("janet", [])[1]) == (specs / "janet.yaml").resolve()
    assert resolve_cell("vanilla", user_spec_dirs(["mine"])) == ("vanilla", "vanilla")  # built-ins by name


def test_two_specs_with_one_name_are_an_error_naming_both(specs):
    (specs / "theirs").mkdir()
    (specs / "theirs" / "j.yaml").write_text(OTHER_JANET)
    with pytest.raises(UsageError, match=r"two specs are named 'janet': mine/janet-v1.yaml and theirs/j.yaml"):
        resolve_cell("janet", user_spec_dirs(["mine", "theirs"]))
    with pytest.raises(UsageError, match=r"--cells: 'mine/janet-v1.yaml' and 'theirs/j.yaml' are both named 'janet'"):
        resolve_cells(["mine/janet-v1.yaml", "theirs/j.yaml"], [])
    with pytest.raises(UsageError, match=r"--specs-dir nowhere: folder not found"):
        user_spec_dirs(["nowhere"])


def test_list_shows_a_folder_of_user_specs_and_refuses_duplicates(specs, capsys):
    assert main(["list", "--specs-dir", "mine"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(row.startswith("janet ") and "vanilla" in row for row in rows)
    assert any(row.startswith("nog ") for row in rows)
    (specs / "theirs").mkdir()
    (specs / "theirs" / "j.yaml").write_text(OTHER_JANET)
    assert main(["list", "--specs-dir", "mine", "--specs-dir", "theirs"]) == 2
    err = capsys.readouterr().err
    assert "mine/janet-v1.yaml" in err and "theirs/j.yaml" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_ROOT / "jsb-chorales").is_dir(), reason="../shared/data missing")
def test_bench_stores_and_reports_a_user_spec_under_its_name(specs):
    assert main(["bench", "--tasks", "jsb", "--cells", "mine/janet-v1.yaml,vanilla", "--profile", "smoke",
                 "--trials", "1", "--workers", "0", "--no-estimate", "--out", "runs", "--report-dir", "reports",
                 "--data-dir", str(DATA_ROOT)]) == 0
    storage = open_storage(default_storage_url(specs / "runs"))
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(storage)) == ["smoke/jsb/janet",
                                                                                     "smoke/jsb/vanilla"]
    report = (specs / "reports" / "smoke.md").read_text()
    assert "| janet " in report and "janet-v1.yaml |" not in report and "| mine/" not in report
    # the same cell by name from its folder resumes the same study
    assert main(["bench", "--tasks", "jsb", "--cells", "janet,vanilla", "--specs-dir", "mine", "--profile", "smoke",
                 "--trials", "1", "--workers", "0", "--no-estimate", "--out", "runs", "--no-report",
                 "--data-dir", str(DATA_ROOT)]) == 0
