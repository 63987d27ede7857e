"""The diagnostic plots: built with the object API, drawn from synthetic results, corner still works."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from aalr_jax import plotting
from aalr_jax.diagnostics import ROCResult, coverage_from_credibility, sbc


def test_coverage_plot(tmp_path):
    result = coverage_from_credibility(np.random.default_rng(0).uniform(size=500))
    fig = plotting.coverage_plot(result)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 1  # diagonal, curve; band
    plotting.save_figure(fig, str(tmp_path / "coverage.png"))
    assert (tmp_path / "coverage.png").stat().st_size > 0


def test_sbc_plot():
    rng = np.random.default_rng(1)
    result = sbc(rng.normal(size=(300, 3)), rng.normal(size=(300, 49, 3)))
    fig = plotting.sbc_plot(result, labels=["a", "b", "c"])
    assert sum(ax.get_visible() for ax in fig.axes) == 3
    with pytest.raises(ValueError, match="labels"):
        plotting.sbc_plot(result, labels=["a"])


def test_roc_plot():
    fpr = np.linspace(0, 1, 101)
    result = ROCResult(np.zeros((2, 2)), np.array([0.5, 0.8]), np.array([0.01, 0.01]), fpr,
                       np.stack([fpr, np.sqrt(fpr)]), np.array([900.0, 800.0]), (64, 64), 1000, 2048, 2048)
    fig = plotting.roc_plot(result)
    assert len(fig.axes[0].lines) == 3  # diagonal + two curves
    assert "0.800" in fig.axes[0].get_legend().get_texts()[2].get_text()


def test_trace_plot_and_corner():
    chains = np.random.default_rng(2).normal(size=(30, 50, 2))
    fig = plotting.trace_plot(chains, labels=["x", "y"], max_chains=10)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 10
    modes = np.repeat([0, 1, -1], 10)
    fig = plotting.trace_plot(chains, mode_labels=modes, max_chains=9)
    assert len(fig.axes[0].lines) == 9  # three per mode, the stuck ones included
    with pytest.raises(ValueError, match="chains"):
        plotting.trace_plot(chains[0])
    assert isinstance(plotting.corner(chains.reshape(-1, 2)), Figure)
