"""CPU stand-ins for the GPU benchmark's and tuner's device pieces, so their code paths run in tests:
torch with CUDA placements dropped, the benchmark's make() on CPU, and a clock for CUDA events."""

from __future__ import annotations

import time
import types
import warnings

import torch

import cellc


class CpuTorch:
    cuda = types.SimpleNamespace(synchronize=lambda: None, empty_cache=lambda: None)

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def randn(*shape, device=None, **kwargs):
        return torch.randn(*shape, **kwargs)


def make(cell, backend, h, dtype, torch_=None):
    """gpu.make on CPU: torch's own module for "torch", else the cellc backend."""
    if backend == "torch":
        return (torch.nn.GRU(h, h) if cell == "gru" else torch.nn.LSTM(h, h)).to(dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cellc.build(cell, backend=backend)(h, h).to(dtype=dtype)


def cuda_ms(fn, repeat, torch_=None, warm_up=True):
    """gpu.cuda_ms with a wall clock: mean ms of `repeat` calls."""
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) * 1e3 / repeat
