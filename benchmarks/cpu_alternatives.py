"""The compiled-loop options issue 5 names, measured side by side on CPU (1 thread, fp32, fwd+bwd).

    python benchmarks/cpu_alternatives.py [--out reports/cpu-alternatives.md]

cellc's `compiled` backend (its own C++ time loops, torch's BLAS through ctypes) against the
other ways to take the Python loop away: TorchScript (the eager module traced for a fixed
length; scripting fails on the module's argument checks) and torch.compile (inductor) of the
eager module. torch.nn.LSTM is the yardstick. The time each option takes to get ready
(compile / trace / first call) is reported too. Writes a markdown table; changes nothing else.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Cold caches, so that 'ready s' is what a first run pays: cellc's compiled libraries and inductor's
# generated code both go to fresh private directories (set before torch reads them).
if "--warm-caches" not in sys.argv:
    os.environ["CELLC_CACHE_DIR"] = tempfile.mkdtemp(prefix="cellc-cache-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cache-")

import torch
from tabulate import tabulate

import cellc
from cellc.speed.measure import median_ms

SIZES = ((1, 100, 39, 128), (32, 100, 39, 128))


def options(m: int, h: int, x: torch.Tensor) -> dict:
    """name -> (module to call, seconds it took to get ready)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager_class = cellc.build("vanilla", backend="eager")
        compiled_class = cellc.build("vanilla", backend="compiled")
    torch.manual_seed(0)
    eager = eager_class(m, h)
    out = {"torch.nn.LSTM (oneDNN)": (torch.nn.LSTM(m, h), 0.0), "cellc eager": (eager, 0.0)}
    start = time.perf_counter()
    compiled = compiled_class(m, h)
    compiled(x)[0].sum().backward()
    out["cellc compiled (C++ loops, ctypes)"] = (compiled, time.perf_counter() - start)
    start = time.perf_counter()
    traced = torch.jit.trace(eager_class(m, h), (x,), check_trace=False)
    for _ in range(3):  # the profiling executor optimises after a few runs
        traced(x)[0].sum().backward()
    out["TorchScript (trace of eager, fixed T)"] = (traced, time.perf_counter() - start)
    start = time.perf_counter()
    try:
        inductor = torch.compile(eager_class(m, h))
        inductor(x)[0].sum().backward()
        out["torch.compile (inductor) of eager"] = (inductor, time.perf_counter() - start)
    except Exception as error:  # e.g. no working C++ compiler for inductor: reported, not fatal
        out[f"torch.compile failed: {type(error).__name__}"] = (None, time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/cpu-alternatives.md")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warm-caches", action="store_true",
                        help="keep the usual compile caches (default: fresh ones, so 'ready s' is a first run's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for b, t, m, h in SIZES:
        x = torch.randn(t, b, m)
        for name, (module, ready) in options(m, h, x).items():
            if module is None:
                rows.append([f"B={b} T={t} M={m} H={h}", name, "", "", f"{ready:.1f}"])
                continue

            def train():
                module(x)[0].sum().backward()

            def forward():
                with torch.no_grad():
                    module(x)

            rows.append([f"B={b} T={t} M={m} H={h}", name, f"{median_ms(forward, args.repeat):.2f}",
                         f"{median_ms(train, args.repeat):.2f}", f"{ready:.1f}"])
            print(rows[-1], flush=True)
    text = "\n".join([
        "# CPU: ways to compile the time loop, measured", "",
        f"Written by `python benchmarks/cpu_alternatives.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"({platform.machine()}, torch {torch.__version__}, 1 thread, float32, vanilla cell; medians of "
        f"{args.repeat} runs after 3 warm-ups). 'ready s' is the time from nothing to the first forward + "
        "backward done: building the C++ library, tracing, or inductor's compilation"
        + (", with the usual caches" if args.warm_caches else ", with empty compile caches") + ".", "",
        tabulate(rows, headers=["size", "option", "fwd ms", "fwd+bwd ms", "ready s"], tablefmt="github"), "",
    ])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
