"""Posterior log-densities: constrained with support masking, unconstrained with the Jacobian."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from aalr_jax import priors, tasks
from aalr_jax.posterior import (
    embed_observations,
    log_posterior,
    observation_batch_shape,
    unconstrained_log_posterior,
)
from aalr_jax.sampling import ExactLikelihood


def test_log_posterior_is_prior_plus_summed_log_likelihood():
    task = tasks.get("two_moons")
    model = ExactLikelihood(task.log_likelihood, task.x_shape)
    xs = jnp.stack([task.default_observation, task.default_observation + 0.01])
    theta = jnp.array([[0.1, -0.2], [-0.6, -0.5]])
    got = log_posterior(model, task.prior, embed_observations(model, xs, iid=True), theta)
    by_hand = [task.prior.log_prob(t) + task.log_likelihood(t, xs[0]) + task.log_likelihood(t, xs[1]) for t in theta]
    np.testing.assert_allclose(got, by_hand, rtol=1e-5)


def test_outside_support_is_minus_inf_never_nan():
    task = tasks.get("slcp")
    model = ExactLikelihood(task.log_likelihood, task.x_shape)
    features = embed_observations(model, task.default_observation, iid=False)
    theta = jnp.array([[0.0, 0.0, 1.0, 1.0, 0.0], [3.5, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, jnp.nan]])
    values = np.asarray(log_posterior(model, task.prior, features, theta))
    assert np.isfinite(values[0]) and values[1] == -np.inf and values[2] == -np.inf
    grad = jax.grad(lambda t: log_posterior(model, task.prior, features, t))(theta[0])
    assert np.isfinite(np.asarray(grad)).all()


def test_unconstrained_density_adds_the_log_jacobian():
    prior = priors.independent([dist.Uniform(-1.0, 1.0), dist.HalfNormal(1.0)])
    model = ExactLikelihood(lambda t, x: dist.Normal(t, 0.5).log_prob(x).sum(), (2,))
    features = embed_observations(model, jnp.array([0.2, 0.4]), iid=False)
    transform = priors.support_transform(prior)
    logdensity = unconstrained_log_posterior(model, prior, features)
    for u in jax.random.normal(jax.random.PRNGKey(0), (5, 2)) * 2:
        theta = transform(u)
        jac = jax.jacfwd(transform)(u)
        expected = log_posterior(model, prior, features, theta) + np.linalg.slogdet(np.asarray(jac))[1]
        np.testing.assert_allclose(logdensity(u), expected, rtol=1e-5, atol=1e-5)
    # far in the tails the transform saturates (exp(90) = inf in float32): the density is finite or
    # -inf, never NaN, and no out-of-support value reaches a component's log_prob
    for u in (jnp.array([60.0, 90.0]), jnp.array([-60.0, -90.0])):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value = logdensity(u)
        assert not np.isnan(value)
        assert not np.isnan(np.asarray(jax.grad(logdensity)(u))).any() or value == -np.inf


def test_observation_shapes():
    assert observation_batch_shape(jnp.zeros(2), (2,), iid=False) == ()
    assert observation_batch_shape(jnp.zeros((5, 2)), (2,), iid=False) == (5,)
    assert observation_batch_shape(jnp.zeros((5, 2)), (2,), iid=True) == ()
    assert observation_batch_shape(jnp.zeros((3, 5, 2)), (2,), iid=True) == (3,)
    assert observation_batch_shape(jnp.zeros((4, 8, 8)), (8, 8), iid=False) == (4,)
    with pytest.raises(ValueError, match=r"x_obs must have shape \(n, 2\) or \(k, n, \.\.\.\), got \(2,\)"):
        observation_batch_shape(jnp.zeros(2), (2,), iid=True)
    with pytest.raises(ValueError, match=r"got \(3, 3\)"):
        observation_batch_shape(jnp.zeros((3, 3)), (2,), iid=False)
