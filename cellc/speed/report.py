"""reports/speed.md and its ratio plot, from measured timings."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from tabulate import tabulate

from cellc.speed.measure import Timing

TARGETS = {(1, 100, 39, 128): 1.5, (32, 100, 39, 128): 1.3, (16, 300, 39, 256): 1.2}


def _ref(timings: list[Timing], t: Timing) -> Timing:
    return next(r for r in timings if r.backend == "torch" and r.cell == t.cell and r.size == t.size
                and r.threads == t.threads)


def size_text(size) -> str:
    b, t, m, h = size
    return f"B={b} T={t} M={m} H={h}"


def table(timings: list[Timing], threads: int) -> str:
    rows = []
    for t in timings:
        if t.threads != threads:
            continue
        ref = _ref(timings, t)
        rows.append([t.cell, t.backend if t.backend != "torch" else ("torch.nn.GRU" if t.cell == "gru" else "torch.nn.LSTM"),
                     size_text(t.size), f"{t.forward_ms:.2f}", f"{t.train_ms:.2f}",
                     f"{t.train_ms / ref.train_ms:.2f}x", "" if t.peak_mb is None else f"{t.peak_mb:.1f}"])
    return tabulate(rows, headers=["cell", "backend", "size", "fwd ms", "fwd+bwd ms", "fwd+bwd / torch", "peak MiB (fwd+bwd)"],
                    tablefmt="github")


def targets(timings: list[Timing]) -> str:
    rows = []
    for size, limit in TARGETS.items():
        ref = [t for t in timings if t.cell == "vanilla" and t.size == size and t.threads == 1 and t.backend == "torch"]
        fast = [t for t in timings if t.cell == "vanilla" and t.size == size and t.threads == 1 and t.backend != "torch"]
        if not ref or not fast:
            continue
        best = min(fast, key=lambda t: t.train_ms)
        ratio = best.train_ms / ref[0].train_ms
        rows.append([size_text(size), best.backend, f"{ratio:.2f}x", f"<= {limit}x", "met" if ratio <= limit else "NOT met"])
    return tabulate(rows, headers=["size (1 thread, fp32, fwd+bwd)", "fastest backend", "vanilla / torch.nn.LSTM",
                                   "target", ""], tablefmt="github")


CELL_LIMIT = 1.2  # every other cell within this of vanilla's time, scaled by its parameter count


def parameter_count(cell: str, m: int, h: int) -> int:
    import warnings

    from cellc.speed.measure import make_layer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = make_layer(cell, "eager", m, h)  # with proj_size where the cell takes one
    return sum(p.numel() for p in layer.parameters())


def cell_targets(timings: list[Timing]) -> str:
    """Each cell's fastest time over vanilla's fastest at the same size (1 thread), divided by the ratio
    of their parameter counts: the issue's "within 1.2x of vanilla's time, scaled by parameter count"."""
    rows = []
    best = {}
    for t in timings:
        if t.threads == 1 and t.backend != "torch":
            key = (t.cell, t.size)
            if key not in best or t.train_ms < best[key].train_ms:
                best[key] = t
    for (cell, size), t in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = best.get(("vanilla", size))
        if cell == "vanilla" or base is None:
            continue
        _, _, m, h = size
        params = parameter_count(cell, m, h) / parameter_count("vanilla", m, h)
        time_ratio = t.train_ms / base.train_ms
        scaled = time_ratio / params
        rows.append([size_text(size), cell, t.backend, f"{time_ratio:.2f}x", f"{params:.2f}x", f"{scaled:.2f}",
                     f"<= {CELL_LIMIT}", "met" if scaled <= CELL_LIMIT else "NOT met"])
    return tabulate(rows, headers=["size (1 thread, fp32, fwd+bwd)", "cell", "fastest backend", "time / vanilla's",
                                   "parameters / vanilla's", "scaled", "target", ""], tablefmt="github")


def memory_targets(timings: list[Timing]) -> str:
    """Peak memory of forward + backward: every fast backend no higher than the eager backend's."""
    rows = []
    eager = {(t.cell, t.size): t for t in timings if t.backend == "eager" and t.peak_mb is not None}
    for t in timings:
        base = eager.get((t.cell, t.size))
        if t.backend in ("eager", "torch") or t.peak_mb is None or base is None:
            continue
        rows.append([size_text(t.size), t.cell, t.backend, f"{t.peak_mb:.1f}", f"{base.peak_mb:.1f}",
                     f"{t.peak_mb / base.peak_mb:.2f}x", "met" if t.peak_mb <= base.peak_mb else "NOT met"])
    return tabulate(rows, headers=["size (1 thread, fp32, fwd+bwd)", "cell", "backend", "peak MiB",
                                   "eager's peak MiB", "ratio", "<= eager"], tablefmt="github")


