"""One message shape for missing data, whichever the task: the setting, the folder, what is wrong."""

from __future__ import annotations

import pytest

from cellc.errors import DataError
from cellc.tasks import get_task, task_classes


@pytest.mark.parametrize("task", sorted(task_classes()))
def test_a_missing_data_dir_is_named_alike_for_every_task(tmp_path, task):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataError) as caught:
        get_task(task, missing).load()
    text = str(caught.value)
    assert text.startswith(f"{task}: --data-dir {missing}: folder not found. Check the path")
    assert "set --data-dir" not in text  # it was set
    assert not missing.exists()


@pytest.mark.parametrize("setting", ["--data-dir", "$CELLC_DATA_DIR"])
def test_jsb_in_a_named_folder_without_it_says_what_is_missing_there(tmp_path, monkeypatch, setting):
    if setting == "--data-dir":
        task = get_task("jsb", tmp_path)
    else:
        monkeypatch.setenv("CELLC_DATA_DIR", str(tmp_path))
        task = get_task("jsb", None)
    with pytest.raises(DataError) as caught:
        task.load()
    text = str(caught.value)
    assert text.startswith(f"jsb: {setting} {tmp_path}: no jsb-chorales/jsb-chorales-quarter.json")
    assert "set --data-dir" not in text
