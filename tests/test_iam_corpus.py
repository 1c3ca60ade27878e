"""IAM-OnDB readers: stroke XML, CSR transcriptions, t1 split lists, point features."""

from __future__ import annotations

import numpy as np
import pytest

from cellc.data.iam_corpus import (
    LoadReport, PointNormaliser, charset, find_split_dir, load_iam, point_features, read_split_list, read_strokes,
    read_transcription, split_lists_in,
)
from cellc.errors import DataError
from iam_tree import FORMS, build_tree


def test_loads_splits_by_form_lists(tmp_path):
    build_tree(tmp_path)
    report = LoadReport()
    data = load_iam(tmp_path, report=report)
    assert {k: len(v) for k, v in data.items()} == {"train": 3, "valid": 2, "test": 1}
    assert [line.text for line in data["train"]] == ["A MOVE to stop", "Mr. Gaitskell", "from nominating"]
    assert [line.line_id for line in data["valid"]] == ["b02-010-01", "b02-011-01"]
    assert data["test"][0].text == "is to be made"
    assert report.count == 0 and report.missing_forms == {"test": 1}


def test_strokes_and_points(tmp_path):
    build_tree(tmp_path)
    line = load_iam(tmp_path)["train"][0]
    assert len(line.strokes) == 2 and line.n_points == 5
    assert line.strokes[0].points[0].tolist() == [1073.0, 1058.0, 769.05]


def test_point_features(tmp_path):
    build_tree(tmp_path)
    feats = point_features(load_iam(tmp_path)["train"][0])
    expected = [
        [0, 0, 0.0, 0],  # first point of the line
        [-1, 16, 0.01, 0],
        [-2, 16, 0.02, 1],  # last point of stroke 1: the pen lifts
        [30, -30, 0.0, 0],  # pen-up move to stroke 2; its time restarts
        [30, 1, 0.02, 1],
    ]
    np.testing.assert_allclose(feats, expected, atol=1e-5)


def test_point_normaliser_keeps_the_pen_flag():
    rng = np.random.default_rng(0)
    train = [np.column_stack([rng.normal(3, 5, (40, 3)), rng.integers(0, 2, 40)]).astype(np.float32) for _ in range(3)]
    norm = PointNormaliser.fit(train)
    out = np.concatenate([norm(x) for x in train])
    assert np.allclose(out[:, :3].mean(0), 0, atol=1e-5) and np.allclose(out[:, :3].std(0), 1, atol=1e-4)
    assert set(np.unique(out[:, 3])) <= {0.0, 1.0}


def test_charset_from_training_lines(tmp_path):
    build_tree(tmp_path)
    chars = charset(load_iam(tmp_path)["train"])
    assert chars == sorted(set("".join(FORMS["a01-000u"] + FORMS["a01-007"])))
    assert " " in chars and "." in chars


def test_transcription_lines_follow_csr_and_blank_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("OCR:\n\nwrong line\n\nCSR:\n\nfirst line  \nsecond line\n\n")
    assert read_transcription(path) == ["first line", "second line"]


def test_truncated_xml_is_reported_and_skipped(tmp_path):
    build_tree(tmp_path)
    bad = tmp_path / "lineStrokes" / "a01" / "a01-000" / "a01-000u-02.xml"
    bad.write_text(bad.read_text()[:300])
    report = LoadReport()
    data = load_iam(tmp_path, report=report)
    assert len(data["train"]) == 2 and report.count == 1
    assert report.skipped[0][0] == str(bad) and "malformed XML" in report.skipped[0][1]
    assert str(bad) in report.summary() and "1 file(s) skipped" in report.summary()
    with pytest.raises(DataError, match=r"a01-000u-02\.xml: malformed XML"):
        read_strokes(bad)


def test_transcription_without_csr_is_reported(tmp_path):
    build_tree(tmp_path)
    text = tmp_path / "ascii" / "a01" / "a01-007" / "a01-007.txt"
    text.write_text("OCR:\n\nfrom nominating\n")
    report = LoadReport()
    assert len(load_iam(tmp_path, report=report)["train"]) == 2
    assert report.skipped == [(str(text), "no 'CSR:' section")]


def test_missing_split_list_names_file(tmp_path):
    build_tree(tmp_path)
    (tmp_path / "testset_t.txt").unlink()
    with pytest.raises(DataError, match=r"testset_t\.txt: split list not found"):
        load_iam(tmp_path)


def test_split_list_tolerates_whitespace(tmp_path):
    path = tmp_path / "trainset.txt"
    path.write_text("  a01-000u \n\n\tb02-010\r\n")
    assert read_split_list(path) == ["a01-000u", "b02-010"]


def test_shared_t1_lists_parse():
    from pathlib import Path

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "iam-ondb-t1"
    if not shared.is_dir():
        pytest.skip("../shared/data/iam-ondb-t1 not present")
    sizes = {name: len(read_split_list(shared / name)) for name in ("trainset.txt", "testset_f.txt")}
    assert sizes == {"trainset.txt": 775, "testset_f.txt": 544}
    assert all(" " not in form for form in read_split_list(shared / "testset_v.txt"))


def test_missing_layout_names_folder(tmp_path):
    (tmp_path / "trainset.txt").write_text("a\n")
    for name in ("testset_v.txt", "testset_t.txt", "testset_f.txt"):
        (tmp_path / name).write_text("a\n")
    with pytest.raises(DataError, match="lineStrokes: folder not found"):
        load_iam(tmp_path)


def test_split_lists_found_in_root_or_one_below(tmp_path):
    (tmp_path / "lineStrokes").mkdir()
    assert split_lists_in(tmp_path) is None
    assert find_split_dir(tmp_path) == tmp_path  # fallback: the root itself
    nested = tmp_path / "t1"
    nested.mkdir()
    (nested / "trainset.txt").write_text("a01-000u\n")
    assert split_lists_in(tmp_path) == nested == find_split_dir(tmp_path)
    assert find_split_dir(tmp_path, tmp_path / "elsewhere") == tmp_path / "elsewhere"
