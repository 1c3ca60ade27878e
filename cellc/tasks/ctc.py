"""Connectionist temporal classification: loss, best-path decoding, edit distance, CER.

Class 0 is the CTC blank; labels 1..K are the characters. Outputs are pre-activation,
time-major (T, B, K+1) as :class:`cellc.tasks.base.RecurrentNetwork` returns them.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch
import torch.nn.functional as F

BLANK = 0


def ctc_loss(outputs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """CTC negative log-likelihood summed over the batch (divide by B for a per-sequence mean).

    ``targets`` is the concatenation of all label sequences (1-D), ``target_lengths`` their
    lengths. Impossible alignments (more labels than frames allow) give zero loss, not inf,
    so that one such line cannot poison training; they still score as errors.
    """
    log_probs = F.log_softmax(outputs.float(), dim=-1)
    targets = targets.to(log_probs.device)  # labels are kept on the CPU; a no-op there
    return F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=BLANK, reduction="sum", zero_infinity=True)


def best_path(outputs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Greedy decoding: the most likely class per frame, repeats merged, blanks removed."""
    winners = outputs.argmax(dim=-1).T.tolist()  # (B, T)
    decoded: list[list[int]] = []
    for row, n in zip(winners, lengths.tolist()):
        labels, previous = [], BLANK
        for label in row[:n]:
            if label != previous and label != BLANK:
                labels.append(label)
            previous = label
        decoded.append(labels)
    return decoded


def edit_distance(a: Seq, b: Seq) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def character_errors(hypotheses: Seq[Seq], references: Seq[Seq]) -> tuple[int, int]:
    """(total edit distance, total reference length): the CER's parts, which sum over batches."""
    errors = sum(edit_distance(h, r) for h, r in zip(hypotheses, references, strict=True))
    return errors, sum(len(r) for r in references)


def character_error_rate(hypotheses: Seq[Seq], references: Seq[Seq]) -> float:
    """CER % = total edit distance / total reference length x 100."""
    errors, total = character_errors(hypotheses, references)
    return 100.0 * errors / max(total, 1)
