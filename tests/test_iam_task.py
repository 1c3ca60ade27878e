"""The IAM Online task: loading, per-corpus character set, CTC loss and CER scoring."""

from __future__ import annotations

import pytest
import torch

import cellc
from cellc.data.proxy_handwriting import ProxyHandwritingConfig
from cellc.errors import DataError
from cellc.tasks.base import Sequence
from cellc.tasks.ctc import character_error_rate
from cellc.tasks.iam import IamOnline, LineTarget
from iam_tree import build_tree


def test_real_layout_with_lists_beside_the_corpus(tmp_path):
    build_tree(tmp_path / "iam-ondb")
    task = IamOnline(tmp_path)
    data = task.load()
    assert data.source == "real" and data.sizes() == {"train": 3, "valid": 2, "test": 1}
    assert task.output_size == len(task.characters) + 1 == len(set("A MOVE to stopMr. Gaitskellfrom nominating")) + 1
    seq = data.train[0]
    assert seq.inputs.shape == (5, 4) and seq.targets.text == "A MOVE to stop"
    assert "".join(task.characters[i - 1] for i in seq.targets.labels.tolist()) == "A MOVE to stop"
    # characters never seen in training are dropped from the CTC target, kept in the text
    valid_text = data.valid[0].targets.text
    assert len(data.valid[0].targets.labels) == sum(c in task.characters for c in valid_text)


def test_what_the_load_skipped_is_in_the_datas_notes(tmp_path):
    root = build_tree(tmp_path / "iam-ondb")
    broken = next((root / "lineStrokes").rglob("a01-000u-02.xml"))  # train keeps its other lines
    broken.write_text("<not xml")
    data = IamOnline(tmp_path).load()
    assert any("1 file(s) skipped" in n and broken.name in n for n in data.notes), data.notes
    assert any("form(s) of the" in n and "no files here" in n for n in data.notes), data.notes  # z99-999


def test_lists_in_a_sibling_t1_folder(tmp_path):
    build_tree(tmp_path / "iam-ondb")
    (tmp_path / "iam-ondb-t1").mkdir()
    for name in ("trainset.txt", "testset_v.txt", "testset_t.txt", "testset_f.txt"):
        (tmp_path / "iam-ondb" / name).rename(tmp_path / "iam-ondb-t1" / name)
    assert IamOnline(tmp_path).load().sizes() == {"train": 3, "valid": 2, "test": 1}


def test_score_is_character_errors_of_best_path():
    task = IamOnline()
    task.characters = ["a", "b", "c"]
    seqs = [Sequence(torch.zeros(4, 4), LineTarget(torch.tensor([1, 2]), "ab")),
            Sequence(torch.zeros(3, 4), LineTarget(torch.tensor([3]), "cd"))]
    batch = task.collate(seqs)
    frames = torch.tensor([[1, 3], [0, 3], [2, 0], [2, 0]])  # "ab" and "c"
    outputs = torch.nn.functional.one_hot(frames, 4).float()
    assert task.decode(outputs, batch.lengths) == ["ab", "c"]
    assert task.score(outputs, batch) == (100.0, 4.0)  # one deletion ("d") over 4 characters
    assert batch.targets.label_lengths.tolist() == [2, 1]
    assert torch.isfinite(task.loss(outputs, batch))


def test_score_is_the_shared_cer_summed_over_batches():
    task = IamOnline()
    task.characters = ["a", "b", "c"]
    seqs = [Sequence(torch.zeros(5, 4), LineTarget(torch.tensor([1]), "a")),
            Sequence(torch.zeros(5, 4), LineTarget(torch.tensor([2, 2]), "bb"))]
    batch = task.collate(seqs)
    frames = torch.tensor([[1, 3], [0, 3], [2, 0], [0, 3], [1, 0]])  # "aba" (2 insertions), "cc" (2 substitutions)
    outputs = torch.nn.functional.one_hot(frames, 4).float()
    hypotheses = task.decode(outputs, batch.lengths)
    assert hypotheses == ["aba", "cc"]
    numerator, denominator = task.score(outputs, batch)
    assert (numerator, denominator) == (400.0, 3.0)
    assert numerator / denominator == pytest.approx(character_error_rate(hypotheses, ["a", "bb"]))


def test_proxy_and_a_training_step(tmp_path):
    pytest.importorskip("HersheyFonts")
    tiny = ProxyHandwritingConfig(train_writers=2, valid_writers=1, test_writers=1, forms_per_writer=1, lines_per_form=2)
    task = IamOnline(tmp_path, proxy_config=tiny)
    data = task.load()
    assert data.source == "proxy" and data.sizes() == {"train": 4, "valid": 2, "test": 2}
    network = task.build_network(cellc.build("vanilla"), 8)
    batch = task.collate(data.train[:2])
    outputs = network(batch.inputs, batch.lengths)
    assert outputs.shape[-1] == task.output_size
    task.loss(outputs, batch).backward()
    numerator, denominator = task.score(outputs.detach(), batch)
    assert denominator == sum(len(s.targets.text) for s in data.train[:2]) and numerator >= 0


def test_mistyped_data_dir_is_an_error_not_a_new_proxy(tmp_path):
    with pytest.raises(DataError, match=r"--data-dir .*typo: folder not found.*cellc data prepare --task iam --proxy"):
        IamOnline(tmp_path / "typo").load()
    assert not (tmp_path / "typo").exists()
