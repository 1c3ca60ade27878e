"""The cost model of a bench: how long each trial should take on this machine, before and while it runs.

One model serves the start-up plan, ``cellc bench --estimate`` and the progress bar's ETA (see
:mod:`cellc.harness.progress`), so the three never disagree.

**Calibration** (:func:`calibrate`): for every (task, cell), a few hidden sizes spanning the search
range (its two ends and their geometric mean; one size when the range is narrower than 3x) are
timed on this machine, in as many parallel processes as the bench has workers (so the
measurement sees the same contention as the trials): a few training updates of the profile's
batch size, scaled to an epoch by time steps (the profile's ``train_subset`` sequences, or the whole
training split), one pass over the validation split (every epoch) and one over the test split (once
per trial). Between the measured sizes the seconds are interpolated linearly in hidden size
(``numpy.interp``).

**A trial** (:meth:`CostModel.trial_seconds`) of hidden size H running E epochs costs
``E * (train(H) + valid(H)) + test(H)``. Trial k's hidden size is known before it runs (the
sampler draws it from the search seed and k, :mod:`cellc.harness.search`), so the plan uses the
sizes the trials will really draw. E is not known: before any trial of a task has finished, the
model assumes ``PRIOR_CAP_FRACTION`` of the cap (``max_epochs``; see there). Finished trials replace the
guesses: the task's epoch estimate becomes the mean of the finished trials' epochs, shrunk toward
that prior with the weight of ``PRIOR_TRIALS`` trials, and each task's seconds are scaled by the
ratio of the finished trials' measured wall time to what the model said for them (same weighting),
which absorbs changing load on the machine and anything calibration misses.

Seconds are CPU seconds of the measuring process (stable under load), turned into wall seconds by the
calibration's own wall / CPU ratio (:meth:`CostModel.contention`: how much of a core each of the
``workers`` processes got while the machine did whatever else it was doing).

**Wall time** (:meth:`CostModel.wall_seconds`): trials are handed to ``workers`` processes in the
bench's own order (round-robin over the studies), each to the first worker free, and the model
returns when the last would finish (list scheduling), so a few long trials at the end count as such
rather than as an average rate.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import math
import multiprocessing
import random
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from cellc.harness.profiles import Profile
from cellc.harness.search import SeededRandomSampler, distributions
from cellc.harness.workers import sigint_blocked

# Random search draws the learning rate log-uniformly over decades, and a trial whose rate is low keeps
# improving a little every epoch until the cap: in the quick study on this project's machine (2 cores) the
# trials ran 67 % (IAM, the task with the highest rates), 90 % (JSB) and 83 % (TIMIT) of their cap on average.
PRIOR_CAP_FRACTION = 0.8
PRIOR_TRIALS = 4  # weight (in trials) of the prior epoch guess and of the calibration against finished trials
CALIBRATION_UPDATES = 12  # training updates timed per size (after one untimed warm-up update)
NARROW_RANGE = 3.0  # a hidden range narrower than this factor is calibrated at one size


class Calibration(BaseModel):
    """Measured seconds of one (task, cell) at a few hidden sizes (increasing)."""

    model_config = ConfigDict(frozen=True)

    task: str
    cell: str
    hidden: list[int]
    train_s: list[float]  # wall seconds of one epoch's training updates
    valid_s: list[float]  # ... of one pass over the validation split
    test_s: list[float]  # ... of one pass over the test split
    train_cpu_s: list[float]  # the same in CPU seconds of the measuring process
    valid_cpu_s: list[float]
    test_cpu_s: list[float]
    load_s: float = 0.0  # loading the task's data in a fresh process
    build_s: float = 0.0  # building the cell's layer class in a fresh process
    import_s: float = 0.0  # starting a worker process (spawn and imports)
    warm_s: float = 0.0  # a fresh process's first update and evaluation of the cell (beyond their steady cost)
    peak_bytes: float = 0.0  # on a GPU: the largest size's peak tensor memory (training and evaluation); 0 on the CPU

    def at(self, hidden: float) -> tuple[float, float, float]:
        """CPU seconds of (an epoch's training, a validation pass, a test pass) at ``hidden``."""
        x = np.asarray(self.hidden, dtype=float)
        return tuple(float(np.interp(hidden, x, np.asarray(ys, dtype=float)))  # type: ignore[return-value]
                     for ys in (self.train_cpu_s, self.valid_cpu_s, self.test_cpu_s))


@dataclass(frozen=True)
class Calibrated:
    """What :func:`calibrate` measured: per (task, cell), and the seconds its processes took to exit."""

    pairs: dict[tuple[str, str], Calibration]
    shutdown_s: float = 0.0


class PlannedTrial(BaseModel):
    """A trial still to run (or running) in the model's eyes."""

    model_config = ConfigDict(frozen=True)

    task: str
    cell: str
    number: int
    hidden: int


def calibration_sizes(profile: Profile) -> list[int]:
    low, high = int(profile.space.hidden.low), int(profile.space.hidden.high)
    if high < NARROW_RANGE * low:
        return [round(math.sqrt(low * high))]
    return sorted({low, round(math.sqrt(low * high)), high})


def planned_hidden(profile: Profile, seed: int, numbers: Iterable[int]) -> list[int]:
    """The hidden size trial ``k`` will draw, for each k in ``numbers`` (the bench's own sampler)."""
    sampler = SeededRandomSampler(seed)
    hidden = distributions(profile.space)["hidden"]
    return [int(sampler.sample_independent(None, SimpleNamespace(number=k), "hidden", hidden))  # type: ignore[arg-type]
            for k in numbers]


def prior_epochs(profile: Profile) -> float:
    """Epochs a trial runs before any has finished: ``PRIOR_CAP_FRACTION`` of the cap, at least the earliest
    early stop (``patience + 1``)."""
    return min(profile.max_epochs, max(profile.patience + 1, PRIOR_CAP_FRACTION * profile.max_epochs))


class CostModel:
    """Seconds per trial and wall time of the rest of a bench; updated with :meth:`observe`."""

    def __init__(self, calibrated: Calibrated, profiles: dict[str, Profile], workers: int) -> None:
        self.calibrations = calibrated.pairs
        self.shutdown_s = calibrated.shutdown_s
        self._contention: float | None = None
        self.profiles = profiles
        self.workers = max(1, workers)
        # per task: finished trials' epochs, and their measured / modelled seconds
        self._epochs: dict[str, list[int]] = {task: [] for task in profiles}
        self._measured: dict[str, float] = {task: 0.0 for task in profiles}
        self._modelled: dict[str, float] = {task: 0.0 for task in profiles}

    def calibrated(self, task: str, cell: str) -> bool:
        return (task, cell) in self.calibrations

    def startup_seconds(self) -> float:
        """A worker's one-time cost: process start, each task's data, each cell's class and first steps; and
        the workers' exit at the end."""
        cals = self.calibrations.values()
        loads: dict[str, float] = {}
        builds: dict[str, float] = {}
        for cal in cals:
            loads[cal.task] = max(loads.get(cal.task, 0.0), cal.load_s)
            builds[cal.cell] = max(builds.get(cal.cell, 0.0), cal.build_s + cal.warm_s)
        return (max((cal.import_s for cal in cals), default=0.0) + sum(loads.values()) + sum(builds.values())
                + self.shutdown_s)

    def contention(self) -> float:
        """Wall over CPU seconds of the calibration as a whole (at least 1): how much of a core each worker
        had while it ran (other work on the machine, more workers than cores)."""
        if self._contention is None:
            self._contention = self._measured_contention()
        return self._contention

    def _measured_contention(self) -> float:
        wall = sum(sum(c.train_s) + sum(c.valid_s) + sum(c.test_s) for c in self.calibrations.values())
        cpu = sum(sum(c.train_cpu_s) + sum(c.valid_cpu_s) + sum(c.test_cpu_s) for c in self.calibrations.values())
        return max(1.0, wall / cpu) if cpu > 0 else 1.0

    def raw_seconds(self, task: str, cell: str, hidden: float, epochs: float) -> float | None:
        """Wall seconds from the calibration alone (no correction from finished trials); None without one."""
        cal = self.calibrations.get((task, cell))
        if cal is None:
            return None
        train, valid, test = cal.at(hidden)
        return (epochs * (train + valid) + test) * self.contention()

    def observe(self, task: str, cell: str, hidden: float, epochs: int, wall_s: float) -> None:
        """A finished trial: its epochs, and its measured seconds against the calibration's."""
        if task not in self._epochs:
            return
        self._epochs[task].append(epochs)
        modelled = self.raw_seconds(task, cell, hidden, epochs)
        if modelled is not None and modelled > 0 and wall_s > 0:
            self._measured[task] += wall_s
            self._modelled[task] += modelled

    def epochs(self, task: str) -> float:
        seen = self._epochs[task]
        return (PRIOR_TRIALS * prior_epochs(self.profiles[task]) + sum(seen)) / (PRIOR_TRIALS + len(seen))

    def scale(self, task: str) -> float:
        """Measured / modelled seconds of the task's finished trials, shrunk toward 1."""
        modelled = self._modelled[task]
        if modelled <= 0:
            return 1.0
        n = len(self._epochs[task])
        ratio = self._measured[task] / modelled
        return (PRIOR_TRIALS + n * ratio) / (PRIOR_TRIALS + n)

    def trial_seconds(self, task: str, cell: str, hidden: float) -> float | None:
        raw = self.raw_seconds(task, cell, hidden, self.epochs(task))
        return None if raw is None else raw * self.scale(task)

    def wall_seconds(self, pending: Sequence[PlannedTrial], running: Sequence[tuple[PlannedTrial, float]] = (),
                     startup: bool = False) -> float | None:
        """Seconds until ``pending`` (in dispatch order) and ``running`` (with seconds already spent)
        are done on ``workers`` processes; ``startup``: the workers are still to be started (the plan).
        None when a trial's cell has no calibration."""
        free = [self.startup_seconds() if startup else 0.0] * self.workers
        costs: dict[tuple[str, str, int], float | None] = {}  # a paper-scale bench repeats them thousands of times

        def cost_of(trial: PlannedTrial) -> float | None:
            key = (trial.task, trial.cell, trial.hidden)
            if key not in costs:
                costs[key] = self.trial_seconds(*key)
            return costs[key]

        for index, (trial, spent) in enumerate(running[: self.workers]):
            cost = cost_of(trial)
            if cost is None:
                return None
            # a trial past its estimate is assumed to need a tenth of it again, not to end this instant
            free[index] += max(cost - spent, 0.1 * cost)
        heapq.heapify(free)
        for trial in pending:
            cost = cost_of(trial)
            if cost is None:
                return None
            heapq.heapreplace(free, free[0] + cost)  # to the worker free first
        return max(free)

    def cpu_seconds(self, pending: Sequence[PlannedTrial]) -> float | None:
        """CPU seconds of ``pending`` (calibrated CPU time, epochs as estimated; no wall-time corrections)."""
        total = 0.0
        for t in pending:
            raw = self.raw_seconds(t.task, t.cell, t.hidden, self.epochs(t.task))
            if raw is None:
                return None
            total += raw / self.contention()
        return total


# --- calibration -------------------------------------------------------------------------------------


class _Point(BaseModel):
    task: str
    label: str  # the cell as the bench names it
    cell: str  # what to build (a name or a spec file)
    hidden: int
    data_dir: str | None
    backend: str
    layer_factory: str
    batch_size: int
    train_subset: int | None
    seed: int
    placement: dict[str, Any] = {}  # a Placement dump: where the trials will train
    submitted: float = 0.0  # time.time() when handed to the pool (a process's first point times its start)


@lru_cache(maxsize=None)
def _task_data(task_name: str, data_dir: str | None, device: str = "cpu") -> tuple[Any, Any, float]:
    import torch

    from cellc.harness.train import data_as
    from cellc.tasks import get_task

    start = time.perf_counter()
    task = get_task(task_name, data_dir)
    return task, data_as(task.load(), torch.float32, device), time.perf_counter() - start


@lru_cache(maxsize=None)
def _layer(factory: str, cell: str, backend: str) -> tuple[Any, float]:
    from cellc.harness.workers import _resolve

    start = time.perf_counter()
    return _resolve(factory)(cell, backend), time.perf_counter() - start


_fresh: list[bool] = [True]  # in a calibration process: no point measured yet


def _worker_init() -> None:
    import torch

    import cellc.harness.train  # noqa: F401  (what a bench worker imports before its first trial)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator handles Ctrl-C and shuts the pool down
    torch.set_num_threads(1)


def measure_point(point: _Point) -> dict[str, float]:
    """Wall and CPU seconds of one epoch's training updates, one validation pass and one test pass at one
    size, and the wall seconds of this process's first data load, layer build and start-up (0 when done)."""
    import torch

    from cellc.harness.device import Placement
    from cellc.harness.train import TrainConfig, epoch_runner, evaluate, initialise

    # A process's first point: from its submission (process start, imports) to now
    import_s = max(0.0, time.time() - point.submitted) if _fresh.pop() and point.submitted else 0.0
    _fresh.append(False)
    begun = time.perf_counter()
    loaded_before = _task_data.cache_info().currsize
    placement = Placement(**point.placement)
    task, data, load_s = _task_data(point.task, point.data_dir, placement.device)
    if _task_data.cache_info().currsize == loaded_before:
        load_s = 0.0
    built_before = _layer.cache_info().currsize
    layer_class, build_s = _layer(point.layer_factory, point.cell, point.backend)
    if _layer.cache_info().currsize == built_before:
        build_s = 0.0
    generator = torch.Generator().manual_seed(point.seed)
    network = task.build_network(layer_class, point.hidden)
    initialise(network, 0.1, generator)
    network.to(placement.torch_device)
    if placement.is_cuda:
        torch.cuda.reset_peak_memory_stats(placement.torch_device)
    config = TrainConfig(hidden=point.hidden, lr=1e-4, momentum=0.9, noise=0.0, batch_size=point.batch_size)
    # what a trial of this profile trains with, where it trains
    runner = epoch_runner(network, task, data, config, placement.noise_generator(point.seed, generator),
                          placement=placement)
    train = data.train
    per_epoch = len(train) if point.train_subset is None else min(point.train_subset, len(train))
    mean_steps = sum(len(s) for s in train) / max(1, len(train))
    rng = random.Random(point.seed)
    sample = rng.sample(range(len(train)), min(len(train), (CALIBRATION_UPDATES + 1) * point.batch_size))
    groups = [sample[i : i + point.batch_size] for i in range(0, len(sample), point.batch_size)]

    def update(group: list[int]) -> None:
        runner.run(group)

    # warm-up: first-call costs are not per-epoch costs (they are start-up costs, see warm_s)
    update(groups[0])
    evaluate(network, task, data.valid[:2], placement)
    steady = _timed(lambda: (update(groups[0]), evaluate(network, task, data.valid[:2], placement)))[0]
    timed = groups[1:] or groups
    timed_steps = sum(len(train[i]) for g in timed for i in g)
    per_step = per_epoch * mean_steps / max(1, timed_steps)
    train = _timed(lambda: [update(group) for group in timed])
    valid = _timed(lambda: evaluate(network, task, data.valid, placement))
    test = _timed(lambda: evaluate(network, task, data.test, placement))
    peak = float(torch.cuda.max_memory_allocated(placement.torch_device)) if placement.is_cuda else 0.0
    # what this point cost beyond its steady parts: first calls in this process (torch's lazy set-up, the
    # cell's first run), paid by each bench worker once
    warm = time.perf_counter() - begun - load_s - build_s - train[0] - valid[0] - test[0] - steady
    return {"train": train[0] * per_step, "train_cpu": train[1] * per_step, "valid": valid[0], "valid_cpu": valid[1],
            "test": test[0], "test_cpu": test[1], "load": load_s, "build": build_s, "import": import_s, "warm": max(0.0, warm),
            "peak": peak}


def _timed(work: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``work`` in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def calibrate(pairs: Sequence[tuple[str, str]], profiles: dict[str, Profile], *, workers: int,
              data_dir: str | None, backend: str, layer_factory: str, seed: int = 0,
              on_error: Callable[[str], None] | None = None, refs: dict[str, str] | None = None,
              placement: dict[str, Any] | None = None) -> Calibrated:
    """Measure every (task, cell) of ``pairs`` at :func:`calibration_sizes`; a pair whose measurement
    fails is left out (``on_error`` gets one line) and the model says it has no estimate for it. ``refs``:
    what to build for a cell label that is not a built-in name (a user's spec file)."""
    points = [
        _Point(task=task, label=cell, cell=(refs or {}).get(cell, cell), hidden=hidden, data_dir=data_dir, backend=backend, layer_factory=layer_factory,
               batch_size=profiles[task].batch_size, train_subset=profiles[task].train_subset, seed=seed,
               placement=placement or {})
        for task, cell in pairs for hidden in calibration_sizes(profiles[task])
    ]
    results: dict[int, dict[str, float]] = {}
    failed: dict[tuple[str, str], str] = {}
    shutdown_s = 0.0
    if workers == 0:
        try:
            for index, point in enumerate(points):
                try:
                    results[index] = measure_point(point)
                except Exception as err:  # a cell that does not build or train: no estimate for it
                    failed.setdefault((point.task, point.label), f"{type(err).__name__}: {err}")
        finally:  # the inline run loads its own copy of the data: keep one only
            _task_data.cache_clear()
            _layer.cache_clear()
    else:
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(points)) or 1,
                                                      mp_context=context, initializer=_worker_init)
        try:
            with sigint_blocked():  # the pool's processes start on the first submissions
                futures = {pool.submit(measure_point, point.model_copy(update={"submitted": time.time()})): index
                           for index, point in enumerate(points)}
            for future in concurrent.futures.as_completed(futures):
                index = futures[future]
                try:
                    results[index] = future.result()
                except Exception as err:
                    point = points[index]
                    failed.setdefault((point.task, point.label), f"{type(err).__name__}: {err}")
        except KeyboardInterrupt:  # stop now: the measurements are only worth their result
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            raise
        finally:
            closing = time.perf_counter()
            pool.shutdown(wait=True, cancel_futures=True)
            shutdown_s = time.perf_counter() - closing
    out: dict[tuple[str, str], Calibration] = {}
    for task, cell in pairs:
        if (task, cell) in failed:
            if on_error is not None:
                on_error(f"no estimate for {task}/{cell}: its calibration failed ({failed[task, cell]})")
            continue
        measured = [(points[i].hidden, results[i]) for i in sorted(results)
                    if (points[i].task, points[i].label) == (task, cell)]
        out[task, cell] = Calibration(
            task=task, cell=cell, hidden=[h for h, _ in measured],
            **{f"{key}_s": [r[key] for _, r in measured] for key in ("train", "valid", "test")},
            **{f"{key}_cpu_s": [r[f"{key}_cpu"] for _, r in measured] for key in ("train", "valid", "test")},
            **{f"{key}_s": max(r[key] for _, r in measured) for key in ("load", "build", "import", "warm")},
            peak_bytes=max(r["peak"] for _, r in measured),
        )
    return Calibrated(pairs=out, shutdown_s=shutdown_s)
