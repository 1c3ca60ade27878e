"""`cellc speed`: time every backend against torch.nn.LSTM / torch.nn.GRU; writes reports/speed.md."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from cellc.errors import UsageError


JSB_SEQUENCES = 20  # JSB sequences timed for the end-to-end line
JSB_HIDDEN = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    from cellc.speed.gpu import MAX_SECONDS
    from cellc.speed.measure import BACKENDS, CELLS, SIZES

    p = subparsers.add_parser("speed", help="time the backends against torch.nn.LSTM / GRU; write reports/speed.md")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="cpu (default): these timings, reports/speed.md; cuda: the GPU benchmark against cuDNN "
                        "(benchmarks/gpu.sh), reports/speed-gpu.md; auto: cuda where torch sees a GPU. With "
                        "--train: where the training epochs run")
    p.add_argument("--train", action="store_true",
                   help="time one epoch of a trial's online training against a plain torch.nn.LSTM loop and the "
                        "GEMM floor, per --rows (reports/speed-train.md)")
    p.add_argument("--cells", nargs="+", default=None, help=f"specs to time (default: {' '.join(CELLS)})")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median; default 5)")
    p.add_argument("--out", default=None, help="the report (default: reports/speed.md, or reports/speed-gpu.md)")
    cpu = p.add_argument_group("CPU timings only")
    cpu.add_argument("--backends", nargs="+", default=None, choices=list(BACKENDS),
                     help=f"backends to time, of {', '.join(BACKENDS)} (default: all)")
    cpu.add_argument("--threads", nargs="+", type=int, default=None,
                     help="thread counts (default: 1 and all cores)")
    cpu.add_argument("--sizes", nargs="+", default=None, help="B,T,M,H sizes (default: " + " ".join(",".join(map(str, s)) for s in SIZES) + ")")
    cpu.add_argument("--jsb-sequences", type=int, default=None,
                     help=f"JSB sequences timed for the end-to-end line (0 skips it; default {JSB_SEQUENCES})")
    cpu.add_argument("--jsb-hidden", type=int, default=None, help=f"hidden size of the JSB line (default {JSB_HIDDEN})")
    cpu.add_argument("--data-dir", default=None,
                     help="data root holding jsb-chorales/ for the JSB line, as for `cellc bench` (default: "
                     "$CELLC_DATA_DIR, ../shared/data of a checkout, ~/.local/share/cellc)")
    train = p.add_argument_group("training epochs only (--train)")
    train.add_argument("--rows", default=None,
                       help="TASK:HIDDEN pairs, comma-separated (default: jsb:50,jsb:100,jsb:200,timit:100,iam:100)")
    gpu = p.add_argument_group("GPU benchmark only (--device cuda)")
    gpu.add_argument("--max-seconds", type=float, default=None,
                     help=f"stop timing after this long, listing the rest as skipped (default {MAX_SECONDS:g})")
    p.set_defaults(func=cmd_speed)


def _sizes(texts):
    from cellc.speed.measure import SIZES

    if not texts:
        return list(SIZES)
    out = []
    for text in texts:
        try:
            b, t, m, h = (int(v) for v in text.split(","))
        except ValueError:
            raise UsageError(f"--sizes: '{text}' is not B,T,M,H (four integers)") from None
        if min(b, t, m, h) < 1:
            raise UsageError(f"--sizes: '{text}' has a size below 1 (B,T,M,H are all at least 1)")
        out.append((b, t, m, h))
    return out


def _check_counts(args) -> None:
    """Bad counts stop here with one message, before any layer is built or timed."""
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1 (got {args.repeat})")
    if args.threads is not None and min(args.threads) < 1:
        raise UsageError(f"--threads: every thread count must be at least 1 (got {min(args.threads)})")
    if args.jsb_sequences is not None and args.jsb_sequences < 0:
        raise UsageError(f"--jsb-sequences must be 0 (skip the JSB line) or more (got {args.jsb_sequences})")
    if args.jsb_hidden is not None and args.jsb_hidden < 1:
        raise UsageError(f"--jsb-hidden must be at least 1 (got {args.jsb_hidden})")


def _check_writable(out: Path) -> None:
    """The report's folder must take files: found out before minutes of timing, not after."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot create {out.parent} ({err.strerror})") from None
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; name the report file")
    writable = os.access(out, os.W_OK) if out.exists() else os.access(out.parent, os.W_OK)
    if not writable:
        raise UsageError(f"--out {out}: {out if out.exists() else out.parent} is not writable")


CPU_ONLY = {"backends": "--backends", "threads": "--threads", "sizes": "--sizes",
            "jsb_sequences": "--jsb-sequences", "jsb_hidden": "--jsb-hidden", "data_dir": "--data-dir"}


