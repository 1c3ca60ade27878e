"""`cellc plan`: how many trials per task the next run of a bench should spend, from the trials it ran.

See :mod:`cellc.analysis.allocation` for what the plan rests on."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    plan = subparsers.add_parser("plan", help="trials per task that a time budget affords, spent where they decide "
                                              "the most comparisons (from a bench's trials file)")
    plan.add_argument("--trials", metavar="FILE", required=True,
                      help="the trials file of a bench that ran (e.g. reports/quick/trials.jsonl.xz)")
    plan.add_argument("--hours", type=float, default=1.0, help="wall-clock hours of trials to plan (default 1)")
    plan.add_argument("--workers", type=int, default=2, help="workers side by side, as the bench ran (default 2)")
    plan.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    import math

    from cellc.analysis.allocation import allocate, plan_markdown, task_costs
    from cellc.analysis.load import load_trials
    from cellc.errors import UsageError

    if not (math.isfinite(args.hours) and args.hours > 0):
        raise UsageError(f"--hours {args.hours}: must be a positive number")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be at least 1")
    _, studies, facts = load_trials(Path(args.trials))
    tasks = task_costs(studies, facts)
    plan = allocate(tasks, args.hours * args.workers * 3600)
    print(plan_markdown(tasks, plan, args.hours, args.workers, args.trials), end="")
    return 0
