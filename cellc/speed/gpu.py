"""GPU benchmark: correctness on the device first, then every backend against cuDNN; writes reports/speed-gpu.md.

    python -m cellc.speed.gpu [--out reports/speed-gpu.md] [--max-seconds 330] [--repeat 5]

Installs nothing. Exits 2 with one message where no CUDA device is present. Sized for one H100
within about six minutes: a time cap stops measuring (the report lists what it skipped), the
per-step eager and Python-loop fused backends run only where they finish quickly (measured_here; the
report's SKIPS say where),
and every failure is recorded in the report instead of stopping the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

from cellc.speed.gpu_report import CELLS, DTYPES, LOWERABLE, Row, Run, load_json, save_json, write_report
from cellc.speed.kernel_resources import generated_module

MAX_SECONDS = 330.0  # the timing phase's default cap: the whole run within 6 minutes on an H100
GRID_B = (16, 64)
GRID_T = (100, 1000)
GRID_H = (256, 768)
# The study's small sizes: the persistent kernel's (H <= 128), and H=192, between cuDNN's fast float32 path
# (128) and its slow one (256), where the triton backend's auto mode chooses between cuDNN and its own kernels.
STUDY_SIZES = ((16, 1000, 64), (16, 1000, 128), (16, 100, 128), (16, 1000, 192))
# Measured in this order (the targets' sizes first), so a run stopped by the time cap still answers them.
SIZE_ORDER = ((16, 1000, 128), (16, 1000, 192), (16, 1000, 256), (64, 1000, 256), (16, 100, 256), (64, 100, 256),
              (16, 1000, 768), (64, 1000, 768), (16, 100, 768), (64, 100, 768), (16, 100, 128), (16, 1000, 64))
assert set(SIZE_ORDER) == {(b, t, h) for b in GRID_B for t in GRID_T for h in GRID_H} | set(STUDY_SIZES)
# Backends: (label, cellc backend, CELLC_TRITON_MODE). The per-step rows replay their loops from
# CUDA graphs after the second call with the same shapes (the backend does this itself).
BACKENDS = (("eager", "eager", None), ("fused", "fused", None), ("triton-step", "triton", "step"),
            ("triton-persistent", "triton", "persistent"), ("triton-tiled", "triton", "tiled"),
            ("lowered", "lowered", None))


@contextlib.contextmanager
def environment(name: str, value: str | None):
    """The environment variable set to value (None: unset) inside the block, as it was after."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def triton_mode(mode: str | None):
    return environment("CELLC_TRITON_MODE", mode or "auto")


def make(cell: str, backend: str, h: int, dtype, torch):
    import cellc

    if backend == "torch":
        layer = torch.nn.GRU(h, h) if cell == "gru" else torch.nn.LSTM(h, h)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer = cellc.build(cell, backend=backend)(h, h)
    return layer.to(device="cuda", dtype=dtype)


def cuda_ms(fn, repeat: int, torch, warm_up: bool = True) -> float:
    if warm_up:
        fn()  # and kernel compilation, graph capture
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def applies(cell: str, label: str, h: int, dtype: str = "float32") -> bool:
    if label == "lowered":
        return cell in LOWERABLE
    if label == "triton-persistent":
        return persistent_fits(cell, h, dtype)
    if label == "triton-tiled":  # one launch a step, recurrent products included: small and middle H
        return h <= 256 and generated_module(cell).TILED
    return True


def persistent_fits(cell: str, h: int, dtype: str) -> bool:
    """The generated module's own rule: do R's resident blocks fit this chip's shared memory?"""
    import torch

    return generated_module(cell).persistent_fits(h, getattr(torch, dtype))


def measured_here(label: str, size: tuple[int, int, int], dtype: str) -> bool:
    """The slow Python-loop backends run only where they finish in seconds (see SKIPS)."""
    b, t, h = size
    if label == "eager":
        return b == 16 and h == 256 and (t == 100 or dtype == "float32")
    if label == "fused":
        return b == 16 and t == 100
    return True


def _worst(a: float, b: float) -> float:
    """max that keeps NaN (Python's max drops it when it comes second)."""
    return float("inf") if a != a or b != b else max(a, b)


BF16_TOLERANCE = 5e-2  # max |bf16 module - fp32 eager| output error where only bf16 is checked (fp32: 1e-4)


def check_points(cell: str):
    """(H, backend, whether float32 is checked too): every backend at H 64 and 256, in float32 against eager
    and in bf16 against that; bf16 alone where only bf16 reaches (the persistent kernel: fgr at 64, and
    at H=128, which is checked for that alone)."""
    for h in (64, 128, 256):
        for backend in BACKENDS[1:]:
            fp32 = applies(cell, backend[0], h)
            if fp32 and h != 128:
                yield h, backend, True
            elif not fp32 and applies(cell, backend[0], h, "bfloat16"):
                yield h, backend, False


