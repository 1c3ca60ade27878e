"""Checking a layer against a reference: what cellc's own tests and fuzzers use, public for anyone who writes a
cell or a backend ("does my fast module compute what the eager one does, gradients included?").

    from cellc.testing import layer_results, assert_results_match
    eager = cellc.build("my.yaml", backend="eager")(M, N, dtype=torch.float64)
    fast = cellc.build("my.yaml", backend="compiled")(M, N, dtype=torch.float64)
    fast.load_state_dict(eager.state_dict())
    assert_results_match(layer_results(fast, x, state), layer_results(eager, x, state))
"""

from __future__ import annotations

from typing import Any

from cellc.spec.loader import builtin_spec_names

__all__ = ["assert_results_match", "builtin_spec_names", "input_size", "layer_results", "random_state",
           "size_keywords"]


def size_keywords(layer_class: Any, n: int, p: int | None = None) -> dict[str, int]:
    """The size arguments beside hidden_size that ``layer_class`` takes (``proj_size`` for a cell with values of
    that size): ``p``, by default n // 2 (at least 1); {} for a cell whose values all have hidden_size units."""
    from cellc.ir.sizes import default_sizes

    sizes = default_sizes(getattr(layer_class, "size_names", ("hidden_size",)), n)
    return {name: p or value for name, value in sizes.items()}


def input_size(layer_class: Any, m: int, n: int, **sizes: int) -> int:
    """The input size to build ``layer_class`` with for hidden size ``n`` (and ``sizes``: size_keywords): ``m``, or
    the layer's output size where the cell reads its input elementwise (its ``direct_input_at`` is set: then
    input_size must equal the output's size, hidden_size unless the spec declares another)."""
    if getattr(layer_class, "direct_input_at", None) is None:
        return m
    import sys

    output = sys.modules[layer_class.__module__].OUTPUT_SIZE
    return sum(k * s for k, s in zip(output, (n, *sizes.values())))


def random_state(layer: Any, batch: int, generator: Any = None, dtype: Any = None, scale: float = 0.5) -> tuple:
    """A random initial state for ``layer`` (each of its states, at its own size), ``scale`` times N(0, 1)."""
    import torch

    return tuple(scale * torch.randn(shape, generator=generator, dtype=dtype) for shape in layer.state_shapes(batch))


def layer_results(layer: Any, x: Any, state: tuple, lengths: Any = None, seed: int = 1) -> dict[str, Any]:
    """``layer``'s output ("output"), final states ("final0", ...) and the gradients of a fixed random projection
    of them (drawn from ``seed``: two layers given the same inputs get the same one) with respect to the input
    ("d_input"), the initial states ("d_state0", ...) and every parameter ("d_<name>"; zeros for a parameter
    the cell does not use)."""
    import torch

    x = x.clone().requires_grad_(True)
    state = tuple(s.clone().requires_grad_(True) for s in state)
    out, final = layer(x, state) if lengths is None else layer(x, state, lengths=lengths)
    generator = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=generator, dtype=out.dtype)).sum()
    for f in final:
        loss = loss + (f * torch.randn(f.shape, generator=generator, dtype=f.dtype)).sum()
    inputs = [x, *state, *layer.parameters()]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    names = ["d_input", *[f"d_state{k}" for k in range(len(state))], *[f"d_{n}" for n, _ in layer.named_parameters()]]
    results = {"output": out.detach(), **{f"final{k}": f.detach() for k, f in enumerate(final)}}
    results.update({name: torch.zeros_like(t) if g is None else g for name, g, t in zip(names, grads, inputs)})
    return results


def assert_results_match(got: dict[str, Any], want: dict[str, Any], atol: float = 1e-10, rtol: float = 0.0) -> None:
    """The same entries as ``want``, each within the tolerance (an AssertionError names the first that is not)."""
    import torch

    assert got.keys() == want.keys(), f"entries differ: {sorted(set(got) ^ set(want))}"
    for name, expected in want.items():
        torch.testing.assert_close(got[name], expected, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")
