"""`cellc report`: write reports/<bench>.md from the stored trials of a bench."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellc.commands.shell import join_command, storage_args


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="write reports/<bench>.md from stored trials")
    report.add_argument("--name", default="quick", help="bench name (default: quick)")
    report.add_argument("--out", default="runs", help="bench output directory (default: runs)")
    report.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///<out>/studies.db)")
    report.add_argument("--report-dir", default="reports", help="where to write (default: reports)")
    report.add_argument("--format", choices=("md", "html"), default="md",
                        help="md (default), or html: also write <bench>.html beside the markdown")
    report.set_defaults(func=run_report)


def write_report(storage_url: str, bench: str, report_dir: Path, command: str | None = None,
                 fmt: str = "md") -> Path:
    """Write ``<report_dir>/<bench>.md`` and its figures in ``<report_dir>/<bench>/`` (the Odyssey report).

    Stale PNGs left in the figure folder by an earlier report are removed, so the folder holds
    exactly what the markdown links to.
    """
    from cellc.analysis.context import gather_context
    from cellc.analysis.document import build_report
    from cellc.analysis.load import load_bench
    from cellc.errors import CellcError
    from cellc.harness.record import checked_bench_name

    stem = checked_bench_name(bench)  # a plain folder name: the stale-PNG cleanup below stays inside it
    studies = load_bench(storage_url, bench)
    stored_cells: dict = {}
    for study in studies:  # the first study of a cell that recorded its definition
        if not stored_cells.get(study.cell):
            stored_cells[study.cell] = study.attrs.get("cell_identity")
    context = gather_context({s.cell for s in studies}, command or f"cellc report --name {bench}", stored_cells)
    bundle = build_report(bench, studies, context, figure_dir=stem)
    figure_dir = report_dir / stem
    path = report_dir / f"{stem}.md"
    try:
        figure_dir.mkdir(parents=True, exist_ok=True)
        for stale in sorted(figure_dir.glob("*.png")):
            if stale.name not in bundle.figures:
                stale.unlink()
        for name, data in sorted(bundle.figures.items()):
            (figure_dir / name).write_bytes(data)
        path.write_text(bundle.markdown)
        if fmt == "html":
            from cellc.analysis.html import markdown_to_html

            path = report_dir / f"{stem}.html"
            path.write_text(markdown_to_html(bundle.markdown, f"LSTM Odyssey report: {bench}"))
    except OSError as err:
        raise CellcError(f"--report-dir {report_dir}: cannot write the report ({err})") from None
    return path


def report_command(args: argparse.Namespace) -> str:
    """The command as the report prints it (never the storage URL: it may hold a password)."""
    parts = ["cellc", "report", "--name", args.name]
    if args.format != "md":
        parts += ["--format", args.format]
    return join_command(parts + storage_args(args))


def run_report(args: argparse.Namespace) -> int:
    from cellc.errors import UsageError
    from cellc.harness.record import checked_bench_name
    from cellc.harness.storage import default_storage_url

    checked_bench_name(args.name)
    if args.storage:
        storage = args.storage
    else:
        db = Path(args.out) / "studies.db"
        if not db.is_file():
            raise UsageError(f"{db}: no study storage here; give --out or --storage")
        storage = default_storage_url(Path(args.out))
    print(write_report(storage, args.name, Path(args.report_dir), report_command(args), args.format))
    return 0
