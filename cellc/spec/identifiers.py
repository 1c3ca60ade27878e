"""Which identifiers may come from a spec. Spec text is untrusted: only names that pass
here (and finite numbers) ever reach generated code."""

from __future__ import annotations

import builtins
import keyword
import re
import sys

# The largest number a spec may write or its constants fold to: cells run in float32 (or 16-bit types), and a
# constant beyond this would be inf there.
FLOAT32_MAX = 3.4028234663852886e38

# Patterns for untrusted text: always use .fullmatch(). `\Z`, not `$`, so even a stray .match() cannot
# accept a trailing newline ("evil\n" would otherwise name generated/evil\n.py).
# Letters, digits and single underscores; starts with a letter; short.
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*\Z")
MAX_LENGTH = 32

# A name shaped like this is a parameter unless an equation defines it (W_i, p_f, b_Rn).
PARAMETER_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+\Z")

# Spec names become module file names and class names.
SPEC_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")

# Names the generated code uses itself, or that would shadow something it relies on.
RESERVED = frozenset(
    {
        "torch", "nn", "math", "self", "input", "state", "lengths", "output", "outputs",
        "weight", "bias", "diag", "mask", "step", "layer", "direction", "reverse",
        "None", "True", "False", "print", "len", "range", "tuple", "list", "dict",
        "int", "float", "str", "type", "object", "super", "getattr", "setattr",
        "exec", "eval", "compile", "open", "globals", "locals", "vars", "id",
        # Modules an injected name could reach for.
        "os", "sys", "subprocess", "builtins", "importlib", "shutil", "socket", "pickle", "functools",
        "F", "PackedSequence", "pack_padded_sequence", "pad_packed_sequence",
    }
    # Every builtin (getattr, hash, max, ...): no spec name may even look like one.
    | {name for name in dir(builtins) if not name.startswith("_")}
)


# Names a generated module binds at its top level that a spec's class name could equal (a class name is
# CamelCase: 'path' -> 'Path', 'n_a_t_i_v_e' -> 'NATIVE'); the class would replace them. tests/test_security.py
# renders every backend and checks that this list holds every such name.
GENERATED_GLOBALS = frozenset(
    {"FORMULA", "GRAPHS", "LOOPS", "LOWERABLE", "MODES", "NATIVE", "PARAMETERS", "PackedSequence", "Path", "SIZES",
     "SYMBOLS", "TILED", "TRITON"}
)


def class_name(spec_name: str) -> str:
    """The generated module's class: 'vanilla' -> 'Vanilla', 'my_cell' -> 'MyCell'."""
    return "".join(part[:1].upper() + part[1:] for part in spec_name.split("_")) or "Cell"


# Spec names become module files (generated/<name>.py): one named like a module it would shadow where that
# folder is on the path is refused.
MODULE_NAMES = frozenset(sys.stdlib_module_names) | {"torch", "triton", "numpy", "cellc", "generated"}


def spec_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a spec, or None when it can. A spec name appears in generated code only as
    a module file's name, in strings, and turned into the class name, so those are what it must not break."""
    if not SPEC_NAME.fullmatch(name):
        return "spec names are lower case letters, digits and underscores, starting with a letter"
    if "__" in name or name.endswith("_"):
        return f"name '{name}' has a trailing or double underscore"
    if keyword.iskeyword(name):
        return f"'{name}' is a Python keyword"
    if name in MODULE_NAMES:
        return f"spec name '{name}' would name generated/{name}.py, which shadows the module '{name}'"
    cls = class_name(name)
    if cls in GENERATED_GLOBALS or hasattr(builtins, cls):  # the class would replace it in its module
        return f"spec name '{name}' would name its class '{cls}', which the generated module uses itself"
    return None


def identifier_problem(name: str) -> str | None:
    """Why ``name`` cannot be used as a spec identifier, or None when it can."""
    if len(name) > MAX_LENGTH:
        return f"name '{name[:40]}' is longer than {MAX_LENGTH} characters"
    if "__" in name or name.startswith("_") or name.endswith("_"):
        return f"name '{name}' has a leading, trailing or double underscore"
    if not IDENTIFIER.fullmatch(name):
        return f"'{name}' is not a valid name (letters, digits, single underscores; starts with a letter)"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"'{name}' is a Python keyword"
    if name in RESERVED:
        return f"'{name}' is reserved by the code generator"
    return None


def is_parameter_name(name: str) -> bool:
    return bool(PARAMETER_SHAPE.fullmatch(name))
