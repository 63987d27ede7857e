r"""Simulation-based calibration (Talts et al. 2018, "Validating Bayesian Inference Algorithms with
Simulation-Based Calibration").

For pairs ``(θ*, x) ~ p(θ, x)`` and L independent draws ``θ_1..θ_L`` of the approximate posterior
``p̂(θ|x)``, the rank of each coordinate,

.. math::  r_k = \#\{\, l : θ_{l,k} < θ^*_k \,\} \in \{0, \dots, L\},

is uniform on ``{0..L}`` when ``p̂`` is the exact posterior. Over-confident posteriors (too narrow)
give ∪-shaped rank histograms (``12 Var(u) > 1`` for ``u = (r + ½)/(L + 1)``), under-confident ones
∩-shaped (``< 1``), biased ones tilted.

Tests of uniformity per coordinate: Pearson's χ² on the ranks grouped into B bins (expected counts
from the number of rank values per bin, ``B - 1`` degrees of freedom) and Kolmogorov–Smirnov of
``u`` against U(0, 1) (slightly conservative for discrete ranks). The draws must be independent:
from MCMC take one draw per chain (the first L of :attr:`PosteriorSamples.samples`, which
interleaves the chains, when ``L ≤ num_chains``) or thin enough.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = ["SBCResult", "sbc", "sbc_ranks"]


class SBCResult(NamedTuple):
    """SBC over N pairs in ``R^d`` with L draws each.

    Attributes:
        ranks: ``(N, d)`` in ``0..L``.
        num_draws: L.
        counts: ``(B, d)`` rank histogram.
        expected: ``(B,)`` expected counts under uniformity.
        chi2_pvalue: ``(d,)`` χ² test p-values.
        ks_pvalue: ``(d,)`` Kolmogorov–Smirnov p-values.
        dispersion: ``(d,)`` ``12 Var(u)``: 1 calibrated, > 1 over-confident, < 1 under-confident.
        uniform: every p-value above ``alpha`` divided by the number of tests (Bonferroni).
    """

    ranks: np.ndarray
    num_draws: int
    counts: np.ndarray
    expected: np.ndarray
    chi2_pvalue: np.ndarray
    ks_pvalue: np.ndarray
    dispersion: np.ndarray
    uniform: bool


def sbc_ranks(theta_star, samples, *, num_draws: int | None = None) -> np.ndarray:
    """Ranks ``(N, d)`` of ``theta_star: (N, d)`` among the first ``num_draws`` of ``samples: (N, n, d)``."""
    theta_star, samples = np.asarray(theta_star), np.asarray(samples)
    if samples.ndim != 3 or theta_star.shape != (samples.shape[0], samples.shape[2]):
        raise ValueError(f"expected theta_star (N, d) and samples (N, n, d), got {theta_star.shape} and "
                         f"{samples.shape}")
    if num_draws is not None:
        if not 1 <= num_draws <= samples.shape[1]:
            raise ValueError(f"num_draws must lie in [1, {samples.shape[1]}], got {num_draws}")
        samples = samples[:, :num_draws]
    return (samples < theta_star[:, None]).sum(1)


def sbc(theta_star, samples, *, num_draws: int | None = None, num_bins: int | None = None,
        alpha: float = 0.01) -> SBCResult:
    """Ranks and uniformity tests (see module docstring).

    Args:
        theta_star: ``(N, d)`` true parameters.
        samples: ``(N, n, d)`` independent posterior draws.
        num_draws: L, the draws used per pair (default all n).
        num_bins: B (default ``min(20, L + 1, N // 10)``, at least 2).
        alpha: family-wise level of :attr:`SBCResult.uniform`.

    Returns:
        :class:`SBCResult`.
    """
    ranks = sbc_ranks(theta_star, samples, num_draws=num_draws)
    n, d = ranks.shape
    draws = int(num_draws or np.shape(samples)[1])
    bins = max(2, min(20, draws + 1, n // 10)) if num_bins is None else int(num_bins)
    if not 2 <= bins <= draws + 1:
        raise ValueError(f"num_bins must lie in [2, {draws + 1}], got {bins}")
    which = lambda r: (np.asarray(r) * bins) // (draws + 1)
    expected = n * np.bincount(which(np.arange(draws + 1)), minlength=bins) / (draws + 1)
    counts = np.stack([np.bincount(which(ranks[:, k]), minlength=bins) for k in range(d)], 1)
    chi2 = ((counts - expected[:, None]) ** 2 / expected[:, None]).sum(0)
    chi2_p = stats.chi2.sf(chi2, bins - 1)
    u = (ranks + 0.5) / (draws + 1)
    ks_p = np.array([stats.kstest(u[:, k], "uniform").pvalue for k in range(d)])
    uniform = bool(np.all(np.minimum(chi2_p, ks_p) > alpha / (2 * d)))
    return SBCResult(ranks, draws, counts, expected, chi2_p, ks_p, 12 * u.var(0), uniform)
