"""Each task's trivial predictor, fitted on the training split, scored on the test split, checked against
scipy / numpy computations of the same predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from cellc.tasks.base import Sequence, TaskData
from cellc.tasks.iam import IamOnline, LineTarget
from cellc.tasks.jsb import JSBChorales, trivial_nll
from cellc.tasks.timit import Timit, trivial_frame_error


def test_jsb_trivial_nll_is_independent_bernoulli_units_at_training_frequencies():
    rng = np.random.default_rng(0)
    train = [torch.from_numpy((rng.random((t, 88)) < 0.1).astype(np.float32)) for t in (30, 50)]
    train[0][:, 3] = 1.0  # a unit always on in training: its frequency is clipped, not log(0)
    test = [torch.from_numpy((rng.random((40, 88)) < 0.1).astype(np.float32))]
    p = np.clip(torch.cat(train).double().numpy().mean(0), 1e-6, 1 - 1e-6)
    y = test[0].numpy()
    expected = -stats.bernoulli.logpmf(y, p).sum(axis=1).mean()
    assert trivial_nll(train, test) == pytest.approx(expected, rel=1e-12)
    data = TaskData([Sequence(inputs=x, targets=x) for x in train], [], [Sequence(inputs=y, targets=y) for y in test],
                    source="real")
    assert JSBChorales().trivial_score(data) == trivial_nll(train, test)


def test_timit_trivial_error_predicts_the_majority_training_label():
    train = [torch.tensor([3, 3, 5, 1, 3]), torch.tensor([5, 5, 3])]  # 3 is the majority (4 of 8)
    test = [torch.tensor([3, 1, 1, 3]), torch.tensor([2, 3])]
    majority = int(stats.mode(torch.cat(train).numpy()).mode)
    expected = 100.0 * np.mean(torch.cat(test).numpy() != majority)
    assert majority == 3 and trivial_frame_error(train, test) == pytest.approx(expected) == 50.0
    data = TaskData([Sequence(torch.zeros(len(t), 39), t) for t in train], [],
                    [Sequence(torch.zeros(len(t), 39), t) for t in test], source="proxy")
    assert Timit(auto_generate=False).trivial_score(data) == 50.0


def test_iam_trivial_output_is_all_blank_one_hundred_percent_cer():
    lines = [Sequence(torch.zeros(5, 4), LineTarget(torch.tensor([1, 2]), "ab")),
             Sequence(torch.zeros(7, 4), LineTarget(torch.tensor([3]), "hello"))]
    assert IamOnline(auto_generate=False).trivial_score(TaskData(lines, [], lines, source="proxy")) == 100.0
