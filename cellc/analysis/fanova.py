"""Functional ANOVA of a random-forest fit: main effects and pairwise interactions, exactly per tree.

This is our own implementation of Hutter, Hoos & Leyton-Brown, "An Efficient Approach for
Assessing Hyperparameter Importance" (ICML 2014). Optuna's ``FanovaImportanceEvaluator`` gives
main effects only; the report also needs pairwise interactions and marginal curves.

Method
------
1. Fit a seeded scikit-learn ``RandomForestRegressor`` to (x -> y), x in model coordinates
   (:mod:`cellc.analysis.hyperspace`: log10 lr, log10 hidden, log10(1 - momentum), noise).
2. Each tree is piecewise constant on axis-aligned leaf boxes. Under the uniform measure over
   the search box (which *is* the random-search distribution in these coordinates), the
   marginal prediction over a set S of dimensions, averaging out the others, is

       m_S(x_S) = sum over leaves L containing x_S of value_L * prod_{d not in S} |L_d| / |box_d|,

   which is constant between the tree's split thresholds on the dimensions in S. Evaluating it
   at the midpoints of those intervals, weighted by their widths, gives exact integrals:
   - total variance V = sum_L vol_L (value_L - mu)^2, mu = sum_L vol_L value_L;
   - main effect f_i = m_i - mu, variance V_i = E[f_i^2];
   - pairwise interaction f_ij = m_ij - f_i - f_j - mu, variance V_ij = E[f_ij^2].
3. Each component's importance is V_S / V per tree; the report gives the mean (and standard
   deviation) over trees, as the fANOVA package does. Whatever the ten components leave is
   attributed to higher-order interactions.

Marginal curves and surfaces (for plots) are the same m_S evaluated on a grid, mean and
standard deviation over trees (Hutter et al.'s marginal plots). Everything is deterministic for
a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.ensemble import RandomForestRegressor

from cellc.analysis.hyperspace import AXES, PAIRS

METHOD_TEXT = (
    "functional ANOVA (Hutter et al. 2014) over a scikit-learn random forest, cellc's own "
    "implementation (cellc/analysis/fanova.py): exact per-tree marginalisation over the leaf "
    "boxes under the search distribution, main effects and all pairwise interactions, fractions "
    "of variance averaged over the trees. Optuna's FanovaImportanceEvaluator gives main effects "
    "only, so it is not used."
)


@dataclass(frozen=True)
class ForestSettings:
    trees: int = 64
    min_samples_leaf: int = 2
    seed: int = 0
    resamples: int = 200  # bootstrap resamples of the settings for the intervals (bootstrap_importance)


class Component(BaseModel):
    """One term of the decomposition: a main effect (one axis) or a pairwise interaction."""

    model_config = ConfigDict(frozen=True)

    dims: tuple[int, ...]
    name: str
    fraction: float  # mean over trees of V_S / V
    std: float  # standard deviation over trees


class FanovaResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    samples: int
    trees: int  # trees with non-zero variance (the others carry no information)
    components: list[Component]  # four main effects, then six pairs, in AXES order

    @property
    def main(self) -> list[Component]:
        return [c for c in self.components if len(c.dims) == 1]

    @property
    def pairs(self) -> list[Component]:
        return [c for c in self.components if len(c.dims) == 2]

    @property
    def higher_order(self) -> float:
        return max(0.0, 1.0 - sum(c.fraction for c in self.components))


def component_name(dims: tuple[int, ...]) -> str:
    return " x ".join(AXES[d].short for d in dims)


@dataclass(frozen=True)
class TreeBoxes:
    """A tree's leaves as boxes: membership bounds (lower, upper] and clipped width fractions."""

    lower: np.ndarray  # (L, D), -inf at the outer edge
    upper: np.ndarray  # (L, D), +inf at the outer edge
    frac: np.ndarray  # (L, D) fraction of the search box's width covered by the leaf
    value: np.ndarray  # (L,)
    thresholds: tuple[np.ndarray, ...]  # per dimension: sorted split points inside the box

    @property
    def volume(self) -> np.ndarray:
        return np.prod(self.frac, axis=1)


