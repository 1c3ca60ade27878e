"""Timing and peak-memory measurements of one layer (forward, forward + backward)."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass

import torch

import cellc

SIZES = ((1, 100, 39, 128), (32, 100, 39, 128), (16, 300, 39, 256), (1, 60, 88, 100))
CELLS = ("vanilla", "np", "cifg", "fgr", "gru", "lnlstm", "lstmp")
BACKENDS = ("eager", "fused", "compiled")


@dataclass
class Timing:
    cell: str
    backend: str  # 'eager' | 'fused' | 'compiled' | 'torch' (torch.nn.LSTM / torch.nn.GRU)
    size: tuple[int, int, int, int]
    threads: int
    forward_ms: float
    train_ms: float  # forward + backward
    peak_mb: float | None = None


def reference_layer(cell: str, m: int, h: int) -> torch.nn.Module:
    """torch.nn.GRU for GRU-like specs, torch.nn.LSTM otherwise (the paper's NP cell, oneDNN); with proj_size for
    a cell that has values of that size (lstmp), at the size cellc's harness gives it."""
    if cell == "gru":
        return torch.nn.GRU(m, h)
    return torch.nn.LSTM(m, h, **_sizes(cell, h))


def _sizes(cell: str, h: int) -> dict[str, int]:
    """The sizes beside hidden_size that ``cell``'s modules take (cellc.ir.sizes.default_sizes)."""
    from cellc.ir.pipeline import compile_spec
    from cellc.ir.sizes import default_sizes

    return default_sizes(compile_spec(cell).sizes.names(), h)


def make_layer(cell: str, backend: str, m: int, h: int) -> torch.nn.Module:
    if backend == "torch":
        return reference_layer(cell, m, h)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cellc.build(cell, backend=backend)(m, h, **_sizes(cell, h))


def median_ms(fn, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


@contextlib.contextmanager
def _native_stderr_silenced():
    """The profiler's native logger (Kineto) writes a line to file descriptor 2 at every start and stop, and
    no setting turns it off: two lines per measurement, burying the progress bar and any error."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(fn) -> float:
    """Peak of live CPU tensor memory during ``fn`` (allocation events from the torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each op's own allocations minus frees, in start order: an approximation of live memory.
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def measure(cell: str, backend: str, size, threads: int, repeat: int, memory: bool) -> Timing:
    torch.set_num_threads(threads)
    b, t, m, h = size
    torch.manual_seed(0)
    layer = make_layer(cell, backend, m, h)
    x = torch.randn(t, b, m)

    def forward():
        with torch.no_grad():
            layer(x)

    def train():
        out = layer(x)[0]
        out.sum().backward()

    fwd = median_ms(forward, repeat)
    both = median_ms(train, repeat)
    peak = peak_memory_mb(train) if memory else None
    return Timing(cell, backend, tuple(size), threads, fwd, both, peak)


def load_jsb(data_dir=None):
    """(task, data) for jsb_epoch_seconds: loaded before any timing, so missing data stops a run at once."""
    from cellc.tasks import get_task

    task = get_task("jsb", data_dir)
    return task, task.load()


def jsb_epoch_seconds(backend: str, hidden: int, sequences: int, jsb) -> tuple[float, int, int, str]:
    """Seconds per JSB training epoch at batch 1 (one thread), timed on the first ``sequences``
    training sequences of ``jsb`` (load_jsb's) and extrapolated by total time steps. Returns (seconds,
    timed, total, source)."""
    torch.set_num_threads(1)
    task, data = jsb
    train = data.train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer_class = cellc.build("vanilla", backend=backend)
    torch.manual_seed(0)
    net = task.build_network(layer_class, hidden)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    timed = train[: min(sequences, len(train))]

    def step(seq):
        batch = task.collate([seq])
        opt.zero_grad()
        loss = task.loss(net(batch.inputs, batch.lengths), batch)
        loss.backward()
        opt.step()

    step(timed[0])  # warm-up (and the compiled loops' load)
    start = time.perf_counter()
    for seq in timed:
        step(seq)
    elapsed = time.perf_counter() - start
    steps_timed = sum(len(s) for s in timed)
    steps_total = sum(len(s) for s in train)
    return elapsed * steps_total / steps_timed, len(timed), len(train), data.source
