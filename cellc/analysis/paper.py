"""The paper's findings (Greff et al. 2017, from ../shared/odyssey.md) and this study's beside them.

Only tasks run on the paper's data are compared (``real`` data, or a corpus rebuilt from the
same source); proxy corpora are not comparable and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellc.analysis.hyperspace import AXES
from cellc.analysis.outcomes import failure_kind
from cellc.analysis.paired import PairedTest
from cellc.analysis.task_analysis import MIN_INTERACTION_SETTINGS, TaskAnalysis, _validation_key

PAPER = "Greff et al. 2017"
PAPER_CELLS = ("nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr")

# The paper's verdicts (its Welch's t-test against V on all trials, p < 0.05; "What the study found").
_SPEECH_HANDWRITING = {"nfg": "worse", "noaf": "worse", "nig": "worse", "nog": "worse", "niaf": "worse",
                       "cifg": "no difference", "np": "no difference", "fgr": "not better"}
PAPER_VERDICTS: dict[str, dict[str, str]] = {
    "timit": _SPEECH_HANDWRITING,
    "iam": _SPEECH_HANDWRITING,
    "jsb": {"nfg": "worse", "noaf": "worse", "nig": "not worse", "nog": "not worse", "niaf": "not worse",
            "cifg": "no difference", "np": "no difference", "fgr": "not better"},
}
# Best single results (odyssey.md marks all three unconfirmed).
PAPER_BEST: dict[str, tuple[float, str]] = {"timit": (29.6, "cifg"), "iam": (9.26, "np"), "jsb": (8.38, "niaf")}
# Other published results on the same data (odyssey.md), set beside this study's best trial of the same
# model: task -> (cell, model, value, source)
PUBLISHED: dict[str, tuple[tuple[str, str, float, str], ...]] = {
    "jsb": (("vanilla", "LSTM", 8.67, "Chung et al. 2014"), ("gru", "GRU", 8.54, "Chung et al. 2014")),
}
SMALL_INTERACTION = 0.05  # "small": under 5 % of the variance (the paper gives no number)


AGREE, DISAGREE, INCONCLUSIVE, UNDETERMINED = "agree", "disagree", "inconclusive", "undetermined"


def agrees(paper: str, ours: str, within_margin: bool = False) -> str | None:
    """Our verdict against the paper's: agree, disagree, or inconclusive (None when not tested).

    Agreement counts only a significant verdict in the paper's direction or a shown equivalence where
    the paper found none (``within_margin``: the equivalence test passed, also beside a significant shift,
    which is then negligible); a disagreement is a significant or equivalence result the paper rules out.
    Our *inconclusive* (neither significant nor shown equivalent) is never read as agreement."""
    if ours in ("not tested", "baseline"):
        return None
    if ours == "inconclusive":
        return INCONCLUSIVE
    if within_margin and paper in ("no difference", "not worse", "not better"):
        return AGREE
    allowed = {
        "worse": {"worse"},
        "better": {"better"},
        "no difference": {"equivalent"},
        "not worse": {"equivalent", "better"},
        "not better": {"equivalent", "worse"},
    }[paper]
    return AGREE if ours in allowed else DISAGREE


DIFFERENT_SETUP = "different search setup"


def mark(agreement: str | bool | None) -> str:
    if agreement is None:
        return UNDETERMINED
    if isinstance(agreement, bool):
        agreement = AGREE if agreement else DISAGREE
    return f"**{agreement}**" if agreement == DISAGREE else agreement


def setup_differences(settings: dict) -> list[str]:
    """How a task's stored settings differ from the paper profile's search (ranges, epochs, subset)."""
    from cellc.harness.profiles import PROFILES

    paper = PROFILES["paper"]
    out = []
    if settings.get("max_epochs") != paper.max_epochs:
        out.append(f"at most {settings.get('max_epochs', '?')} epochs (paper: {paper.max_epochs})")
    if settings.get("train_subset") != paper.train_subset:
        out.append(f"{settings.get('train_subset') or 'all'} training sequences per epoch (paper: all)")
    space = settings.get("space") or {}
    for key, paper_range in paper.space.model_dump().items():
        ours = space.get(key)
        if ours != paper_range:
            shown = "?" if not ours else f"[{ours.get('low', '?'):g}, {ours.get('high', '?'):g}]"
            out.append(f"{key} range {shown} (paper: [{paper_range['low']:g}, {paper_range['high']:g}])")
    return out


def different_setup(rows: list["FindingRow"]) -> list["FindingRow"]:
    """Rows with their agreement replaced by "different search setup (<plain comparison>)" ("-": no comparison)."""
    return [FindingRow(r.finding, r.paper, r.ours,
                       "-" if r.agreement == "-" else f"{DIFFERENT_SETUP} ({mark(r.agreement).strip('*')})")
            for r in rows]


@dataclass(frozen=True)
class FindingRow:
    finding: str
    paper: str
    ours: str
    agreement: str | bool | None  # str for verdicts (see agrees), bool for other facts, None: undetermined


def comparable(task: TaskAnalysis) -> bool:
    """Set beside the paper's findings: the task's real data only (not a proxy, not mixed, not unknown)."""
    return task.task in PAPER_VERDICTS and not task.is_proxy and not task.mixed_sources and task.source != "?"


def verdict_text(test: PairedTest, margin: float | None) -> str:
    """The verdict, and where a significant shift is also shown to lie within the equivalence margin, that it does."""
    if test.significant and test.within_margin:
        return f"{test.verdict}, within ±{margin:g} (TOST)" if margin is not None else f"{test.verdict}, within the margin"
    return test.verdict


def verdict_rows(task: TaskAnalysis) -> list[FindingRow]:
    rows = []
    for cell in PAPER_CELLS:
        test = task.test(cell)
        if test is None:
            continue
        paper = PAPER_VERDICTS[task.task][cell]
        p = "" if test.p_holm is None else f" (Holm p = {test.p_holm:.3g})"
        agreement = agrees(paper, test.verdict, test.within_margin)
        rows.append(FindingRow(f"{cell.upper()} vs V", paper, verdict_text(test, task.facts.margin) + p,
                               "-" if agreement is None else agreement))
    return rows


def _best_by_validation(task: TaskAnalysis, cells: Sequence[str]) -> tuple[Any, str] | None:
    """The usable trial of ``cells`` with the best *validation* score, as a result would be reported (the lowest
    test score would be chosen on the test set itself), and its cell."""
    chosen = [(r, c) for c in cells for r in task.records.get(c, []) if r.finished and failure_kind(r, task.facts) is None]
    if not chosen:
        return None
    return min(chosen, key=lambda item: (_validation_key(item[0], task.facts), item[1], item[0].number))


def best_row(task: TaskAnalysis) -> FindingRow | None:
    if task.task not in PAPER_BEST:
        return None
    value, cell = PAPER_BEST[task.task]
    found = _best_by_validation(task, list(task.records))
    if found is None:
        return None
    best, our_cell = found
    return FindingRow(f"best single result ({task.metric_short}; the best validation trial's test)",
                      f"{value:g} ({cell.upper()}, unconfirmed)", f"{best.test_at_best:.3f} ({our_cell.upper()})", "-")


def published_rows(task: TaskAnalysis) -> list[FindingRow]:
    """Other published results on the task's data beside this study's best trial (by validation) of the same
    model: e.g. JSB's LSTM and GRU of Chung et al. 2014 beside vanilla's and gru's."""
    rows = []
    for cell, model, value, source in PUBLISHED.get(task.task, ()):
        found = _best_by_validation(task, [cell])
        if found is not None:
            rows.append(FindingRow(f"best {cell} ({task.metric_short}; its best validation trial's test)",
                                   f"{value:g} ({model}, {source})", f"{found[0].test_at_best:.3f}", "-"))
    return rows


