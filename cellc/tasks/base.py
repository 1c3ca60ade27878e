"""The task interface: what the harness needs from a benchmark task.

A task supplies

- its data: train / validation / test lists of :class:`Sequence` plus a label saying where the
  data came from (``"real"``, ``"rebuilt from music21"``, ``"proxy"``, ...), shown wherever a
  number is reported;
- ``input_size`` / ``output_size`` and whether the recurrent layer is ``bidirectional``;
- the network: :meth:`Task.build_network` puts one recurrent layer of a compiled cell and a
  linear output layer together (:class:`RecurrentNetwork`);
- :meth:`Task.loss` (what SGD minimises, for one padded batch) and :meth:`Task.score` (the
  reported metric as a ``(numerator, denominator)`` pair so that it can be summed over batches:
  NLL summed over frames / frames, wrong frames / frames, edit distance / characters, ...);
- ``metric_name`` and ``lower_is_better``;
- optionally ``secondary_metrics`` and :meth:`Task.secondary_scores`: further test-set columns
  (e.g. TIMIT's 39-phone frame error), summed like :meth:`Task.score`, reported but never used
  for early stopping;
- :meth:`Task.trivial_score`: the test metric of the task's trivial predictor, fitted on the
  training split alone (JSB: independent per-unit frequencies; TIMIT: the majority frame label;
  IAM: the all-blank output). A trial that ends no better than it *failed* (see
  :mod:`cellc.analysis.outcomes`); ``trivial_predictor`` says what it is in words;
- ``equivalence_margin`` (in metric units) and ``equivalence_reason``: the smallest difference
  between two cells that matters on this task; the report calls two cells *equivalent* only when a
  two-one-sided test puts their paired shift inside it.

Adding a task touches one module: create ``cellc/tasks/<name>.py`` defining a subclass of
:class:`Task` with a class attribute ``name``; :mod:`cellc.tasks` discovers it by scanning the
package, so nothing else needs editing.

Example::

    class Copy(Task):
        name = "copy"
        title = "Copy task"
        metric_name = "bit error %"
        input_size = output_size = 8
        bidirectional = False
        lower_is_better = True

        def load(self) -> TaskData: ...
        def loss(self, outputs, batch): ...
        def score(self, outputs, batch): ...

Conventions shared by every task:

- Sequences hold CPU float32 ``inputs`` of shape (T, input_size) and task-defined ``targets``
  (a tensor whose first dimension is time for framewise tasks; anything for e.g. CTC, in which
  case override :meth:`Task.collate`).
- Batches are padded time-major: ``inputs`` (T, B, M) with ``lengths`` (B,); the compiled layer
  guarantees that padding never changes a result.
- The data directory is resolved by :func:`resolve_data_root` (``--data-dir``, then the
  ``CELLC_DATA_DIR`` environment variable, then ``../shared/data`` next to a source checkout,
  then the user data dir ``$XDG_DATA_HOME/cellc`` (``~/.local/share/cellc``)); a task reads the
  subdirectory named by its ``data_subdir``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence as Seq

import torch
from torch import nn

from cellc.ir.sizes import default_sizes

DATA_DIR_ENV = "CELLC_DATA_DIR"


@dataclass(frozen=True)
class Sequence:
    """One example: ``inputs`` (T, input_size) float32 and task-defined ``targets``."""

    inputs: torch.Tensor
    targets: Any

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class TaskData:
    """The three splits of a task and where they came from."""

    train: list[Sequence]
    valid: list[Sequence]
    test: list[Sequence]
    source: str  # e.g. "real", "rebuilt from music21", "proxy"; shown next to every number
    location: str = ""  # file or directory the data was read from, for messages and reports
    notes: tuple[str, ...] = ()  # what loading skipped or found amiss: the commands print them

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


@dataclass
class Batch:
    """A padded, time-major batch. ``targets`` is whatever the task's :meth:`Task.collate` made."""

    inputs: torch.Tensor  # (T, B, input_size)
    lengths: torch.Tensor  # (B,) int64, valid steps per sequence
    targets: Any
    mask: torch.Tensor = field(default=None)  # (T, B) bool, True on valid steps

    def __post_init__(self) -> None:
        if self.mask is None:
            # on the inputs' device (the lengths stay on the CPU, where the layers read them)
            steps = torch.arange(self.inputs.shape[0], device=self.inputs.device).unsqueeze(1)
            self.mask = steps < self.lengths.to(self.inputs.device).unsqueeze(0)

    @property
    def size(self) -> int:
        return int(self.inputs.shape[1])


