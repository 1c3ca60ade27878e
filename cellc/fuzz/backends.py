"""Differential fuzzing of the backends: random valid cells (cellc.fuzz.cells), each built for every backend
asked for and compared with the eager backend on the same weights and inputs: outputs, final states and the
gradients of the input, the initial state and every parameter, in three cases (plain; variable lengths;
bidirectional with two layers and lengths), and, for backends with ``train_forward`` (fused, compiled), the
online trainer's path: a bidirectional batch of one through train_forward / train_backward, twice with an
in-place weight update between (cellc.harness.online).

float64 for eager, fused, compiled (C++ loops) and lowered (where a cell is exactly LSTM / GRU); the Triton
kernels compute in float32, so they run under the Triton interpreter (TRITON_INTERPRET=1) in float32 and are
compared with eager in float32, each case in one of the kernel modes (step, persistent, tiled) in turn.

Cells run in worker processes, a chunk at a time (cellc.fuzz.driver): a crash (a segfault in generated C++,
an abort) ends only its process; the cell it was running is recorded as a crash. ``python -m cellc.fuzz.backends --help`` (or benchmarks/fuzz_backends.py) runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

from cellc.fuzz.driver import add_run_arguments, print_summary, run_in_workers, worker_seeds
from cellc.testing import input_size, layer_results, random_state, size_keywords

BACKENDS = ("fused", "compiled", "triton", "lowered")
CASES = {
    "plain": dict(num_layers=1, bidirectional=False, lengths=None),
    "lengths": dict(num_layers=1, bidirectional=False, lengths=[4, 2, 3]),
    "bidir2": dict(num_layers=2, bidirectional=True, lengths=[3, 4, 1]),
}
TRITON_MODES = ("step", "persistent", "tiled")
M, N, T, B = 3, 5, 4, 3
# Largest error allowed, relative to the largest entry of the reference tensor (plus one):
# float64 backends round differently (sums in another order), float32 kernels far more.
TOLERANCE = {"float64": 1e-9, "float32": 2e-4}
# Roundings allowed at the case's largest magnitude: seed 9067 (magnitudes 1e31, a gradient of 1e13 summed from
# terms of 1e24) differed by 2e-11 of one rounding there, so 16 leave a wide margin and loosen few cells.
ROUNDING_STEPS = 16
# A reference beyond this (or not finite) is not compared: near the end of the range, two correct backends
# overflow at different steps. Such cases are counted ("overflow"), never passed.
OVERFLOW = {"float64": 1e100, "float32": 1e15}


def _pair(eager_cls, fast_cls, seed: int, **layer_opts):
    """An eager layer and a fast one with the same weights, drawn from ``seed`` away from the module's small
    init (so that every term matters)."""
    import torch

    torch.manual_seed(seed)
    sizes = size_keywords(eager_cls, N)  # proj_size = N // 2 for a cell with values of that size
    m = input_size(eager_cls, M, N, **sizes)  # the output's size for a cell that reads its input elementwise
    eager = eager_cls(m, N, **sizes, **layer_opts)
    with torch.no_grad():
        for p in eager.parameters():
            p.copy_(0.6 * torch.randn_like(p))
    fast = fast_cls(m, N, **sizes, **layer_opts)
    fast.load_state_dict(eager.state_dict())
    return eager, fast


def _run_online(layer, x, d_out, train=None):
    """Output and parameter gradients of a batch-of-one sequence from its default initial state, by autograd
    (``train`` None) or by the generated module's train_forward / train_backward (the online trainer's path),
    called twice with an in-place weight update between (as the optimizer does) to exercise kept buffers."""
    import torch

    for attempt in range(2):
        if attempt:
            with torch.no_grad():
                for p in layer.parameters():
                    p.mul_(0.9).add_(0.01)
        if train is None:
            with torch.enable_grad():
                out, _ = layer(x)
                params = list(layer.parameters())  # none for a cell that reads its input only elementwise
                grads = torch.autograd.grad(out, params, d_out, allow_unused=True) if params else ()
            result = dict(zip([f"d_{n}" for n, _ in layer.named_parameters()], grads), output=out.detach())
        else:
            out, tape = train.train_forward(layer, x)
            out = out.clone()  # the next call reuses the buffer
            found = train.train_backward(layer, tape, d_out)
            result = {f"d_{n}": found.get(n) for n, _ in layer.named_parameters()}
            result["output"] = out
    return {k: (torch.zeros_like(dict(layer.named_parameters())[k[2:]]) if v is None else v) for k, v in result.items()}


def _worst(fast: dict, ref: dict, dtype_name: str = "float64") -> tuple[float, str, bool]:
    """The largest error over every tensor as a multiple of what that tensor allows (> 1: a mismatch), and
    where. A tensor allows TOLERANCE relative to its own scale (its largest entry, plus one), plus the rounding
    of the case's largest magnitude: a gradient of scale 1e13 summed from terms of 1e24 (a runaway cell's)
    legitimately differs by eps * 1e24 between two correct summation orders. In a well-scaled case that
    second part is negligible. NaN/inf where the reference is finite counts as infinite. The third value: whether
    the rounding part exceeded the tolerance itself (a case whose magnitudes loosen the check: counted apart)."""
    import torch

    worst, where = 0.0, ""
    if fast.keys() != ref.keys():
        return float("inf"), f"tensors differ: {sorted(fast.keys() ^ ref.keys())}", False
    biggest = max((float(t[torch.isfinite(t)].abs().max()) for t in ref.values() if torch.isfinite(t).any()),
                  default=0.0)
    rounding = ROUNDING_STEPS * float(torch.finfo(getattr(torch, dtype_name)).eps) * biggest
    for name, b in ref.items():
        a = fast[name].to(b.dtype)
        if a.shape != b.shape:
            return float("inf"), f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}", False
        finite = torch.isfinite(b)
        if not torch.equal(torch.isfinite(a), finite):
            return float("inf"), f"{name}: non-finite entries differ", False
        if finite.any():
            scale = 1.0 + b[finite].abs().max().item()
            allowed = TOLERANCE[dtype_name] * scale + rounding
            ratio = (a[finite] - b[finite]).abs().max().item() / allowed
            if ratio > worst:
                worst, where = ratio, name
    return worst, where, rounding > TOLERANCE[dtype_name]


def check_cell(seed: int, backends: tuple[str, ...], workdir: Path) -> dict:
    """One random cell through ``backends`` against eager: {"seed", "status", "backends": {b: result}}."""
    from cellc.fuzz.cells import random_cell

    cell = random_cell(seed)
    path = workdir / f"{cell.name}.yaml"
    path.write_text(cell.text)
    return {"seed": seed, **check_spec(path, backends, seed)}


def check_spec(path: Path | str, backends: tuple[str, ...], seed: int = 0) -> dict:
    """A spec file through ``backends`` against eager (weights and inputs from ``seed``): {"status",
    "backends": {backend: {"status", "error", "where", ...}}}; status "rejected" where the front end refuses
    the spec."""
    from cellc.errors import CellcError
    from cellc.ir.pipeline import compile_spec

    try:
        compiled = compile_spec(path)
    except CellcError as error:
        return {"status": "rejected", "message": error.render()[:300]}
    results: dict[str, dict] = {}
    for backend in backends:
        start = time.perf_counter()
        try:
            results[backend] = _compare(compiled, backend, seed)
        except CellcError as error:  # a backend that does not apply (lowered: not exactly LSTM / GRU)
            results[backend] = {"status": "n/a", "message": str(error)[:200]}
        except Exception as error:  # noqa: BLE001 - any failure of a backend is a finding
            results[backend] = {"status": "error", "message": f"{type(error).__name__}: {error}"[:500]}
        results[backend]["seconds"] = round(time.perf_counter() - start, 3)
    statuses = {r["status"] for r in results.values()}
    status = "mismatch" if "mismatch" in statuses else "error" if "error" in statuses else "ok"
    return {"status": status, "backends": results}


def _compare(compiled, backend: str, seed: int) -> dict:
    import torch

    import cellc

    dtype = torch.float32 if backend == "triton" else torch.float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager_cls = cellc.build(compiled, backend="eager")
        fast_cls = cellc.build(compiled, backend=backend)
        if backend == "compiled":
            module = sys.modules[fast_cls.__module__]
            if module.native() is None:
                raise RuntimeError(f"the C++ loops did not build: {module.NATIVE['info'].get('error')}")
    dtype_name = str(dtype).split(".")[1]
    modes: list[str] = []
    cases = []  # (name, the reference's result, a function giving the backend's)
    for k, (case, opts) in enumerate(CASES.items()):
        eager, fast = _pair(eager_cls, fast_cls, seed * 7 + k, num_layers=opts["num_layers"],
                            bidirectional=opts["bidirectional"], dtype=dtype)
        g = torch.Generator().manual_seed(seed * 7 + k)
        x = torch.randn(T, B, eager.input_size, generator=g, dtype=dtype)
        state = random_state(eager, B, g, dtype)
        lengths = None if opts["lengths"] is None else torch.tensor(opts["lengths"])
        if backend == "triton":
            mode = TRITON_MODES[(seed + k) % len(TRITON_MODES)]
            os.environ["CELLC_TRITON_MODE"] = mode  # read when the layer runs, right below
            modes.append(f"{case}:{mode}")
        cases.append((case, layer_results(eager, x, state, lengths), layer_results(fast, x, state, lengths)))
    train = sys.modules[fast_cls.__module__]
    if hasattr(train, "train_forward"):  # the online trainer's path (cellc.harness.online): batch of one, both ways
        eager, fast = _pair(eager_cls, fast_cls, seed * 7 + len(CASES), bidirectional=True, dtype=dtype)
        g = torch.Generator().manual_seed(seed * 7 + len(CASES))
        x = torch.randn(T + 2, 1, eager.input_size, generator=g, dtype=dtype)
        d_out = torch.randn(T + 2, 1, 2 * eager.output_size, generator=g, dtype=dtype)
        cases.append(("online", _run_online(eager, x, d_out), _run_online(fast, x, d_out, train)))
    worst, where, overflowed, loosened = 0.0, "", [], []
    for case, ref, found in cases:
        if not all(bool(torch.isfinite(t).all()) and t.abs().max().item() < OVERFLOW[dtype_name] for t in ref.values()):
            overflowed.append(case)  # products of identities and relus can square their way past float's range
            continue
        err, name, loose = _worst(found, ref, dtype_name)
        if loose:
            loosened.append(case)
        if err > worst or err == float("inf"):
            worst, where = err, f"{case}/{name}"
    if len(overflowed) == len(cases):
        return {"status": "overflow", "error": 0.0, "where": ""}
    # error: the worst tensor's error as a fraction of what it allows (see _worst); above 1 is a mismatch
    result = {"status": "mismatch" if not worst <= 1.0 else "ok", "error": worst, "where": where}
    if overflowed:
        result["overflowed"] = overflowed
    if loosened:
        result["loosened"] = loosened  # magnitudes so large that rounding, not TOLERANCE, set the allowance
    if modes:
        result["modes"] = modes
    return result


# ---- the driver -------------------------------------------------------------------------------------------

class _Library:
    """One cell's entry points in a library built for several cells (what a module's NATIVE["lib"] holds)."""

    def __init__(self, lib, k: int, n_sizes: int = 1):
        import ctypes

        self.cellc_set_blas = getattr(lib, f"cellc{k}_set_blas")
        self.cellc_forward = getattr(lib, f"cellc{k}_forward")
        self.cellc_backward = getattr(lib, f"cellc{k}_backward")
        for fn in (self.cellc_forward, self.cellc_backward):
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, *[ctypes.c_int64] * n_sizes,
                           ctypes.c_void_p]
            fn.restype = None


def prebuild_compiled(seeds: list[int], workdir: Path) -> int:
    """Build the C++ loops of every seed's cell as ONE library (one compiler run for many cells: a build per
    cell would cost more than the fuzzing itself on a small machine) and hand each generated module its part.
    The source of each cell is its module's own CPP_SOURCE, unchanged but for being wrapped in a namespace of
    its own with its three extern "C" entry points renamed; compiled and linked with the module's own flags.
    Returns the number of cells prebuilt (0 where the joint build fails: each module then builds itself,
    and reports its own failure)."""
    import ctypes
    import sys as _sys

    import cellc
    from cellc.errors import CellcError
    from cellc.fuzz.cells import random_cell
    from cellc.ir.pipeline import compile_spec

    modules = []
    for seed in seeds:
        cell = random_cell(seed)
        path = workdir / f"{cell.name}.yaml"
        path.write_text(cell.text)
        try:
            cls = cellc.build(compile_spec(path), backend="compiled")
        except CellcError:
            continue
        modules.append(_sys.modules[cls.__module__])
    if not modules:
        return 0
    includes, bodies = set(), []
    for k, module in enumerate(modules):
        lines = module.CPP_SOURCE.splitlines()
        includes |= {line for line in lines if line.startswith("#include")}
        body = "\n".join(line for line in lines if not line.startswith("#include"))
        body = body.replace('extern "C" void cellc_', f'extern "C" void cellc{k}_')
        bodies.append(f"namespace cellc_fuzz_{k} {{\n{body}\n}}")
    source = "\n".join(sorted(includes)) + "\n" + "\n".join(bodies) + "\n"
    first = modules[0]
    cxx = os.environ.get("CXX") or "c++"
    build = workdir / f"batch-{seeds[0]}"
    build.mkdir(exist_ok=True)
    (build / "loops.cpp").write_text(source)
    done = subprocess.run([cxx, *first._cxx_flags(cxx), "-c", str(build / "loops.cpp"), "-o", str(build / "loops.o")],
                          capture_output=True, text=True)
    if done.returncode == 0:
        done = subprocess.run([cxx, *first.LINK_FLAGS, str(build / "loops.o"), "-o", str(build / "loops.so"), "-lm"],
                              capture_output=True, text=True)
    if done.returncode != 0:
        return 0
    lib = ctypes.CDLL(str(build / "loops.so"))
    blas = first._torch_blas()
    for k, module in enumerate(modules):
        part = _Library(lib, k, len(module.SIZES))
        part.cellc_set_blas(*[ctypes.c_void_p(p) for p in blas])
        module.NATIVE["lib"], module.NATIVE["info"] = part, {"path": str(build / "loops.so"), "batched": len(modules)}
    return len(modules)


def fast_interpreter() -> None:
    """The Triton interpreter checks every 32-bit integer add, sub and mul for overflow by redoing it in
    64 bits: half of a fuzz cell's time. The fuzzer's sizes are tiny (no offset comes near 2**31; the tests
    of the 64-bit kernels keep the check), so its workers turn the check off."""
    import dataclasses

    from triton.runtime import interpreter

    fields = {f.name for f in dataclasses.fields(interpreter.InterpreterOptions)}
    if "sanitize_overflow" in fields:
        original = interpreter.InterpreterOptions.__init__

        def init(self, *args, **kwargs):
            kwargs.setdefault("sanitize_overflow", False)
            original(self, *args, **kwargs)

        interpreter.InterpreterOptions.__init__ = init


def _worker(seeds: list[int], backends: tuple[str, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    if "triton" in backends:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        fast_interpreter()
    workdir = Path(tempfile.mkdtemp(prefix="cellc-fuzz-"))
    if "compiled" in backends and os.environ.get("CELLC_FUZZ_BATCH_BUILD", "1") == "1":
        prebuild_compiled(seeds, workdir)
    for seed in seeds:
        print("START", seed, flush=True)
        print(json.dumps(check_cell(seed, backends, workdir)), flush=True)


def run(seeds: list[int], backends: tuple[str, ...], jobs: int = 1, chunk: int = 25, report=print,
        progress: bool = True) -> dict:
    """Check every seed's cell on ``backends`` in ``jobs`` worker processes; the summary dict. Each cell that
    is not ok (mismatch, error, crash) is passed to ``report`` as a JSON line as soon as its chunk ends."""
    def on_row(row: dict) -> None:
        if row["status"] not in ("ok", "rejected"):
            report(json.dumps(row))

    env = {"CELLC_CACHE_DIR": os.environ.get("CELLC_CACHE_DIR") or tempfile.mkdtemp(prefix="cellc-fuzz-cache-")}
    rows, seconds = run_in_workers("cellc.fuzz.backends", seeds, ["--backends", ",".join(backends)], jobs=jobs,
                                   chunk=chunk, env=env, on_row=on_row, progress=progress)
    return summarize(rows, backends, seconds)


def summarize(rows: list[dict], backends: tuple[str, ...], seconds: float) -> dict:
    statuses = Counter(r["status"] for r in rows)
    per_backend = {}
    for b in backends:
        per_backend[b] = dict(Counter(r["backends"][b]["status"] for r in rows if "backends" in r))
    worst = {b: max((r["backends"][b].get("error", 0.0) for r in rows if "backends" in r
                     and r["backends"][b]["status"] == "ok"), default=0.0) for b in backends}
    loosened = {b: sum(1 for r in rows if "backends" in r and r["backends"][b].get("loosened")) for b in backends}
    # worst_ok_ratio: the worst error of a passing cell as a fraction of its allowance (_worst);
    # loosened: cells with a case whose magnitudes made rounding, not TOLERANCE, the allowance
    return {"cells": len(rows), "statuses": dict(statuses), "per_backend": per_backend, "worst_ok_ratio": worst,
            "loosened": loosened, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="differential fuzzing: random cells on every backend vs eager")
    parser.add_argument("--cells", type=int, default=100, help="how many random cells (default: 100)")
    parser.add_argument("--backends", default="fused,compiled",
                        help=f"comma-separated, from {', '.join(BACKENDS)} (default: fused,compiled)")
    add_run_arguments(parser, "cells", chunk=25)
    args = parser.parse_args(argv)
    backends = tuple(b for b in args.backends.split(",") if b)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.error(f"--backends: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(BACKENDS)}")
    if args.worker:
        _worker(worker_seeds(args), backends)
        return 0
    if args.cells < 1 or args.jobs < 1 or args.chunk < 1:
        parser.error("--cells, --jobs and --chunk take positive numbers")
    seeds = list(range(args.seed, args.seed + args.cells))
    print(f"fuzzing {args.cells} cells (seeds {seeds[0]}..{seeds[-1]}) on {', '.join(backends)} against eager, "
          f"{args.jobs} processes", flush=True)
    summary = run(seeds, backends, jobs=args.jobs, chunk=args.chunk)
    summary.update(seed=args.seed, backends=list(backends))
    print_summary(summary, args.json)
    bad = sum(n for s, n in summary["statuses"].items() if s not in ("ok", "rejected"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
