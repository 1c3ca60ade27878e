"""Load a spec file: YAML -> pydantic -> Lark -> `extends` and edits -> ``Spec``."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from cellc.errors import SpecError, did_you_mean
from cellc.spec.edits import apply_edits
from cellc.spec.identifiers import SPEC_NAME
from cellc.spec.model import Spec, SpecFile
from cellc.spec.parser import parse_edit, parse_equations
from cellc.spec.yaml_source import YamlSource

MAX_EXTENDS_DEPTH = 16
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the cellc package folder (not `import cellc`: no cycle)


def builtin_specs_dir() -> Path:
    """The built-in specs: cellc/specs/ in an installed package (setup.py copies them there at
    build time), else the checkout's specs/ beside the package (a checkout or editable install)."""
    installed = PACKAGE_DIR / "specs"
    return installed if installed.is_dir() else PACKAGE_DIR.parent / "specs"


def builtin_spec_names() -> list[str]:
    """The names of the built-in specs (their files' stems), sorted."""
    return sorted(path.stem for path in builtin_specs_dir().glob("*.yaml"))


def searched_places() -> str:
    """Where specs are looked for, for messages when none are found."""
    return f"{Path.cwd() / 'specs'} and {builtin_specs_dir()}"


def spec_search_dirs() -> list[Path]:
    dirs = [Path.cwd() / "specs", builtin_specs_dir()]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_spec(ref: str | Path) -> Path:
    """A spec path from a path or a bare name such as 'vanilla'."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    if SPEC_NAME.fullmatch(str(ref)):
        for d in spec_search_dirs():
            candidate = d / f"{ref}.yaml"
            if candidate.is_file():
                return candidate
    names = sorted({p.stem for d in spec_search_dirs() for p in d.glob("*.yaml")})
    known = ", ".join(names) or f"none: no specs in {searched_places()}"
    raise SpecError(f"no spec named '{ref}'{did_you_mean(str(ref), names)} (known: {known}); give a name or a .yaml "
                    "path")


def load_spec(ref: str | Path) -> Spec:
    return _load(find_spec(ref), chain=())


def _validate(source: YamlSource) -> SpecFile:
    try:
        return SpecFile.model_validate(source.data)
    except ValidationError as err:
        errors = err.errors()
        # an unknown key first: a misspelt 'name' is better named than reported missing
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = tuple(first["loc"])
        if first["type"] == "extra_forbidden":
            known = ", ".join(SpecFile.model_fields)
            message = f"unknown key '{loc[-1]}' (known keys: {known})"
            if len(loc) == 1 and str(loc[0]) in source.keys:  # point at the key, not its value
                raise SpecError(message, source.node_location(source.keys[str(loc[0])])) from None
        elif loc[:1] in (("initial",), ("init",)) and len(loc) >= 2:
            loc = loc[:2]  # ('initial', 'c', 'float'): the last part names a branch of the type, not a place
            message = f"{loc[0]}: value of '{loc[1]}' {_number_problem(first)}"
        else:
            where = ".".join(str(p) for p in loc)
            detail = first["msg"].removeprefix("Value error, ")
            message = f"{where}: {detail}" if where else detail
        raise SpecError(message, source.location_of(loc)) from None


def _number_problem(error: dict) -> str:
    """What is wrong with a setting's number, in the spec's own terms."""
    if error["type"] == "value_error":
        return error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, str):
        try:
            float(given)
        except ValueError:
            return f"must be a number, not the text '{given[:40]}'"
        # YAML 1.1 reads 1e5 (no '.', no exponent sign) as text
        return f"must be a number, not the text '{given[:40]}' (YAML reads 1e5 as text: write 1.0e+5)"
    return f"must be a number, not {given!r}"[:120]


def _load(path: Path, chain: tuple[Path, ...]) -> Spec:
    source = YamlSource(path)
    model = _validate(source)
    if model.equations is None and model.extends is None:
        raise SpecError("a spec needs 'equations' or 'extends'", source.location_of(("name",)))
    if model.equations is not None and model.extends is not None:
        raise SpecError("give either 'equations' or 'extends', not both (use 'edits' to change a parent)",
                        source.location_of(("extends",)))

    edits = [parse_edit(text, source.origin_of("edits", k)) for k, text in enumerate(model.edits)]

    if model.extends is not None:
        parent = _load_parent(model.extends, path, chain, source)
        equations = parent.equations
        initial = {**parent.initial, **{k: float(v) for k, v in model.initial.items()}}
        init = {**parent.init, **{k: float(v) for k, v in model.init.items()}}
        sizes = {**parent.sizes, **model.sizes}
        key_locations = dict(parent.key_locations)
        lineage = [model.name, *parent.lineage]
        inherited_keys = {f"{key}.{k}" for key in ("initial", "init", "sizes")
                          for k in set(getattr(parent, key)) - set(getattr(model, key))}
        input_name, output_name = parent.input, parent.output
        if "input" in model.model_fields_set or "output" in model.model_fields_set:
            raise SpecError("'input' and 'output' are inherited from the parent spec",
                            source.location_of(("input" if "input" in model.model_fields_set else "output",)))
    else:
        equations = parse_equations(model.equations, source.origin_of("equations"))
        initial = {k: float(v) for k, v in model.initial.items()}
        init = {k: float(v) for k, v in model.init.items()}
        sizes = dict(model.sizes)
        key_locations = {}
        lineage = [model.name]
        inherited_keys = set()
        input_name, output_name = model.input, model.output

    for key in ("initial", "init", "sizes"):
        for sub in getattr(model, key):
            key_locations[f"{key}.{sub}"] = source.mapping_key_location(key, sub)
    # Where errors about the whole cell point (no state, input unread, output not computed): for a spec
    # that extends another, at what this file changed (its edits), not into the parent's file.
    whole_cell = next((key for key in ("output", "edits", "extends") if key in source.keys), "equations")
    key_locations["output"] = source.location_of((whole_cell,))

    equations = apply_edits(equations, edits, output_name)
    return Spec(
        name=model.name,
        file=source.file,
        description=model.description,
        reference=model.reference,
        input=input_name,
        output=output_name,
        equations=equations,
        initial=initial,
        init=init,
        sizes=sizes,
        key_locations=key_locations,
        lineage=lineage,
        edits=edits,
        inherited_keys=inherited_keys,
    )


def _load_parent(ref: str, path: Path, chain: tuple[Path, ...], source: YamlSource) -> Spec:
    where = source.location_of(("extends",))
    if not SPEC_NAME.fullmatch(ref):
        raise SpecError(f"extends: '{ref}' is not a spec name (lower case letters, digits, underscores)", where)
    candidates = [path.parent / f"{ref}.yaml"] + [d / f"{ref}.yaml" for d in spec_search_dirs()]
    parent_path = next((c for c in candidates if c.is_file()), None)
    if parent_path is None:
        raise SpecError(f"extends: no spec named '{ref}' next to {source.file} or in specs/", where)
    resolved = parent_path.resolve()
    here = path.resolve()
    if resolved == here or resolved in chain:
        raise SpecError(f"extends: '{ref}' leads back to this spec (a cycle of 'extends')", where)
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise SpecError(f"extends: more than {MAX_EXTENDS_DEPTH} levels", where)
    return _load(parent_path, chain + (here,))
