"""JSB Chorales: polyphonic music prediction (Boulanger-Lewandowski et al. 2012 split).

Data: ``<data root>/jsb-chorales/`` holding ``jsb-chorales-quarter.json``
(``{"train": [...], "valid": [...], "test": [...]}``, each piece a list of time steps, each time
step a list of sounding MIDI pitches 21..108) or the original ``jsb-chorales-quarter.pkl``
(same structure, time steps are tuples of numpy ints; read with a restricted unpickler).
When no data directory is found and music21 is installed, the data set is rebuilt from the
chorales shipped with music21 (:mod:`cellc.data.jsb_music21`) and labelled
"rebuilt from music21".

Network: one unidirectional recurrent layer and 88 sigmoid outputs predicting the next frame
from the current one. Loss: binary cross-entropy summed over the 88 units and over time,
averaged over the sequences of a batch. Metric: negative log-likelihood (nats) per time step,
summed over the 88 units, averaged over all predicted frames of a split (the number papers
report: 8.4-8.7 for LSTMs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cellc.data import jsb_music21
from cellc.data.jsb_corpus import (JSON_FILE, LOWEST_PITCH, PICKLE_FILE, SPLITS, UNITS,  # noqa: F401 - the task's
                                   piano_roll, read_pieces, sequences_from_pieces)  # file format, re-exported
from cellc.errors import DataError, short_path
from cellc.tasks.base import Batch, ClosedForm, Task, TaskData, explicit_data_root, resolve_data_root

# A unit never (or always) on in training would give log(0) on a test frame that differs: clip.
FREQUENCY_FLOOR = 1e-6


def trivial_nll(train: list[torch.Tensor], test: list[torch.Tensor]) -> float:
    """Mean NLL per frame (summed over units) of independent Bernoulli units at their training frequencies."""
    frames = torch.cat(train).double()
    p = frames.mean(0).clamp(FREQUENCY_FLOOR, 1 - FREQUENCY_FLOOR)
    targets = torch.cat(test).double()
    nll = -(targets * p.log() + (1 - targets) * (1 - p).log()).sum(-1)
    return float(nll.mean())


class JSBChorales(Task):
    name = "jsb"
    title = "JSB Chorales"
    metric_name = "NLL per time step (nats, summed over the 88 units)"
    metric_short = "NLL"
    lower_is_better = True
    bidirectional = False
    input_size = UNITS
    output_size = UNITS
    data_subdir = "jsb-chorales"
    # Quick profile sizing (epochs; first sized for ~20 min per task on two workers). Measured with the default
    # (compiled) backend, one torch thread, two trials running at once on the 2-core machine:
    # one epoch (80 training pieces + the validation split) takes 0.10 / 0.13 / 0.34 s at hidden
    # 20 / 60 / 200, ~0.16 s averaged over the log-uniform hidden size (E[h] = 78, E[h^2] = 8600).
    # Worst case, every trial running all epochs: 9 cells x 30 trials x 50 epochs x 0.16 s / 2
    # workers = 1080 s = 18 min; early stopping usually ends trials sooner.
    # Trials: rebalanced by `cellc plan --trials reports/quick/trials.jsonl.xz --hours 1 --workers 2` (issue 21)
    # from the measured trial times of the 504-trial quick study: the counts per task that decide the most
    # comparisons against vanilla within one hour on two workers (IAM 12, JSB 105, TIMIT 41 trials per cell).
    profile_overrides = {"quick": {"trials": 105, "max_epochs": 50}}
    trivial_predictor = "independent per-unit frequencies of the training frames"
    # Published LSTM results on this split differ in the first decimal (8.38-8.7 nats, odyssey.md):
    # a shift under 0.1 nat is below what papers resolve.
    equivalence_margin = 0.1
    equivalence_reason = "0.1 nat: published LSTM results on this split are resolved to ~0.1 nat (8.38-8.7)"

    def trivial_score(self, data: TaskData) -> float:
        """NLL per test frame of predicting every unit with its training frequency, independently of the past."""
        return trivial_nll([s.targets for s in data.train], [s.targets for s in data.test])

    def load(self) -> TaskData:
        root, looked = resolve_data_root(self.data_dir, self.data_subdir)
        if root is None:
            return self._rebuild_or_fail(looked)
        directory = root / self.data_subdir
        for filename in (JSON_FILE, PICKLE_FILE):
            path = directory / filename
            if path.is_file():
                splits = sequences_from_pieces(read_pieces(path), short_path(path))
                return TaskData(**splits, source="real", location=str(path))
        raise DataError(
            f"{short_path(directory)}: contains neither {JSON_FILE} nor {PICKLE_FILE}"
        )

    def _rebuild_or_fail(self, looked: list[str]) -> TaskData:
        named = explicit_data_root(self.data_dir)
        if named is not None:  # the user named the folder: say what is wrong with it, as the other tasks do
            root, setting = named
            if not root.is_dir():
                raise DataError(f"jsb: {setting} {root}: folder not found. Check the path")
            raise DataError(f"jsb: {setting} {root}: no {self.data_subdir}/{JSON_FILE} (or {PICKLE_FILE}) in that "
                            f"folder. Put the JSB Chorales there, or point {setting} at the folder holding "
                            f"{self.data_subdir}/")
        if jsb_music21.available():
            splits, location = jsb_music21.load_or_rebuild()
            return TaskData(**splits, source=jsb_music21.SOURCE_LABEL, location=location)
        raise DataError(
            f"jsb: JSB Chorales data not found; looked in: {'; '.join(looked)}. To fix: set --data-dir or "
            f"CELLC_DATA_DIR to a folder holding jsb-chorales/{JSON_FILE} (or {PICKLE_FILE}), or "
            "`pip install music21` to rebuild it from the Bach chorales shipped with music21"
        )

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        per_frame = F.binary_cross_entropy_with_logits(outputs, batch.targets, reduction="none").sum(-1)
        return (per_frame * batch.mask).sum() / batch.size

    def loss_and_gradient(self, outputs: torch.Tensor, batch: Batch) -> ClosedForm:
        """Sigmoid cross-entropy summed over frames and units; its gradient is sigmoid(outputs) - targets.
        The metric is the loss per frame."""
        loss = F.binary_cross_entropy_with_logits(outputs, batch.targets, reduction="sum")
        return ClosedForm(loss, torch.sigmoid(outputs).sub_(batch.targets), (float(loss), float(outputs.shape[0])))

    def score(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        per_frame = F.binary_cross_entropy_with_logits(outputs, batch.targets, reduction="none").sum(-1)
        return float((per_frame * batch.mask).sum()), float(batch.lengths.sum())