def plot(timings: list[Timing], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({t.size for t in timings})
    thread_counts = sorted({t.threads for t in timings})
    fig, axes = plt.subplots(1, len(thread_counts), figsize=(6 * len(thread_counts), 4.5), squeeze=False)
    for ax, threads in zip(axes[0], thread_counts):
        labels = []
        series: dict[str, list[float]] = {}
        for t in timings:
            if t.threads != threads or t.backend == "torch":
                continue
            key = f"{t.cell}/{t.backend}"
            series.setdefault(key, [float("nan")] * len(sizes))
            series[key][sizes.index(t.size)] = t.train_ms / _ref(timings, t).train_ms
        labels = [size_text(s).replace(" M=", "\nM=") for s in sizes]
        for key, values in series.items():
            style = {"eager": ":", "fused": "--", "compiled": "-"}[key.split("/")[1]]
            ax.plot(range(len(sizes)), values, style, marker="o", label=key)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(sizes)), labels, fontsize=7)
        ax.set_ylabel("fwd+bwd time / torch.nn.LSTM (GRU for gru)")
        ax.set_title(f"{threads} thread(s)")
    axes[0][-1].legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _load_line() -> str:
    """The machine's load as measured when the report is written: other jobs show up here."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "Load average: not available on this system."
    return (f"Load average when this report was written: {one:.2f} (1 min), {five:.2f} (5 min), "
            f"{fifteen:.2f} (15 min) on {os.cpu_count()} cores; this benchmark itself keeps at most "
            "all cores busy, so a load well above that means other jobs shared the machine and timings are "
            "noisy (ratios measured back to back are more trustworthy than absolute times).")


def write_report(timings: list[Timing], path: Path, repeat: int, jsb: list[tuple] | None, compile_info: dict,
                 commandline: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    plot(timings, png)
    thread_counts = sorted({t.threads for t in timings})
    lines = [
        "# Speed: cellc backends vs torch.nn.LSTM / torch.nn.GRU",
        "",
        f"Written by `{commandline}`. CPU only: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, float32. Medians of {repeat} runs after 3 warm-ups; "
        "the reference (torch.nn.LSTM for LSTM-like cells, torch.nn.GRU for gru) is measured in the same process "
        "at the same size, just before the cellc layers.",
        "",
        _load_line(),
        "",
        "Peak memory (1 thread only) approximates the peak of live CPU tensor memory during one forward + "
        "backward: each op's own allocations minus frees from the torch profiler, summed in start order "
        "(allocations made inside the compiled C++ loops are none: they use buffers allocated by torch).",
        "",
        "## Targets (vanilla, 1 thread, fp32, forward + backward)",
        "",
        targets(timings),
        "",
        "## Targets (every other cell, 1 thread: its time over vanilla's, divided by its parameter count over "
        "vanilla's)",
        "",
        cell_targets(timings),
        "",
        "## Targets (peak memory of forward + backward no higher than the eager backend's)",
        "",
        memory_targets(timings),
        "",
    ]
    for threads in thread_counts:
        lines += [f"## {threads} thread(s)", "", table(timings, threads), ""]
    if jsb:
        lines += ["## End to end: one JSB Chorales training epoch, batch 1 (online), vanilla, 1 thread", ""]
        for backend, seconds, timed, total, source, hidden in jsb:
            lines.append(f"- {backend}: {seconds:.1f} s per epoch (N={hidden}; timed on the first {timed} of {total} "
                         f"training sequences and extrapolated by time steps; data: {source})")
        lines.append("")
    if compile_info:
        lines += ["## Compiled backend: build time", ""]
        rows = [[cell, f"{info.get('compile_seconds', 0):.2f}", info.get("cached"), info.get("error", "")]
                for cell, info in compile_info.items()]
        lines += [tabulate(rows, headers=["cell", "compile s", "already cached", "error"], tablefmt="github"), ""]
    lines += [f"![fwd+bwd time relative to torch]({png.name})", ""]
    path.write_text("\n".join(lines))
