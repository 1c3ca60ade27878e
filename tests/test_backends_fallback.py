"""The compiled backend without a working compiler: the fused Python loops, one warning, same numbers."""

from __future__ import annotations

import sys
import warnings

import torch

import cellc
from cellc.codegen.build import resolve_backend


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