@dataclass(frozen=True)
class ClosedForm:
    """What :meth:`Task.loss_and_gradient` gives: the loss, d loss / d outputs, and :meth:`Task.score`'s
    (numerator, denominator) where it falls out of the loss (None: the trainer calls :meth:`Task.score`)."""

    loss: torch.Tensor
    gradient: torch.Tensor
    score: tuple[float, float] | None = None


class RecurrentNetwork(nn.Module):
    """One recurrent layer of a compiled cell followed by a linear output layer.

    ``forward`` returns pre-activation outputs (T, B, output_size); the task's loss applies the
    output nonlinearity (sigmoid, softmax, CTC's log-softmax) so that it can stay numerically stable.
    """

    def __init__(
        self,
        layer_class: type[nn.Module],
        input_size: int,
        hidden_size: int,
        output_size: int,
        bidirectional: bool,
    ) -> None:
        super().__init__()
        # a cell with values of another size (proj_size) gets cellc.ir.sizes' default for it
        sizes = default_sizes(getattr(layer_class, "size_names", ("hidden_size",)), hidden_size)
        self.recurrent = layer_class(input_size, hidden_size, num_layers=1, bidirectional=bidirectional, **sizes)
        directions = 2 if bidirectional else 1
        self.output = nn.Linear(directions * getattr(self.recurrent, "output_size", hidden_size), output_size)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # A batch of one needs no lengths; passing None lets the layer skip masking work.
        if lengths is not None and inputs.shape[1] == 1:
            lengths = None
        hidden, _state = self.recurrent(inputs, lengths=lengths)
        return self.output(hidden)


