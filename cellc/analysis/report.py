"""Rendering a bench's report (markdown with tabulate tables) from loaded studies. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from tabulate import tabulate

from cellc.analysis.load import StudyData
from cellc.analysis.tables import SIGNIFICANCE, ComparisonRow, compare_cells

BASELINE = "vanilla"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _p(row: ComparisonRow) -> str:
    if row.summary.cell == BASELINE:
        return "baseline"
    if row.p_value is None:
        return "n/a"
    text = f"{row.p_value:.3g}"
    return f"**{text}** * ({row.direction})" if row.significant else text


def comparison_table(rows: Sequence[ComparisonRow]) -> str:
    headers = ["cell", "trials", "diverged", "mean params", "mean", "median", "std", "best 10% mean",
               "best test", f"Welch p vs {BASELINE}"]
    body = [
        [r.summary.cell, r.summary.trials, r.summary.diverged,
         "n/a" if r.summary.mean_params is None else f"{r.summary.mean_params:,.0f}",
         _num(r.summary.mean), _num(r.summary.median), _num(r.summary.std), _num(r.summary.best10_mean),
         _num(r.summary.best_test), _p(r)]
        for r in rows
    ]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def render_report(bench: str, studies: Sequence[StudyData]) -> str:
    """The markdown report of a bench: settings, one comparison table per task, reproduction command."""
    first = studies[0].attrs
    settings = first.get("settings", {})
    lines = [f"# Bench report: {bench}", ""]
    total_cpu = sum(r.cpu_time_s for s in studies for r in s.records)
    finished = sum(1 for s in studies for r in s.records if r.finished)
    failed = sum(1 for s in studies for r in s.records if r.state == "FAIL")
    target = sum(s.attrs.get("settings", {}).get("trials", 0) for s in studies)
    space = settings.get("space", {})
    lines += [
        f"- Profile: **{settings.get('profile', '?')}**: {settings.get('trials', '?')} trials per (task, cell), "
        f"at most {settings.get('max_epochs', '?')} epochs, patience {settings.get('patience', '?')}, "
        f"training sequences per epoch: {settings.get('train_subset') or 'all'}, batch size "
        f"{settings.get('batch_size', '?')}, init std {settings.get('init_std')}, backend {settings.get('backend')}.",
        "- Search (random): hidden log-uniform int [{h[low]:g}, {h[high]:g}]; learning rate log-uniform "
        "[{l[low]:g}, {l[high]:g}] (x (1 - momentum)); momentum = 1 - log-uniform [{m[low]:g}, {m[high]:g}]; "
        "input noise uniform [{n[low]:g}, {n[high]:g}]; search seed {seed}.".format(
            h=space.get("hidden", {"low": 0, "high": 0}), l=space.get("lr", {"low": 0, "high": 0}),
            m=space.get("one_minus_momentum", {"low": 0, "high": 0}), n=space.get("noise", {"low": 0, "high": 0}),
            seed=settings.get("seed", "?")),
        f"- Trials: {finished} finished of {target} targeted ({len(studies)} studies); "
        f"{failed} failed or interrupted (not counted, rerun). Total CPU time of all trials: "
        f"{total_cpu / 3600:.2f} h ({total_cpu:.0f} s).",
        "",
        "Scores are the test metric at each trial's best validation epoch. Statistics are over all "
        "finished trials with a score; *best 10% mean* averages the test scores of the 10% of trials "
        f"with the best validation score. Welch's t-test compares each cell's test scores with "
        f"{BASELINE}'s; **bold** and * mark p < {SIGNIFICANCE}.",
        "",
    ]
    tasks: dict[str, list[StudyData]] = {}
    for study in studies:
        tasks.setdefault(study.task, []).append(study)
    for task, group in tasks.items():
        info = group[0].attrs.get("task_info", {})
        lower = bool(info.get("lower_is_better", True))
        sources = sorted({r.data_source for s in group for r in s.records if r.finished} or
                         {s.attrs.get("data_source", "?") for s in group})
        lines += [
            f"## {info.get('title', task)}",
            "",
            f"- Data: **{', '.join(sources)}**.",
            f"- Metric: {info.get('metric', '?')}; {'lower' if lower else 'higher'} is better.",
            "",
            comparison_table(compare_cells({s.cell: s.records for s in group}, lower, BASELINE)),
            "",
        ]
    commands = sorted({s.attrs.get("command", "") for s in studies if s.attrs.get("command")})
    lines += ["## Reproduce", "", "```bash", *commands, f"cellc report --name {bench}", "```", ""]
    return "\n".join(lines)
