"""torch with CUDA placements dropped: runs the GPU benchmark's and tuner's code paths on CPU in tests."""

from __future__ import annotations

import torch


class CpuTorch:
    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def randn(*shape, device=None, **kwargs):
        return torch.randn(*shape, **kwargs)