class Task(ABC):
    """A benchmark task. Subclasses set the class attributes and implement ``load``, ``loss``, ``score``."""

    name: ClassVar[str]  # CLI name, e.g. "jsb"
    title: ClassVar[str]  # human name, e.g. "JSB Chorales"
    metric_name: ClassVar[str]  # e.g. "NLL per time step (summed over 88 units)"
    metric_short: ClassVar[str] = "metric"  # column header, e.g. "NLL"
    lower_is_better: ClassVar[bool] = True
    bidirectional: ClassVar[bool]
    input_size: ClassVar[int]
    output_size: ClassVar[int]
    data_subdir: ClassVar[str]  # directory below the data root
    # Per profile name, Profile fields this task changes (e.g. {"quick": {"train_subset": 40}}) so
    # that a profile's time budget holds for a costlier task; command-line overrides still win.
    profile_overrides: ClassVar[dict[str, dict[str, Any]]] = {}
    # Extra metrics reported beside the main one: name -> description; see secondary_scores.
    secondary_metrics: ClassVar[dict[str, str]] = {}
    # What the trivial predictor is (see trivial_score), the equivalence margin and why that margin.
    trivial_predictor: ClassVar[str] = ""
    equivalence_margin: ClassVar[float | None] = None
    equivalence_reason: ClassVar[str] = ""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        """``data_dir``: an explicit data root (``--data-dir``); None means the default search."""
        self.data_dir = Path(data_dir) if data_dir is not None else None

    # -- data -------------------------------------------------------------------------------
    @abstractmethod
    def load(self) -> TaskData:
        """Read (and validate) the data; raise :class:`cellc.errors.DataError` when missing or corrupt."""

    # -- network ----------------------------------------------------------------------------
    def build_network(self, layer_class: type[nn.Module], hidden_size: int) -> RecurrentNetwork:
        return RecurrentNetwork(layer_class, self.input_size, hidden_size, self.output_size, self.bidirectional)

    # -- batching ---------------------------------------------------------------------------
    def collate(self, sequences: Seq[Sequence]) -> Batch:
        """Pad framewise sequences into a time-major batch. Override for non-framewise targets."""
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
        inputs = nn.utils.rnn.pad_sequence([s.inputs for s in sequences])
        targets = nn.utils.rnn.pad_sequence([s.targets for s in sequences])
        return Batch(inputs=inputs, lengths=lengths, targets=targets)

    # -- objective and metric ---------------------------------------------------------------
    @abstractmethod
    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Scalar training loss for a batch: summed over time steps, averaged over sequences."""

    @abstractmethod
    def score(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        """The metric's (numerator, denominator) for a batch; the metric is sum(num) / sum(den)."""

    def loss_and_gradient(self, outputs: torch.Tensor, batch: Batch) -> ClosedForm | None:
        """For a batch of ONE whole sequence: :meth:`loss` and its gradient with respect to ``outputs``,
        computed in closed form (no autograd), or None where the task has none (the online trainer then
        differentiates :meth:`loss` by autograd). Tests check each closed form against autograd."""
        return None

    def secondary_scores(self, outputs: torch.Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        """(numerator, denominator) per name in ``secondary_metrics``, summed over batches like :meth:`score`.

        Only reported (test split, best validation epoch), never used for early stopping."""
        return {}

    def trivial_score(self, data: TaskData) -> float | None:
        """The test metric of the trivial predictor fitted on ``data.train`` (None: the task defines none).

        Deterministic for given data: no randomness, no training."""
        return None

    def describe(self) -> dict[str, Any]:
        """Static facts about the task for study metadata and reports."""
        return {
            "name": self.name,
            "title": self.title,
            "metric": self.metric_name,
            "metric_short": self.metric_short,
            "lower_is_better": self.lower_is_better,
            "bidirectional": self.bidirectional,
            "input_size": self.input_size,
            "output_size": self.output_size,
            "secondary_metrics": dict(self.secondary_metrics),
            "trivial_predictor": self.trivial_predictor,
            "equivalence_margin": self.equivalence_margin,
            "equivalence_reason": self.equivalence_reason,
        }


def source_checkout_data_root() -> Path:
    """``../shared/data`` relative to the repository root of a source checkout of cellc."""
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "data"


def user_data_root() -> Path:
    """The per-user data directory (XDG): ``$XDG_DATA_HOME/cellc`` or ``~/.local/share/cellc``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cellc"


def explicit_data_root(explicit: str | Path | None) -> tuple[Path, str] | None:
    """The data root the user named (``--data-dir``, else ``$CELLC_DATA_DIR``) and that setting, or None."""
    if explicit is not None:
        return Path(explicit), "--data-dir"
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env), f"${DATA_DIR_ENV}"
    return None


def candidate_data_roots(explicit: str | Path | None) -> list[tuple[Path, str]]:
    """Data roots to try, in order, each with the setting it came from (for error messages).

    An explicit ``--data-dir`` or ``CELLC_DATA_DIR`` is the only candidate: a user who names a
    directory wants that one, not a silent fallback.
    """
    named = explicit_data_root(explicit)
    if named is not None:
        return [named]
    return [(source_checkout_data_root(), "source checkout"), (user_data_root(), "user data dir")]


def resolve_data_root(explicit: str | Path | None, subdir: str) -> tuple[Path | None, list[str]]:
    """The first data root whose ``subdir`` exists, and the places looked at (for messages)."""
    looked: list[str] = []
    for root, origin in candidate_data_roots(explicit):
        looked.append(f"{root / subdir} ({origin})")
        if (root / subdir).is_dir():
            return root, looked
    return None, looked
