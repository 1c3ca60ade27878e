"""The handwriting proxy: Hershey-font trajectories written in IAM-OnDB's layout."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("HersheyFonts")

from cellc.data.iam_corpus import LoadReport, load_iam, point_features, read_split_list
from cellc.data.proxy_corpus import read_marker
from cellc.data.proxy_handwriting import ProxyHandwritingConfig, generate_handwriting_proxy

TINY = ProxyHandwritingConfig(seed=2, train_writers=2, valid_writers=2, test_writers=1, forms_per_writer=2, lines_per_form=2)


def digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_proxy(tmp_path_factory):
    return generate_handwriting_proxy(tmp_path_factory.mktemp("hand") / "iam-proxy", TINY, progress=False)


def test_loader_reads_the_proxy(tiny_proxy):
    report = LoadReport()
    data = load_iam(tiny_proxy, report=report)
    assert {k: len(v) for k, v in data.items()} == {"train": 8, "valid": 8, "test": 4}
    assert report.count == 0 and not report.missing_forms
    line = data["train"][0]
    assert line.text and len(line.strokes) > 3 and line.n_points > 5 * len(line.text)
    times = np.concatenate([s.points[:, 2] for s in line.strokes])
    assert np.all(np.diff(times) > 0)  # the pen moves forward in time, pen-up moves included
    feats = point_features(line)
    assert feats.shape == (line.n_points, 4) and feats[:, 3].sum() == len(line.strokes)


def test_split_by_writer_with_t1_lists(tiny_proxy):
    marker = read_marker(tiny_proxy)
    assert marker["source"] == "proxy"
    writer_of = marker["writer_of_form"]
    lists = {name: read_split_list(tiny_proxy / name) for name in ("trainset.txt", "testset_v.txt", "testset_t.txt", "testset_f.txt")}
    writers = {name: {writer_of[f] for f in forms} for name, forms in lists.items()}
    assert len(writers["trainset.txt"]) == 2 and len(writers["testset_f.txt"]) == 1
    every = [w for ws in writers.values() for w in ws]
    assert len(every) == len(set(every))  # no writer in two lists
    assert (tiny_proxy / "trainset.txt").read_text().startswith(" ")  # the real lists' stray space


def test_same_seed_same_files(tiny_proxy, tmp_path):
    assert digest(generate_handwriting_proxy(tmp_path / "a", TINY, progress=False)) == digest(tiny_proxy)
    assert digest(generate_handwriting_proxy(tmp_path / "b", TINY.model_copy(update={"seed": 9}), progress=False)) != digest(tiny_proxy)


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    from cellc.errors import DataError

    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(DataError, match="not a cellc proxy corpus"):
        generate_handwriting_proxy(tmp_path, TINY, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "precious"
