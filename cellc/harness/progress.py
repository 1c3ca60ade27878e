"""What a bench tells its user: the start-up plan, the progress bar with its ETA, and the interrupt.

The numbers come from :mod:`cellc.harness.cost` (one model for the plan, ``--estimate`` and the
ETA); this module only keeps the bookkeeping of which trials are pending and running and turns it
into text. :mod:`cellc.harness.bench` calls it at a few points (hooks), nothing more.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState
from tabulate import tabulate
from tqdm import tqdm

from cellc.harness.cost import (
    PRIOR_CAP_FRACTION,
    CostModel,
    PlannedTrial,
    calibrate,
    calibration_sizes,
    planned_hidden,
    prior_epochs,
)
from cellc.harness.profiles import Profile
from cellc.harness.record import host_name

ETA_REFRESH_S = 1.0  # the bar's redraw
ETA_RECOMPUTE_S = 15.0  # the model's ETA between events (each start and end of a trial recomputes it)


def duration(seconds: float | None) -> str:
    """``"1 h 05 min"``, ``"12 min"``, ``"40 s"``; ``"unknown"`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0.0, seconds)
    if seconds < 0.5:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{seconds / 86400:.1f} days"


class BenchInterrupted(KeyboardInterrupt):
    """A bench stopped by Ctrl-C / SIGTERM after storing what it had: counts for the message."""

    def __init__(self, finished: int, total: int, marked: int) -> None:
        super().__init__()
        self.finished, self.total, self.marked = finished, total, marked


class UnitState:
    """Pending trials of one (task, cell) study, in the order they will be asked for."""

    def __init__(self, task: str, cell: str, profile: Profile, seed: int, next_number: int, wanted: int) -> None:
        self.task, self.cell, self.profile, self.seed = task, cell, profile, seed
        self.next_number = next_number
        numbers = range(next_number, next_number + max(0, wanted))
        self.pending: deque[PlannedTrial] = deque(
            PlannedTrial(task=task, cell=cell, number=k, hidden=h)
            for k, h in zip(numbers, planned_hidden(profile, seed, numbers))
        )
        self.next_number += len(self.pending)

    def again(self) -> None:
        """A failed trial is run again under a fresh number."""
        hidden = planned_hidden(self.profile, self.seed, [self.next_number])[0]
        self.pending.append(PlannedTrial(task=self.task, cell=self.cell, number=self.next_number, hidden=hidden))
        self.next_number += 1


def dispatch_order(units: Sequence[UnitState]) -> list[PlannedTrial]:
    """Pending trials in the bench's round-robin order over studies."""
    queues = [list(u.pending) for u in units]
    out: list[PlannedTrial] = []
    depth = 0
    while any(depth < len(q) for q in queues):
        out.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return out


class BenchProgress:
    """The progress bar: running task/cell in its description; ok / diverged / crashed counts and the
    cost model's ETA after it. Also remembers the first ETA, so that its error can be told at the end."""

    def __init__(self, name: str, units: Sequence[UnitState], finished: int, total: int, model: CostModel | None,
                 workers: int, log: Callable[[str], None]) -> None:
        self.name, self.units, self.model, self.log = name, list(units), model, log
        self.workers = max(1, workers)
        self.by_pair = {(u.task, u.cell): u for u in self.units}
        self.counts = {"ok": 0, "diverged": 0, "failed": 0}
        self.running: dict[int, tuple[PlannedTrial, float]] = {}
        self.started_at = time.monotonic()
        self.first_eta = None if model is None else model.wall_seconds(dispatch_order(self.units), startup=True)
        self._last_refresh = 0.0
        self._eta: float | None = None
        self._eta_at = 0.0
        self.bar = tqdm(total=total, initial=min(total, finished), unit="trial", desc=f"bench {name}",
                        file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        self._show()

    def eta(self) -> float | None:
        if self.model is None:
            return None
        now = time.monotonic()
        running = [(trial, now - since) for trial, since in self.running.values()]
        return self.model.wall_seconds(dispatch_order(self.units), running)

    def started(self, job_id: int, task: str, cell: str, number: int, hidden: int) -> None:
        unit = self.by_pair[task, cell]
        planned = next((t for t in unit.pending if t.number == number), None)
        if planned is not None:
            unit.pending.remove(planned)
        elif unit.pending:  # numbered differently than planned (e.g. trials another process started)
            unit.pending.popleft()
        self.running[job_id] = (PlannedTrial(task=task, cell=cell, number=number, hidden=hidden), time.monotonic())
        self._show()

    def finished(self, job_id: int, status: str, epochs: int, wall_s: float) -> None:
        trial, _ = self.running.pop(job_id)
        self.counts["diverged" if status == "diverged" else "ok"] += 1
        if self.model is not None:
            self.model.observe(trial.task, trial.cell, trial.hidden, epochs, wall_s)
        self.bar.update(1)
        self._show()

    def failed(self, job_id: int, rerun: bool = True) -> None:
        trial, _ = self.running.pop(job_id)
        self.counts["failed"] += 1
        if rerun:
            self.by_pair[trial.task, trial.cell].again()
        self._show()

    def tick(self) -> None:
        if time.monotonic() - self._last_refresh >= ETA_REFRESH_S:
            self._show(recompute=time.monotonic() - self._eta_at >= ETA_RECOMPUTE_S)

    def _current_eta(self, recompute: bool) -> float | None:
        """The model's ETA, recomputed on events (and every ETA_RECOMPUTE_S), counted down in between."""
        now = time.monotonic()
        if recompute or self._eta_at == 0.0:
            self._eta, self._eta_at = self.eta(), now
        return None if self._eta is None else max(0.0, self._eta - (now - self._eta_at))

    def _show(self, recompute: bool = True) -> None:
        self._last_refresh = time.monotonic()
        if not hasattr(self, "bar"):
            return
        pairs = sorted({f"{t.task}/{t.cell}" for t, _ in self.running.values()})
        shown = ", ".join(pairs[:3]) + (f" +{len(pairs) - 3}" if len(pairs) > 3 else "")
        self.bar.set_description_str(f"bench {self.name}" + (f" [{shown}]" if shown else ""), refresh=False)
        # "crashed", not "failed": the report's *failed* also counts trials no better than the trivial predictor
        counts = f"ok {self.counts['ok']}, diverged {self.counts['diverged']}, crashed {self.counts['failed']}"
        self.bar.set_postfix_str(f"{counts}, ETA {duration(self._current_eta(recompute))}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def closing_note(self) -> str | None:
        """The first ETA against the real wall time (for the closing line of a finished run)."""
        if self.first_eta is None or self.first_eta <= 0:
            return None
        real = time.monotonic() - self.started_at
        error = (self.first_eta - real) / real * 100 if real > 0 else 0.0
        return f"first ETA {duration(self.first_eta)}, took {duration(real)} ({error:+.0f} %)"


def plan_text(*, name: str, finished: dict[tuple[str, str], int], targets: dict[str, int], cells: Sequence[str],
              profiles: dict[str, Profile], profile_name: str, data: dict[str, tuple[str, str]], storage: str,
              workers: int, report: str | None) -> str:
    """The start-up plan, printed before any trial runs.

    ``finished``: finished trials per (task, cell); ``targets``: trials per (task, cell) per task;
    ``data``: (source, location) per task.
    """
    total = sum(targets[task] for task in targets for _ in cells)
    kept = sum(min(finished[task, cell], targets[task]) for task in targets for cell in cells)
    rows = []
    for task, p in profiles.items():
        done = sum(min(finished[task, cell], targets[task]) for cell in cells)
        source, location = data[task]
        rows.append([task, f"{len(cells)} x {targets[task]}", done, len(cells) * targets[task] - done,
                     p.max_epochs, p.patience, p.train_subset or "all", f"{source}: {location}"])
    table = tabulate(rows, headers=["task", "cells x trials", "finished", "to run", "max epochs", "patience",
                                    "seqs/epoch", "data"], tablefmt="simple")
    lines = [
        f"bench {name}: profile {profile_name}; {len(profiles)} task(s) x {len(cells)} cell(s) "
        f"({', '.join(cells)}); {total} trials",
        *("  " + line for line in table.splitlines()),
        f"  storage: {storage}",
        f"  workers: {workers} process(es), one torch thread each" if workers
        else "  workers: inline in this process (--workers 0)",
    ]
    if report:
        lines.append(f"  report: {report} once every trial has finished")
    if kept:
        lines.append(f"  resuming: {kept} of {total} trials kept, {total - kept} to run")
    return "\n".join(lines)


def cpu_hours_text(seconds: float) -> str:
    """CPU-hours as a reader takes them in: '135', '1.63', '0.02', '< 0.01'."""
    hours = seconds / 3600
    return "< 0.01" if hours < 0.005 else f"{hours:.3g}" if hours < 100 else f"{hours:,.0f}"


def estimate_line(wall: float | None, cpu: float | None, trials: int, contention: float | None = None) -> str:
    load = "" if contention is None else f" at the load measured now ({contention:.1f} wall s per CPU s)"
    return (f"  estimate: {duration(wall)} wall time for the {trials} trial(s) to run{load} ({duration(cpu)} of CPU "
            "time; timed on this machine just now, epochs per trial from the profile until trials finish)")


def estimate_table(model: CostModel, pending: Sequence[PlannedTrial], workers: int, target_hours: float) -> str:
    """``cellc bench --estimate``: per task and in total, trials, epochs per trial, CPU-hours, wall time on
    ``workers`` processes here, and how many such machines finish within ``target_hours``."""
    rows: list[list[Any]] = []
    tasks = list(dict.fromkeys(t.task for t in pending))
    for task in [*tasks, None]:
        subset = [t for t in pending if task is None or t.task == task]
        cpu = model.cpu_seconds(subset)
        wall = model.wall_seconds(subset, startup=True)
        machines = machines_needed(model, subset, workers, target_hours * 3600)
        rows.append([task or "total", len(subset), f"{model.epochs(task):.0f}" if task else "",
                     "unknown" if cpu is None else cpu_hours_text(cpu), duration(wall),
                     "unknown" if machines is None else machines])
    table = tabulate(rows, headers=["task", "trials", "epochs/trial", "CPU-hours", f"wall ({workers} workers)",
                                    f"machines for {target_hours:g} h"], tablefmt="simple")
    return table + ("\n(a task's row: that task alone; the total: all tasks sharing the machines, so its machines are "
                    "fewer than the rows' sum)" if len(tasks) > 1 else "")


def machines_needed(model: CostModel, pending: Sequence[PlannedTrial], workers: int, target_s: float) -> int | None:
    """The fewest machines like this one (``workers`` processes each) that finish ``pending`` within
    ``target_s`` (list scheduling over all their processes); None without an estimate or if no number
    of machines can (one trial alone takes longer)."""
    if not pending:
        return 0
    workers = max(1, workers)
    original = model.workers
    try:
        def fits(machines: int) -> bool | None:
            model.workers = machines * workers
            wall = model.wall_seconds(pending)
            return None if wall is None else wall <= target_s

        high = 1
        while True:
            ok = fits(high)
            if ok is None:
                return None
            if ok:
                break
            if high >= len(pending):
                return None
            high = min(2 * high, len(pending))
        low = high // 2 + 1 if high > 1 else 1
        while low < high:
            middle = (low + high) // 2
            if fits(middle):
                high = middle
            else:
                low = middle + 1
        return high
    finally:
        model.workers = original


# --- hooks for cellc.harness.bench -----------------------------------------------------------------------


@dataclass
class Started:
    """What the start-up hook hands the bench loop: the pending trials per study, and the model (None
    without an estimate)."""

    units: list[UnitState]
    model: CostModel | None
    estimate: dict[str, Any] | None = None  # the start-up estimate as stored with the studies (record.py)


def start(options: Any, units: Sequence[Any], task_info: dict[str, Any], storage_shown: str,
          log: Callable[[str], None]) -> Started:
    """Print the start-up plan, time the calibration epochs and print the estimate.

    ``options``: the bench's BenchOptions; ``units``: its studies (``task``, ``cell``, ``study``, ``target``,
    ``finished``); ``task_info``: per task, the profile as it runs, the data source and identity."""
    profiles = {task: task_info[task].profile for task in options.tasks}
    targets = {task: profiles[task].trials for task in options.tasks}
    finished = {(u.task, u.cell): u.finished for u in units}
    log(plan_text(
        name=options.name, finished=finished, targets=targets, cells=options.cells, profiles=profiles,
        profile_name=options.profile.name,
        data={t: (i.source, i.data_identity.get("location") or "") for t, i in task_info.items()},
        storage=storage_shown, workers=options.workers, report=options.report,
    ))
    states = [UnitState(u.task, u.cell, profiles[u.task], options.seed, len(u.study.get_trials(deepcopy=False)),
                        u.target - u.finished) for u in units]
    pairs = [(s.task, s.cell) for s in states if s.pending]
    if not options.estimate or not pairs:
        if pairs:
            _memory_unmeasured(options, log)
        return Started(units=states, model=None)
    sizes = sum(len(calibration_sizes(profiles[task])) for task, _ in pairs)
    log(f"  timing {sizes} calibration epoch(s) ({len(pairs)} task/cell pair(s)) for the estimate ...")
    model = CostModel(
        calibrate(pairs, profiles, workers=options.workers, data_dir=options.data_dir, backend=options.backend,
                  layer_factory=options.layer_factory, seed=options.seed, on_error=lambda text: log(f"  {text}"),
                  refs=options.cell_refs, placement=options.placement.model_dump()),
        profiles, options.workers,
    )
    _memory_check(options, model, log)
    here = options.placement.describe()
    for unit in units:  # what finished trials already say (a resumed bench), where they ran as this run will
        for trial in unit.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            attrs = trial.user_attrs
            same_place = all(attrs.get(key, default) == here[key]
                             for key, default in (("device", "cpu"), ("precision", "float32")))
            if "epochs" in attrs and "wall_time_s" in attrs and same_place:
                model.observe(unit.task, unit.cell, int(trial.params.get("hidden", 0)), int(attrs["epochs"]),
                              float(attrs["wall_time_s"]))
    pending = dispatch_order(states)
    wall, cpu = model.wall_seconds(pending, startup=True), model.cpu_seconds(pending)
    log(estimate_line(wall, cpu, len(pending), model.contention()))
    estimate = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "trials": len(pending), "cpu_hours": None if cpu is None else cpu / 3600,
                "wall_hours": None if wall is None else wall / 3600, "workers": options.workers,
                "host": host_name()}
    return Started(units=states, model=model, estimate=estimate)


def _memory_unmeasured(options: Any, log: Callable[[str], None]) -> None:
    from cellc.harness.device import workers_memory_line

    line = workers_memory_line(options.placement, options.workers, None)
    if line:
        log(f"  {line}")


def _memory_check(options: Any, model: CostModel, log: Callable[[str], None]) -> None:
    """On a GPU: state the memory each trial process takes (the largest calibrated peak), and refuse a worker
    count that cannot fit (a UsageError before any trial runs)."""
    from cellc.harness.device import workers_memory_line

    peaks = [c.peak_bytes for c in model.calibrations.values()]
    line = workers_memory_line(options.placement, options.workers, max(peaks) if peaks else None)
    if line:
        log(f"  {line}")


def estimate(options: Any, profiles: dict[str, Profile], sources: dict[str, str], target_hours: float,
             log: Callable[[str], None]) -> str:
    """``cellc bench --estimate``: calibrate every (task, cell) of ``options`` and tabulate the whole study."""
    states = [UnitState(task, cell, profiles[task], options.seed, 0, profiles[task].trials)
              for task in options.tasks for cell in options.cells]
    sizes = sum(len(calibration_sizes(profiles[s.task])) for s in states)
    workers = max(1, options.workers)
    log(f"timing {sizes} calibration epoch(s) ({len(states)} task/cell pair(s)) on {workers} worker(s) ...")
    model = CostModel(
        calibrate([(s.task, s.cell) for s in states], profiles, workers=options.workers, data_dir=options.data_dir,
                  backend=options.backend, layer_factory=options.layer_factory, seed=options.seed, on_error=log,
                  refs=options.cell_refs, placement=options.placement.model_dump()),
        profiles, workers,
    )
    _memory_check(options, model, log)
    head = (f"estimate for bench {options.name} (profile {options.profile.name}; data "
            f"{', '.join(f'{task}: {source}' for task, source in sources.items())}), {workers} worker(s) per machine; "
            f"epochs per trial assumed from the profile ({PRIOR_CAP_FRACTION:.0%} of the cap); wall time at the "
            f"load measured now ({model.contention():.1f} wall s per CPU s)")
    return head + "\n" + estimate_table(model, dispatch_order(states), workers, target_hours)


__all__ = ["BenchInterrupted", "BenchProgress", "UnitState", "dispatch_order", "duration", "estimate_line", "estimate_table",
           "estimate", "machines_needed", "plan_text", "prior_epochs", "start", "Started"]
