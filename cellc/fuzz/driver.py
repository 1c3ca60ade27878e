"""Run many fuzz cases in worker processes, a chunk of seeds per process, surviving crashes.

A worker (``python -m <module> --worker --seeds 1,2,3 ...``) prints ``START <seed>`` before each case and
one JSON object (with ``"seed"`` and ``"status"``) after it. Where a worker dies (a segfault in generated
C++, an abort, the kernel's OOM killer), the case it had started is recorded as a crash and the chunk's
remaining seeds run again in a new process; nothing else is lost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


def run_in_workers(module: str, seeds: list[int], worker_args: list[str], *, jobs: int, chunk: int,
                   env: dict[str, str] | None = None, on_row: Callable[[dict], None] | None = None,
                   progress: bool = True) -> tuple[list[dict], float]:
    """Every seed's row (in seed order) and the wall time."""
    env = {**os.environ, **(env or {})}
    pending = [seeds[i:i + chunk] for i in range(0, len(seeds), chunk)]
    running: list[tuple[subprocess.Popen, list[int], IO[str], IO[str]]] = []
    results: dict[int, dict] = {}
    start = time.perf_counter()

    def launch(part: list[int]) -> None:
        cmd = [sys.executable, "-m", module, "--worker", *worker_args, "--seeds", ",".join(map(str, part))]
        # Files, not pipes: nobody reads a pipe while the worker runs, and a full one would block it forever.
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        running.append((subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env), part, out, err))

    while pending or running:
        while pending and len(running) < jobs:
            launch(pending.pop(0))
        # the first of the running workers to finish
        while True:
            finished = next((r for r in running if r[0].poll() is not None), None)
            if finished is not None:
                break
            time.sleep(0.05)
        running.remove(finished)
        proc, part, out_file, err_file = finished
        out, err = _drain(out_file), _drain(err_file)
        started = None
        for line in out.splitlines():
            if line.startswith("START "):
                started = int(line.split()[1])
            elif line.startswith("{"):
                row = json.loads(line)
                results[row["seed"]] = row
                started = None
        died = f"worker exit {proc.returncode}: {err.strip()[-400:]}"
        if proc.returncode != 0 and started is not None:  # it died inside this case
            results[started] = {"seed": started, "status": "crash", "message": died}
        missing = [s for s in part if s not in results]
        if missing and proc.returncode != 0 and started is not None:
            pending.insert(0, missing)  # the rest of the chunk, in a new process
        else:
            for s in missing:
                results[s] = {"seed": s, "status": "crash", "message": died}
        if on_row is not None:
            for s in part:
                if s in results:
                    on_row(results[s])
        if progress:
            done, spent = len(results), time.perf_counter() - start
            eta = spent / max(done, 1) * (len(seeds) - done)
            print(f"  {done}/{len(seeds)} done, {spent:.0f} s, ETA {eta:.0f} s", file=sys.stderr, flush=True)
    return [results[s] for s in seeds], time.perf_counter() - start


def _drain(file: IO[str]) -> str:
    with file:
        file.seek(0)
        return file.read()


def add_run_arguments(parser: argparse.ArgumentParser, what: str, chunk: int) -> None:
    """The options every fuzzer's command line shares: where its seeds start, its worker processes and their
    chunks, the summary's JSON file, and the worker protocol's own (hidden) --worker / --seeds."""
    parser.add_argument("--seed", type=int, default=0, help=f"first seed; {what} use seed, seed+1, ... (default: 0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPUs)")
    parser.add_argument("--chunk", type=int, default=chunk, help=f"{what} per worker process (default: {chunk})")
    parser.add_argument("--json", type=Path, help="write the summary here as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", help=argparse.SUPPRESS)


def worker_seeds(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in args.seeds.split(",")]


def print_summary(summary: dict, json_path: Path | None) -> None:
    text = json.dumps(summary, indent=1)
    print(text)
    if json_path:
        json_path.write_text(text + "\n")
