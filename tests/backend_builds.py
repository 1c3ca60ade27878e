"""Fast backends as the equivalence tests build them: the compiled backend must really run its C++ loops.

Where no compiler works it falls back to the fused Python loops with a warning (tests/test_backends_fallback.py
covers that); an equivalence test that let it would check the fused loops twice and the generated C++ never.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings

import pytest

import cellc


def build_fast(spec, backend: str, *args, **kwargs):
    """An instance of ``spec``'s ``backend`` module; for "compiled", one whose compiled loops loaded (skipped
    where this machine has no C++ compiler at all, failed where the generated C++ does not build)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a build failure is asserted below, not warned about
        cls = cellc.build(spec, backend=backend)
        if backend == "compiled":
            module = sys.modules[cls.__module__]
            if module.native() is None:
                if shutil.which(os.environ.get("CXX") or "c++") is None:
                    pytest.skip("no C++ compiler here: the compiled backend runs its fused fallback")
                pytest.fail(f"{spec}: the compiled loops did not build: {module.NATIVE['info'].get('error')}")
        return cls(*args, **kwargs)
