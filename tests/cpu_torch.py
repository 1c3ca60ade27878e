"""torch with CUDA placements dropped: runs the GPU benchmark's and tuner's code paths on CPU in tests."""

from __future__ import annotations

import types

import torch


class CpuTorch:
    cuda = types.SimpleNamespace(synchronize=lambda: None, empty_cache=lambda: None)

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def randn(*shape, device=None, **kwargs):
        return torch.randn(*shape, **kwargs)
