"""Warps per program for the persistent and tiled Triton kernels, timed on the device: reports/tune-gpu.md.

    python -m cellc.speed.tune [--out reports/tune-gpu.md] [--cells vanilla,gru] [--max-seconds 150]

The generated modules choose num_warps by a rule (``_persistent_config``, ``_tiled_config``).
Compiled for sm_90 without a GPU (cellc.speed.kernel_resources), a single 4-warp program at
B=16 runs about twice the instructions per warp of an 8-warp one with one warp per scheduler to
hide latency, which points to 8; but that is a count, not a time. This times forward + backward
at B=16, T=1000 for each choice (CELLC_TRITON_WARPS) beside the rule's, so the rule can follow the
measurement. Installs nothing; exits 2 with one message where no CUDA device is present.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from cellc.speed.gpu import cuda_ms, environment, machine_facts, make, triton_mode
from cellc.speed.kernel_resources import CELLS as KNOWN
from cellc.speed.kernel_resources import generated_module

CELLS = ("vanilla", "gru")  # four gate blocks and peepholes; three blocks and a current-step reset product
WARPS = (4, 8)
B, T = 16, 1000
# (family, H, dtype): the study's small sizes, where the per-step work is latency-bound
POINTS = (("persistent", 32, "float32"), ("persistent", 64, "float32"), ("persistent", 64, "bfloat16"),
          ("persistent", 128, "bfloat16"), ("tiled", 64, "float32"), ("tiled", 128, "float32"),
          ("tiled", 128, "bfloat16"), ("tiled", 256, "float32"))


@dataclass
class Tuned:
    cell: str
    family: str
    h: int
    dtype: str
    rule: tuple[int, int]  # the warps the generated module's rule picks: (forward, backward)
    ms: dict[int | str, float] = field(default_factory=dict)  # warps (or "rule") -> forward + backward ms
    note: str = ""

    def rule_label(self) -> str:
        forward, backward = self.rule
        return str(forward) if forward == backward else f"{forward} fwd, {backward} bwd"

    def rule_ms(self) -> float | None:
        """The rule's time: its own run where it mixes warps, else that of the one count it picks."""
        forward, backward = self.rule
        return self.ms.get("rule" if forward != backward else forward)


def warps(value: int | None):
    """CELLC_TRITON_WARPS set to value (None: unset, the rule's)."""
    return environment("CELLC_TRITON_WARPS", None if value is None else str(value))


def applies(cell: str, family: str, h: int, dtype: str, torch) -> bool:
    module = generated_module(cell)
    if family == "tiled":
        return module.TILED
    return bool(module.persistent_fits(h, getattr(torch, dtype)))


def rule_warps(cell: str, family: str, h: int, dtype: str, torch) -> tuple[int, int]:
    """(forward, backward) warps the generated module's rule picks."""
    module = generated_module(cell)
    with warps(None):
        if family == "tiled":
            count = module._tiled_config(h, "tf32")["num_warps"]
            return count, count
        config = module._persistent_config
        precision = "tf32" if dtype == "float32" else "ieee"
        return (config(h, precision, getattr(torch, dtype), forward=True)["num_warps"],
                config(h, precision, getattr(torch, dtype))["num_warps"])


def time_choice(cell: str, family: str, h: int, dtype: str, count: int | None, repeat: int, torch) -> float:
    """Forward + backward ms with `count` warps in every kernel (None: the rule's), after a warm-up
    (compilation, graph capture)."""
    module = generated_module(cell)
    torch.manual_seed(0)
    with triton_mode(family), warps(count):
        layer = make(cell, "triton", h, getattr(torch, dtype), torch)
        x = torch.randn(T, B, h, device="cuda", dtype=getattr(torch, dtype))

        def train():
            layer(x)[0].sum().backward()

        try:
            train()
            return cuda_ms(train, repeat, torch)
        finally:
            module.release_graphs()


def best(row: Tuned) -> int | str | None:
    return min(row.ms, key=row.ms.get) if row.ms else None


def render(rows: list[Tuned], facts: dict, command: str, elapsed: float) -> str:
    table = []
    for r in rows:
        choice = best(r)
        rule_ms = r.rule_ms()
        gain = f"{rule_ms / r.ms[choice]:.2f}x" if choice is not None and rule_ms is not None else ""
        table.append([r.cell, r.family, r.h, r.dtype, r.rule_label(),
                      *[f"{r.ms[w]:.2f}" if w in r.ms else "" for w in (*WARPS, "rule")],
                      "" if choice is None else r.rule_label() if choice == "rule" else choice, gain, r.note])
    return "\n".join([
        "# Warps per program for the Triton kernels, timed on the device", "",
        f"Written by `{command}` on **{facts['device']}** ({facts['when']}; torch {facts['torch']}, "
        f"triton {facts['triton']}). Whole run: {elapsed:.0f} s. Forward + backward at B={B}, T={T}, medians of "
        "CUDA-event timings after a warm-up; float32 with TF32 on (as in reports/speed-gpu.md). 'rule' is the "
        "warps the generated module picks today (timed on its own where its forward and backward differ); "
        "'rule / best' is how much faster the best choice is.", "",
        tabulate(table, headers=["cell", "kernels", "H", "dtype", "rule", *[f"{w} warps ms" for w in WARPS],
                                 "rule ms", "best", "rule / best", ""], tablefmt="github", disable_numparse=True), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellc.speed.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/tune-gpu.md")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=150.0, help="stop after this long; default 150")
    args = parser.parse_args(argv)
    import torch

    cells = [c for c in args.cells.split(",") if c]
    unknown = sorted(set(cells) - set(KNOWN))
    if unknown:
        print(f"error: --cells: unknown cell(s) {', '.join(unknown)} (choose from {', '.join(KNOWN)})", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: no CUDA device here (torch.cuda.is_available() is False); tuning times kernels on one",
              file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    start = time.monotonic()
    rows = []
    for cell in cells:
        for family, h, dtype in POINTS:
            if not applies(cell, family, h, dtype, torch):
                continue
            row = Tuned(cell, family, h, dtype, rule_warps(cell, family, h, dtype, torch))
            rows.append(row)
            for count in (*WARPS, None) if row.rule[0] != row.rule[1] else WARPS:
                if time.monotonic() - start > args.max_seconds:
                    row.note = "time cap"
                    break
                try:
                    row.ms["rule" if count is None else count] = time_choice(cell, family, h, dtype, count, args.repeat, torch)
                except Exception as error:  # recorded: a choice that does not build or run is a finding
                    row.note += f"{count or 'rule'} warps: {type(error).__name__}: {str(error)[:120]} "
            torch.cuda.empty_cache()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m cellc.speed.tune " + " ".join(argv if argv is not None else sys.argv[1:])
    out.write_text(render(rows, machine_facts(torch), command, time.monotonic() - start))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
