r"""Verdicts that say how sure they are: each check's outcome with its evidence and its power.

A check that finds nothing has not shown that nothing is wrong: with 30 pairs a coverage test
cannot see a 10 % coverage error. Every verdict here is a :class:`Verdict`: whether the check
``passed``, a one-line ``text`` stating the evidence (how many pairs, draws, held-out examples),
the ``power`` of the check against a stated alternative, and ``advice`` when it failed or is weak.

Power (probability of failing the check when the alternative is true), at the test's own level:

* **Coverage** (:func:`coverage_power`): the alternative is a posterior whose expected coverage is
  ``γ − error`` at every level γ (over-confident by ``error``, default 10 points). The test flags a
  level when its Bonferroni Clopper–Pearson upper bound lies below γ, so with ``N`` pairs and
  ``K ~ Binomial(N, γ − error)`` the power at level γ is ``P(upper(K) < γ)``, summed exactly over
  ``K``; the reported power is the largest over levels (a lower bound on the power of the whole test,
  which flags when any level does).
* **SBC** (:func:`sbc_power`): the alternative is a Gaussian posterior whose standard deviation is
  too small by the factor that makes its central 50 % interval cover 40 % (``error`` = 10 points):
  ``u = Φ(z / s)``, ``s = Φ^{-1}(0.7) / Φ^{-1}(0.75)``, ranks ``~ Binomial(L, u)`` in one coordinate;
  the power is the share of Monte Carlo replicates the χ²/KS test of :func:`~aalr_jax.diagnostics.sbc`
  rejects at its Bonferroni level.
* **ROC** (:func:`roc_verdict`): an AUC more than ``z`` bootstrap standard errors above 0.5 fails
  (``z`` from the confidence, Bonferroni over the test parameters); with standard error ``σ`` an
  AUC of ``0.5 + (z + 0.84) σ`` is detected with probability 0.8.
* **Normalisation** (:func:`normalization_verdict`): ``E_p(θ)[r̂] = 1`` fails beyond ``z`` standard
  errors; the power against ``|E[r̂] − 1| = error`` is ``Φ(error/σ − z) + Φ(−error/σ − z)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "COVERAGE_ERROR",
    "TARGET_POWER",
    "Verdict",
    "coverage_power",
    "coverage_verdict",
    "mcmc_verdict",
    "normalization_verdict",
    "pairs_for_power",
    "reconcile_coverage",
    "roc_verdict",
    "sbc_power",
    "sbc_verdict",
]

COVERAGE_ERROR = 0.10  # the alternative: coverage off by 10 points
TARGET_POWER = 0.8  # below this a pass is reported as weak evidence
_Z80 = stats.norm.ppf(TARGET_POWER)
_SBC_SHRINK = stats.norm.ppf(0.70) / stats.norm.ppf(0.75)  # central 50 % interval covers 40 %


class Verdict(NamedTuple):
    """One check's outcome.

    Attributes:
        name: the check (``"coverage"``, ``"sbc"``, ``"roc"``, ``"normalization"``, ``"mcmc"``).
        passed: no problem detected.
        text: the verdict with its evidence, one line.
        power: probability that the check detects its stated alternative (``None`` where no power
            is computed).
        advice: what to do next, or ``""``.
    """

    name: str
    passed: bool
    text: str
    power: float | None
    advice: str

    def as_dict(self) -> dict:
        return {"passed": self.passed, "text": self.text,
                "power": None if self.power is None else round(float(self.power), 4), "advice": self.advice}


def _flagged_low(num_pairs: int, level: float, alpha: float) -> np.ndarray:
    """Counts ``k = 0..N`` for which the Clopper–Pearson upper bound at ``1 - alpha/2`` lies below ``level``."""
    k = np.arange(num_pairs + 1)
    upper = np.where(k < num_pairs, stats.beta.ppf(1 - alpha / 2, k + 1, np.maximum(num_pairs - k, 1)), 1.0)
    return upper < level


def coverage_power(num_pairs: int, levels, *, confidence: float = 0.95, error: float = COVERAGE_ERROR) -> float:
    """Probability that the coverage test flags a posterior over-confident by ``error`` (module docstring)."""
    levels = np.asarray(levels, np.float64)
    alpha = (1 - confidence) / levels.size
    best = 0.0
    for level in levels:
        true = level - error
        if true <= 0:
            continue
        flagged = _flagged_low(int(num_pairs), float(level), alpha)
        best = max(best, float(stats.binom.pmf(np.arange(num_pairs + 1), num_pairs, true)[flagged].sum()))
    return best


def pairs_for_power(levels, *, confidence: float = 0.95, error: float = COVERAGE_ERROR,
                    target: float = TARGET_POWER, max_pairs: int = 100_000) -> int:
    """The fewest pairs with which :func:`coverage_power` reaches ``target`` (``max_pairs`` at most)."""
    power = lambda n: coverage_power(n, levels, confidence=confidence, error=error)
    high = 16
    while high < max_pairs and power(high) < target:
        high *= 2
    high = min(high, max_pairs)
    low = high // 2
    while high - low > max(1, low // 50):  # within 2 %: power is not monotone in n at the last pair
        mid = (low + high) // 2
        low, high = (mid, high) if power(mid) < target else (low, mid)
    return high


def coverage_verdict(result, *, method: str = "posterior samples", error: float = COVERAGE_ERROR) -> Verdict:
    """The verdict of a :class:`~aalr_jax.diagnostics.CoverageResult` with its power."""
    n = int(np.size(result.credibility))
    power = coverage_power(n, result.levels, confidence=result.confidence, error=error)
    odds = f"a {error:.0%} coverage error would be detected with probability {power:.2f}"
    low = np.flatnonzero(result.upper < result.levels)
    high = np.flatnonzero(result.lower > result.levels)
    where = lambda idx: ", ".join(f"{result.levels[i]:.2f}" for i in idx[:4]) + (" ..." if idx.size > 4 else "")
    conf = f"{result.confidence:.0%}"
    if result.verdict == "nominal":
        text = f"no miscalibration detectable with {n} pairs ({method}; {odds} at {conf} confidence)"
        advice = "" if power >= TARGET_POWER else (
            f"too few pairs to call it calibrated: use --num-pairs {pairs_for_power(result.levels, confidence=result.confidence, error=error)} "
            f"or more for power {TARGET_POWER:.0%}")
        return Verdict("coverage", True, text, power, advice)
    if result.verdict == "conservative":
        text = (f"conservative: coverage above nominal at level(s) {where(high)} with {n} pairs ({method}): credible "
                f"regions are too wide, safe but less informative ({odds})")
        return Verdict("coverage", True, text, power, "more simulations or a larger network sharpen the posterior")
    kind = "over-confident" if result.verdict == "over-confident" else "mixed (over- and under-covering)"
    text = (f"{kind}: coverage below nominal at level(s) {where(low)} with {n} pairs ({method}, {conf} "
            "simultaneous intervals): credible regions are too small")
    advice = ("do not trust the posterior's width: simulate more, train a larger network (--hidden) or an "
              "ensemble (--ensemble), and check again")
    return Verdict("coverage", False, text, power, advice)


def reconcile_coverage(samples: Verdict, grid: Verdict | None, sample_label: str, grid_label: str) -> Verdict:
    """One coverage verdict from the sample-based and the grid one: the grid's (exact normalisation
    on the prior box, no MCMC error) stands where it exists, and a disagreement is explained."""
    if grid is None:
        return samples
    if sample_label == grid_label:
        return grid._replace(text=grid.text + "; the sample-based coverage agrees")
    note = (f"; the sample-based coverage reads {sample_label}: its credibilities carry the Monte Carlo error "
            f"of the posterior draws, which the grid (exact normalisation on the prior box) has not, so the grid "
            f"verdict stands")
    return grid._replace(text=grid.text + note)


def _uniformity_rejects(ranks: np.ndarray, num_draws: int, num_bins: int, level: float) -> np.ndarray:
    """Per row of ``ranks: (R, N)``: the χ² or KS test of :func:`~aalr_jax.diagnostics.sbc` rejects at ``level``."""
    which = lambda r: (np.asarray(r) * num_bins) // (num_draws + 1)
    n = ranks.shape[1]
    expected = n * np.bincount(which(np.arange(num_draws + 1)), minlength=num_bins) / (num_draws + 1)
    counts = np.stack([np.bincount(which(row), minlength=num_bins) for row in ranks])
    chi2_p = stats.chi2.sf(((counts - expected) ** 2 / expected).sum(1), num_bins - 1)
    u = (ranks + 0.5) / (num_draws + 1)
    ks_p = np.array([stats.kstest(row, "uniform").pvalue for row in u])
    return np.minimum(chi2_p, ks_p) < level


def sbc_power(num_pairs: int, num_draws: int, dim: int, *, alpha: float = 0.01, num_bins: int | None = None,
              num_replicates: int = 400, seed: int = 0) -> float:
    """Monte Carlo probability that :func:`~aalr_jax.diagnostics.sbc` rejects an over-confident
    Gaussian posterior (module docstring), one coordinate of ``dim`` miscalibrated."""
    bins = max(2, min(20, num_draws + 1, num_pairs // 10)) if num_bins is None else int(num_bins)
    rng = np.random.default_rng(seed)
    u = stats.norm.cdf(rng.standard_normal((num_replicates, num_pairs)) / _SBC_SHRINK)
    ranks = rng.binomial(num_draws, u)
    return float(_uniformity_rejects(ranks, num_draws, bins, alpha / (2 * dim)).mean())


def sbc_verdict(result, labels, *, alpha: float = 0.01) -> Verdict:
    """The verdict of an :class:`~aalr_jax.diagnostics.SBCResult` with its power."""
    n, d = result.ranks.shape
    bins = result.counts.shape[0]
    power = sbc_power(n, result.num_draws, d, alpha=alpha, num_bins=bins)
    odds = (f"a posterior {1 - _SBC_SHRINK:.0%} too narrow in one parameter (10-point coverage error) would "
            f"be detected with probability {power:.2f}")
    if result.uniform:
        text = f"ranks uniform with {n} pairs and {result.num_draws} draws each ({odds})"
        advice = "" if power >= TARGET_POWER else "too few pairs to call the ranks uniform: raise --num-pairs"
        return Verdict("sbc", True, text, power, advice)
    p = np.minimum(result.chi2_pvalue, result.ks_pvalue)
    bad = ", ".join(f"{labels[i]} (p = {p[i]:.2g}, 12 Var(u) = {result.dispersion[i]:.2f})"
                    for i in np.flatnonzero(p < alpha / (2 * d)))
    text = (f"ranks not uniform for {bad} with {n} pairs (12 Var(u) > 1: over-confident, < 1: under-confident, "
            "a tilt: biased)")
    return Verdict("sbc", False, text, power, "simulate more, train a larger network (--hidden) or an ensemble "
                                              "(--ensemble)")


def roc_verdict(result, *, confidence: float = 0.95) -> Verdict:
    """The verdict of a :class:`~aalr_jax.diagnostics.ROCResult`: each AUC against 0.5 within its
    bootstrap band (Bonferroni over the test parameters)."""
    auc, std = np.asarray(result.auc, np.float64), np.asarray(result.auc_std, np.float64)
    z = stats.norm.ppf(1 - (1 - confidence) / (2 * auc.size))
    sigmas = (auc - 0.5) / np.maximum(std, 1e-12)
    detectable = 0.5 + (z + _Z80) * float(np.max(std))
    evidence = (f"{result.num_test} held-out simulations per class, weighted negatives' ESS "
                f"{float(np.min(result.weight_ess)):.0f}, classifier {'x'.join(map(str, result.hidden_features))} "
                f"({result.num_epochs} epochs)")
    aucs = ", ".join(f"{a:.3f}±{s:.3f}" for a, s in zip(auc, std))
    if np.all(sigmas <= z):
        text = (f"ROC AUC {aucs}: within {z:.1f} bootstrap standard errors of 0.5 (an exact ratio), {evidence}; "
                f"an AUC above {detectable:.3f} would be detected with probability {TARGET_POWER:.1f}")
        advice = "" if detectable <= 0.6 else "the band is wide: raise --roc-samples for a sharper test"
        return Verdict("roc", True, text, None, advice)
    worst = int(np.argmax(sigmas))
    theta = ", ".join(f"{v:.3g}" for v in np.asarray(result.theta)[worst])
    text = (f"failed: ROC AUC {aucs}, up to {sigmas[worst]:.1f} bootstrap standard errors above 0.5 (at θ = "
            f"({theta})): a classifier tells the estimated ratio's weighted marginal from p(x|θ), so the ratio "
            f"is wrong there ({evidence})")
    advice = "simulate more (--num-simulations), train a larger network (--hidden) or an ensemble (--ensemble)"
    return Verdict("roc", False, text, None, advice)


def normalization_verdict(result, *, confidence: float = 0.95, error: float = COVERAGE_ERROR) -> Verdict:
    """The verdict of a :class:`~aalr_jax.diagnostics.NormalizationResult`: every ``E[r̂]`` within
    ``z`` standard errors of 1 (Bonferroni over the observations)."""
    mean, se = np.asarray(result.mean, np.float64), np.asarray(result.stderr, np.float64)
    k = mean.size
    z = stats.norm.ppf(1 - (1 - confidence) / (2 * k))
    finite = np.isfinite(mean) & np.isfinite(se)
    se_safe = np.where(finite, np.maximum(se, 1e-12), np.inf)
    deviation = np.where(finite, np.abs(mean - 1) / se_safe, np.inf)
    se_max = float(np.max(se_safe))
    power = float(stats.norm.cdf(error / se_max - z) + stats.norm.cdf(-error / se_max - z)) if math.isfinite(se_max) else 0.0
    if np.all(deviation <= z):
        text = (f"E[r̂] within {z:.1f} standard errors of 1 for all {k} observations ({result.num_samples} prior "
                f"draws; a {error:.0%} normalisation error would be detected with probability {power:.2f})")
        return Verdict("normalization", True, text, power, "")
    worst = int(np.argmax(deviation))
    text = (f"failed: E[r̂] = {mean[worst]:.3f}±{se[worst]:.3f} for observation {worst}, "
            f"{deviation[worst]:.1f} standard errors from 1: the estimated posterior does not integrate to one")
    return Verdict("normalization", False, text, power, "the classifier is miscalibrated: train longer or a larger "
                                                        "network, or use an ensemble (--ensemble)")


def mcmc_verdict(reports, *, what: str = "posteriors") -> Verdict:
    """A verdict over :class:`~aalr_jax.diagnostics.MCMCReport` s (one per observation)."""
    reports = list(reports) if isinstance(reports, (list, tuple)) else [reports]
    bad = [r for r in reports if not r.ok]
    ess = [float(np.nanmin(np.minimum(r.mode_ess_bulk, r.mode_ess_tail))) for r in reports]
    rhat = [float(np.nanmax(r.mode_rhat)) for r in reports]
    evidence = (f"worst within-mode R-hat {max(rhat):.3f}, smallest bulk/tail ESS {min(ess):.0f} "
                f"over {len(reports)} {what}")
    if not bad:
        return Verdict("mcmc", True, f"healthy: {evidence}", None, "")
    text = f"{len(bad)} of {len(reports)} {what} with warnings ({evidence}); e.g. " + "; ".join(bad[0].warnings)
    return Verdict("mcmc", False, text, None, "more warm-up and draws (--num-warmup, --num-samples), or another "
                                              "--method; the other verdicts rest on these draws")
