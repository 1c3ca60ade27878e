"""``cellc.build``: spec -> rendered module source -> a live nn.Module class."""

from __future__ import annotations

import linecache
import sys
import types
from pathlib import Path

from cellc.codegen import naming, support
from cellc.codegen.render import BACKENDS, render_module
from cellc.errors import CellcError, UsageError
from cellc.ir.pipeline import CompiledCell, compile_spec
from cellc.spec.model import Spec

_MODULES: dict[tuple[str, str, str], types.ModuleType] = {}  # (name, hash, backend) -> module
_COMPILED: dict[tuple[str, str], CompiledCell] = {}  # (name, hash) -> the cell, to build it for another backend


def resolve_backend(backend: str) -> str:
    """'auto' picks the fastest correct backend available here: 'compiled' (C++ time loops), which
    itself falls back to the fused Python loops, with one warning, where no compiler works; where a
    CUDA device and triton are present, 'triton', whose modules run CUDA tensors on generated Triton
    kernels (torch's cuDNN kernels for cells that are exactly LSTM / GRU) and CPU tensors on the same
    compiled loops."""
    if backend == "auto":
        return "triton" if cuda_and_triton() else "compiled"
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend '{backend}' (choose from auto, {', '.join(BACKENDS)})")
    return backend


def cuda_and_triton() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("triton") is not None


def load_module(compiled: CompiledCell, backend: str = "auto") -> types.ModuleType:
    """Render and import the generated module for ``compiled`` (cached per process)."""
    backend = support.fastest(compiled, resolve_backend(backend)) if backend == "auto" else resolve_backend(backend)
    key = (compiled.name, compiled.hash, backend)
    _COMPILED[(compiled.name, compiled.hash)] = compiled
    if key not in _MODULES:
        source = render_module(compiled, backend)
        module_name = f"cellc_generated.{naming.checked_spec_name(compiled.name)}_{compiled.hash}_{backend}"
        filename = f"<cellc:{compiled.name}:{backend}>"
        # Registered with linecache so tracebacks and inspect show the generated source.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module = types.ModuleType(module_name)
        module.__file__ = filename
        sys.modules.setdefault("cellc_generated", types.ModuleType("cellc_generated"))  # a parent to import from
        sys.modules[module_name] = module  # dataclass/pickle machinery looks modules up by name
        exec(compile(source, filename, "exec"), module.__dict__)
        cls = getattr(module, naming.class_name(compiled.name))
        cls._cellc_identity = key
        cls.__reduce_ex__ = _reduce_ex
        _MODULES[key] = module
    return _MODULES[key]


def _reduce_ex(self, protocol):
    """Pickle a built layer by its spec's identity, not its in-memory module's name (another process has no
    such module): unpickling builds the class again (restore_layer), then sets the state as usual."""
    identity = type(self).__dict__.get("_cellc_identity")
    if identity is None:  # a user's subclass of the layer: pickled by reference, as any class
        return object.__reduce_ex__(self, protocol)
    return restore_layer, identity, self.__dict__


def restore_layer(name: str, spec_hash: str, backend: str):
    """An empty instance of the layer class built from spec ``name`` with this hash (for unpickling), for
    ``backend``: from a cell this process built (for any backend), else from the spec of that name in specs/
    or the built-in ones if its hash matches. Its state is set by pickle afterwards."""
    compiled = _COMPILED.get((name, spec_hash))
    if compiled is None:
        from cellc.spec.loader import find_spec

        try:
            compiled = compile_spec(find_spec(name))
        except CellcError:
            compiled = None
        if compiled is None or compiled.hash != spec_hash:
            raise CellcError(f"unpickling a '{name}' layer ({backend} backend, spec hash {spec_hash}): no spec of "
                             "that name and hash here; build it first in this process (cellc.build(<its .yaml>), "
                             "any backend), then unpickle")
    module = load_module(compiled, backend)
    cls = getattr(module, naming.class_name(name))
    return cls.__new__(cls)


def build(spec_or_path: Spec | CompiledCell | str | Path, backend: str = "auto") -> type:
    """The nn.Module class for a spec (a name in specs/, a .yaml path, a Spec or a CompiledCell)."""
    compiled = spec_or_path if isinstance(spec_or_path, CompiledCell) else compile_spec(spec_or_path)
    module = load_module(compiled, backend)
    return getattr(module, naming.class_name(compiled.name))
