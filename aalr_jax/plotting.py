"""Corner plots of posterior samples (with an optional reference posterior and the true parameters),
and the plots of :mod:`aalr_jax.diagnostics`: ROC curves, expected coverage, SBC rank histograms and
MCMC trace plots.

Built with Matplotlib's object API (``Figure``), never pyplot's global state: nothing is shown or leaked.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from aalr_jax.files import atomic_write

__all__ = ["corner", "coverage_plot", "roc_plot", "save_figure", "sbc_plot", "trace_plot"]

SAMPLE_COLOR, REFERENCE_COLOR, TRUTH_COLOR = "tab:blue", "tab:orange", "black"


def _matrix(name: str, value, d: int | None) -> np.ndarray:
    """``value`` as a finite float ``(n, d)`` array, or a ValueError naming ``name``."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1 or (d is not None and a.shape[1] != d):
        want = f"(n, {d})" if d is not None else "(n, d) with n, d >= 1"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains non-finite values")
    return a


def _mass_levels(hist: np.ndarray, masses=(0.86, 0.39)) -> np.ndarray:
    """Increasing density thresholds enclosing the given probability ``masses`` of a 2-D histogram."""
    flat = np.sort(hist.ravel())[::-1]
    cumulative = np.cumsum(flat) / flat.sum()
    levels = [flat[min(np.searchsorted(cumulative, m), flat.size - 1)] for m in masses]
    return np.unique([lv for lv in levels if lv > 0])


def _corner_inputs(samples, labels, truth, reference, bins) -> tuple:
    """``(samples (n, d), labels (d), truth (d,) or None, reference (m, d) or None)``, checked."""
    samples = _matrix("samples", samples, None)
    d = samples.shape[1]
    labels = [f"θ{i + 1}" for i in range(d)] if labels is None else [str(s) for s in labels]
    if len(labels) != d:
        raise ValueError(f"labels must hold {d} names (one per column of samples), got {len(labels)}")
    if truth is not None and np.shape(truth) != (d,):
        raise ValueError(f"truth must have shape ({d},), got {np.shape(truth)}")
    truth = None if truth is None else np.asarray(truth, dtype=np.float64)
    reference = None if reference is None else _matrix("reference", reference, d)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    return samples, labels, truth, reference


def _corner_ranges(samples, truth, reference) -> np.ndarray:
    """Axis limits ``(d, 2)``: the span of samples, reference and truth, padded by 5 % (±0.5 if flat)."""
    stacked = [samples] + ([reference] if reference is not None else []) + ([truth[None]] if truth is not None else [])
    low, high = np.min([s.min(0) for s in stacked], 0), np.max([s.max(0) for s in stacked], 0)
    pad = np.where(high > low, 0.05 * (high - low), 0.5)
    return np.stack([low - pad, high + pad], 1)


def _corner_diagonal(ax, column, reference_column, limits, bins) -> None:
    """Density histogram of one parameter, the reference's as a step outline."""
    edges = np.linspace(*limits, bins + 1)
    ax.hist(column, bins=edges, density=True, histtype="stepfilled", color=SAMPLE_COLOR, alpha=0.5)
    if reference_column is not None:
        ax.hist(reference_column, bins=edges, density=True, histtype="step", color=REFERENCE_COLOR, lw=1.5)
    ax.set_yticks([])


