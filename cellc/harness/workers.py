"""Running trials in worker processes (one torch thread each), or inline in this process.

Each worker is a long-lived spawned process with its own pipe; it loads a task's data once and
then trains one trial per job. The coordinator (:mod:`cellc.harness.bench`) owns the storage;
workers never touch it, so a worker that crashes (segfault, out of memory, killed) loses only
the trial it was running: the pool notices through the process sentinel, reports the job as
crashed and starts a fresh worker in its place. A worker whose coordinator disappears (e.g. a
SIGKILLed ``cellc bench``) exits on its own within a second.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

DEFAULT_LAYER_FACTORY = "cellc.harness.cells:layer_class"


class Job(BaseModel):
    """One trial to train. ``layer_factory`` is ``module:function(cell, backend) -> layer class``."""

    job_id: int
    task: str
    data_dir: str | None
    cell: str
    backend: str
    config: dict[str, Any]  # a TrainConfig dump
    report_epochs: bool = False
    layer_factory: str = DEFAULT_LAYER_FACTORY
    placement: dict[str, Any] = {}  # a Placement dump: device and precision (default: the CPU, float32)


@dataclass(frozen=True)
class Event:
    kind: Literal["epoch", "done", "error", "crashed"]
    job_id: int
    payload: Any  # epoch: EpochReport dump; done: TrialOutcome dump; error / crashed: message


@contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT while child processes start: they inherit the blocked mask, so a Ctrl-C (sent to the whole
    process group) during their start-up (importing torch takes seconds) neither kills them with a
    traceback nor leaves their half-made resources behind; the coordinator alone decides. A SIGINT that
    arrives meanwhile is delivered to this process when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _resolve(dotted: str) -> Any:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


class JobRunner:
    """Runs jobs in the current process, caching loaded task data and layer classes."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str | None, str], Any] = {}

    def run(self, job: Job, send: Any) -> Event:
        import torch

        from cellc.harness.device import Placement
        from cellc.harness.train import TrainConfig, data_as, train_trial
        from cellc.tasks import get_task

        try:
            placement = Placement(**job.placement)
            key = (job.task, job.data_dir, placement.device)
            if key not in self._data:  # loaded, and moved to the device, once per task
                task = get_task(job.task, job.data_dir)
                self._data[key] = (task, data_as(task.load(), torch.float32, placement.torch_device))
            task, data = self._data[key]
            layer_class = _resolve(job.layer_factory)(job.cell, job.backend)
            on_epoch = None
            if job.report_epochs:
                on_epoch = lambda report: send(Event("epoch", job.job_id, report.model_dump()))  # noqa: E731
            outcome = train_trial(task, data, layer_class, TrainConfig(**job.config), on_epoch=on_epoch,
                                  placement=placement)
            return Event("done", job.job_id, outcome.model_dump())
        except Exception as err:  # a failing trial must not take the worker (or the study) down
            detail = traceback.format_exception_only(type(err), err)[-1].strip()
            return Event("error", job.job_id, detail)


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(0.5)


def worker_main(conn: multiprocessing.connection.Connection, parent_pid: int, threads: int) -> None:
    import signal

    import torch

    # Ctrl-C reaches the whole process group; the coordinator decides and terminates workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    runner = JobRunner()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        event = runner.run(Job(**job), conn.send)
        conn.send(event)


class ProcessPool:
    """``size`` worker processes, each with ``threads`` torch threads."""

    def __init__(self, size: int, threads: int = 1) -> None:
        self.size = size
        self.threads = threads
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[Any] = [None] * size
        self._conns: list[Any] = [None] * size
        self._jobs: list[int | None] = [None] * size
        for slot in range(size):
            self._start(slot)

    def _start(self, slot: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=worker_main, args=(child, os.getpid(), self.threads), daemon=True)
        with sigint_blocked():
            proc.start()
        child.close()
        self._procs[slot], self._conns[slot], self._jobs[slot] = proc, parent, None

    def idle_slots(self) -> list[int]:
        return [slot for slot in range(self.size) if self._jobs[slot] is None]

    def submit(self, slot: int, job: Job) -> None:
        self._jobs[slot] = job.job_id
        self._conns[slot].send(job.model_dump())

    def events(self, timeout: float) -> list[Event]:
        waitables = {self._conns[s]: s for s in range(self.size)}
        waitables.update({self._procs[s].sentinel: s for s in range(self.size)})
        ready = multiprocessing.connection.wait(list(waitables), timeout=timeout)
        out: list[Event] = []
        for slot in sorted({waitables[r] for r in ready}):
            conn = self._conns[slot]
            try:
                while conn.poll():
                    event = conn.recv()
                    out.append(event)
                    if event.kind in ("done", "error"):
                        self._jobs[slot] = None
            except (EOFError, OSError):
                pass
            if not self._procs[slot].is_alive():
                job_id = self._jobs[slot]
                if job_id is not None:
                    code = self._procs[slot].exitcode
                    out.append(Event("crashed", job_id, f"worker process died (exit code {code})"))
                conn.close()
                self._start(slot)
        return out

    def close(self) -> None:
        """Ask idle workers to exit, then terminate any still running (an interrupted trial)."""
        for slot in range(self.size):
            if self._jobs[slot] is None and self._procs[slot].is_alive():
                try:
                    self._conns[slot].send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self._procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()


class InlinePool:
    """Runs each job synchronously in this process with torch's default threads (``--workers 0``).

    The coordinator's loop is blocked while a trial trains, so ``heartbeat`` (if given) is called
    every ``interval`` seconds from a thread meanwhile: without it a long inline trial would look
    stale to another ``cellc bench`` sharing the storage, which would fail it.
    """

    size = 1

    def __init__(self, heartbeat: Callable[[], None] | None = None, interval: float = 10.0) -> None:
        self._runner = JobRunner()
        self._pending: list[Job] = []
        self._buffer: list[Event] = []
        self._heartbeat = heartbeat
        self._interval = interval

    def idle_slots(self) -> list[int]:
        return [] if self._pending else [0]

    def submit(self, slot: int, job: Job) -> None:
        self._pending.append(job)

    def events(self, timeout: float) -> list[Event]:
        if not self._pending:
            time.sleep(min(timeout, 0.01))
            return []
        job = self._pending.pop()
        done = threading.Event()
        beater = None
        if self._heartbeat is not None:
            beater = threading.Thread(target=self._beat, args=(done,), daemon=True)
            beater.start()
        try:
            # Epoch events are yielded with the final one (inline runs cannot interleave).
            final = self._runner.run(job, self._buffer.append)
        finally:
            done.set()
            if beater is not None:
                beater.join()
        out, self._buffer = self._buffer + [final], []
        return out

    def _beat(self, done: threading.Event) -> None:
        while not done.wait(self._interval):
            try:
                self._heartbeat()  # type: ignore[misc]
            except Exception as err:  # a storage hiccup must not kill the trial; the next beat may work
                print(f"warning: heartbeat not recorded ({type(err).__name__}: {err})", file=sys.stderr)

    def close(self) -> None:
        self._pending.clear()
