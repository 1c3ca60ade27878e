"""Fixtures several test files share. The harness itself is public (cellc.testing: a layer's outputs and every
gradient, and their comparison); here it is bound to the comparison most tests make: a backend against the
eager reference with the same weights, in float64."""

from __future__ import annotations

import zlib

import pytest
import torch

import cellc
from cellc.testing import assert_results_match, input_size, layer_results, random_state, size_keywords

M, N, T, B = 3, 4, 5, 3


@pytest.fixture(scope="session")
def assert_matches_eager():
    """``check(spec, backend_layer_class_or_name, lengths=None, atol=1e-10, **layer_opts)``: the backend's layer
    and the eager one, same weights and inputs (drawn from the spec's name), give the same outputs, final
    states and gradients. ``backend`` is a backend name or a callable ``(spec, M, N, **opts) -> layer``."""

    def check(spec, backend, lengths=None, atol: float = 1e-10, seed: str = "", **opts):
        torch.manual_seed(zlib.crc32(f"{spec}/{seed}/weights".encode()))  # the same weights whatever ran before
        eager_class = cellc.build(spec, backend="eager")
        opts = {**size_keywords(eager_class, N), **opts}  # proj_size = N // 2 for a cell that takes it
        m = input_size(eager_class, M, N, **size_keywords(eager_class, N))  # N for a cell that reads x elementwise
        eager = eager_class(m, N, dtype=torch.float64, **opts)
        fast = (cellc.build(spec, backend=backend)(m, N, dtype=torch.float64, **opts) if isinstance(backend, str)
                else backend(spec, m, N, dtype=torch.float64, **opts))
        fast.load_state_dict(eager.state_dict())  # identical parameter names and layout
        g = torch.Generator().manual_seed(zlib.crc32(f"{spec}/{seed}".encode()))  # the same inputs every run
        x = torch.randn(T, B, m, generator=g, dtype=torch.float64)
        state = random_state(eager, B, g, torch.float64)
        lengths = None if lengths is None else torch.tensor(lengths)
        assert_results_match(layer_results(fast, x, state, lengths), layer_results(eager, x, state, lengths), atol=atol)

    return check