def tree_boxes(tree: object, box: np.ndarray) -> TreeBoxes:
    """Walk a fitted sklearn tree (``estimator.tree_``) into leaf boxes within ``box`` (D, 2)."""
    dims = box.shape[0]
    left, right = tree.children_left, tree.children_right  # type: ignore[attr-defined]
    feature, threshold = tree.feature, tree.threshold  # type: ignore[attr-defined]
    values = tree.value.reshape(tree.node_count, -1)[:, 0]  # type: ignore[attr-defined]
    lowers, uppers, leaf_values = [], [], []
    splits: list[set[float]] = [set() for _ in range(dims)]
    stack = [(0, np.full(dims, -np.inf), np.full(dims, np.inf))]
    while stack:
        node, lo, hi = stack.pop()
        if left[node] == right[node]:  # leaf
            lowers.append(lo)
            uppers.append(hi)
            leaf_values.append(values[node])
            continue
        d, t = int(feature[node]), float(threshold[node])
        if box[d, 0] < t < box[d, 1]:
            splits[d].add(t)
        hi_left = hi.copy()
        hi_left[d] = min(hi[d], t)
        lo_right = lo.copy()
        lo_right[d] = max(lo[d], t)
        stack.append((int(right[node]), lo_right, hi))
        stack.append((int(left[node]), lo, hi_left))
    lower, upper = np.asarray(lowers), np.asarray(uppers)
    width = box[:, 1] - box[:, 0]
    clipped = np.clip(np.minimum(upper, box[:, 1]) - np.maximum(lower, box[:, 0]), 0.0, None)
    frac = np.divide(clipped, width, out=np.ones_like(clipped), where=width > 0)
    return TreeBoxes(lower, upper, frac, np.asarray(leaf_values, dtype=float),
                     tuple(np.asarray(sorted(s)) for s in splits))


