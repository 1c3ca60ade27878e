"""What the generated Triton kernels need on a GPU, found without one: compiled ahead of time for sm_90.

Triton compiles for a named target on any machine, and the cubin says what a launch would find
out: shared memory (Triton's metadata), registers and stack, i.e. spilled registers (cuobjdump,
shipped with Triton). Every kernel is compiled at the configuration the backend launches it with
(the generated module's own ``_blocks``, ``_persistent_config`` and ``_tiled_config``), so the
report shows where a kernel would not fit the chip, where it spills, and whether
``persistent_fits`` (the rule that picks the persistent kernel) agrees with the compiled sizes.

    python -m cellc.speed.kernel_resources [--cells vanilla fgr] [--out reports/kernels-sm90.md]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from cellc.errors import CellcError, UsageError

ARCH = 90  # the H100's compute capability
SHARED_LIMIT = 232448  # bytes of shared memory one block may opt into on sm_90 (227 KB)
# Kernel arguments held in the inputs' dtype (bf16 runs); every other pointer is float32 state or scratch.
LOW_DTYPE_POINTERS = {"xw", "gs", "out", "R", "MAT", "DXW", "DG", "DOUT"}
INTEGER_ARGS = {"t", "T", "B", "N"}
CELLS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr", "gru", "mgu", "mut3")
SIZES = {"step": (64, 768), "tiled": (64, 256), "persistent": (16, 32, 64, 128)}
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class Resources:
    shared: int  # bytes
    registers: int  # per thread
    stack: int  # bytes per thread: registers spilled to local memory (0 = no spills)


@dataclass
class Row:
    cell: str
    family: str
    kernel: str
    N: int
    dtype: str
    config: str
    resources: Resources | None
    error: str = ""


def cuobjdump_path() -> Path:
    """Where Triton keeps the cuobjdump it ships (present in its Linux wheels)."""
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def _cuobjdump() -> str:
    path = cuobjdump_path()
    if not path.exists():
        raise UsageError(f"this Triton install has no cuobjdump ({path}); it is needed to read registers and spills")
    return str(path)


def cubin_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) of a cubin's one kernel, from `cuobjdump -res-usage`."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        text = subprocess.run([_cuobjdump(), "-res-usage", handle.name], capture_output=True, text=True,
                              check=True).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if match is None:
        raise RuntimeError(f"cuobjdump printed no resource line: {text[-300:]!r}")
    return int(match.group(1)), int(match.group(2))


def compile_kernel(kernel, constants: dict, dtype: str, num_warps: int, sizes: dict[str, int] | None = None,
                   arch: int = ARCH) -> Resources:
    """Compile one jitted kernel for sm_<arch> with these constexprs; no GPU is needed.

    Specialised as a launch specialises it: every pointer 16-byte aligned (the kernels get whole torch
    tensors), and each integer in ``sizes`` (B, N, T) that is a multiple of 16 known to be one. Without
    that the compiler loses vectorised accesses and allocates registers differently (more spills).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, stated (silences its notice)
    low = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]
    signature = {}
    for name in kernel.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        elif name in INTEGER_ARGS:
            signature[name] = "i32"
        elif name == "MASK":
            signature[name] = "*i8"
        else:
            signature[name] = f"*{low}" if name in LOW_DTYPE_POINTERS else "*fp32"
    sizes = sizes or {}
    aligned = [i for i, name in enumerate(kernel.arg_names)
               if signature[name].startswith("*") or (name in sizes and sizes[name] % 16 == 0)]
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(kernel.arg_names.index(k),): v for k, v in constants.items()},
                       attrs={(i,): [["tt.divisibility", 16]] for i in aligned})
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    registers, stack = cubin_usage(compiled.asm["cubin"])
    return Resources(compiled.metadata.shared, registers, stack)


def generated_module(cell: str):
    import cellc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sys.modules[cellc.build(cell, backend="triton").__module__]


def launch_configs(module, family: str, N: int, dtype: str = "float32", precision: str = "ieee") -> list[tuple[str, dict, int]]:
    """(kernel, constexprs, num_warps) as the backend launches this family at hidden size N (batch 16, masked);
    precision: tl.dot's, "ieee" (torch's default for float32) or "tf32" (torch.backends.cuda.matmul.allow_tf32)."""
    names = sorted(n for n in module.triton_kernels() if n.startswith(family + "_"))

    def training(name):  # forward kernels as training runs them: storing what the backward reads
        return dict(SAVE=True) if "forward" in name else {}

    if family == "step":
        BB, BN, warps = module._blocks(16, N)
        return [(name, dict(HAS_MASK=True, I64=False, **training(name), BB=BB, BN=BN), warps) for name in names]
    import torch

    launches = []
    for name in names:
        if family == "persistent":
            config = module._persistent_config(N, precision, getattr(torch, dtype), forward=name == "persistent_forward")
        else:
            config = module._tiled_config(N, precision)
        warps = config.pop("num_warps")
        # as the backend launches them: the persistent forward takes no STAGES (it prefetches its loads itself)
        launches.append((name, dict(HAS_MASK=True, I64=False, **training(name),
                                    **{k: v for k, v in config.items() if k != "STAGES" or name != "persistent_forward"}),
                         warps))
    return launches


