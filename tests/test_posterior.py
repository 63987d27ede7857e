"""Posterior log-densities: constrained with support masking, unconstrained with the Jacobian."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from aalr_jax import priors, tasks
from aalr_jax.logdensity import (
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


# --- the Posterior object -------------------------------------------------------------------------

import blackjax  # noqa: E402
from scipy import stats  # noqa: E402

import aalr_jax  # noqa: E402
from aalr_jax.tasks import gaussian_linear  # noqa: E402


def _gaussian_linear(dim=3):
    task = gaussian_linear.make(dim)
    return task, ExactLikelihood(task.log_likelihood, task.x_shape)


def test_log_prob_is_the_exact_log_posterior_up_to_a_constant():
    """gaussian_linear with its exact likelihood: log_prob − log N(θ; x/2, 0.05 I) is one constant,
    under jit and vmap; its gradient is the analytic −(θ − x/2)/0.05; a batch gives each one's."""
    task, model = _gaussian_linear()
    x = task.default_observation
    post = aalr_jax.posterior(model, task.prior, x)
    mean, cov = gaussian_linear.analytic_posterior(x)
    theta = jax.random.normal(jax.random.PRNGKey(0), (20, 3)) * 0.4
    exact = stats.multivariate_normal(np.asarray(mean), np.asarray(cov)).logpdf(np.asarray(theta))
    got = np.asarray(jax.jit(lambda p, t: jax.vmap(p.log_prob)(t))(post, theta))
    np.testing.assert_allclose(got - exact, (got - exact)[0], atol=2e-3)
    np.testing.assert_allclose(jax.grad(post.log_prob)(theta[0]), -(theta[0] - mean) / 0.05, rtol=1e-4, atol=1e-3)
    xs = jnp.stack([x, -x])
    batch = aalr_jax.posterior(model, task.prior, xs)
    assert batch.batch_shape == (2,) and batch.features.shape[0] == 2
    both = np.asarray(batch.log_prob(theta[:, None, :]))  # (20, 2)
    np.testing.assert_allclose(both[:, 0], got, rtol=1e-6)
    np.testing.assert_allclose(both[:, 1], aalr_jax.posterior(model, task.prior, -x).log_prob(theta), rtol=1e-6)
    np.testing.assert_allclose(batch[1].log_prob(theta), both[:, 1], rtol=1e-6)


def test_outside_the_support_and_in_unconstrained_space():
    prior = priors.box_uniform(-1.0, [1.0, 1.0])
    model = ExactLikelihood(lambda t, x: dist.Normal(t, 0.5).log_prob(x).sum(), (2,))
    post = aalr_jax.posterior(model, prior, jnp.array([0.2, 0.4]))
    assert post.log_prob(jnp.array([1.5, 0.0])) == -jnp.inf
    u = jnp.array([0.3, -2.0])
    theta = post.transform(u)
    jac = np.linalg.slogdet(np.asarray(jax.jacfwd(post.transform)(u)))[1]
    np.testing.assert_allclose(post.unconstrained_logdensity(u), post.log_prob(theta) + jac, rtol=1e-5)


def test_a_user_written_blackjax_nuts_loop_recovers_the_analytic_posterior():
    """The Posterior is a pytree and its unconstrained_logdensity a plain target: window adaptation
    and NUTS from BlackJAX, written by hand under one jit that takes the posterior as an argument,
    recover N(x/2, 0.05 I) (means within 4 standard errors from the chain's ESS)."""
    task, model = _gaussian_linear()
    x = task.default_observation
    post = aalr_jax.posterior(model, task.prior, x)

    @jax.jit
    def run(post, key):
        key_warm, key_draw = jax.random.split(key)
        warmup = blackjax.window_adaptation(blackjax.nuts, post.unconstrained_logdensity)
        (state, params), _ = warmup.run(key_warm, jnp.zeros(3), num_steps=200)
        kernel = blackjax.nuts(post.unconstrained_logdensity, **params)
        _, states = jax.lax.scan(lambda s, k: (kernel.step(k, s)[0],) * 2, state, jax.random.split(key_draw, 600))
        return post.transform(states.position)

    draws = np.asarray(run(post, jax.random.PRNGKey(1)))
    mean, cov = map(np.asarray, gaussian_linear.analytic_posterior(x))
    std = np.sqrt(np.diag(cov))
    ess = np.asarray(blackjax.ess(draws[None], chain_axis=0, sample_axis=1))
    assert np.all(ess > 100)
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 4 * std / np.sqrt(ess))
    np.testing.assert_allclose(draws.std(0), std, rtol=0.15)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(estimator=object()), TypeError, r"estimator must be a ratio estimator"),
        (dict(x_obs=jnp.zeros(2, jnp.complex64)), TypeError, r"x_obs must be real"),
        (dict(x_obs=np.zeros((0, 2))), ValueError, r"x_obs must not be empty"),
        (dict(x_obs=[np.inf, 0.0]), ValueError, r"x_obs contains non-finite"),
        (dict(prior=dist.Bernoulli(jnp.full(2, 0.5)).to_event(1)), ValueError, r"prior must be continuous"),
        (dict(iid=1), TypeError, r"iid must be True or False"),
    ],
)
def test_posterior_refuses_bad_arguments_by_name(kwargs, error, match):
    args = dict(estimator=ExactLikelihood(lambda t, x: -jnp.sum((t - x) ** 2), (2,)),
                prior=dist.Normal(jnp.zeros(2), 1.0).to_event(1), x_obs=jnp.zeros(2))
    args.update(kwargs)
    iid = args.pop("iid", False)
    with pytest.raises(error, match=match):
        aalr_jax.posterior(args["estimator"], args["prior"], args["x_obs"], iid=iid)
