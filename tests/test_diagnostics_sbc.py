"""SBC ranks and uniformity tests on synthetic posteriors of known calibration."""

import numpy as np
import pytest

from aalr_jax.diagnostics import sbc, sbc_ranks

N, L = 2000, 99


def synthetic(c, seed=0, bias=0.0):
    """θ* ~ N(0, 1), x ~ N(θ*, 1); L draws of N(x/2 + bias, c² / 2) for each pair, θ in R^1."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(N)
    x = theta + rng.standard_normal(N)
    draws = x[:, None] / 2 + bias + c * np.sqrt(0.5) * rng.standard_normal((N, L))
    return theta[:, None], draws[:, :, None]


def test_ranks_count_draws_below_the_truth():
    theta = np.array([[0.5, 0.0]])
    samples = np.array([[[0.1, 1.0], [0.7, -1.0], [0.4, 0.5]]])
    np.testing.assert_array_equal(sbc_ranks(theta, samples), [[2, 1]])
    np.testing.assert_array_equal(sbc_ranks(theta, samples, num_draws=1), [[1, 0]])
    with pytest.raises(ValueError, match="num_draws"):
        sbc_ranks(theta, samples, num_draws=4)


def test_exact_posterior_gives_uniform_ranks():
    result = sbc(*synthetic(1.0))
    assert result.uniform
    assert result.num_draws == L and result.counts.shape == (20, 1) and result.counts.sum() == N
    np.testing.assert_allclose(result.expected.sum(), N)
    assert result.chi2_pvalue[0] > 0.01 and result.ks_pvalue[0] > 0.01
    assert abs(result.dispersion[0] - 1) < 0.1


@pytest.mark.parametrize("c, sign", [(0.5, 1), (2.0, -1)])
def test_miscalibrated_posteriors_are_rejected(c, sign):
    result = sbc(*synthetic(c))
    assert not result.uniform
    assert result.chi2_pvalue[0] < 1e-6 and result.ks_pvalue[0] < 1e-6
    # over-confident (too narrow): ∪-shaped ranks, dispersion > 1; under-confident: ∩, < 1
    assert sign * (result.dispersion[0] - 1) > 0.2


def test_biased_posterior_is_rejected():
    result = sbc(*synthetic(1.0, bias=0.3))
    assert not result.uniform and result.ks_pvalue[0] < 1e-6
