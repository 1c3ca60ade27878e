"""`cellc train` (one trial, prints its curve) and `cellc bench` (the random-search study)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from cellc.commands.settings import flag_errors
from cellc.commands.shell import join_command, storage_args
from cellc.errors import CellcError, UsageError, did_you_mean

PAPER_CELLS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr")
SPACE_KEYS = ("hidden", "lr", "one_minus_momentum", "noise")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train one network on one task and print its curve")
    train.add_argument("--task", default="jsb", help=f"task: {', '.join(_task_names())} (default: jsb)")
    train.add_argument("--cell", default="vanilla",
                       help="spec name (built-in, in --specs-dir, or ./NAME.yaml) or spec file (default: vanilla)")
    train.add_argument("--hidden", type=int, default=100, help="hidden units (default: 100)")
    train.add_argument("--lr", type=float, default=1e-2, help="learning rate before x(1-momentum) (default: 1e-2)")
    train.add_argument("--momentum", type=float, default=0.9, help="Nesterov momentum (default: 0.9)")
    train.add_argument("--noise", type=float, default=0.0, help="input noise std (default: 0)")
    train.add_argument("--batch-size", type=int, default=1, help="sequences per update (default: 1, online)")
    train.add_argument("--max-epochs", type=int, default=150, help="epoch cap (default: 150, the paper's)")
    train.add_argument("--patience", type=int, default=15,
                       help="stop after this many epochs without a better validation score (default: 15)")
    train.add_argument("--warmup", type=int, default=15,
                       help="leading epochs at the initial validation value not counted toward patience (default: 15)")
    train.add_argument("--train-subset", type=int, default=None, help="training sequences per epoch (0 or default: all)")
    train.add_argument("--init-std", type=float, default=0.1,
                       help="normal init std; 0 keeps the module's init (default: 0.1)")
    train.add_argument("--seed", type=int, default=0,
                       help="seed of initialisation, epoch order, subsets and noise (default: 0)")
    train.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    _common(train)
    train.set_defaults(func=run_train)

    bench = subparsers.add_parser("bench", help="random search over tasks x cells (resumable), then a report")
    which = bench.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every available task and the paper's nine cells")
    which.add_argument("--tasks", help=f"comma-separated tasks, of {', '.join(_task_names())} (default: jsb)")
    bench.add_argument("--cells", help="comma-separated cells: spec names (as `cellc list` shows them) or spec "
                       f"files (my/janet.yaml; labelled by the spec's name:) (default: {','.join(PAPER_CELLS)})")
    bench.add_argument("--profile", default="quick",
                       help=f"{', '.join(_profile_names())}: study size (default: quick)")
    bench.add_argument("--trials", type=int, help="trials per (task, cell) (default: from the profile)")
    bench.add_argument("--max-epochs", type=int, help="override the profile's epoch cap")
    bench.add_argument("--patience", type=int, help="override the profile's early-stopping patience")
    bench.add_argument("--warmup", type=int,
                       help="override the profile's warm-up (leading epochs at the initial validation value "
                       "not counted toward patience; 0 = plain early stopping)")
    bench.add_argument("--train-subset", type=int, help="override training sequences per epoch (0 = all)")
    bench.add_argument("--batch-size", type=int, help="override sequences per update")
    bench.add_argument("--space", action="append", default=[], metavar="KEY=LOW:HIGH",
                       help=f"override a search range; KEY in {', '.join(SPACE_KEYS)}")
    bench.add_argument("--init-std", type=float, default=0.1,
                       help="normal init std; 0 keeps the module's init (default: 0.1)")
    bench.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="parallel worker processes, one torch thread each; 0 = inline, all threads "
                       "(default: number of CPUs)")
    bench.add_argument("--name", help="bench name (default: the profile name)")
    bench.add_argument("--out", default="runs", help="output directory (default: runs)")
    bench.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///<out>/studies.db)")
    bench.add_argument("--host", help="this machine's name in the shared study (default: $CELLC_HOST, else the "
                       "hostname); benches that share a storage need different names")
    bench.add_argument("--seed", type=int, default=0, help="search seed (default: 0)")
    bench.add_argument("--report-dir", default="reports", help="where the report goes (default: reports)")
    bench.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    bench.add_argument("-v", "--verbose", action="store_true", help="print per-epoch progress")
    bench.add_argument("--estimate", action="store_true",
                       help="run nothing: time a calibration epoch per (task, cell) at a few hidden sizes on this "
                       "machine and print trials, CPU-hours, wall time for --workers and machines needed for "
                       "--target-hours")
    bench.add_argument("--target-hours", type=float, default=24.0,
                       help="with --estimate: the wall time to size the number of machines for (default: 24)")
    bench.add_argument("--no-estimate", action="store_true",
                       help="skip the calibration epochs at start: no estimate in the plan, no ETA")
    _common(bench)
    bench.set_defaults(func=run_bench_command)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--specs-dir", action="append", default=[], metavar="DIR",
                        help="a folder of your own specs, found by their name: (repeatable; also "
                        "$CELLC_SPECS_PATH, folders separated by ':') (default: none)")
    parser.add_argument("--data-dir", help="data root holding e.g. jsb-chorales/ (default: $CELLC_DATA_DIR, "
                        "../shared/data of a source checkout, ~/.local/share/cellc)")
    parser.add_argument("--backend", default="auto",
                        help=f"compiled-cell backend, of {', '.join(_backend_names())} (default: auto: the fastest "
                        "here)")
    parser.add_argument("--device", default="cpu", metavar="{cpu,cuda,auto}",
                        help="where trials train: cpu, cuda (or cuda:K), or auto (cuda where torch sees a GPU); data "
                        "are moved to it once per task (default: cpu)")
    parser.add_argument("--amp", default=None, metavar="bf16",
                        help="train and evaluate under bf16 autocast (parameters and state stay float32; the "
                        "generated C++ / Triton loops compute float32); default: off, float32 as in the paper")


def _task_names() -> list[str]:
    from cellc.tasks import task_classes

    return list(task_classes())


def _profile_names() -> list[str]:
    from cellc.harness.profiles import PROFILES

    return list(PROFILES)


def _backend_names() -> list[str]:
    from cellc.codegen.render import BACKENDS

    return ["auto", *BACKENDS]


def _split(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def run_train(args: argparse.Namespace) -> int:
    import torch
    from tabulate import tabulate

    from cellc.harness.cells import layer_class
    from cellc.harness.train import TrainConfig, train_trial
    from cellc.tasks import get_task

    if args.threads < 1:
        raise UsageError("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    try:
        config = TrainConfig(
            hidden=args.hidden, lr=args.lr, momentum=args.momentum, noise=args.noise, batch_size=args.batch_size,
            max_epochs=args.max_epochs, patience=args.patience, warmup=args.warmup, train_subset=args.train_subset or None,
            init_std=args.init_std or None, seed=args.seed,
        )
    except ValidationError as err:
        raise UsageError(f"bad training setting: {flag_errors(err)}") from None
    from cellc.harness.cells import elementwise_input_at, resolve_cell, user_spec_dirs
    from cellc.ir.pipeline import compile_spec

    from cellc.harness.device import resolve_placement
    from cellc.harness.train import data_as

    placement = resolve_placement(args.device, args.amp)
    label, target = resolve_cell(args.cell, user_spec_dirs(args.specs_dir))
    task = get_task(args.task, args.data_dir)
    direct = elementwise_input_at(target)
    if direct is not None:
        compiled = compile_spec(target)
        width = compiled.sizes.widths(config.hidden)[compiled.sizes.direct]  # the output's size (proj_size: N // 2)
        if width != task.input_size:
            size = ("its hidden size" if compiled.direct_size_name == "hidden_size" else
                    f"the size of its output ({compiled.direct_size_name} = {width} at --hidden {config.hidden})")
            raise UsageError(f"--hidden {config.hidden}: '{label}' reads its input elementwise ({direct}), so "
                             f"{size} must equal the task's input size, {task.input_size}")
    data = task.load()
    layer = layer_class(target, args.backend)
    where = placement.describe()
    print(f"{task.title} ({data.source} data, {data.location}); cell {label}; {config.model_dump()}; on "
          f"{placement.device} ({where['device_name']}) in {where['precision']}")
    data = data_as(data, torch.float32, placement.torch_device)
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"metric: {task.metric_name}")
    rows = []

    def on_epoch(report) -> None:
        rows.append(report)
        print(f"epoch {report.epoch:4d}  train {report.train:9.4f}  valid {report.valid:9.4f}  "
              f"best {report.best_valid:9.4f}  {report.seconds:6.1f}s", flush=True)

    outcome = train_trial(task, data, layer, config, on_epoch=on_epoch, placement=placement)
    print(tabulate(
        [["status", outcome.status], ["parameters", outcome.param_count], ["epochs", outcome.epochs],
         ["best epoch", outcome.best_epoch], ["best valid", outcome.best_valid],
         ["test at best valid", outcome.test_at_best], ["wall time (s)", f"{outcome.wall_time_s:.1f}"],
         ["CPU time (s)", f"{outcome.cpu_time_s:.1f}"], ["data", data.source],
         ["device", f"{outcome.device} ({outcome.device_name}), {outcome.precision}"]],
        tablefmt="simple",
    ))
    return 0


def bench_options_from_args(args: argparse.Namespace):
    from cellc.harness.bench import BenchOptions
    from cellc.harness.profiles import apply_overrides, get_profile, parse_range
    from cellc.harness.record import checked_bench_name
    from cellc.harness.storage import default_storage_url
    from cellc.tasks import task_classes

    profile = get_profile(args.profile)
    if args.all:
        tasks = list(task_classes())
    else:
        tasks = _split(args.tasks) or ["jsb"]
    known = task_classes()
    for task in tasks:
        if task not in known:
            raise UsageError(f"--tasks: unknown task {task!r}{did_you_mean(task, list(known))}; known tasks: "
                             f"{', '.join(known)}")
    from cellc.harness.cells import refuse_elementwise_input, resolve_cells, user_spec_dirs

    typed_cells = _split(args.cells) or list(PAPER_CELLS)
    refs = resolve_cells(typed_cells, user_spec_dirs(args.specs_dir))
    refuse_elementwise_input(refs, "--cells", "cellc bench searches hidden sizes, so it cannot run this cell")
    cells = list(refs)  # labelled by each spec's name:
    overrides: dict = {}
    for key, flag in (("trials", "trials"), ("max_epochs", "max_epochs"), ("patience", "patience"),
                      ("batch_size", "batch_size")):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
            overrides[key] = value
    if args.warmup is not None:
        if args.warmup < 0:
            raise UsageError("--warmup must be 0 or more")
        overrides["warmup"] = args.warmup
    if args.train_subset is not None:
        overrides["train_subset"] = args.train_subset or None
    if args.space:
        ranges = {}
        for item in args.space:
            key, sep, text = item.partition("=")
            if not sep or key not in SPACE_KEYS:
                raise UsageError(f"--space {item!r}: expected KEY=LOW:HIGH with KEY in {', '.join(SPACE_KEYS)}")
            ranges[key] = parse_range(text, f"--space {key}", integer=key == "hidden").model_dump()
        overrides["space"] = ranges
    if args.workers < 0:
        raise UsageError("--workers must be 0 (inline) or more")
    from cellc.harness.device import resolve_placement

    placement = resolve_placement(args.device, args.amp)
    if args.host is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", args.host):
            raise UsageError(f"--host {args.host!r}: 1-64 letters, digits, '.', '-' or '_'")
        os.environ["CELLC_HOST"] = args.host  # read where trials are claimed (record.host_name), workers too
    try:
        apply_overrides(profile, overrides)  # validate now; tasks may size the profile further
    except ValidationError as err:
        raise UsageError(f"bad bench setting: {flag_errors(err)}") from None
    name = checked_bench_name(args.name) if args.name is not None else profile.name
    out = Path(args.out)
    if args.storage:
        storage = args.storage
    elif args.estimate:  # runs and stores nothing
        storage = default_storage_url(out)
    else:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CellcError(f"--out {out}: cannot create the output directory ({err.strerror or err})") from None
        storage = default_storage_url(out)
    return BenchOptions(
        name=name, tasks=tasks, cells=cells, profile=profile, overrides=overrides, workers=args.workers, storage=storage,
        data_dir=args.data_dir, backend=args.backend, init_std=args.init_std or None, seed=args.seed,
        verbose=args.verbose, command=reproducing_command(args, tasks, typed_cells, name),
        cell_refs={label: ref for label, ref in refs.items() if ref != label},
        report=None if args.no_report else str(Path(args.report_dir) / f"{name}.md"),
        estimate=not args.no_estimate, placement=placement,
    )


def _interrupt_message(stop: KeyboardInterrupt, storage: str, args: argparse.Namespace) -> str:
    from cellc.harness.progress import BenchInterrupted

    from cellc.harness.storage import shown_url

    argv = list(args.argv)
    for index, item in enumerate(argv):  # a URL may hold a password: shown masked
        if item == "--storage" and index + 1 < len(argv):
            argv[index + 1] = shown_url(argv[index + 1])
        elif item.startswith("--storage="):
            argv[index] = "--storage=" + shown_url(item.partition("=")[2])
    resume = join_command(["cellc", *argv])
    if isinstance(stop, BenchInterrupted):
        done = f"{stop.finished} of {stop.total} trials finished and stored"
        if stop.marked:
            done += f"; {stop.marked} in flight marked interrupted (they run again on resume)"
    else:
        done = "stopped before any trial ran; finished trials are kept"
    return f"interrupted: {done}\n  storage: {storage}\n  to resume, run the same command again: {resume}"


def reproducing_command(args: argparse.Namespace, tasks: list[str], cells: list[str], name: str) -> str:
    parts = ["cellc", "bench", "--tasks", ",".join(tasks), "--cells", ",".join(cells), "--profile", args.profile]
    for flag in ("trials", "max_epochs", "patience", "warmup", "train_subset", "batch_size"):
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    for item in args.space:
        parts += ["--space", item]
    if args.init_std != 0.1:
        parts += ["--init-std", str(args.init_std)]
    if args.seed:
        parts += ["--seed", str(args.seed)]
    if args.backend != "auto":
        parts += ["--backend", args.backend]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if args.amp:
        parts += ["--amp", args.amp]
    if name != args.profile:
        parts += ["--name", name]
    # Where the data and studies were: --data-dir and --out, never --storage (a URL may hold a password).
    if args.data_dir:
        parts += ["--data-dir", args.data_dir]
    return join_command(parts + storage_args(args))


def run_bench_command(args: argparse.Namespace) -> int:
    from cellc.harness.bench import run_bench
    from cellc.harness.storage import shown_url

    options = bench_options_from_args(args)
    if args.estimate:
        from cellc.harness.bench import estimate_bench

        if args.target_hours <= 0:
            raise UsageError("--target-hours must be positive")
        print(estimate_bench(options, args.target_hours))
        return 0
    started = time.perf_counter()
    try:
        summary = run_bench(options)
    except KeyboardInterrupt as stop:
        print(_interrupt_message(stop, shown_url(options.storage), args), file=sys.stderr, flush=True)
        return 130
    print(f"bench {options.name}: {summary.ran} trial(s) run, {summary.failed} crashed (rerun), "
          f"{time.perf_counter() - started:.0f}s; storage {shown_url(options.storage)}", file=sys.stderr)
    if not args.no_report:
        from cellc.commands.report import write_report

        path = write_report(options.storage, options.name, Path(args.report_dir))
        print(f"report: {path}")
    return 0 if summary.complete else 1
