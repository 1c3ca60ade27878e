"""``cellc.build``: spec -> rendered module source -> a live nn.Module class."""

from __future__ import annotations

import linecache
import sys
import types
from pathlib import Path

from cellc.codegen import naming
from cellc.codegen.render import BACKENDS, render_module
from cellc.errors import UsageError
from cellc.ir.pipeline import CompiledCell, compile_spec
from cellc.spec.model import Spec

_MODULES: dict[tuple[str, str, str], types.ModuleType] = {}  # (name, hash, backend) -> module


def resolve_backend(backend: str) -> str:
    """'auto' picks the fastest correct backend available here: 'compiled' (C++ time loops), which
    itself falls back to the fused Python loops, with one warning, where no compiler works; where a
    CUDA device and triton are present, 'triton', whose modules run CUDA tensors on generated Triton
    kernels (torch's cuDNN kernels for cells that are exactly LSTM / GRU) and CPU tensors on the same
    compiled loops."""
    if backend == "auto":
        return "triton" if _cuda_and_triton() else "compiled"
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend '{backend}' (choose from auto, {', '.join(BACKENDS)})")
    return backend


def _cuda_and_triton() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("triton") is not None


def load_module(compiled: CompiledCell, backend: str = "auto") -> types.ModuleType:
    """Render and import the generated module for ``compiled`` (cached per process)."""
    backend = resolve_backend(backend)
    key = (compiled.name, compiled.hash, backend)
    if key not in _MODULES:
        source = render_module(compiled, backend)
        module_name = f"cellc_generated.{naming.checked_spec_name(compiled.name)}_{compiled.hash}_{backend}"
        filename = f"<cellc:{compiled.name}:{backend}>"
        # Registered with linecache so tracebacks and inspect show the generated source.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module = types.ModuleType(module_name)
        module.__file__ = filename
        sys.modules[module_name] = module  # dataclass/pickle machinery looks modules up by name
        exec(compile(source, filename, "exec"), module.__dict__)
        _MODULES[key] = module
    return _MODULES[key]


def build(spec_or_path: Spec | CompiledCell | str | Path, backend: str = "auto") -> type:
    """The nn.Module class for a spec (a name in specs/, a .yaml path, a Spec or a CompiledCell)."""
    compiled = spec_or_path if isinstance(spec_or_path, CompiledCell) else compile_spec(spec_or_path)
    module = load_module(compiled, backend)
    return getattr(module, naming.class_name(compiled.name))
