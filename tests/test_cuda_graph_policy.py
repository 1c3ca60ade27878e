"""The triton backend's CUDA-graph cache policy (memory checks, eviction, release), on CPU with the
CUDA queries it makes stubbed: the capture itself needs a GPU and is covered by the device benchmark
and, with a faked graph, by tests/test_triton.py."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

import cellc

GIB = 2**30


@pytest.fixture
def module(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = sys.modules[cellc.build("vanilla", backend="triton").__module__]
    mod.release_graphs()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: types.SimpleNamespace(total_memory=10 * GIB))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * GIB, 10 * GIB))
    yield mod
    mod.release_graphs()


def _tensors(nbytes: int):
    return [torch.empty(nbytes // 4, dtype=torch.float32)]


def test_capture_skipped_when_free_memory_is_short(module, monkeypatch):
    captured = []
    monkeypatch.setattr(module, "_capture", lambda steps, tensors, device, size: captured.append(1) or ("graph", [], 0))
    assert module._capture_or_none(None, _tensors(1024), "cpu") == ("graph", [], 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 10 * GIB))
    assert module._capture_or_none(None, _tensors(1024), "cpu") is None  # needs twice its copies free
    assert captured == [1]


def test_out_of_memory_during_capture_frees_the_cache(module, monkeypatch):
    module.GRAPHS[("old",)] = ("graph", [], 10)
    module.GRAPH_SEEN[("other",)] = 1

    def boom(steps, tensors, device, size):
        raise torch.cuda.OutOfMemoryError("out of memory")

    monkeypatch.setattr(module, "_capture", boom)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    assert module._capture_or_none(None, _tensors(1024), "cpu") is None
    assert not module.GRAPHS and not module.GRAPH_SEEN


def test_eviction_keeps_the_newest_within_entries_and_memory(module):
    limit = module.GRAPH_MEMORY_SHARE * 10 * GIB
    for k in range(module.GRAPH_MAX_ENTRIES + 3):
        module.GRAPHS[(k,)] = ("graph", [], 1)
    module.GRAPHS[("failed",)] = None  # a capture that failed counts as an entry, not as memory
    module._evict("cpu")
    assert len(module.GRAPHS) == module.GRAPH_MAX_ENTRIES and ("failed",) in module.GRAPHS
    module.GRAPHS[("big",)] = ("graph", [], int(limit * 0.9))
    module.GRAPHS[("bigger",)] = ("graph", [], int(limit * 0.5))
    module._evict("cpu")
    assert list(module.GRAPHS) == [("bigger",)]  # oldest first until the rest fits
