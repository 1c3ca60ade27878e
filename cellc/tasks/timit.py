"""TIMIT: framewise phone classification (61 classes), as in the LSTM study.

Data: the LDC TIMIT tree at ``<data root>/timit`` (see :mod:`cellc.data.timit_corpus`),
or, when absent, a generated proxy corpus in the same layout (:mod:`cellc.data.proxy_speech`),
labelled "proxy". Inputs: 39 MFCC-based features per 10 ms frame, normalised with
training-set statistics. Network: one bidirectional recurrent layer and a softmax over 61
phones. Loss: cross-entropy summed over frames, averaged over sequences. Metric: frame
error %; a second column gives the error after the standard 61->39 folding (frames of the
deleted glottal stop "q" are left out of that column).
"""

from __future__ import annotations

import multiprocessing

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cellc.data.features import FeatureConfig, Normaliser, frame_labels, mfcc_features
from cellc.data.proxy_speech import ProxySpeechConfig, generate_speech_proxy
from cellc.data.sphere import read_audio
from cellc.data.timit_corpus import EXPECTED_COUNTS, SPLITS, Utterance, load_splits, read_phn
from cellc.data.timit_phones import PHONES_61, fold_index_table
from cellc.errors import DataError
from cellc.tasks.base import Batch, ClosedForm, Sequence, Task, TaskData
from cellc.tasks.corpus_source import CorpusLocation, locate_corpus


