"""fANOVA on planted data: exactness against brute force, and the planted structure recovered."""

from __future__ import annotations

import numpy as np
import pytest

from cellc.analysis.fanova import Forest, ForestSettings, decompose, decompose_tree, fanova, marginal
from cellc.analysis.hyperspace import PAIRS

BOX = np.array([[-6.0, -2.0], [np.log10(20), np.log10(200)], [-2.0, 0.0], [0.0, 1.0]])
SMALL = ForestSettings(trees=12, min_samples_leaf=2, seed=0)


def _uniform(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return BOX[:, 0] + rng.random((n, 4)) * (BOX[:, 1] - BOX[:, 0])


def _component(result, name: str) -> float:
    return next(c.fraction for c in result.components if c.name == name)


def test_metric_depending_only_on_learning_rate_makes_it_dominant():
    x = _uniform(150, 1)
    y = (x[:, 0] + 4.0) ** 2 + 0.05 * np.random.default_rng(2).standard_normal(len(x))
    result, _ = fanova(x, y, BOX, SMALL)
    lr = _component(result, "learning rate")
    assert lr > 0.8
    others = [c.fraction for c in result.components if c.name != "learning rate"]
    assert max(others) < 0.1
    assert lr == max(c.fraction for c in result.components)


def test_planted_interaction_is_found_and_main_effects_are_not_inflated():
    x = _uniform(300, 3)
    centred = (x - BOX.mean(axis=1)) / (BOX[:, 1] - BOX[:, 0])
    y = centred[:, 0] * centred[:, 3]  # pure lr x noise interaction, no main effects
    result, _ = fanova(x, y, BOX, SMALL)
    assert _component(result, "learning rate x input noise") > 0.5
    assert _component(result, "learning rate") < 0.15
    assert _component(result, "hidden size x momentum") < 0.05


def test_decomposition_of_one_tree_matches_brute_force_integration():
    x = _uniform(80, 4)
    y = np.sin(3 * x[:, 0]) + x[:, 3] * x[:, 1] + 0.2 * x[:, 2]
    forest = Forest.fit(x, y, BOX, ForestSettings(trees=1, min_samples_leaf=3, seed=5))
    tree = forest.trees[0]
    total, main, pair = decompose_tree(tree, BOX)
    # Brute force on a fine regular grid (midpoints): the tree is piecewise constant, so the grid
    # estimate converges to the exact integrals.
    g = 24
    axes = [BOX[d, 0] + (np.arange(g) + 0.5) / g * (BOX[d, 1] - BOX[d, 0]) for d in range(4)]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 4)
    values = marginal(tree, (0, 1, 2, 3), mesh).reshape((g,) * 4)
    mu = values.mean()
    assert np.isclose(values.var(), total, rtol=0.1)
    f_main = [values.mean(axis=tuple(k for k in range(4) if k != d)) - mu for d in range(4)]
    for d in range(4):
        assert np.isclose((f_main[d] ** 2).mean(), main[d], rtol=0.15, atol=1e-3 * total)
    for k, (i, j) in enumerate(PAIRS):
        m_ij = values.mean(axis=tuple(a for a in range(4) if a not in (i, j))) - mu
        f_ij = m_ij - f_main[i][:, None] - f_main[j][None, :]
        assert np.isclose((f_ij**2).mean(), pair[k], rtol=0.2, atol=2e-3 * total)


def test_fractions_are_deterministic_and_bounded():
    x = _uniform(60, 7)
    y = x[:, 0] + x[:, 1] ** 2
    a, _ = fanova(x, y, BOX, SMALL)
    b, _ = fanova(x, y, BOX, SMALL)
    assert a == b
    total = sum(c.fraction for c in a.components)
    assert 0 < total <= 1 + 1e-9
    assert all(c.fraction >= 0 for c in a.components)


def test_constant_metric_gives_no_importance():
    x = _uniform(30, 8)
    result, _ = fanova(x, np.full(len(x), 3.0), BOX, SMALL)
    assert result.trees == 0
    assert all(c.fraction == 0 for c in result.components)


def test_marginal_curve_follows_the_planted_function():
    x = _uniform(200, 9)
    y = -(x[:, 0] + 4.0) ** 2
    forest = Forest.fit(x, y, BOX, SMALL)
    grid = np.linspace(BOX[0, 0], BOX[0, 1], 21)
    mean, std = forest.curve(0, grid)
    assert abs(grid[int(np.argmax(mean))] + 4.0) <= 0.6
    assert mean.shape == std.shape == grid.shape
    surface = forest.surface((0, 3), grid, np.linspace(0, 1, 5))
    assert surface.shape == (5, 21)
    assert decompose(forest).samples == 200


@pytest.mark.parametrize("n", [1, 3])
def test_tiny_samples_do_not_crash(n):
    x = _uniform(n, 10)
    result, forest = fanova(x, np.arange(n, dtype=float), BOX, SMALL)
    assert len(result.components) == 10
    assert forest.curve(1, np.linspace(BOX[1, 0], BOX[1, 1], 4))[0].shape == (4,)
