"""CTC pieces: best-path decoding, edit distance and CER on hand-made cases; a toy CTC task learned."""

from __future__ import annotations

import math

import pytest
import torch

import cellc
from cellc.tasks.base import RecurrentNetwork
from cellc.tasks.ctc import BLANK, best_path, character_error_rate, character_errors, ctc_loss, edit_distance


def one_hot_outputs(frames: list[list[int]], classes: int = 5) -> torch.Tensor:
    """(T, B, classes) scores whose argmax per frame is the given class."""
    T = max(len(f) for f in frames)
    out = torch.zeros(T, len(frames), classes)
    for b, seq in enumerate(frames):
        for t, c in enumerate(seq):
            out[t, b, c] = 1.0
    return out


def test_best_path_merges_repeats_and_drops_blanks():
    outputs = one_hot_outputs([[0, 1, 1, 0, 1, 2, 2, 0], [3, 0, 3, 3, 0, 0, 0, 0]])
    assert best_path(outputs, torch.tensor([8, 4])) == [[1, 1, 2], [3, 3]]


def test_best_path_respects_lengths():
    outputs = one_hot_outputs([[1, 2, 3, 4]])
    assert best_path(outputs, torch.tensor([2])) == [[1, 2]]
    assert best_path(one_hot_outputs([[BLANK] * 3]), torch.tensor([3])) == [[]]


@pytest.mark.parametrize(
    "a, b, distance",
    [("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("abc", "abc", 0),
     ([1, 2, 3], [1, 3], 1), ("ab", "ba", 2)],
)
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance == edit_distance(b, a)


def test_character_error_rate():
    # 1 substitution + 1 deletion over 7 reference characters
    assert character_error_rate(["abxd", "ef"], ["abcd", "efg"]) == pytest.approx(100 * 2 / 7)
    assert character_error_rate(["hello"], ["hello"]) == 0.0
    assert character_error_rate(["hello world"], ["hello"]) == pytest.approx(120.0)  # insertions count
    assert character_errors(["abxd", "ef"], ["abcd", "efg"]) == (2, 7)  # the parts tasks sum over batches
    with pytest.raises(ValueError):
        character_errors(["a"], ["a", "b"])


def test_ctc_loss_is_minus_log_probability_of_the_only_path():
    # T=1, one label: the only alignment emits the label, so loss = -log p(label)
    outputs = torch.log(torch.tensor([[[0.2, 0.7, 0.1]]]))
    loss = ctc_loss(outputs, torch.tensor([1]), torch.tensor([1]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.7), rel=1e-5)


def toy_batch(generator: torch.Generator, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symbols 1..3 shown as one-hot runs of 2-3 frames with 1-2 gap frames between; target = the symbols."""
    sequences, targets = [], []
    for _ in range(batch):
        labels = torch.randint(1, 4, (int(torch.randint(3, 6, (1,), generator=generator)),), generator=generator)
        frames = []
        for label in labels.tolist():
            frames += [label] * int(torch.randint(2, 4, (1,), generator=generator))
            frames += [0] * int(torch.randint(1, 3, (1,), generator=generator))
        sequences.append(torch.nn.functional.one_hot(torch.tensor(frames), 4).float())
        targets.append(labels)
    lengths = torch.tensor([len(s) for s in sequences])
    return torch.nn.utils.rnn.pad_sequence(sequences), lengths, torch.cat(targets), torch.tensor([len(t) for t in targets])


@pytest.mark.slow
def test_small_bidirectional_model_learns_toy_ctc_task():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    network = RecurrentNetwork(cellc.build("vanilla"), input_size=4, hidden_size=12, output_size=4, bidirectional=True)
    optimiser = torch.optim.Adam(network.parameters(), lr=0.03)
    for _ in range(120):
        inputs, lengths, targets, target_lengths = toy_batch(generator)
        loss = ctc_loss(network(inputs, lengths), lengths, targets, target_lengths) / len(lengths)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    inputs, lengths, targets, target_lengths = toy_batch(torch.Generator().manual_seed(99), batch=64)
    with torch.no_grad():
        decoded = best_path(network(inputs, lengths), lengths)
    references = [t.tolist() for t in torch.split(targets, target_lengths.tolist())]
    assert character_error_rate(decoded, references) < 5.0