def survey(cells, dtypes=DTYPES, sizes=SIZES, progress=None) -> list[Row]:
    rows: list[Row] = []
    seen: dict[tuple, Resources | str] = {}
    jobs = []
    for cell in cells:
        module = generated_module(cell)
        for family, family_sizes in sizes.items():
            if family == "tiled" and not module.TILED:
                continue
            for N in family_sizes:
                for dtype in dtypes:
                    # float32 dots: IEEE (torch's default) and TF32 (allow_tf32, as in the GPU timings)
                    for precision in ("ieee", "tf32") if dtype == "float32" and family != "step" else ("ieee",):
                        for name, constants, warps in launch_configs(module, family, N, dtype, precision):
                            jobs.append((cell, module, family, name, N, dtype, constants, warps))
    for cell, module, family, name, N, dtype, constants, warps in (progress(jobs) if progress else jobs):
        config = " ".join(f"{k}={v}" for k, v in constants.items() if k in ("BB", "BN", "BK", "PREC", "STAGES")) + f" warps={warps}"
        key = (cell, name, dtype, config, N % 16 == 0)  # sizes that share a configuration compile once
        if key not in seen:
            try:
                seen[key] = compile_kernel(module.triton_kernels()[name], constants, dtype, warps,
                                           sizes={"B": 16, "N": N, "T": 1000})
            except Exception as error:  # recorded in the report: a kernel that does not compile is a finding
                seen[key] = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        found = seen[key]
        rows.append(Row(cell, family, name, N, dtype, config, found if isinstance(found, Resources) else None,
                        "" if isinstance(found, Resources) else found))
    return rows


def persistent_agreement(rows: list[Row]) -> list[list]:
    """Per cell, dtype and N: does persistent_fits say what the compiled kernels need?"""
    import torch

    out = []
    keys = sorted({(r.cell, r.dtype, r.N) for r in rows if r.family == "persistent"},
                  key=lambda k: (CELLS.index(k[0]) if k[0] in CELLS else 99, k[1], k[2]))
    for cell, dtype, N in keys:
        mine = [r for r in rows if r.family == "persistent" and (r.cell, r.dtype, r.N) == (cell, dtype, N)]
        compiled = all(r.resources is not None for r in mine)
        need = max((r.resources.shared for r in mine if r.resources), default=0)
        fits = compiled and need <= SHARED_LIMIT
        rule = bool(generated_module(cell).persistent_fits(N, getattr(torch, dtype)))
        verdict = ("agrees" if rule == fits else
                   "rule too eager: the launch would fail and fall back" if rule else "rule conservative")
        out.append([cell, dtype, N, f"{need / 1024:.0f}", "yes" if fits else "no", "yes" if rule else "no", verdict])
    return out


def render(rows: list[Row]) -> str:
    import triton

    spills = [r for r in rows if r.resources and r.resources.stack]
    failed = [r for r in rows if r.error]
    lines = [
        "# Triton kernel resources on sm_90 (H100), compiled without a GPU",
        "",
        f"Written by `python -m cellc.speed.kernel_resources` (Triton {triton.__version__}, "
        f"target sm_{ARCH}, shared-memory limit {SHARED_LIMIT} bytes a block). Each kernel is compiled at the "
        "configuration the backend launches it with (batch 16, T=1000, masked; bf16 runs keep inputs, weights "
        "and xw in bf16, state in float32; float32 dots both IEEE, torch's default, and TF32), specialised as "
        "a launch specialises it (pointers 16-byte aligned, B and N known multiples of 16). *stack* is bytes "
        "of registers spilled to local memory per thread (0 = none). A Triton version on the GPU machine "
        "other than this one may allocate differently.",
        "",
        f"- {len(rows)} kernel builds, {len(failed)} failed to compile, {len(spills)} spill registers, "
        f"{sum(1 for r in rows if r.resources and r.resources.shared > SHARED_LIMIT)} need more shared memory "
        "than the chip has.",
        "",
        "## Does the persistent kernel fit? The compiled need against `persistent_fits`",
        "",
        tabulate(persistent_agreement(rows), headers=["cell", "dtype", "H", "shared KB (larger of fwd, bwd)",
                                                       "fits (compiled)", "persistent_fits", ""], tablefmt="github"),
        "",
        "## Every kernel",
        "",
    ]
    table = []
    for r in rows:
        res = r.resources
        table.append([r.cell, r.family, r.kernel, r.N, r.dtype, r.config,
                      "" if res is None else f"{res.shared / 1024:.1f}", "" if res is None else res.registers,
                      "" if res is None else res.stack,
                      r.error or ("over the limit" if res.shared > SHARED_LIMIT else "")])
    lines.append(tabulate(table, headers=["cell", "family", "kernel", "H", "dtype", "config", "shared KB",
                                          "registers", "stack", ""], tablefmt="github"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellc.speed.kernel_resources", description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS))
    parser.add_argument("--out", default="reports/kernels-sm90.md")
    args = parser.parse_args(argv)
    try:
        import triton  # noqa: F401
    except ImportError:
        print("error: triton is not installed (pip install -e '.[test]' installs it)", file=sys.stderr)
        return 2
    from tqdm import tqdm

    try:
        rows = survey(args.cells, progress=lambda jobs: tqdm(jobs, desc="compile for sm_90", unit="kernel"))
    except CellcError as error:  # an unknown cell, or no cuobjdump
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