def utterance_features(utt: Utterance, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """(features (T, 39) float32, labels (T,) int64) for one utterance, unnormalised."""
    audio = read_audio(utt.wav)
    if audio.sample_rate != cfg.sample_rate:
        raise DataError(f"{utt.wav}: sample rate {audio.sample_rate} Hz, expected {cfg.sample_rate}")
    features = mfcc_features(audio.samples, cfg)
    if len(features) == 0:
        raise DataError(f"{utt.wav}: shorter than one 25 ms window")
    return features, frame_labels(read_phn(utt.phn, len(audio.samples)), len(features), cfg)


def load_timit_features(root: Path, progress: bool = True) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Normalised features and labels per split (normaliser fitted on train)."""
    cfg = FeatureConfig()
    splits = load_splits(root)
    total = sum(len(v) for v in splits.values())
    raw: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    with tqdm(total=total, desc="timit: features", unit="utt", disable=None if progress else True, leave=False) as bar:
        for name in SPLITS:
            raw[name] = []
            for utt in splits[name]:
                raw[name].append(utterance_features(utt, cfg))
                bar.update(1)
    normalise = Normaliser.fit([f for f, _ in raw["train"]])
    return {name: [(normalise(f), y) for f, y in items] for name, items in raw.items()}


def size_notes(source: str, sizes: dict[str, int]) -> tuple[str, ...]:
    """A real copy whose splits are not the study's sizes: said, not trained on in silence."""
    if source != "real" or sizes == EXPECTED_COUNTS:
        return ()
    found, expected = "/".join(str(sizes[s]) for s in SPLITS), "/".join(str(EXPECTED_COUNTS[s]) for s in SPLITS)
    return (f"TIMIT: {found} utterances (train/valid/test), not the study's {expected}: is the copy complete? "
            "(an utterance needs both its .WAV and its .PHN; `cellc data info --task timit` counts them)",)


def trivial_frame_error(train: list[torch.Tensor], test: list[torch.Tensor]) -> float:
    """Frame error % of the majority training label (ties: the lowest label) on the test frames."""
    counts = torch.bincount(torch.cat(train))
    majority = int(torch.argmax(counts))  # first maximum: deterministic
    labels = torch.cat(test)
    return 100.0 * float((labels != majority).sum()) / max(len(labels), 1)


class Timit(Task):
    name = "timit"
    title = "TIMIT"
    metric_name = "frame error % (61 phones)"
    metric_short = "FER %"
    lower_is_better = True
    bidirectional = True
    input_size = 39
    output_size = len(PHONES_61)
    data_subdir = "timit"
    # Quick profile sizing (epochs; first sized for ~20 min per task on two workers). Measured on the default proxy
    # (192 training utterances, median 198 frames) with the default (compiled) backend, one torch
    # thread, two trials running at once on the 2-core machine: one epoch (80 training utterances
    # + the validation split) takes 0.18 / 0.31 / 1.22 s at hidden 20 / 60 / 200, ~0.43 s averaged
    # over the log-uniform hidden size (E[h] = 78, E[h^2] = 8600). Worst case, every trial running
    # all epochs: 9 cells x 16 trials x 40 epochs x 0.43 s / 2 workers = 1238 s = 21 min; early
    # stopping usually ends trials sooner. The real corpus (3696 utterances) costs the same per
    # epoch (80 per epoch) but its validation split is larger.
    # Trials: rebalanced by `cellc plan --trials reports/quick/trials.jsonl.xz --hours 1 --workers 2` (issue 21)
    # from the measured trial times of the 504-trial quick study: the counts per task that decide the most
    # comparisons against vanilla within one hour on two workers (IAM 12, JSB 105, TIMIT 41 trials per cell).
    profile_overrides = {"quick": {"trials": 41, "max_epochs": 40}}
    secondary_metrics: ClassVar[dict[str, str]] = {"FER39 %": "frame error % after folding 61 -> 39 phones"}
    trivial_predictor = "the majority frame label of the training split"
    # cellc's choice, stated in the report: frame error is compared to whole points in practice.
    equivalence_margin = 1.0
    equivalence_reason = "1 point of frame error (cellc's choice: a smaller shift is not one a user would act on)"

    def trivial_score(self, data: TaskData) -> float:
        """Frame error % on the test split of always predicting the training split's most frequent phone."""
        return trivial_frame_error([s.targets for s in data.train], [s.targets for s in data.test])

    def __init__(
        self, data_dir: str | Path | None = None, auto_generate: bool = True, proxy_config: ProxySpeechConfig | None = None
    ) -> None:
        """``auto_generate``: write the default proxy when no corpus is found (else DataError);
        ``proxy_config``: the size of that proxy (default: sized for the quick profile)."""
        super().__init__(data_dir)
        self.auto_generate = auto_generate
        self.proxy_config = proxy_config or ProxySpeechConfig()
        self._fold = torch.tensor(fold_index_table(), dtype=torch.int64)

    def locate(self) -> CorpusLocation:
        return locate_corpus(
            "timit", self.data_dir, self.data_subdir,
            lambda target: generate_speech_proxy(target, self.proxy_config),
            auto_generate=self.auto_generate,
        )

    def load(self) -> TaskData:
        where = self.locate()
        # a bar only from the main process: workers (calibration, trials) share the terminal with the bench's bar
        data = load_timit_features(where.root, progress=multiprocessing.parent_process() is None)
        to_seq = lambda f, y: Sequence(inputs=torch.from_numpy(f), targets=torch.from_numpy(y))  # noqa: E731
        return TaskData(
            train=[to_seq(f, y) for f, y in data["train"]],
            valid=[to_seq(f, y) for f, y in data["valid"]],
            test=[to_seq(f, y) for f, y in data["test"]],
            source=where.source,
            location=str(where.root),
            notes=size_notes(where.source, {name: len(items) for name, items in data.items()}),
        )

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        per_frame = F.cross_entropy(outputs.flatten(0, 1), batch.targets.flatten(), reduction="none")
        return (per_frame * batch.mask.flatten()).sum() / batch.size

    def loss_and_gradient(self, outputs: torch.Tensor, batch: Batch) -> ClosedForm:
        """Softmax cross-entropy summed over frames; its gradient is softmax(outputs) - one_hot(targets)."""
        flat, targets = outputs.flatten(0, 1), batch.targets.flatten()
        loss = F.cross_entropy(flat, targets, reduction="sum")
        gradient = torch.softmax(flat, 1)
        gradient[torch.arange(len(targets), device=targets.device), targets] -= 1.0
        return ClosedForm(loss, gradient.view_as(outputs))

    def score(self, outputs: torch.Tensor, batch: Batch) -> tuple[float, float]:
        wrong = (outputs.argmax(-1) != batch.targets) & batch.mask
        return 100.0 * float(wrong.sum()), float(batch.mask.sum())

    def secondary_scores(self, outputs: torch.Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        """Folded error as (numerator, denominator), summed over batches like :meth:`score`."""
        fold = self._fold.to(outputs.device)  # 61 numbers; a no-op on the CPU
        predicted = fold[outputs.argmax(-1)]
        truth = fold[batch.targets]
        counted = batch.mask & (truth >= 0)
        wrong = (predicted != truth) & counted
        return {"FER39 %": (100.0 * float(wrong.sum()), float(counted.sum()))}
