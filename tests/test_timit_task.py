"""The TIMIT task: real layout and proxy sources, features, loss, frame error and folded error."""

from __future__ import annotations

import pytest
import torch

import cellc
from cellc.data.proxy_speech import ProxySpeechConfig
from cellc.data.timit_phones import PHONE_INDEX
from cellc.errors import DataError
from cellc.tasks import get_task
from cellc.tasks.base import Sequence
from cellc.tasks.timit import Timit
from timit_tree import build_tree


def test_real_layout_under_data_dir(tmp_path):
    build_tree(tmp_path / "timit")
    task = Timit(tmp_path)
    data = task.load()
    assert data.source == "real" and data.sizes() == {"train": 4, "valid": 2, "test": 2}
    seq = data.train[0]
    assert seq.inputs.shape == (18, 39) and seq.inputs.dtype == torch.float32
    assert seq.targets.tolist()[:5] == [PHONE_INDEX["h#"]] * 4 + [PHONE_INDEX["iy"]]
    stacked = torch.cat([s.inputs for s in data.train])
    assert torch.allclose(stacked.mean(0), torch.zeros(39), atol=1e-4)  # normalised on train


def test_discovered_by_name(tmp_path):
    assert isinstance(get_task("timit", tmp_path), Timit)


def test_no_corpus_and_no_generation_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="cellc data prepare --task timit --proxy"):
        Timit(tmp_path, auto_generate=False).load()


def test_mistyped_data_dir_is_an_error_not_a_new_proxy(tmp_path, monkeypatch):
    typo = tmp_path / "dta"
    with pytest.raises(DataError, match=r"--data-dir .*dta: folder not found.*cellc data prepare --task timit --proxy"):
        Timit(typo).load()
    monkeypatch.setenv("CELLC_DATA_DIR", str(typo))
    with pytest.raises(DataError, match=r"\$CELLC_DATA_DIR .*dta: folder not found"):
        Timit().load()
    assert not typo.exists()


def test_generates_proxy_under_data_dir_when_absent(tmp_path):
    pytest.importorskip("espeakng_loader")
    tiny = ProxySpeechConfig(train_speakers=2, valid_speakers=1, test_speakers=1, sentences_per_speaker=2)
    data = Timit(tmp_path, proxy_config=tiny).load()
    assert data.source == "proxy" and data.location == str(tmp_path / "timit-proxy")
    assert data.sizes() == {"train": 4, "valid": 2, "test": 2}
    again = Timit(tmp_path, auto_generate=False).load()  # found, not regenerated
    assert again.source == "proxy" and torch.equal(again.train[0].inputs, data.train[0].inputs)


def test_loss_score_and_folded_score():
    task = Timit()
    targets = [torch.tensor([PHONE_INDEX[p] for p in ("h#", "ao", "zh")]), torch.tensor([PHONE_INDEX["q"], PHONE_INDEX["iy"]])]
    batch = task.collate([Sequence(torch.zeros(len(t), 39), t) for t in targets])
    predicted = torch.tensor([[PHONE_INDEX["pau"], PHONE_INDEX["iy"]], [PHONE_INDEX["aa"], PHONE_INDEX["iy"]], [PHONE_INDEX["sh"], 0]])
    outputs = torch.nn.functional.one_hot(predicted, 61).float() * 10
    # 61 classes: pau!=h#, aa!=ao, sh!=zh, iy!=q wrong; iy right -> 4 of 5 frames wrong
    assert task.score(outputs, batch) == (400.0, 5.0)
    # folded: pau=h#=sil, aa=ao, sh=zh all right; the q frame is left out; iy right -> 0 of 4
    assert task.secondary_scores(outputs, batch) == {"FER39 %": (0.0, 4.0)}
    loss = task.loss(outputs, batch)
    assert loss.item() > 0 and loss.ndim == 0


def test_training_step_with_a_compiled_cell(tmp_path):
    build_tree(tmp_path / "timit")
    task = Timit(tmp_path)
    data = task.load()
    network = task.build_network(cellc.build("vanilla"), 8)
    batch = task.collate(data.train[:2])
    loss = task.loss(network(batch.inputs, batch.lengths), batch)
    loss.backward()
    assert all(p.grad is not None for p in network.parameters())
    assert network(batch.inputs, batch.lengths).shape == (18, 2, 61)
