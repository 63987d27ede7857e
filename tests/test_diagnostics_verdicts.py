"""Verdicts with their evidence and power (aalr_jax.diagnostics.verdicts), against Monte Carlo truth."""

import numpy as np
import pytest
from scipy import stats

from aalr_jax.diagnostics import DEFAULT_LEVELS, coverage_from_credibility, sbc
from aalr_jax.diagnostics import verdicts
from aalr_jax.diagnostics.roc import ROCResult, NormalizationResult


def _over_confident_credibility(rng, n, error):
    """Credibilities with P(c <= γ) = γ - error for γ in [error, 1]: coverage short by `error` everywhere."""
    u = rng.uniform(size=n)
    return np.where(u < 1 - error, u + error, 1.0)


def test_coverage_power_matches_the_rejection_rate_of_the_test():
    """At one level the power is exact: compare it with how often coverage_from_credibility flags."""
    rng = np.random.default_rng(0)
    levels = np.array([0.5])
    for n in (30, 120):
        power = verdicts.coverage_power(n, levels)
        flagged = np.mean([coverage_from_credibility(_over_confident_credibility(rng, n, 0.1), levels).verdict
                           == "over-confident" for _ in range(2000)])
        assert abs(flagged - power) < 4 * np.sqrt(power * (1 - power) / 2000) + 1e-3, (n, power, flagged)
    # over all 19 levels the test flags at least as often as its most powerful level alone
    power = verdicts.coverage_power(60, DEFAULT_LEVELS)
    flagged = np.mean([not coverage_from_credibility(_over_confident_credibility(rng, 60, 0.1)).conservative
                       for _ in range(1000)])
    assert flagged >= power - 4 * np.sqrt(power * (1 - power) / 1000)


def test_thirty_pairs_cannot_call_a_posterior_calibrated():
    """The issue's report: 'coverage nominal' from 30 pairs with no word on the test's power."""
    rng = np.random.default_rng(1)
    result = coverage_from_credibility(rng.uniform(size=30))  # an exact posterior
    assert result.verdict == "nominal"
    v = verdicts.coverage_verdict(result)
    assert v.passed and v.power < 0.3
    assert v.text.startswith("no miscalibration detectable with 30 pairs")
    assert f"a 10% coverage error would be detected with probability {v.power:.2f}" in v.text
    needed = verdicts.pairs_for_power(DEFAULT_LEVELS)
    assert f"--num-pairs {needed}" in v.advice
    assert verdicts.coverage_power(needed, DEFAULT_LEVELS) >= 0.8 > verdicts.coverage_power(needed // 2, DEFAULT_LEVELS)
    bad = verdicts.coverage_verdict(coverage_from_credibility(_over_confident_credibility(rng, 2000, 0.1)))
    assert not bad.passed and bad.text.startswith("over-confident") and "--ensemble" in bad.advice


def test_sample_and_grid_coverage_are_reconciled():
    rng = np.random.default_rng(2)
    sample = verdicts.coverage_verdict(coverage_from_credibility(rng.uniform(size=300)))
    grid = verdicts.coverage_verdict(coverage_from_credibility(0.8 * rng.uniform(size=300)), method="grid")
    merged = verdicts.reconcile_coverage(sample, grid, "nominal", "conservative")
    assert merged.text.startswith("conservative") and "the grid verdict stands" in merged.text
    assert "reads nominal" in merged.text
    assert verdicts.reconcile_coverage(sample, None, "nominal", None) is sample


def test_sbc_power_against_a_simulated_narrow_posterior():
    """The power is the rejection rate of sbc() itself on Gaussian posteriors too narrow by the stated factor."""
    rng = np.random.default_rng(3)
    n, draws, shrink = 100, 30, verdicts._SBC_SHRINK
    power = verdicts.sbc_power(n, draws, 1)
    rejected = []
    for _ in range(300):
        theta = rng.standard_normal(n)
        x = theta + rng.standard_normal(n)  # posterior N(x/2, 1/2); the approximation is narrower
        post = x[:, None] / 2 + shrink * np.sqrt(0.5) * rng.standard_normal((n, draws))
        rejected.append(not sbc(theta[:, None], post[..., None]).uniform)
    assert abs(np.mean(rejected) - power) < 4 * np.sqrt(power * (1 - power) / 300) + 0.02
    assert 0.1 < power < 1.0  # 100 pairs: a weak test, and the verdict must say so


def _roc(auc, std):
    auc = np.atleast_1d(auc).astype(float)
    return ROCResult(np.zeros((auc.size, 2)), auc, np.full(auc.size, std), np.linspace(0, 1, 3),
                     np.zeros((auc.size, 3)), np.full(auc.size, 900.0), (64, 64), 1000, 1000, 1000)


def test_roc_beyond_its_band_is_a_failed_check_with_what_to_do():
    v = verdicts.roc_verdict(_roc([0.838, 0.52], 0.055))
    assert not v.passed and v.text.startswith("failed: ROC AUC 0.838±0.055, 0.520±0.055")
    assert "6.1 bootstrap standard errors" in v.text
    assert "--num-simulations" in v.advice and "--hidden" in v.advice and "--ensemble" in v.advice
    ok = verdicts.roc_verdict(_roc(0.53, 0.02))
    z = stats.norm.ppf(0.975)
    assert ok.passed and f"an AUC above {0.5 + (z + stats.norm.ppf(0.8)) * 0.02:.3f} would be detected" in ok.text


def test_normalization_verdict_and_power():
    v = verdicts.normalization_verdict(NormalizationResult(np.array([1.01, 0.99]), np.array([0.02, 0.02]), 10_000))
    z = stats.norm.ppf(1 - 0.05 / 4)
    expected = stats.norm.cdf(0.1 / 0.02 - z) + stats.norm.cdf(-0.1 / 0.02 - z)
    assert v.passed and v.power == pytest.approx(expected)
    bad = verdicts.normalization_verdict(NormalizationResult(np.array([1.3]), np.array([0.02]), 10_000))
    assert not bad.passed and "15.0 standard errors from 1" in bad.text