def marginal(boxes: TreeBoxes, dims: tuple[int, ...], points: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """m_S at ``points`` (k, len(dims)): the tree's prediction averaged over the other dimensions."""
    others = [d for d in range(boxes.frac.shape[1]) if d not in dims]
    weights = boxes.value * np.prod(boxes.frac[:, others], axis=1)
    out = np.empty(len(points))
    for start in range(0, len(points), chunk):
        part = points[start:start + chunk]
        inside = np.ones((len(part), len(weights)), dtype=bool)
        for column, d in enumerate(dims):
            p = part[:, column][:, None]
            inside &= (p > boxes.lower[None, :, d]) & (p <= boxes.upper[None, :, d])
        out[start:start + chunk] = inside.astype(float) @ weights
    return out


def _intervals(thresholds: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints and width fractions of the intervals that ``thresholds`` cut [low, high] into."""
    edges = np.concatenate([[low], thresholds, [high]])
    widths = np.diff(edges)
    total = high - low
    return (edges[:-1] + edges[1:]) / 2, (widths / total if total > 0 else np.ones_like(widths))


def _index_range(boxes: TreeBoxes, d: int, mids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per leaf, the [start, stop) indices of the sorted ``mids`` inside its (lower, upper] on d."""
    return (np.searchsorted(mids, boxes.lower[:, d], side="right"),
            np.searchsorted(mids, boxes.upper[:, d], side="right"))


def _grid_marginal(boxes: TreeBoxes, dims: tuple[int, ...], mids: list[np.ndarray]) -> np.ndarray:
    """m_S on the full grid of sorted interval midpoints of ``dims`` (one or two of them).

    Each leaf covers a rectangle of grid indices, so its weight is painted with a difference
    array and prefix sums: O(leaves + grid) instead of O(leaves x grid).
    """
    others = [d for d in range(boxes.frac.shape[1]) if d not in dims]
    weights = boxes.value * np.prod(boxes.frac[:, others], axis=1)
    ranges = [_index_range(boxes, d, m) for d, m in zip(dims, mids)]
    shape = tuple(len(m) + 1 for m in mids)
    diff = np.zeros(shape)
    if len(dims) == 1:
        (start, stop), = ranges
        np.add.at(diff, start, weights)
        np.add.at(diff, stop, -weights)
        return np.cumsum(diff)[:-1]
    (a0, a1), (b0, b1) = ranges
    np.add.at(diff, (a0, b0), weights)
    np.add.at(diff, (a1, b0), -weights)
    np.add.at(diff, (a0, b1), -weights)
    np.add.at(diff, (a1, b1), weights)
    return np.cumsum(np.cumsum(diff, axis=0), axis=1)[:-1, :-1]


def decompose_tree(boxes: TreeBoxes, box: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(total variance, main-effect variances (D,), pairwise variances (len(PAIRS),)) of one tree."""
    volume = boxes.volume
    mu = float(volume @ boxes.value)
    total = float(volume @ (boxes.value - mu) ** 2)
    dims = box.shape[0]
    mids, widths, effects = [], [], []
    main = np.zeros(dims)
    for d in range(dims):
        m, w = _intervals(boxes.thresholds[d], box[d, 0], box[d, 1])
        f = _grid_marginal(boxes, (d,), [m]) - mu
        mids.append(m)
        widths.append(w)
        effects.append(f)
        main[d] = float(w @ f**2)
    pair = np.zeros(len(PAIRS))
    for k, (i, j) in enumerate(PAIRS):
        m_ij = _grid_marginal(boxes, (i, j), [mids[i], mids[j]])
        f_ij = m_ij - mu - effects[i][:, None] - effects[j][None, :]
        pair[k] = float(widths[i] @ f_ij**2 @ widths[j])
    return total, main, pair


def fit_forest(x: np.ndarray, y: np.ndarray, settings: ForestSettings) -> RandomForestRegressor:
    forest = RandomForestRegressor(
        n_estimators=settings.trees, min_samples_leaf=settings.min_samples_leaf, max_features=1.0,
        bootstrap=True, random_state=settings.seed, n_jobs=1,
    )
    forest.fit(x, y)
    return forest


@dataclass(frozen=True)
class Forest:
    """A fitted forest as leaf boxes over the search box (what every query here needs)."""

    box: np.ndarray
    trees: tuple[TreeBoxes, ...]
    samples: int

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, box: np.ndarray, settings: ForestSettings) -> Forest:
        forest = fit_forest(x, y, settings)
        return cls(box, tuple(tree_boxes(est.tree_, box) for est in forest.estimators_), len(y))

    def curve(self, dim: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Marginal prediction over one dimension: mean and std over trees at ``grid`` points."""
        rows = np.stack([marginal(t, (dim,), grid[:, None]) for t in self.trees])
        return rows.mean(axis=0), rows.std(axis=0)

    def surface(self, dims: tuple[int, int], grid_a: np.ndarray, grid_b: np.ndarray) -> np.ndarray:
        """Mean marginal prediction over two dimensions, shape (len(grid_b), len(grid_a))."""
        ga, gb = np.meshgrid(grid_a, grid_b)
        points = np.column_stack([ga.ravel(), gb.ravel()])
        return np.mean([marginal(t, dims, points) for t in self.trees], axis=0).reshape(ga.shape)


def decompose(forest: Forest) -> FanovaResult:
    """Fractions of variance of every main effect and pairwise interaction, averaged over trees."""
    fractions = []
    for tree in forest.trees:
        total, main, pair = decompose_tree(tree, forest.box)
        if total > 1e-12 * max(1.0, float(np.abs(tree.value).max()) ** 2):
            fractions.append(np.concatenate([main, pair]) / total)
    keys = [(d,) for d in range(len(AXES))] + list(PAIRS)
    table = np.asarray(fractions) if fractions else np.zeros((0, len(keys)))
    components = [
        Component(dims=key, name=component_name(key),
                  fraction=float(table[:, k].mean()) if len(table) else 0.0,
                  std=float(table[:, k].std()) if len(table) else 0.0)
        for k, key in enumerate(keys)
    ]
    return FanovaResult(samples=forest.samples, trees=len(table), components=components)


def fanova(x: np.ndarray, y: np.ndarray, box: np.ndarray, settings: ForestSettings = ForestSettings()
           ) -> tuple[FanovaResult, Forest]:
    """Fit and decompose in one call (the forest is returned for marginal plots)."""
    forest = Forest.fit(x, y, box, settings)
    return decompose(forest), forest


# ---------------------------------------------------------------------------------------------
# Sampling uncertainty: a bootstrap over the settings

BOOTSTRAP_RESAMPLES = ForestSettings.resamples
BOOTSTRAP_TREES = 16  # per resampled forest: the interval is over resamples, the trees only smooth each fit


class ComponentInterval(BaseModel):
    """Percentile-bootstrap 95 % interval of a component's fraction of variance (over the settings)."""

    model_config = ConfigDict(frozen=True)

    dims: tuple[int, ...]  # () for the higher-order remainder
    low: float
    high: float


def bootstrap_importance(x: np.ndarray, y: np.ndarray, box: np.ndarray, settings: ForestSettings = ForestSettings(),
                         resamples: int | None = None, trees: int = BOOTSTRAP_TREES
                         ) -> tuple[list[ComponentInterval], int]:
    """Resample the settings with replacement ``resamples`` times, refit and decompose each time.

    Returns one interval per component (main effects, pairs, then the higher-order remainder, in
    :func:`decompose`'s order) and the number of resamples that had any variance to attribute (a
    resample of identical scores attributes nothing and is left out). Seeded: deterministic."""
    rng = np.random.default_rng(settings.seed)
    n = len(y)
    trees = min(trees, settings.trees)
    rows = []
    for b in range(settings.resamples if resamples is None else resamples):
        idx = rng.integers(0, n, n)
        if np.ptp(y[idx]) == 0:
            continue
        forest = Forest.fit(x[idx], y[idx], box, ForestSettings(trees, settings.min_samples_leaf, settings.seed + b, 0))
        result = decompose(forest)
        if result.trees == 0:
            continue
        rows.append([c.fraction for c in result.components] + [result.higher_order])
    keys = [(d,) for d in range(len(AXES))] + list(PAIRS) + [()]
    if not rows:
        return [ComponentInterval(dims=k, low=0.0, high=0.0) for k in keys], 0
    table = np.asarray(rows)
    low, high = np.percentile(table, [2.5, 97.5], axis=0)
    return [ComponentInterval(dims=k, low=float(lo), high=float(hi)) for k, lo, hi in zip(keys, low, high)], len(rows)
