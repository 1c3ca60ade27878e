"""JSB Chorales loading: real files, restricted unpickler, and clear errors for missing / corrupt data."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from cellc.errors import DataError
from cellc.tasks import get_task, task_classes
from cellc.tasks.jsb import JSON_FILE, PICKLE_FILE, UNITS
from cellc.tasks.safe_pickle import safe_load_pickle

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA_ROOT / "jsb-chorales").is_dir(), reason="../shared/data missing")


def write_json(root: Path, payload) -> Path:
    (root / "jsb-chorales").mkdir(parents=True)
    path = root / "jsb-chorales" / JSON_FILE
    path.write_text(json.dumps(payload))
    return path


TINY = {"train": [[[60, 64], [62], [], [67]]], "valid": [[[48], [50]]], "test": [[[72, 76], [74]]]}


def test_jsb_is_discovered():
    assert "jsb" in task_classes()


@needs_data
def test_real_split_sizes_and_frames():
    data = get_task("jsb", DATA_ROOT).load()
    assert data.sizes() == {"train": 229, "valid": 76, "test": 77}
    assert data.source == "real"
    # 13807 / 4602 / 4725 frames per split; a piece of T frames yields T-1 next-step predictions.
    assert sum(len(s) for s in data.train) == 13807 - 229
    assert sum(len(s) for s in data.test) == 4725 - 77
    first = data.train[0]
    assert first.inputs.shape[1] == UNITS and torch.equal(first.inputs[1:], first.targets[:-1])


@needs_data
def test_pickle_matches_json(tmp_path):
    (tmp_path / "jsb-chorales").mkdir()
    (tmp_path / "jsb-chorales" / PICKLE_FILE).write_bytes((DATA_ROOT / "jsb-chorales" / PICKLE_FILE).read_bytes())
    from_pickle = get_task("jsb", tmp_path).load()
    from_json = get_task("jsb", DATA_ROOT).load()
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(from_pickle.valid, from_json.valid))
    assert from_pickle.location.endswith(PICKLE_FILE)


def test_piano_roll_encoding(tmp_path):
    data = get_task("jsb", write_json(tmp_path, TINY).parents[1]).load()
    piece = data.train[0]
    assert piece.inputs.shape == (3, UNITS)
    assert piece.inputs[0].nonzero().flatten().tolist() == [60 - 21, 64 - 21]
    assert piece.targets[1].sum() == 0  # the empty time step (a rest)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_code():
    with pytest.raises(DataError, match="refusing to load global builtins.print"):
        safe_load_pickle("evil.pkl", pickle.dumps({"train": [Evil()]}))


def test_restricted_unpickler_reads_numpy_scalars_without_numpy_calls():
    import numpy as np

    raw = pickle.dumps({"a": [(np.int64(60), np.int32(-3), np.float64(0.5))]}, protocol=2)
    assert safe_load_pickle("x.pkl", raw) == {"a": [(60, -3, 0.5)]}


def test_missing_explicit_data_dir_names_it(tmp_path):
    with pytest.raises(DataError) as err:
        get_task("jsb", tmp_path / "nowhere").load()
    message = str(err.value)
    assert "nowhere" in message and "--data-dir" in message and "folder not found" in message


def test_env_var_is_used(tmp_path, monkeypatch):
    write_json(tmp_path, TINY)
    monkeypatch.setenv("CELLC_DATA_DIR", str(tmp_path))
    assert get_task("jsb").load().sizes() == {"train": 1, "valid": 1, "test": 1}


def test_empty_data_dir_names_expected_files(tmp_path):
    (tmp_path / "jsb-chorales").mkdir()
    with pytest.raises(DataError, match=JSON_FILE):
        get_task("jsb", tmp_path).load()


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "corrupt JSON"),
        (json.dumps({"train": []}), "keys 'train', 'valid' and 'test'"),
        (json.dumps({**TINY, "test": [[[200], [60]]]}), "200 is not a MIDI pitch"),
        (json.dumps({**TINY, "valid": [[[60]]]}), "at least two time steps"),
    ],
)
def test_corrupt_json_names_file_and_problem(tmp_path, content, expected):
    (tmp_path / "jsb-chorales").mkdir()
    (tmp_path / "jsb-chorales" / JSON_FILE).write_text(content)
    with pytest.raises(DataError) as err:
        get_task("jsb", tmp_path).load()
    assert expected in str(err.value) and JSON_FILE in str(err.value)


def test_corrupt_pickle(tmp_path):
    (tmp_path / "jsb-chorales").mkdir()
    (tmp_path / "jsb-chorales" / PICKLE_FILE).write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="not a readable plain-data pickle"):
        get_task("jsb", tmp_path).load()
