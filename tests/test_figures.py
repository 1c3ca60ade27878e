"""Figures: deterministic PNG bytes, no pyplot state, proxy labelled in titles."""

from __future__ import annotations

import numpy as np

from cellc.analysis import figures as fig


def _boxplot() -> bytes:
    rng = np.random.default_rng(1)
    panels = [fig.BoxPanel("all trials", [
        fig.BoxSeries("vanilla", list(8 + rng.random(10)), "baseline"),
        fig.BoxSeries("nfg", list(9 + rng.random(10)) + [40.0], "worse", 0.0001),
        fig.BoxSeries("np", list(8 + rng.random(10)), "inconclusive", 0.6, failures=2),
        fig.BoxSeries("cifg", list(8 + rng.random(10)), "equivalent", 0.9),
        fig.BoxSeries("fgr", [8.3], "not tested", None),
        fig.BoxSeries("nig", [], "not tested", None),
    ])]
    return fig.png_bytes(fig.variant_boxplot("t", "test NLL", panels, [1000.0, 2000.0, None, 3.0, 5.0, 0.0], True))


def test_png_bytes_are_identical_across_renders_and_carry_no_software_tag():
    first, second = _boxplot(), _boxplot()
    assert first == second
    assert first.startswith(b"\x89PNG") and b"matplotlib" not in first


def test_every_figure_kind_renders():
    x = np.linspace(-6, -2, 10)
    curve = fig.Curve(10**x, x**2, np.full(10, 0.1), 10**x, x**2)
    grid = fig.marginal_grid("m", ["a", "b"], [True, False], [fig.MarginalRow("y", [curve, curve])], "note")
    bars = fig.importance_bars("i", [fig.Bar("lr", 0.8, 0.6, 0.9), fig.Bar("lr x h", 0.1, 0.12, 0.3, "interaction"),
                                     fig.Bar("rest", 0.1, 0.0, 0.2, "rest")], "note")
    k = fig.best_of_k_lines("k", "NLL", [fig.KCurve("vanilla", [3.0, 2.0, 1.5], [2.5, 1.8, 1.5], [3.5, 2.2, 1.5], True),
                                          fig.KCurve("nfg", [4.0, 3.0], [3.0, 3.0], [5.0, 3.0])], "note")
    heat = fig.heat_maps("h", [fig.HeatMap(10 ** np.linspace(-6, -2, 5), np.linspace(20, 200, 4),
                                           np.arange(12.0).reshape(3, 4), "lr", "hidden", True, True)], "NLL", True)
    for figure in (grid, bars, heat, k):
        assert fig.png_bytes(figure).startswith(b"\x89PNG")


def test_titles_say_proxy_for_proxy_data():
    assert fig.data_title("TIMIT", "proxy") == "TIMIT (proxy data)"
    assert fig.data_title("JSB Chorales", "real") == "JSB Chorales"


def test_no_pyplot_figures_are_left_open():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    _boxplot()
    assert plt.get_fignums() == before