def _corner_pair(ax, xy, reference_xy, limits, bins, truth_xy) -> None:
    """2-D histogram of one pair ``xy: (n, 2)``; the reference's 86 %/39 % mass contours; the truth."""
    ax.set_ylim(limits[1])
    ax.hist2d(xy[:, 0], xy[:, 1], bins=bins, range=list(limits), cmap="Blues", cmin=1)
    if reference_xy is not None:
        hist, xe, ye = np.histogram2d(reference_xy[:, 0], reference_xy[:, 1], bins=max(bins // 2, 2),
                                      range=list(limits))
        levels = _mass_levels(hist)
        if levels.size:
            centers = (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2
            ax.contour(*centers, hist.T, levels=levels, colors=REFERENCE_COLOR, linewidths=1.2)
    if truth_xy is not None:
        ax.axhline(truth_xy[1], color=TRUTH_COLOR, lw=1)
        ax.plot(truth_xy[0], truth_xy[1], "s", color=TRUTH_COLOR, ms=4)


def _corner_legend(fig, anchor, has_reference: bool, has_truth: bool) -> None:
    """The legend, in the hidden top-right cell ``anchor`` (inside the only axes when d = 1)."""
    handles = [Patch(color=SAMPLE_COLOR, alpha=0.5, label="posterior samples")]
    if has_reference:
        handles.append(Line2D([], [], color=REFERENCE_COLOR, lw=1.5, label="reference posterior"))
    if has_truth:
        handles.append(Line2D([], [], color=TRUTH_COLOR, lw=1, marker="s", ms=4, label="true parameters"))
    if len(handles) > 1:
        fig.legend(handles=handles, frameon=False, loc="upper right", bbox_to_anchor=(0, 0, 1, 1),
                   bbox_transform=anchor.transAxes)


def corner(samples, *, labels=None, truth=None, reference=None, bins=50, title=None) -> Figure:
    """Lower-triangle pair plot of ``samples: (n, d)``.

    Diagonal: 1-D histograms; below it: 2-D histograms of each pair. ``reference: (m, d)`` samples
    (e.g. an exact posterior) are drawn in another colour (step histograms and 86 %/39 % mass
    contours); ``truth: (d,)`` is marked by lines and a point. ``labels`` names the d axes.
    Returns a ``Figure`` with ``d (d + 1) / 2`` visible axes (the upper triangle is hidden).
    """
    samples, labels, truth, reference = _corner_inputs(samples, labels, truth, reference, bins)
    d = samples.shape[1]
    ranges = _corner_ranges(samples, truth, reference)
    size = min(1.0 + 2.2 * d, 16.0)
    fig = Figure(figsize=(size, size), layout="constrained")
    axes = fig.subplots(d, d, squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)  # kept hidden: the top-right cell anchors the legend
                continue
            ax.set_xlim(ranges[j])
            if truth is not None:
                ax.axvline(truth[j], color=TRUTH_COLOR, lw=1)
            if i == j:
                _corner_diagonal(ax, samples[:, j], None if reference is None else reference[:, j], ranges[j], bins)
            else:
                _corner_pair(ax, samples[:, [j, i]], None if reference is None else reference[:, [j, i]],
                             (ranges[j], ranges[i]), bins, None if truth is None else truth[[j, i]])
                if j == 0:
                    ax.set_ylabel(labels[i])
                else:
                    ax.tick_params(labelleft=False)
            if i == d - 1:
                ax.set_xlabel(labels[j])
            else:
                ax.tick_params(labelbottom=False)
    _corner_legend(fig, axes[0, -1], reference is not None, truth is not None)
    if title is not None:
        fig.suptitle(str(title))
    return fig


def save_figure(fig: Figure, path: str, *, dpi: int = 150) -> None:
    """Write ``fig`` to ``path`` (format from the extension: png, pdf, svg ...), creating the folder
    if needed, atomically (:func:`aalr_jax.files.atomic_write`: never half a file, never through a
    symbolic link at ``path``)."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1][1:].lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot save a figure as {path!r}: use one of the extensions {', '.join(sorted(supported))}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))


def _labels(labels, d: int, default: str = "θ") -> list:
    labels = [f"{default}{i + 1}" for i in range(d)] if labels is None else [str(s) for s in labels]
    if len(labels) != d:
        raise ValueError(f"labels must hold {d} names, got {len(labels)}")
    return labels


def roc_plot(result, *, title=None) -> Figure:
    """Weighted ROC curves of a :class:`~aalr_jax.diagnostics.ROCResult`, one per test θ, with the diagonal.

    The legend gives each AUC with its bootstrap standard error and the classifier's capacity.
    """
    fig = Figure(figsize=(4.8, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="chance (exact ratio)")
    for i, (tpr, auc, std) in enumerate(zip(np.atleast_2d(result.tpr), result.auc, result.auc_std)):
        theta = ", ".join(f"{v:.2g}" for v in np.asarray(result.theta)[i])
        ax.plot(result.fpr, tpr, lw=1.5, label=f"θ = ({theta}): AUC {auc:.3f} ± {std:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false-positive rate (weighted marginal)",
           ylabel="true-positive rate (p(x|θ))", aspect="equal")
    widths = "×".join(map(str, result.hidden_features))
    ax.set_title(title or f"ROC diagnostic (MLP {widths}, {result.num_epochs} epochs, "
                          f"{result.num_train}+{result.num_test}/class)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    return fig


def coverage_plot(result, *, title=None) -> Figure:
    """Expected coverage of a :class:`~aalr_jax.diagnostics.CoverageResult` against the nominal level.

    The shaded band is the simultaneous Clopper–Pearson interval of the empirical coverage; above
    the diagonal is conservative, below over-confident.
    """
    fig = Figure(figsize=(4.6, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="nominal")
    ax.fill_between(result.levels, result.lower, result.upper, color=SAMPLE_COLOR, alpha=0.25,
                    label=f"{result.confidence:.0%} simultaneous interval")
    ax.plot(result.levels, result.coverage, "o-", color=SAMPLE_COLOR, ms=3, label="empirical coverage")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="credibility level 1 − α", ylabel="expected coverage", aspect="equal")
    ax.text(0.3, 0.62, "conservative", transform=ax.transAxes, fontsize=8, color="gray", rotation=45,
            ha="center", va="center")
    ax.text(0.7, 0.38, "over-confident", transform=ax.transAxes, fontsize=8, color="gray", rotation=45,
            ha="center", va="center")
    ax.set_title(title or f"expected HPD coverage: {result.verdict} ({len(result.credibility)} pairs)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return fig


def sbc_plot(result, *, labels=None, band: float = 0.99, title=None) -> Figure:
    """Rank histograms of an :class:`~aalr_jax.diagnostics.SBCResult`, one panel per parameter.

    The grey band holds each bin's count with probability ``band`` under uniform ranks (binomial).
    """
    from scipy import stats

    counts = np.asarray(result.counts)
    bins, d = counts.shape
    labels = _labels(labels, d)
    n = counts[:, 0].sum()
    p = np.asarray(result.expected) / n
    low, high = stats.binom.ppf((1 - band) / 2, n, p), stats.binom.ppf((1 + band) / 2, n, p)
    edges = np.linspace(0, result.num_draws + 1, bins + 1)
    cols = min(d, 4)
    rows = -(-d // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        if k >= d:
            ax.set_visible(False)
            continue
        ax.fill_between(edges, np.append(low, low[-1]), np.append(high, high[-1]), step="post", color="gray",
                        alpha=0.3, lw=0)
        ax.stairs(counts[:, k], edges, fill=True, color=SAMPLE_COLOR, alpha=0.6)
        ax.stairs(result.expected, edges, color="gray", ls="--", lw=1)
        ax.set_title(f"{labels[k]}: χ² p={result.chi2_pvalue[k]:.2g}, KS p={result.ks_pvalue[k]:.2g}", fontsize=8)
        ax.set_xlabel(f"rank among {result.num_draws} draws")
        ax.set_xlim(0, result.num_draws + 1)
    if title is not None:
        fig.suptitle(str(title))
    return fig


def trace_plot(chains, *, labels=None, mode_labels=None, max_chains: int = 20, title=None) -> Figure:
    """Trace plots of ``chains: (C, S, d)``: one panel per parameter, one line per chain.

    ``mode_labels: (C,)`` (e.g. ``MCMCReport.mode_labels``) colours chains by mode; at most
    ``max_chains`` chains are drawn, spread over the modes.
    """
    chains = np.asarray(chains, np.float64)
    if chains.ndim != 3 or chains.shape[1] < 1:
        raise ValueError(f"chains must have shape (C, S, d), got {chains.shape}")
    num, size, d = chains.shape
    labels = _labels(labels, d)
    modes = np.zeros(num, int) if mode_labels is None else np.asarray(mode_labels)
    groups = np.unique(modes)
    show = np.concatenate([np.flatnonzero(modes == m)[: max(1, max_chains // len(groups))] for m in groups])
    fig = Figure(figsize=(8, 1.8 * d + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(d, 1, sharex=True, squeeze=False)).ravel()
    colors = [f"C{i % 10}" for i in range(10)]
    for k, ax in enumerate(axes):
        for c in show:
            ax.plot(chains[c, :, k], lw=0.6, alpha=0.8, color=colors[modes[c] % 10] if modes[c] >= 0 else "black")
        ax.set_ylabel(labels[k])
    axes[-1].set_xlabel("draw (after warm-up and thinning)")
    fig.suptitle(title or f"{len(show)} of {num} chains" + (", coloured by mode" if mode_labels is not None else ""),
                 fontsize=9)
    return fig
