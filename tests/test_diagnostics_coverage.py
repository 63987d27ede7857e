"""Expected coverage: synthetic posteriors of known calibration, the grid path, and one end-to-end
run through the batched sampler with an exact likelihood (gaussian_linear in 2-D)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from aalr_jax import ExactLikelihood, priors, sample_posterior, simulate
from aalr_jax.diagnostics import (
    DEFAULT_LEVELS,
    coverage_from_credibility,
    expected_coverage,
    grid_credibility,
    hpd_credibility,
    sample_credibility,
)
from aalr_jax.tasks import gaussian_linear

N, NUM_SAMPLES = 2000, 1000


def gaussian_pairs(seed, n=N):
    """θ* ~ N(0, 1), x ~ N(θ*, 1): the posterior is N(x/2, 1/2)."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(n)
    x = theta + rng.standard_normal(n)
    return rng, theta, x, x / 2, np.sqrt(0.5)


def scaled_posterior_credibility(c, seed=0):
    """HPD credibility under the approximate posterior N(x/2, (c·std)²), from its own samples."""
    rng, theta, _, mean, std = gaussian_pairs(seed)
    samples = mean[:, None] + c * std * rng.standard_normal((N, NUM_SAMPLES))
    log_q = lambda t: -0.5 * ((t - mean[:, None]) / (c * std)) ** 2
    return np.asarray(hpd_credibility(log_q(samples), log_q(theta[:, None])[:, 0]))


@pytest.mark.parametrize("c, verdict", [(1.0, "nominal"), (0.5, "over-confident"), (2.0, "conservative")])
def test_synthetic_calibration_is_classified(c, verdict):
    result = coverage_from_credibility(scaled_posterior_credibility(c))
    assert result.verdict == verdict
    assert result.conservative == (verdict != "over-confident")
    # the analytic coverage of N(m, (c s)²) regions for the truth: P(|Z| <= c Φ⁻¹((1+γ)/2))
    from scipy import stats

    expected = 2 * stats.norm.cdf(c * stats.norm.ppf((1 + result.levels) / 2)) - 1
    np.testing.assert_allclose(result.coverage, expected, atol=4 * np.sqrt(0.25 / N) + 1e-3)


def test_coverage_result_fields():
    result = coverage_from_credibility(np.linspace(0, 1, 101))
    np.testing.assert_allclose(result.levels, DEFAULT_LEVELS)
    assert result.levels[0] == 0.05 and result.levels[-1] == 0.95 and len(result.levels) == 19
    assert np.all(result.lower <= result.coverage) and np.all(result.coverage <= result.upper)
    np.testing.assert_allclose(result.stderr, np.sqrt(result.levels * (1 - result.levels) / 101))
    with pytest.raises(ValueError, match="levels"):
        coverage_from_credibility([0.5], levels=[0.0, 0.5])
    with pytest.raises(ValueError, match="finite"):
        coverage_from_credibility([np.nan])


def test_grid_path_matches_the_analytic_posterior():
    """1-D box prior, Gaussian likelihood: grid credibility equals the truncated-normal HPD mass."""
    prior = priors.box_uniform(-3.0, [3.0])
    model = ExactLikelihood(lambda t, x: dist.Normal(t, 0.5).log_prob(x).sum(), (1,))
    x = jnp.array([[0.2], [-1.0], [2.5]])
    theta = jnp.array([[0.5], [-1.2], [1.0]])
    got = grid_credibility(model, prior, x, theta, resolution=4096)
    from scipy import stats

    post = stats.truncnorm((-3 - x[:, 0]) / 0.5, (3 - x[:, 0]) / 0.5, loc=x[:, 0], scale=0.5)
    d = np.abs(np.asarray(theta[:, 0] - x[:, 0]))
    lo, hi = np.maximum(x[:, 0] - d, -3), np.minimum(x[:, 0] + d, 3)
    np.testing.assert_allclose(got, post.cdf(hi) - post.cdf(lo), atol=2e-3)
    with pytest.raises(ValueError, match="not a bounded box"):
        grid_credibility(model, dist.Normal(jnp.zeros(1), 1.0).to_event(1), x, theta)


def test_exact_likelihood_coverage_is_nominal_end_to_end():
    """One batched sample_posterior call over 300 observations of gaussian_linear (2-D)."""
    task = gaussian_linear.make(2)
    model = ExactLikelihood(task.log_likelihood, task.x_shape)
    bank = simulate(jax.random.PRNGKey(1), task, 300, progress=False)
    post = sample_posterior(jax.random.PRNGKey(2), model, task.prior, bank.x, num_samples=500, num_chains=10,
                            num_warmup=300)
    assert post.samples.shape == (300, 500, 2)
    cred = sample_credibility(model, task.prior, bank.x, bank.theta, post.samples)
    result = coverage_from_credibility(cred)
    assert result.verdict == "nominal" and result.conservative
    assert np.max(np.abs(result.coverage - result.levels)) < 4 * np.sqrt(0.25 / 300)
    # the grid path on the same pairs agrees with the sample path
    grid = grid_credibility(model, task.prior, bank.x, bank.theta, bounds=[(-1.6, 1.6)] * 2, resolution=128)
    assert coverage_from_credibility(grid).verdict == "nominal"
    np.testing.assert_allclose(grid, cred, atol=0.08)
    # the convenience wrapper runs the same pipeline (grid here: no recompilation of the sampler)
    wrapped = expected_coverage(jax.random.PRNGKey(3), model, task, num_pairs=200, method="grid",
                                bounds=[(-1.6, 1.6)] * 2, resolution=128)
    assert wrapped.verdict == "nominal" and len(wrapped.credibility) == 200


def test_sample_credibility_checks_shapes():
    task = gaussian_linear.make(2)
    model = ExactLikelihood(task.log_likelihood, task.x_shape)
    with pytest.raises(ValueError, match="samples"):
        sample_credibility(model, task.prior, jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.zeros((4, 10, 2)))
    with pytest.raises(ValueError, match="method"):
        expected_coverage(jax.random.PRNGKey(0), model, task, method="exact")
