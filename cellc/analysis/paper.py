"""The paper's findings (Greff et al. 2017, from ../shared/odyssey.md) and this study's beside them.

Only tasks run on the paper's data are compared (``real`` data, or a corpus rebuilt from the
same source); proxy corpora are not comparable and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellc.analysis.hyperspace import AXES
from cellc.analysis.significance import Subset, best_by_validation
from cellc.analysis.task_analysis import TaskAnalysis

PAPER = "Greff et al. 2017"
PAPER_CELLS = ("nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr")

# Welch's t-test against V on all trials, p < 0.05 ("What the study found").
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
SMALL_INTERACTION = 0.05  # "small": under 5 % of the variance (the paper gives no number)


AGREE, DISAGREE, UNCONFIRMED = "agree", "disagree", "not confirmed"


def agrees(paper: str, ours: str) -> str | None:
    """Our verdict against the paper's: agree, disagree, or not confirmed (None when not tested).

    "Not confirmed": the paper found a significant difference and we found none. With fewer
    trials than the paper's 200 that is a lack of power, not a contradiction; a disagreement is
    a significant result the paper rules out (a difference where it found none, or the opposite
    direction).
    """
    if ours in ("not tested", "baseline"):
        return None
    allowed = {
        "worse": {"worse"},
        "better": {"better"},
        "no difference": {"no difference"},
        "not worse": {"no difference", "better"},
        "not better": {"no difference", "worse"},
    }[paper]
    if ours in allowed:
        return AGREE
    if ours == "no difference":
        return UNCONFIRMED
    return DISAGREE


DIFFERENT_SETUP = "different search setup"


def mark(agreement: str | bool | None) -> str:
    if agreement is None:
        return "-"
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
    """Rows with their agreement replaced by "different search setup (<plain comparison>)"."""
    return [FindingRow(r.finding, r.paper, r.ours,
                       None if r.agreement is None else f"{DIFFERENT_SETUP} ({mark(r.agreement).strip('*')})")
            for r in rows]


@dataclass(frozen=True)
class FindingRow:
    finding: str
    paper: str
    ours: str
    agreement: str | bool | None  # str for significance verdicts (see agrees), bool for other facts


def comparable(task: TaskAnalysis) -> bool:
    """Set beside the paper's findings: the task's real data only (not a proxy, not mixed, not unknown)."""
    return task.task in PAPER_VERDICTS and not task.is_proxy and not task.mixed_sources and task.source != "?"


def verdict_rows(task: TaskAnalysis) -> list[FindingRow]:
    rows = []
    for cell in PAPER_CELLS:
        test = task.test(Subset.ALL, cell)
        if test is None:
            continue
        paper = PAPER_VERDICTS[task.task][cell]
        p = "" if test.welch is None else f" (p = {test.welch.p:.3g})"
        rows.append(FindingRow(f"{cell.upper()} vs V", paper, test.verdict + p, agrees(paper, test.verdict)))
    return rows


def best_row(task: TaskAnalysis) -> FindingRow | None:
    if task.task not in PAPER_BEST:
        return None
    value, cell = PAPER_BEST[task.task]
    # each cell's trial chosen by validation, as a result would be reported (the lowest test score would
    # be chosen on the test set itself); the best of those cells
    chosen = [(top[0].best_valid, top[0].test_at_best, c) for c, records in task.records.items()
              if (top := best_by_validation(records, task.lower_is_better, fraction=1.0))]
    if not chosen:
        return None
    sign = 1.0 if task.lower_is_better else -1.0
    _, ours, our_cell = min(chosen, key=lambda item: (sign * item[0], item[2]))
    return FindingRow(f"best single result ({task.metric_short}; the best validation trial's test)",
                      f"{value:g} ({cell.upper()}, unconfirmed)", f"{ours:.3f} ({our_cell.upper()})", None)


def _curve_end_to_end(task: TaskAnalysis, dim: int) -> float | None:
    """Predicted metric at the top of an axis minus at the bottom (marginal over the others)."""
    if task.metric_forest is None:
        return None
    ends = np.array([task.box[dim, 0], task.box[dim, 1]])
    mean, _ = task.metric_forest.curve(dim, ends)
    return float(mean[1] - mean[0])


def importance_rows(task: TaskAnalysis) -> list[FindingRow]:
    result = task.importance
    if result is None:
        return []
    main = {AXES[c.dims[0]].key: c.fraction for c in result.main}
    ranking = sorted(main, key=lambda k: -main[k])
    names = {a.key: a.short for a in AXES}
    order = " > ".join(f"{names[k]} {100 * main[k]:.0f} %" for k in ranking)
    lr_hidden = next(c.fraction for c in result.pairs if c.dims == (0, 1))
    rows = [
        FindingRow("most important hyper-parameter", "learning rate", f"{names[ranking[0]]} ({order})",
                   ranking[0] == "lr"),
        FindingRow("learning rate's share of variance", "over half", f"{100 * main['lr']:.0f} %", main["lr"] > 0.5),
        FindingRow("second most important", "hidden size", names[ranking[1]], ranking[1] == "hidden"),
        FindingRow("momentum's share of variance", "< 1 %", f"{100 * main['one_minus_momentum']:.1f} %",
                   main["one_minus_momentum"] < 0.01),
        FindingRow("learning rate x hidden size interaction", "small (tune independently)",
                   f"{100 * lr_hidden:.1f} %", lr_hidden < SMALL_INTERACTION),
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