def _curve_end_to_end(task: TaskAnalysis, dim: int) -> float | None:
    """Predicted metric at the top of an axis minus at the bottom (marginal over the others)."""
    if not task.metric_marginals:
        return None
    return task.metric_marginals[dim].end_to_end


def _share(task: TaskAnalysis, dims: tuple[int, ...]) -> tuple[float, float, float]:
    """(estimate, interval low, interval high) of a component's share of variance."""
    assert task.importance is not None
    estimate = next(c.fraction for c in task.importance.components if c.dims == dims)
    interval = task.interval(dims)
    return (estimate, estimate, estimate) if interval is None else (estimate, interval.low, interval.high)


def _pct(share: tuple[float, float, float], digits: int = 0) -> str:
    return f"{100 * share[0]:.{digits}f} % [{100 * share[1]:.{digits}f}, {100 * share[2]:.{digits}f}]"


def below(share: tuple[float, float, float], threshold: float) -> bool | None:
    """The share is below the threshold (True), above it (False), or its interval straddles it (None)."""
    if share[2] < threshold:
        return True
    if share[1] > threshold:
        return False
    return None


def ranking(task: TaskAnalysis) -> tuple[list[str], bool]:
    """Main effects by estimate, and whether the intervals separate the first from the second."""
    assert task.importance is not None
    shares = {AXES[c.dims[0]].key: _share(task, c.dims) for c in task.importance.main}
    order = sorted(shares, key=lambda k: -shares[k][0])
    separated = len(order) < 2 or shares[order[0]][1] > shares[order[1]][2]
    return order, separated