def _gpu_benchmark(args) -> int:
    """`--device cuda`: the GPU benchmark (cellc.speed.gpu) with the options both share."""
    from cellc.speed import gpu

    given = [flag for name, flag in CPU_ONLY.items() if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{given[0]} applies to the CPU timings only, not to --device cuda")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise UsageError(f"--max-seconds must be more than 0 (got {args.max_seconds})")
    _check_counts(args)
    out = Path(args.out or "reports/speed-gpu.md")
    _check_writable(out)
    forwarded = ["--out", str(out), "--repeat", str(args.repeat)]
    if args.cells:
        forwarded += ["--cells", ",".join(args.cells)]
    if args.max_seconds is not None:
        forwarded += ["--max-seconds", str(args.max_seconds)]
    return gpu.main(forwarded, command=shlex.join(["cellc", *args.argv]))


def _train_benchmark(args) -> int:
    """`--train`: one epoch of training per --rows item, side by side (cellc.speed.train), on --device."""
    from cellc.harness.device import resolve_placement
    from cellc.speed import train

    given = [flag for name, flag in {**CPU_ONLY, "max_seconds": "--max-seconds"}.items()
             if name not in ("data_dir",) and getattr(args, name) is not None]
    if given:
        raise UsageError(f"{given[0]} does not apply to --train")
    if args.cells is not None and len(args.cells) != 1:
        raise UsageError("--train times one cell: give --cells NAME once")
    from cellc.harness.cells import refuse_elementwise_input

    refuse_elementwise_input({cell: cell for cell in args.cells or []}, "--cells",
                             "cellc speed --train times it on the tasks' networks, whose sizes differ")
    _check_counts(args)
    rows = train.parse_rows(args.rows or ",".join(f"{t}:{n}" for t, n in train.ROWS))
    place = resolve_placement(args.device)
    out = Path(args.out or "reports/speed-train.md")
    _check_writable(out)
    print(train.run(rows, (args.cells or ["vanilla"])[0], args.repeat, out, place, shlex.join(["cellc", *args.argv]),
                    args.data_dir))
    return 0


def cmd_speed(args) -> int:
    if args.train:
        return _train_benchmark(args)
    if args.rows is not None:
        raise UsageError("--rows applies to --train only")
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda":
        return _gpu_benchmark(args)
    if args.max_seconds is not None:
        raise UsageError("--max-seconds applies to the GPU benchmark only (--device cuda)")
    _check_counts(args)
    import torch
    from tqdm import tqdm

    from cellc.speed.measure import BACKENDS, CELLS, jsb_epoch_seconds, load_jsb, make_layer, measure
    from cellc.speed.report import write_report

    args.cells = args.cells or list(CELLS)
    from cellc.harness.cells import refuse_elementwise_input

    refuse_elementwise_input({cell: cell for cell in args.cells}, "--cells",
                             "cellc speed times each cell beside torch.nn.LSTM at sizes where the two differ")
    args.backends = args.backends or list(BACKENDS)
    args.jsb_sequences = JSB_SEQUENCES if args.jsb_sequences is None else args.jsb_sequences
    args.jsb_hidden = JSB_HIDDEN if args.jsb_hidden is None else args.jsb_hidden
    args.out = args.out or "reports/speed.md"
    sizes = _sizes(args.sizes)
    jsb_data = load_jsb(args.data_dir) if args.jsb_sequences else None  # missing data: an error before the timing
    out = Path(args.out)
    _check_writable(out)
    threads = args.threads or sorted({1, os.cpu_count() or 1})
    compile_info = {}
    if "compiled" in args.backends:  # build first, so compile time is reported and never timed
        for cell in args.cells:
            layer = make_layer(cell, "compiled", 2, 2)
            module = sys.modules[type(layer).__module__]
            module.native()
            compile_info[cell] = dict(module.NATIVE.get("info", {}))
    jobs = [(cell, backend, size, n) for n in threads for size in sizes for cell in args.cells
            for backend in ("torch", *args.backends)]
    timings = []
    for cell, backend, size, n in tqdm(jobs, desc="speed", unit="run"):
        timings.append(measure(cell, backend, size, n, args.repeat, memory=(n == 1)))
    jsb = []
    if args.jsb_sequences:
        fastest = "compiled" if "compiled" in args.backends else args.backends[-1]
        for backend in dict.fromkeys(["eager", fastest]):
            seconds, timed, total, source = jsb_epoch_seconds(backend, args.jsb_hidden, args.jsb_sequences, jsb_data)
            jsb.append((backend, seconds, timed, total, source, args.jsb_hidden))
    torch.set_num_threads(os.cpu_count() or 1)
    write_report(timings, out, args.repeat, jsb, compile_info, shlex.join(["cellc", *args.argv]))
    print(out.read_text())
    return 0
