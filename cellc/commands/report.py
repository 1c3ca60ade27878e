"""`cellc report`: write reports/<bench>.md from the stored trials of a bench."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="write reports/<bench>.md from stored trials")
    report.add_argument("--name", default="quick", help="bench name (default: quick)")
    report.add_argument("--out", default="runs", help="bench output directory (default: runs)")
    report.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///<out>/studies.db)")
    report.add_argument("--report-dir", default="reports", help="where to write (default: reports)")
    report.set_defaults(func=run_report)


def write_report(storage_url: str, bench: str, report_dir: Path) -> Path:
    from cellc.analysis.load import load_bench
    from cellc.analysis.report import render_report

    text = render_report(bench, load_bench(storage_url, bench))
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / f"{bench.replace('/', '_')}.md"
    path.write_text(text)
    return path


def run_report(args: argparse.Namespace) -> int:
    from cellc.errors import UsageError
    from cellc.harness.storage import default_storage_url

    if args.storage:
        storage = args.storage
    else:
        db = Path(args.out) / "studies.db"
        if not db.is_file():
            raise UsageError(f"{db}: no study storage here; give --out or --storage")
        storage = default_storage_url(Path(args.out))
    print(write_report(storage, args.name, Path(args.report_dir)))
    return 0
