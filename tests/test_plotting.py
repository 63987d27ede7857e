"""Tests of the corner plot (aalr_jax.plotting)."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from aalr_jax import plotting

RNG = np.random.default_rng(0)


def _visible(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def _vertical_lines_at(ax, x):
    """Lines of ``ax`` whose x data are all equal to ``x`` (axvline and the truth marker)."""
    return [ln for ln in ax.get_lines() if np.allclose(np.asarray(ln.get_xdata(), float), x)]


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_lower_triangle_axes(d):
    fig = plotting.corner(RNG.normal(size=(500, d)))
    assert isinstance(fig, Figure)
    assert len(_visible(fig)) == d * (d + 1) // 2


def test_labels_truth_reference_and_title(tmp_path):
    d, labels, truth = 3, ["alpha", "beta", "gamma"], np.array([0.1, -0.2, 0.3])
    samples = RNG.normal(size=(2000, d))
    fig = plotting.corner(samples, labels=labels, truth=truth, reference=samples[:800] + 0.2, bins=20, title="toy")
    axes = np.array(fig.axes).reshape(d, d)
    assert [axes[-1, j].get_xlabel() for j in range(d)] == labels
    assert [axes[i, 0].get_ylabel() for i in range(1, d)] == labels[1:]
    for i in range(d):
        for j in range(i + 1):
            assert _vertical_lines_at(axes[i, j], truth[j]), (i, j)  # truth marked in every panel
    # 2-D panels also carry a horizontal truth line and the reference's contours.
    assert any(np.allclose(ln.get_ydata(), truth[2]) for ln in axes[2, 0].get_lines())
    assert axes[2, 0].collections, "expected 2-D histogram / contour artists"
    # The reference adds a second (step) histogram on the diagonal and a legend entry.
    assert len(axes[0, 0].patches) >= 2
    legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert legend_texts == ["posterior samples", "reference posterior", "true parameters"]
    assert fig._suptitle.get_text() == "toy"

    path = tmp_path / "sub" / "corner.png"
    plotting.save_figure(fig, str(path))
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_labels_and_no_legend_without_overlays():
    fig = plotting.corner(RNG.normal(size=(300, 2)))
    assert fig.axes[2].get_xlabel() == "θ1" and fig.axes[2].get_ylabel() == "θ2"
    assert not fig.legends


def test_constant_column_is_plotted():
    samples = np.column_stack([np.zeros(100), RNG.normal(size=100)])
    fig = plotting.corner(samples, truth=[0.0, 0.0])
    lo, hi = fig.axes[0].get_xlim()
    assert lo < 0 < hi


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(samples=np.zeros(10)), "samples must have shape"),
        (dict(samples=np.zeros((0, 2))), "samples must have shape"),
        (dict(samples=np.full((10, 2), np.nan)), "samples contains non-finite"),
        (dict(labels=["a"]), "labels must hold 2"),
        (dict(truth=np.zeros(3)), r"truth must have shape \(2,\)"),
        (dict(truth=np.zeros((1, 2))), r"truth must have shape \(2,\)"),
        (dict(reference=np.zeros((10, 3))), r"reference must have shape \(n, 2\)"),
        (dict(reference=np.zeros(2)), r"reference must have shape \(n, 2\)"),
        (dict(bins=1), "bins must be an integer"),
        (dict(bins=2.5), "bins must be an integer"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kwargs = {"samples": RNG.normal(size=(50, 2)), **kwargs}
    samples = kwargs.pop("samples")
    with pytest.raises(ValueError, match=match):
        plotting.corner(samples, **kwargs)


def test_save_figure_is_atomic_and_never_follows_a_symlink(tmp_path):
    save_figure = plotting.save_figure
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    link = tmp_path / "out" / "plot.png"
    link.parent.mkdir()
    link.symlink_to(victim)
    save_figure(fig, str(link))
    assert victim.read_bytes() == b"precious" and not link.is_symlink()
    assert link.read_bytes()[:4] == b"\x89PNG" and sorted(p.name for p in link.parent.iterdir()) == ["plot.png"]
    save_figure(fig, str(tmp_path / "new" / "plot.pdf"))  # the folder is created; the format follows the name
    assert (tmp_path / "new" / "plot.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="cannot save a figure as .*plot.xyz.*use one of the extensions"):
        save_figure(fig, str(tmp_path / "plot.xyz"))
