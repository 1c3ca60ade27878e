"""Trials per hour with one worker against ``--workers K`` on one device (issue 24: K trial processes sharing one
GPU). The same small bench (the same trial numbers, settings and seeds) runs twice into throw-away storages, first
with one worker, then with K; each run's wall time (start-up included, no calibration epochs) gives trials per
hour.

    python -m cellc.speed.workers --device cuda --workers 4 [--task jsb] [--cell vanilla] [--profile quick]
                                  [--trials 8] [--out reports/speed-workers.md]

Writes a markdown report (appends nothing, changes nothing else).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
import tempfile
import time
from pathlib import Path

from cellc.errors import CellcError, UsageError


def _timed_bench(options) -> tuple[float, int]:
    """(wall seconds, trials run) of one bench, its start-up (data, worker processes) included."""
    from cellc.harness.bench import run_bench

    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bar; the report below says what ran
        summary = run_bench(options, log=lambda text: None)
    return time.perf_counter() - started, summary.ran


def main(argv: list[str] | None = None) -> int:
    from cellc.harness.bench import BenchOptions
    from cellc.harness.device import device_name, resolve_placement
    from cellc.harness.profiles import get_profile

    parser = argparse.ArgumentParser(prog="python -m cellc.speed.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default=None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--task", default="jsb")
    parser.add_argument("--cell", default="vanilla")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="reports/speed-workers.md")
    args = parser.parse_args(argv)
    try:
        if args.workers < 2 or args.trials < 1:
            raise UsageError("--workers must be at least 2 (it is compared with one worker) and --trials at least 1")
        place = resolve_placement(args.device, args.amp)
        profile = get_profile(args.profile)
        rows = []
        for workers in (1, args.workers):
            with tempfile.TemporaryDirectory() as folder:
                options = BenchOptions(name="workers", tasks=[args.task], cells=[args.cell], profile=profile,
                                       overrides={"trials": args.trials}, workers=workers,
                                       storage=f"sqlite:///{Path(folder) / 'studies.db'}", data_dir=args.data_dir,
                                       placement=place, estimate=False)
                seconds, ran = _timed_bench(options)
            rows.append((workers, ran, seconds, ran / seconds * 3600))
            print(f"{workers} worker(s): {ran} trials in {seconds:.1f} s, {rows[-1][3]:.0f} trials/hour", flush=True)
    except CellcError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    where = f"{place.device} ({device_name(place.torch_device)}), {place.precision}"
    text = "\n".join([
        "# Trials per hour: one worker against several on one device", "",
        f"Written by `{shlex.join(['python', '-m', 'cellc.speed.workers', *(argv if argv is not None else sys.argv[1:])])}` "
        f"on {where}: the {args.profile} profile's first {args.trials} trials of {args.task}/{args.cell} (the same "
        "settings and seeds in both runs), each run into its own throw-away storage, timed whole (loading the data "
        "and starting the worker processes included; no calibration epochs).", "",
        "| workers | trials | seconds | trials per hour | speed-up |",
        "|---|---|---|---|---|",
        *[f"| {w} | {n} | {s:.1f} | {h:.0f} | {h / rows[0][3]:.2f}× |" for w, n, s, h in rows], "",
    ])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