def importance_rows(task: TaskAnalysis) -> list[FindingRow]:
    """The paper's importance findings beside ours; each compared only where the bootstrap intervals decide."""
    result = task.importance
    if result is None:
        return []
    shares = {AXES[c.dims[0]].key: _share(task, c.dims) for c in result.main}
    names = {a.key: a.short for a in AXES}
    order, separated = ranking(task)
    text = " > ".join(f"{names[k]} {_pct(shares[k])}" for k in order)
    top_ok = separated and all(shares[order[0]][1] > shares[k][2] for k in order[1:])
    lr_over_half = below(shares["lr"], 0.5)
    second_sep = len(order) > 2 and shares[order[1]][1] > shares[order[2]][2]
    momentum = below(shares["one_minus_momentum"], 0.01)
    lr_hidden = _share(task, (0, 1))
    small = below(lr_hidden, SMALL_INTERACTION) if task.interactions_determined else None
    interaction_text = _pct(lr_hidden, 1) if task.interactions_determined else (
        f"{_pct(lr_hidden, 1)}; undetermined below {MIN_INTERACTION_SETTINGS} settings ({len(task.fit)} here)")
    rows = [
        FindingRow("most important hyper-parameter", "learning rate", f"{names[order[0]]} ({text})",
                   (order[0] == "lr") if top_ok else None),
        FindingRow("learning rate's share of variance", "over half", _pct(shares["lr"]),
                   None if lr_over_half is None else not lr_over_half),
        FindingRow("second most important", "hidden size", names[order[1]],
                   (order[1] == "hidden") if second_sep else None),
        FindingRow("momentum's share of variance", "< 1 %", _pct(shares["one_minus_momentum"], 1), momentum),
        FindingRow("learning rate x hidden size interaction", "small (tune independently)", interaction_text, small),
    ]
    better = -1.0 if task.lower_is_better else 1.0
    hidden = _curve_end_to_end(task, 1)
    if hidden is not None:
        rows.append(FindingRow("larger hidden size", "better", "better" if hidden * better > 0 else "not better",
                               hidden * better > 0))
    noise = _curve_end_to_end(task, 3)
    if noise is not None:
        rows.append(FindingRow("more input noise", "mostly harmful", "harmful" if noise * better < 0 else "not harmful",
                               noise * better < 0))
    return rows
