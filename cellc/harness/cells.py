"""Turning a cell name from the command line into a compiled layer class."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def layer_class(cell: str, backend: str = "auto") -> type[torch.nn.Module]:
    """The compiled layer class for ``cell`` (a spec name or path); cached per process."""
    import cellc

    return cellc.build(cell, backend=backend)
