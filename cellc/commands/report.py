"""`cellc report`: write reports/<bench>.md from a bench's trials; `cellc export`: write its trials file.

A report reads the trials from the bench's storage (``--name``, ``--out`` / ``--storage``) or from a
trials file alone (``--trials FILE``, :mod:`cellc.harness.trials_file`); both give the same bytes. Every
report ships its trials file beside it, in ``<report-dir>/<bench>/trials.jsonl.xz``.

A partial study (fewer finished trials than its target) is marked partial in the report's title,
summary and every figure title. It never replaces a complete report of the same name unless
``--force`` is given: it is then written beside it, as ``<bench>.partial.md`` with its figures and
trials in ``<bench>.partial/``. Stale figures are removed from the figure folder only when they are
not tracked by git, and never by a partial report.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from cellc.commands.shell import join_command

PARTIAL_MARK = "(partial: "


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="write reports/<bench>.md from stored trials or a trials file")
    report.add_argument("--name", help="bench name (default: quick)")
    report.add_argument("--out", default="runs", help="bench output directory (default: runs)")
    report.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///<out>/studies.db)")
    report.add_argument("--trials", metavar="FILE",
                        help="rebuild the report from a trials file alone (written by `cellc export` or shipped "
                             "with a report) instead of the storage")
    report.add_argument("--report-dir", default="reports", help="where to write (default: reports)")
    report.add_argument("--format", choices=("md", "html"), default="md",
                        help="md (default), or html: also write <bench>.html beside the markdown")
    report.add_argument("--force", action="store_true",
                        help="let a partial study's report replace a complete report of the same name")
    report.set_defaults(func=run_report)

    export = subparsers.add_parser("export", help="write every trial of a bench to one versioned JSON Lines file")
    export.add_argument("--name", default="quick", help="bench name (default: quick)")
    export.add_argument("--out", default="runs", help="bench output directory (default: runs)")
    export.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///<out>/studies.db)")
    export.add_argument("--output", metavar="FILE",
                        help="the trials file to write (default: reports/<bench>/trials.jsonl.xz; compressed "
                             "when the name ends in .xz or .gz)")
    export.add_argument("--force", action="store_true", help="replace an existing file")
    export.set_defaults(func=run_export)


def _is_complete_report(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
    except OSError:
        return False
    return PARTIAL_MARK not in first


def _untracked(files: list[Path], folder: Path) -> list[Path]:
    """The files git does not track (all of them outside a git checkout)."""
    if not files:
        return []
    try:
        done = subprocess.run(["git", "ls-files", "-z", "--", *[f.name for f in files]], cwd=folder,
                              capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []  # cannot tell: delete nothing
    if done.returncode != 0:
        return files  # not a git checkout: nothing is tracked
    tracked = {Path(name.decode()).name for name in done.stdout.split(b"\0") if name}
    return [f for f in files if f.name not in tracked]


def write_report(storage_url: str, bench: str, report_dir: Path, command: str | None = None, fmt: str = "md",
                 force: bool = False) -> Path:
    """The report of a bench from its storage (what ``cellc bench`` writes when it ends); see :func:`write_bundle`.

    ``command`` is accepted for callers of the earlier signature: the report now prints the command that
    rebuilds it from its trials file, the same whichever way it was made."""
    from cellc.analysis.load import facts_from_studies, load_bench

    studies = load_bench(storage_url, bench)
    return write_bundle(bench, studies, facts_from_studies(studies), report_dir, fmt, force)


def write_bundle(bench: str, studies: list, facts: dict, report_dir: Path, fmt: str = "md", force: bool = False
                 ) -> Path:
    """Write ``<report_dir>/<bench>.md``, its figures and its trials file in ``<report_dir>/<bench>/``.

    A partial study beside a complete report goes to ``<bench>.partial.md`` unless ``force``."""
    from cellc.analysis.context import gather_context
    from cellc.analysis.document import build_report, partial_note
    from cellc.analysis.export import trials_lines
    from cellc.errors import CellcError
    from cellc.harness.record import checked_bench_name
    from cellc.harness.trials_file import LEGACY_TRIALS_FILE, TRIALS_FILE, write_lines

    stem = checked_bench_name(bench)  # a plain folder name: the stale-PNG cleanup below stays inside it
    partial = bool(partial_note(studies))
    if partial and not force and _is_complete_report(report_dir / f"{stem}.md"):
        stem = f"{stem}.partial"
    trials_path = report_dir / stem / TRIALS_FILE
    command = ["cellc", "report", "--trials", str(trials_path)]
    if str(report_dir) != "reports":
        command += ["--report-dir", str(report_dir)]
    stored_cells: dict = {}
    for study in studies:  # the first study of a cell that recorded its definition
        if not stored_cells.get(study.cell):
            stored_cells[study.cell] = study.attrs.get("cell_identity")
    context = gather_context({s.cell for s in studies}, join_command(command), stored_cells)
    bundle = build_report(bench, studies, context, figure_dir=stem, facts=facts, trials_path=str(trials_path))
    figure_dir = report_dir / stem
    path = report_dir / f"{stem}.md"
    try:
        figure_dir.mkdir(parents=True, exist_ok=True)
        if not partial:
            stale = [p for p in sorted(figure_dir.glob("*.png")) if p.name not in bundle.figures]
            stale += [p for p in (figure_dir / LEGACY_TRIALS_FILE,) if p.is_file()]  # replaced by TRIALS_FILE
            for old in _untracked(stale, figure_dir):
                old.unlink()
        for name, data in sorted(bundle.figures.items()):
            (figure_dir / name).write_bytes(data)
        write_lines(trials_path, trials_lines(bench, studies, facts))
        path.write_text(bundle.markdown)
        if fmt == "html":
            from cellc.analysis.html import markdown_to_html

            path = report_dir / f"{stem}.html"
            title = f"LSTM Odyssey report: {bench}" + (f" ({bundle.partial})" if bundle.partial else "")
            path.write_text(markdown_to_html(bundle.markdown, title))
    except OSError as err:
        raise CellcError(f"--report-dir {report_dir}: cannot write the report ({err})") from None
    return path


def _storage_url(args: argparse.Namespace) -> str:
    from cellc.errors import UsageError
    from cellc.harness.storage import default_storage_url

    if args.storage:
        return args.storage
    db = Path(args.out) / "studies.db"
    if not db.is_file():
        raise UsageError(f"{db}: no study storage here; give --out or --storage")
    return default_storage_url(Path(args.out))


def run_report(args: argparse.Namespace) -> int:
    from cellc.analysis.load import load_trials
    from cellc.errors import UsageError
    from cellc.harness.record import checked_bench_name

    if args.trials:
        if args.storage or args.out != "runs" or args.name:
            raise UsageError("--trials FILE: the report comes from that file alone; leave out --name, --out and "
                             "--storage")
        bench, studies, facts = load_trials(Path(args.trials))
        checked_bench_name(bench, f"--trials {args.trials}: its bench name")
        print(write_bundle(bench, studies, facts, Path(args.report_dir), args.format, args.force))
    else:
        bench = checked_bench_name(args.name or "quick")
        print(write_report(_storage_url(args), bench, Path(args.report_dir), fmt=args.format, force=args.force))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from cellc.analysis.export import trials_lines
    from cellc.analysis.load import facts_from_studies, load_bench
    from cellc.errors import CellcError, UsageError
    from cellc.harness.record import checked_bench_name
    from cellc.harness.trials_file import TRIALS_FILE, file_text, holds, write_text

    bench = checked_bench_name(args.name)
    output = Path(args.output) if args.output else Path("reports") / bench / TRIALS_FILE
    studies = load_bench(_storage_url(args), bench)
    text = file_text(trials_lines(bench, studies, facts_from_studies(studies)))
    trials = sum(len(s.records) for s in studies)
    if output.exists() and not args.force:
        if not holds(output, text):
            raise UsageError(f"--output {output}: exists with other trials; give --force to replace it")
        print(f"{output}: up to date ({trials} trials of {len(studies)} studies, bench {bench}; `cellc report` "
              "writes the same file beside the report)")
        return 0
    try:
        write_text(output, text)
    except OSError as err:
        raise CellcError(f"--output {output}: cannot write ({err})") from None
    print(f"{output}: {trials} trials of {len(studies)} studies (bench {bench})")
    return 0
