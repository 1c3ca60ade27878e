"""`cellc compile | check | show | list`: the compiler's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from cellc.errors import SpecError, UsageError, short_path
from cellc.ir.printer import format_number


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compile", help="compile specs into standalone PyTorch modules in generated/")
    p.add_argument("specs", nargs="*", help="spec files or names (e.g. specs/nog.yaml or nog)")
    p.add_argument("--all", action="store_true", help="every spec in specs/")
    p.add_argument("--check", action="store_true", help="fail if generated/ differs from what the specs produce")
    p.add_argument("--out", default="generated", help="output directory (default: generated)")
    p.add_argument("--backend", default="eager", help="code generation backend (default: eager)")
    p.set_defaults(func=cmd_compile)

    p = subparsers.add_parser("check", help="validate specs and report the first error")
    p.add_argument("specs", nargs="+", help="spec files (specs/nog.yaml) or names of specs in specs/ (nog)")
    p.set_defaults(func=cmd_check)

    p = subparsers.add_parser("show", help="equations after edits and the parameter count")
    p.add_argument("spec", help="a spec file (specs/nog.yaml) or the name of a spec in specs/ (nog)")
    p.add_argument("--latex", action="store_true", help="equations as LaTeX")
    p.add_argument("--input-size", "-M", type=int, default=39, help="M for the parameter count (default 39)")
    p.add_argument("--hidden-size", "-N", type=int, default=100, help="N for the parameter count (default 100)")
    p.add_argument("--proj-size", "-P", type=int, default=None,
                   help="P for the parameter count of a cell with values of size proj_size (default: N // 2)")
    p.set_defaults(func=cmd_show)

    p = subparsers.add_parser("list", help="the specs in specs/ (and in --specs-dir folders)")
    p.add_argument("--specs-dir", action="append", default=[], metavar="DIR",
                   help="also list the specs of this folder (repeatable; also $CELLC_SPECS_PATH) (default: none)")
    p.set_defaults(func=cmd_list)


def all_spec_paths() -> list[Path]:
    from cellc.spec.loader import searched_places, spec_search_dirs

    dirs = spec_search_dirs()
    if not dirs:
        raise UsageError(f"no specs/ directory: looked in {searched_places()}")
    return sorted(dirs[0].glob("*.yaml"))


def _targets(args) -> list[Path | str]:
    if args.all and args.specs:
        raise UsageError("give spec names or --all, not both")
    if args.all:
        return list(all_spec_paths())
    if not args.specs:
        raise UsageError("name at least one spec, or use --all")
    return list(args.specs)


def _warn(compiled) -> None:
    for note in compiled.notes:
        print(f"warning: {note}", file=sys.stderr)


def cmd_compile(args) -> int:
    from cellc.codegen.render import render_module
    from cellc.codegen.build import resolve_backend
    from cellc.codegen.support import fastest, unsupported
    from cellc.ir.pipeline import compile_spec
    from cellc.spec.loader import find_spec

    backend = resolve_backend(args.backend)
    out_dir = Path(args.out)
    stale: list[str] = []
    written = 0
    expected: set[str] = set()
    files: dict[str, Path] = {}  # spec name -> the file that gave it
    cells = []
    for target in _targets(args):  # every spec checked before anything is written
        compiled = compile_spec(target)
        source_file = find_spec(target).resolve()
        if files.get(compiled.name) == source_file:  # the same file named twice (overlapping globs)
            continue
        _warn(compiled)
        if compiled.name in files:  # two files would write the same module
            raise UsageError(f"{short_path(files[compiled.name])} and {compiled.spec.file} are both named "
                             f"'{compiled.name}'; spec names must differ")
        files[compiled.name] = source_file
        if args.backend != "auto" and (problem := unsupported(compiled, backend)):
            raise UsageError(problem)  # before anything is written
        cells.append(compiled)
    for compiled in cells:
        source = render_module(compiled, fastest(compiled, backend) if args.backend == "auto" else backend)
        path = out_dir / f"{compiled.name}.py"
        expected.add(path.name)
        if args.check:
            if not path.is_file() or path.read_text() != source:
                stale.append(short_path(path))
            continue
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_text() != source:
                path.write_text(source)
                written += 1
        except OSError as err:
            raise UsageError(f"--out {args.out}: cannot write {short_path(path)} ({err.strerror})") from None
        print(f"{short_path(path)}  ({compiled.formula_text()}, hash {compiled.hash})")
    orphans = _orphans(out_dir, expected) if args.all else []
    if args.check:
        stale += [short_path(p) + (" (no spec: `cellc compile --all` removes it)" if ours else
                                   " (no spec, and not written by cellc: remove it yourself)") for p, ours in orphans]
        if stale:
            print("stale generated files (run `cellc compile --all`):\n  " + "\n  ".join(stale))
            return 1
        print(f"{len(expected)} generated modules match their specs")
        return 0
    removed = 0
    for path, ours in orphans:
        if not ours:
            print(f"warning: {short_path(path)} has no spec and was not written by cellc; left as it is",
                  file=sys.stderr)
            continue
        try:
            path.unlink()
        except OSError as err:
            raise UsageError(f"--out {args.out}: cannot remove {short_path(path)} ({err.strerror})") from None
        removed += 1
        print(f"removed {short_path(path)} (no spec among these any more)")
    print(f"{written} file(s) written, {len(expected) - written} unchanged" + (f", {removed} removed" if removed else ""))
    return 0


def _orphans(out_dir: Path, expected: set[str]) -> list[tuple[Path, bool]]:
    """Modules in ``out_dir`` that no spec of ``--all`` gives, each with whether cellc wrote it (its first line
    says so): `cellc compile --all` removes those, and only those."""
    if not out_dir.is_dir():
        return []
    found = []
    for path in sorted(out_dir.glob("*.py")):
        if path.name in expected or path.name == "__init__.py":
            continue
        try:
            from cellc.codegen.render import GENERATED_MARK

            with path.open(encoding="utf-8", errors="replace") as file:
                ours = file.readline().startswith(GENERATED_MARK)
        except OSError:
            ours = False
        found.append((path, ours))
    return found


def cmd_check(args) -> int:
    from cellc.ir.pipeline import compile_spec

    for target in args.specs:
        compiled = compile_spec(target)
        _warn(compiled)
        for remark in compiled.remarks:
            print(f"note: {remark}", file=sys.stderr)
        print(f"{compiled.spec.file}: ok ({compiled.name}: {len(compiled.cell.equations)} equations, "
              f"{len(compiled.params)} parameters, states {', '.join(compiled.states)})")
    return 0


def cmd_show(args) -> int:
    from cellc.ir.pipeline import compile_spec
    from cellc.ir.printer import equation_latex

    if args.input_size < 1 or args.hidden_size < 1 or (args.proj_size is not None and args.proj_size < 1):
        raise UsageError("--input-size, --hidden-size and --proj-size must be positive")
    compiled = compile_spec(args.spec)
    spec = compiled.spec
    print(f"{compiled.name}: {spec.description}" if spec.description else compiled.name)
    if len(spec.lineage) > 1:
        edits = "; ".join(e.text for e in spec.edits)
        print(f"extends {' <- '.join(reversed(spec.lineage))}" + (f"; edits: {edits}" if edits else ""))
    print()
    if args.latex:
        print("\\begin{aligned}")
        for eq in compiled.cell.equations:
            left, _, right = equation_latex(eq).partition(" = ")
            print(f"  {left} &= {right} \\\\")
        print("\\end{aligned}")
    else:
        for line in compiled.equations_text:
            print(f"  {line}")
    print()
    print(f"state: {', '.join(compiled.states)}   output: {compiled.cell.output}   hash: {compiled.hash}")
    initial = compiled.cell.initial
    if any(initial.get(s, 0.0) != 0.0 for s in compiled.states):  # the spec's `initial:` (zero unless given)
        print("initial state: " + ", ".join(f"{s} = {format_number(initial.get(s, 0.0))}" for s in compiled.states))
    rows = [(name, info.kind.value, compiled.shape_text(name), "random" if info.init is None else format_number(info.init))
            for name, info in compiled.params.items()]
    print(tabulate(rows, headers=["parameter", "kind", "shape", "init"], tablefmt="simple"))
    m, n = args.input_size, args.hidden_size
    widths = compiled.sizes.widths(n, **({"proj_size": args.proj_size} if args.proj_size else {}))
    print()
    if compiled.sizes.declared:
        print("sizes: " + ", ".join(f"{v}: {size}" for v, size in compiled.sizes.declarations().items()))
    if compiled.direct_input is not None:  # its modules need M = the output's size
        name = compiled.direct_size_name
        print(f"input: read elementwise at {compiled.direct_input.render()}, so input_size must equal {name}")
        m = widths[compiled.sizes.direct]
    at = ", ".join([f"M={m}", *(f"{s}={w}" for s, w in widths.items())])
    print(f"parameters per layer and direction: {compiled.formula_text()}"
          f" = {compiled.parameter_count(m, n, widths.get('P')):,} at {at}")
    return 0


def cmd_list(args) -> int:
    from cellc.ir.pipeline import compile_spec

    from cellc.harness.cells import user_spec_dirs

    rows = []
    broken = 0
    extra = user_spec_dirs(args.specs_dir)
    paths = [p for d in extra for p in sorted([*d.glob("*.yaml"), *d.glob("*.yml")])]
    if extra:
        from cellc.harness.cells import spec_files

        spec_files(extra)  # two files with one name: an error naming both
    listed = list(dict.fromkeys(p.resolve() for p in [*all_spec_paths(), *paths]))
    errors = []
    for path in listed:
        try:
            compiled = compile_spec(path)
        except SpecError as err:  # listed, and where it breaks said below the table; `cellc check` shows the line
            where = err.location.render() if err.location is not None else short_path(path)
            rows.append((path.stem, "", "", "ERROR: does not compile (below)"))
            errors.append(f"{where}: {err.message}")
            broken += 1
            continue
        spec = compiled.spec
        parent = spec.lineage[1] if len(spec.lineage) > 1 else ""
        rows.append((compiled.name, parent, compiled.formula_text(), spec.description))
    print(tabulate(rows, headers=["spec", "extends", "parameters", "description"], tablefmt="simple"))
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 2 if broken else 0
