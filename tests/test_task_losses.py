"""Every task's loss and score over a padded batch, by value: padding contributes nothing, the loss is the
mean over the batch's sequences and the score's (numerator, denominator) add up over sequences."""

from __future__ import annotations

import pytest
import torch

from cellc.tasks.base import Sequence
from cellc.tasks.iam import IamOnline, LineTarget
from cellc.tasks.jsb import JSBChorales
from cellc.tasks.timit import Timit


def _jsb(g):
    task = JSBChorales()
    seqs = [Sequence(torch.rand(n, 88, generator=g).round(), torch.rand(n, 88, generator=g).round()) for n in (5, 2)]
    return task, seqs, 88


def _timit(g):
    task = Timit()
    seqs = [Sequence(torch.randn(n, 39, generator=g), torch.randint(0, 61, (n,), generator=g)) for n in (6, 3)]
    return task, seqs, 61


def _iam(g):
    task = IamOnline()
    task.characters = ["a", "b", "c"]
    seqs = [Sequence(torch.randn(7, 4, generator=g), LineTarget(torch.tensor([1, 2, 2]), "abb")),
            Sequence(torch.randn(4, 4, generator=g), LineTarget(torch.tensor([3]), "c"))]
    return task, seqs, 4


@pytest.mark.parametrize("make", [_jsb, _timit, _iam], ids=["jsb", "timit", "iam"])
def test_padded_batch_equals_its_sequences_one_by_one(make):
    g = torch.Generator().manual_seed(0)
    task, seqs, classes = make(g)
    batch = task.collate(seqs)
    T = int(batch.lengths.max())
    outputs = torch.randn(T, len(seqs), classes, generator=g)
    outputs[seqs[1].inputs.shape[0]:, 1] = 1e4  # padding holds garbage: it must not count
    singles = [(task.collate([s]), outputs[:s.inputs.shape[0], k:k + 1]) for k, s in enumerate(seqs)]
    loss = task.loss(outputs, batch)
    expected = sum(task.loss(o, b) for b, o in singles) / len(seqs)
    torch.testing.assert_close(loss, expected)
    numerator, denominator = task.score(outputs, batch)
    parts = [task.score(o, b) for b, o in singles]
    assert numerator == pytest.approx(sum(p[0] for p in parts)) and denominator == sum(p[1] for p in parts)
