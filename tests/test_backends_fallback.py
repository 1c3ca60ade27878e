"""The compiled backend without a working compiler: the fused Python loops, one warning, same numbers."""

from __future__ import annotations

import os
import stat
import sys
import warnings
from pathlib import Path

import pytest
import torch

import cellc
from cellc.codegen.build import cuda_and_triton, resolve_backend


@pytest.mark.skipif(cuda_and_triton(), reason="with a GPU and triton, auto picks the triton backend")
def test_auto_is_compiled():
    assert resolve_backend("auto") == "compiled"


def test_broken_compiler_falls_back_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLC_CACHE_DIR", str(tmp_path))  # nothing cached: must compile
    monkeypatch.setenv("CXX", "/bin/false")
    cls = cellc.build("nog", backend="compiled")
    module = sys.modules[cls.__module__]
    monkeypatch.setattr(module, "NATIVE", {})  # forget any library this process already loaded
    layer = cls(3, 4, dtype=torch.float64)
    reference = cellc.build("nog", backend="eager")(3, 4, dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = layer(x)[0]
        out.sum().backward()
        layer(x)[0].sum().backward()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "Python-loop fused backend" in messages[0] and "/bin/false" in messages[0]
    assert module.NATIVE["lib"] is None
    assert not list(tmp_path.glob("*.so"))
    torch.testing.assert_close(out, reference(x)[0], rtol=0, atol=1e-10)


def test_compiled_library_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLC_CACHE_DIR", str(tmp_path))
    cls = cellc.build("np", backend="compiled")
    module = sys.modules[cls.__module__]
    monkeypatch.setattr(module, "NATIVE", {})
    assert module.native() is not None
    assert module.NATIVE["info"]["cached"] is False
    built = list(tmp_path.glob("np-*.so"))
    assert len(built) == 1
    monkeypatch.setattr(module, "NATIVE", {})
    assert module.native() is not None
    assert module.NATIVE["info"]["cached"] is True  # second load: no compile
    assert list(tmp_path.glob("np-*.so")) == built


# --- the cache holds code that ctypes runs: only this user's unshared files are loaded ----------

def _fresh_module(monkeypatch, spec="np"):
    module = sys.modules[cellc.build(spec, backend="compiled").__module__]
    monkeypatch.setattr(module, "NATIVE", {})
    return module


def _runtime_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_cache_directory_is_created_private(tmp_path, monkeypatch):
    cache = tmp_path / "new" / "cache"
    monkeypatch.setenv("CELLC_CACHE_DIR", str(cache))
    monkeypatch.setenv("CXX", "/bin/false")  # the directory is made before any compile
    module = _fresh_module(monkeypatch)
    _, messages = _runtime_warnings(module.native)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert len(messages) == 1 and "not using the compiled-loop cache" not in messages[0]  # compiler warning only


@pytest.mark.parametrize("planted_mode, dir_mode", [(0o644, 0o777), (0o644, 0o770), (0o666, 0o700)],
                         ids=["world-writable-dir", "group-writable-dir", "writable-file"])
def test_planted_library_in_a_shared_cache_is_never_loaded(tmp_path, monkeypatch, planted_mode, dir_mode):
    cache = tmp_path / "shared"
    cache.mkdir()
    monkeypatch.setenv("CELLC_CACHE_DIR", str(cache))
    monkeypatch.setenv("CXX", "/bin/false")  # a rebuild fails at once: no compile here
    module = _fresh_module(monkeypatch)
    key_names = []
    original = module._library_path

    def spy(name):  # plant a file under exactly the name the module is about to look for
        key_names.append(name)
        planted = cache / name
        planted.write_bytes(b"not a library: loading it would be an error naming 'invalid ELF header'")
        planted.chmod(planted_mode)
        cache.chmod(dir_mode)
        return original(name)

    monkeypatch.setattr(module, "_library_path", spy)
    try:
        _, messages = _runtime_warnings(module.native)
    finally:
        cache.chmod(0o700)
    assert len(key_names) == 1
    assert len(messages) == 2, messages
    assert "not using the compiled-loop cache" in messages[0] and "writable by group or others" in messages[0]
    assert "/bin/false" in messages[1]  # it rebuilt elsewhere instead of loading the planted file
    assert module.NATIVE["lib"] is None


def test_unsafe_cache_builds_into_a_private_directory(tmp_path, monkeypatch):
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("CELLC_CACHE_DIR", str(cache))
    module = _fresh_module(monkeypatch)
    try:
        lib, messages = _runtime_warnings(module.native)
    finally:
        cache.chmod(0o700)
    assert lib is not None and len(messages) == 1 and "writable by group or others" in messages[0]
    built = Path(module.NATIVE["info"]["path"])
    assert cache not in built.parents and not list(cache.iterdir())
    assert stat.S_IMODE(built.parent.stat().st_mode) == 0o700


def test_cache_of_another_user_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "/bin/false")
    module = _fresh_module(monkeypatch)
    monkeypatch.setattr(module.os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)  # as seen by someone else
    _, messages = _runtime_warnings(module.native)
    assert len(messages) == 2 and "belongs to another user" in messages[0], messages
