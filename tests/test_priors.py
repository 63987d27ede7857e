"""Priors: product priors with mixed supports, box uniform, unconstrained maps."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from scipy import stats

from aalr_jax import priors

COMPONENTS = [
    dist.Uniform(-1.0, 2.0),  # bounded
    dist.Normal(0.5, 2.0),  # real line
    dist.HalfNormal(1.5),  # positive
    dist.TruncatedNormal(0.0, 1.0, low=0.0, high=jnp.inf),  # interval(0, inf): NaN in plain numpyro
    dist.Gamma(2.0, 3.0),
]
PRIOR = priors.independent(COMPONENTS)


def scipy_logpdf(theta):
    return (
        stats.uniform(-1, 3).logpdf(theta[..., 0])
        + stats.norm(0.5, 2.0).logpdf(theta[..., 1])
        + stats.halfnorm(scale=1.5).logpdf(theta[..., 2])
        + stats.truncnorm(0, np.inf).logpdf(theta[..., 3])
        + stats.gamma(2.0, scale=1 / 3.0).logpdf(theta[..., 4])
    )


def test_independent_samples_and_scores_like_scipy():
    theta = np.asarray(PRIOR.sample(jax.random.PRNGKey(0), (20000,)))
    assert theta.shape == (20000, 5)
    np.testing.assert_allclose(theta.mean(0), [0.5, 0.5, 1.5 * np.sqrt(2 / np.pi), np.sqrt(2 / np.pi), 2 / 3], atol=0.05)
    np.testing.assert_allclose(np.asarray(PRIOR.log_prob(theta[:100])), scipy_logpdf(theta[:100]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("index, value", [(0, 2.5), (0, -1.01), (2, -0.1), (3, -1e-3), (4, -2.0)])
def test_independent_is_minus_inf_outside_support(index, value):
    theta = np.array([0.0, 0.0, 1.0, 1.0, 1.0], np.float32)
    theta[index] = value
    assert PRIOR.log_prob(theta) == -jnp.inf
    assert priors.log_prob(PRIOR, theta) == -jnp.inf
    assert not PRIOR.support(theta)
    # the gradient of the masked density stays finite (no NaN leaks into HMC)
    assert np.isfinite(np.asarray(jax.grad(lambda t: jnp.where(jnp.isinf(v := priors.log_prob(PRIOR, t)), 0.0, v))(theta))).all()


def test_unconstrained_map_round_trips_and_jacobian_matches_autodiff():
    transform = priors.support_transform(PRIOR)
    u = jax.random.normal(jax.random.PRNGKey(1), (50, 5)) * 3
    theta = transform(u)
    assert np.isfinite(np.asarray(theta)).all()
    assert np.all(np.asarray(PRIOR.support(theta)))
    np.testing.assert_allclose(transform.inv(theta), u, atol=2e-3, rtol=1e-3)
    for i in range(5):
        jac = jax.jacfwd(transform)(u[i])
        expected = np.linalg.slogdet(np.asarray(jac, np.float64))[1]
        np.testing.assert_allclose(transform.log_abs_det_jacobian(u[i], theta[i]), expected, rtol=1e-4, atol=1e-4)


def test_plain_numpyro_interval_with_infinite_bound_is_made_safe():
    prior = dist.Uniform(jnp.zeros(2), 1.0).to_event(1)
    assert np.isfinite(np.asarray(priors.support_transform(prior)(jnp.array([3.0, -3.0])))).all()
    half_line = dist.TruncatedNormal(jnp.zeros(2), 1.0, low=0.0, high=jnp.inf).to_event(1)
    theta = priors.support_transform(half_line)(jnp.array([3.0, -3.0]))
    np.testing.assert_allclose(theta, np.exp([3.0, -3.0]), rtol=1e-5)


def test_box_uniform():
    prior = priors.box_uniform([-1.0, 0.0], [1.0, 5.0])
    assert prior.event_shape == (2,) and prior.batch_shape == ()
    theta = np.asarray(prior.sample(jax.random.PRNGKey(0), (10000,)))
    assert np.all(theta >= [-1, 0]) and np.all(theta <= [1, 5])
    np.testing.assert_allclose(prior.log_prob(jnp.array([0.0, 1.0])), -np.log(10.0), rtol=1e-6)
    assert priors.log_prob(prior, jnp.array([0.0, 6.0])) == -jnp.inf
    with pytest.raises(ValueError, match="low < high"):
        priors.box_uniform([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        priors.box_uniform(0.0, np.inf)


def test_validation_errors_name_the_problem():
    with pytest.raises(TypeError, match="numpyro"):
        priors.validate_prior(stats.norm())
    with pytest.raises(ValueError, match=r"to_event\(1\)"):
        priors.validate_prior(dist.Normal(jnp.zeros(3), 1.0))
    with pytest.raises(ValueError, match=r"components\[1\] must be a scalar"):
        priors.independent([dist.Normal(0.0, 1.0), dist.Normal(jnp.zeros(2), 1.0)])
    with pytest.raises(TypeError, match=r"components\[0\]"):
        priors.independent(["normal"])
    with pytest.raises(ValueError, match="discrete"):
        priors.independent([dist.Bernoulli(0.5)])
    assert priors.validate_prior(PRIOR) == 5


def test_priors_are_traced_pytrees_sharing_one_program():
    """Two IndependentPrior objects of one structure (and a box with other bounds) go through jit as
    traced arguments: one trace each, and the values are the new prior's, not the first one's."""
    traces = []

    @jax.jit
    def score(prior, transform, u):
        traces.append(1)
        theta = transform(u)
        return priors.log_prob(prior, theta) + transform.log_abs_det_jacobian(u, theta)

    u = jnp.array([0.3, -1.0, 2.0, 1.5, 0.1])
    other = priors.independent([dist.Uniform(-2.0, 5.0), *COMPONENTS[1:]])
    for prior in (PRIOR, priors.independent(COMPONENTS), other):
        transform = priors.support_transform(prior)
        expected = priors.log_prob(prior, transform(u)) + transform.log_abs_det_jacobian(u, transform(u))
        np.testing.assert_allclose(score(prior, transform, u), expected, rtol=1e-5)
    assert len(traces) == 1
    boxes = [priors.box_uniform(0.0, [1.0, 2.0]), priors.box_uniform(-1.0, [3.0, 4.0])]
    values = [jax.jit(priors.log_prob)(b, jnp.array([0.5, 0.5])) for b in boxes]
    np.testing.assert_allclose(values, [-np.log(2.0), -np.log(20.0)], rtol=1e-6)


def test_box_bounds_returns_the_interval_and_its_bounds():
    interval, low, high = priors.box_bounds(priors.box_uniform([-1.0, 0.0], [1.0, 5.0]).support)
    assert isinstance(interval, constraints._Interval)
    np.testing.assert_array_equal(low, [-1.0, 0.0]) and np.testing.assert_array_equal(high, [1.0, 5.0])
    assert priors.box_bounds(dist.Normal(jnp.zeros(2), 1.0).to_event(1).support) is None


def test_discrete_priors_are_refused_by_name():
    with pytest.raises(ValueError, match=r"prior must be continuous.*Boolean"):
        priors.validate_prior(dist.Bernoulli(jnp.full(2, 0.5)).to_event(1))
    with pytest.raises(ValueError, match=r"prior must be continuous"):
        priors.validate_prior(dist.Poisson(jnp.ones(3)).to_event(1))
