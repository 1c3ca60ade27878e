"""The LDC TIMIT tree walker, .PHN reader, the study's splits, and the phone sets."""

from __future__ import annotations

import pytest

from cellc.data.features import FeatureConfig, frame_labels
from cellc.data.timit_corpus import (
    CORE_TEST_SPEAKERS, DEV_SPEAKERS, find_timit_root, load_splits, read_phn, walk_timit,
)
from cellc.data.timit_phones import FOLD_61_TO_39, PHONE_INDEX, PHONES_39, PHONES_61, fold_index_table
from cellc.errors import DataError
from timit_tree import build_tree


@pytest.mark.parametrize("lower", [False, True])
def test_walk_and_split_counts(tmp_path, lower):
    build_tree(tmp_path, lower=lower)
    assert len(walk_timit(tmp_path)) == 14
    splits = load_splits(tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "valid": 2, "test": 2}
    assert all(not u.sentence.startswith("SA") for items in splits.values() for u in items)
    assert {u.speaker for u in splits["valid"]} == {"FAKS0"}
    assert {u.speaker for u in splits["test"]} == {"MDAB0"}
    first = splits["train"][0]
    assert (first.part, first.dialect, first.speaker, first.sentence) == ("TRAIN", "DR1", "FCJF0", "SI1027")


def test_root_may_sit_above_the_tree(tmp_path):
    build_tree(tmp_path / "timit" / "TIMIT")
    assert find_timit_root(tmp_path) == tmp_path / "timit" / "TIMIT"
    assert len(load_splits(tmp_path)["train"]) == 4


def test_missing_tree_names_folder(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: no TRAIN and TEST"):
        walk_timit(tmp_path)


def test_empty_split_is_an_error(tmp_path):
    build_tree(tmp_path)
    for f in (tmp_path / "TEST" / "DR1" / "MDAB0").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="test split"):
        load_splits(tmp_path)


def test_phn_reader_and_frame_labels(tmp_path):
    build_tree(tmp_path)
    segments = read_phn(tmp_path / "TRAIN" / "DR1" / "FCJF0" / "SX127.PHN")
    assert [(s.begin, s.end, s.phone) for s in segments][:2] == [(0, 800, "h#"), (800, 1760, "iy")]
    cfg = FeatureConfig()
    labels = frame_labels(segments, 18, cfg)  # 1 + (3200 - 400) // 160 frames
    names = [PHONES_61[i] for i in labels]
    # frame t's centre is sample 160 t + 200: frames 0-3 are h#, 4-9 iy, 10-13 sh, 14-17 h#
    assert names == ["h#"] * 4 + ["iy"] * 6 + ["sh"] * 4 + ["h#"] * 4


@pytest.mark.parametrize(
    "content, message",
    [("0 100\n", "expected 'begin end phone'"), ("0 x h#\n", "integers"), ("0 100 zz\n", "unknown phone"), ("", "no phone")],
)
def test_phn_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "SX1.PHN"
    path.write_text(content)
    with pytest.raises(DataError, match=f"SX1.PHN.*{message}"):
        read_phn(path)


def test_standard_speaker_lists():
    assert len(DEV_SPEAKERS) == 50 and len(CORE_TEST_SPEAKERS) == 24
    assert not set(DEV_SPEAKERS) & set(CORE_TEST_SPEAKERS)
    # the core test set: two men and one woman from each of the eight dialect regions
    assert sum(s.startswith("M") for s in CORE_TEST_SPEAKERS) == 16


def test_phone_sets_and_folding():
    assert len(PHONES_61) == 61 and len(PHONES_39) == 39
    assert FOLD_61_TO_39["ao"] == "aa" and FOLD_61_TO_39["ix"] == "ih" and FOLD_61_TO_39["q"] is None
    assert {p for p, f in FOLD_61_TO_39.items() if f == "sil"} == {"pcl", "tcl", "kcl", "bcl", "dcl", "gcl", "h#", "pau", "epi"}
    table = fold_index_table()
    assert table[PHONE_INDEX["q"]] == -1
    assert PHONES_39[table[PHONE_INDEX["zh"]]] == "sh"
    assert sorted(set(table) - {-1}) == list(range(39))