def check_correctness(run: Run, torch, cells=CELLS) -> None:
    """fp32 (no TF32) against eager on the device, over three calls with fresh inputs (the per-step
    backend captures its CUDA graphs on the second and replays them on the third); the bf16 module
    against the fp32 eager output."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    b, t = 16, 50
    for cell in cells:
        refs = {}
        for h, (label, backend, mode), fp32 in check_points(cell):
            if h not in refs:
                torch.manual_seed(0)
                lengths = torch.randint(1, t + 1, (b,))
                lengths[0] = t
                refs[h] = make(cell, "eager", h, torch.float32, torch), lengths
            ref, lengths = refs[h]
            try:
                with triton_mode(mode):
                    err = gerr = 0.0
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        if fp32:
                            layer = make(cell, backend, h, torch.float32, torch)
                            layer.load_state_dict(ref.state_dict())
                        for call in range(3 if fp32 else 1):
                            x = torch.randn(t, b, h, device="cuda")
                            ref.zero_grad()
                            out_ref = ref(x, lengths=lengths)[0]
                            if fp32:
                                layer.zero_grad()
                                out_ref.sum().backward()
                                out = layer(x, lengths=lengths)[0]
                                out.sum().backward()
                                with torch.no_grad():  # inference runs its own kernels (nothing kept for a backward)
                                    inference = layer(x, lengths=lengths)[0]
                                err = _worst(_worst(err, (out - out_ref).abs().max().item()), (inference - out_ref).abs().max().item())
                                for p, q in zip(layer.parameters(), ref.parameters()):
                                    gerr = _worst(gerr, (p.grad - q.grad).abs().max().item() / (q.grad.abs().max().item() + 1e-12))
                        low = make(cell, backend, h, torch.bfloat16, torch)
                        low.load_state_dict(ref.state_dict())
                        bf = (low(x.bfloat16(), lengths=lengths)[0].float() - out_ref).abs().max().item()
                ok = (err < 1e-4 and gerr < 1e-3) if fp32 else bf < BF16_TOLERANCE
                # torch warns when cuDNN has to copy an RNN's weights into one buffer (every call)
                copied = any("contiguous chunk" in str(w.message) for w in caught)
                as_is = "" if label != "lowered" else ("copied" if copied else "as they are")
                run.checks.append([cell, label, h, f"{err:.2e}" if fp32 else "", f"{gerr:.2e}" if fp32 else "",
                                   f"{bf:.2e}", as_is, "ok" if ok else "CHECK"])
            except Exception as error:  # recorded, never fatal: the report says what failed
                run.failures.append(f"check {cell} {label} H={h}: {type(error).__name__}: {str(error)[:300]}")
    # Timings run with TF32 on for both sides: cuDNN's RNN default, and cuBLAS / tl.dot set to match it.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def time_one(run: Run, row: Row, spec, repeat: int, torch) -> None:
    b, t, h = row.size
    dtype = getattr(torch, row.dtype)
    torch.manual_seed(0)
    backend, mode = ("torch", None) if spec is None else spec
    with triton_mode(mode):
        layer = make(row.cell, backend, h, dtype, torch)
        x = torch.randn(t, b, h, device="cuda", dtype=dtype)

        def forward():
            with torch.no_grad():
                layer(x)

        def train():
            layer(x)[0].sum().backward()

        begin = time.monotonic()
        train()
        torch.cuda.synchronize()
        row.first_s = time.monotonic() - begin
        # Each timing warms up first: the per-step backends capture their CUDA graphs on a second call.
        try:
            row.fwd_ms = cuda_ms(forward, repeat, torch)
            row.train_ms = cuda_ms(train, repeat, torch)
            if row.backend == "lowered":
                row.paired = paired_ratio(train, row.cell, h, dtype, x, torch)
        finally:  # the next point has other shapes: its graphs, not these, should have the memory
            release = getattr(sys.modules.get(type(layer).__module__), "release_graphs", None)
            if release is not None:
                release()


PAIRED_ROUNDS = 15


def paired_ratio(train, cell: str, h: int, dtype, x, torch) -> tuple[float, float, float]:
    """A within-2 % claim needs more than two medians taken apart: cuDNN's own time moves by more than
    that from one job to the next. Alternate torch's module and the lowered one, round by round, and
    return the median and quartiles of the per-round ratios."""
    reference = make(cell, "torch", h, dtype, torch)

    def reference_train():
        reference(x)[0].sum().backward()

    reference_train()
    ratios = []
    for _ in range(PAIRED_ROUNDS):
        ours, theirs = cuda_ms(train, 1, torch, warm_up=False), cuda_ms(reference_train, 1, torch, warm_up=False)
        ratios.append(ours / theirs)
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    return median, q1, q3


def time_all(run: Run, args, torch, deadline: float, report=None, cells=CELLS, sizes=SIZE_ORDER) -> None:
    from tqdm import tqdm

    jobs = []
    for size in sizes:
        for dtype in DTYPES:
            for cell in cells:
                jobs.append((cell, "torch", size, dtype, None))
                for label, backend, mode in BACKENDS[2:] + BACKENDS[:2]:
                    if applies(cell, label, size[2], dtype) and measured_here(label, size, dtype):
                        jobs.append((cell, label, size, dtype, (backend, mode)))
    last_size = None
    for cell, label, (b, t, h), dtype, spec in tqdm(jobs, desc="gpu speed", unit="run", mininterval=15):
        if report is not None and last_size not in (None, (b, t, h)):
            report()  # the report so far, so a run stopped from outside still leaves one
        last_size = (b, t, h)
        if time.monotonic() > deadline:
            run.skipped.append(f"{cell} {label} B={b} T={t} H={h} {dtype} (time cap)")
            continue
        row = Row(cell, label, (b, t, h), dtype)
        repeat = 1 if label in ("eager", "fused") else args.repeat
        try:
            time_one(run, row, spec, repeat, torch)
        except Exception as error:
            row.note = f"failed: {type(error).__name__}"
            run.failures.append(f"{cell} {label} B={b} T={t} H={h} {dtype}: {type(error).__name__}: {str(error)[:300]}")
        run.rows.append(row)
        torch.cuda.empty_cache()


def machine_facts(torch) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return {"device": torch.cuda.get_device_name(), "when": datetime.datetime.now().isoformat(timespec="minutes"),
            "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(), "triton": triton_version,
            "host": platform.node()}


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    """command: how the report names the command that wrote it (default: this module's own)."""
    parser = argparse.ArgumentParser(prog="python -m cellc.speed.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/speed-gpu.md")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                        help=f"stop timing after this long (the rest is listed as skipped); default {MAX_SECONDS:g}")
    parser.add_argument("--skip-check", action="store_true", help="skip the correctness phase")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells (default: all six)")
    parser.add_argument("--sizes", default="",
                        help="comma-separated BxTxH points to time instead of the whole grid, e.g. 16x100x128")
    parser.add_argument("--from-json", metavar="PATH",
                        help="rewrite the report from a run's saved measurements (no GPU needed)")
    args = parser.parse_args(argv)
    if args.from_json:
        run, facts, elapsed, command = load_json(Path(args.from_json))
        write_report(run, Path(args.out), facts, elapsed, command)
        return 0
    import torch
    try:
        sizes = tuple(tuple(int(v) for v in point.split("x")) for point in args.sizes.split(",") if point) or SIZE_ORDER
        assert all(len(size) == 3 and min(size) > 0 for size in sizes)
    except (ValueError, AssertionError):
        print(f"error: --sizes: expected points like 16x100x128 separated by commas, not {args.sizes!r}", file=sys.stderr)
        return 2
    cells = tuple(c for c in args.cells.split(",") if c)
    unknown = sorted(set(cells) - set(CELLS))
    if unknown:
        print(f"error: --cells: unknown cell(s) {', '.join(unknown)} (choose from {', '.join(CELLS)})", file=sys.stderr)
        return 2

    if not torch.cuda.is_available():
        print("error: no CUDA device here (torch.cuda.is_available() is False); the GPU benchmark needs one. "
              "CPU timings: cellc speed", file=sys.stderr)
        return 2
    start = time.monotonic()
    run = Run()
    if not args.skip_check:
        check_correctness(run, torch, cells)
    print(f"correctness phase: {time.monotonic() - start:.0f} s", flush=True)
    out = Path(args.out)
    command = command or "python -m cellc.speed.gpu " + " ".join(argv if argv is not None else sys.argv[1:])

    facts = machine_facts(torch)
    facts["persistent_max"] = {cell: [max((n for n in range(1, 129) if persistent_fits(cell, n, d)), default=0)
                                      for d in DTYPES] for cell in cells}

    def report() -> None:
        write_report(run, out, facts, time.monotonic() - start, command)
        save_json(run, out.with_suffix(".json"), facts, time.monotonic() - start, command)

    report()
    time_all(run, args, torch, start + args.max_seconds, report, cells, sizes)
    report()
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
