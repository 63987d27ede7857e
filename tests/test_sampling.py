"""Samplers against exact posteriors: an exact log-likelihood stands in for the learned ratio."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats

from aalr_jax import priors, sample_posterior, tasks
from aalr_jax.adaptation import warmup_schedule
from aalr_jax.chains import run_chains, sample_batch
from aalr_jax.samplers import HMC, NUTS, RWMH
from aalr_jax.samplers import resolve_sampler
from aalr_jax.sampling import ExactLikelihood

SIGMA = 0.5  # likelihood std of the Gaussian test problem
PRIOR = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
MODEL = ExactLikelihood(lambda th, x: dist.Normal(th, SIGMA).log_prob(x).sum(), (2,))


def gaussian_posterior(x):
    """Conjugate N(0, I) prior, N(θ, σ² I) likelihood: mean x/(1+σ²), var σ²/(1+σ²)."""
    var = SIGMA**2 / (1 + SIGMA**2)
    return np.asarray(x) / (1 + SIGMA**2), np.sqrt(var) * np.ones(2)


def assert_moments(result, mean, std, *, z=4.0, std_rtol=0.1):
    """Mean within z Monte-Carlo standard errors (from ESS); std within std_rtol."""
    samples = np.asarray(result.samples)
    ess = np.asarray(result.ess)
    se = std / np.sqrt(ess)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), z * se + 1e-6)
    np.testing.assert_allclose(samples.std(0), std, rtol=std_rtol)


@pytest.mark.parametrize(
    "method, num_chains", [("rwmh", 64), ("hmc", 32), ("nuts", 4)]
)
def test_gaussian_posterior_recovered(method, num_chains):
    x = jnp.array([1.0, -0.5])
    r = sample_posterior(jax.random.PRNGKey(1), MODEL, PRIOR, x, method=method,
                         num_samples=8000, num_chains=num_chains, num_warmup=400)
    mean, std = gaussian_posterior(x)
    assert r.samples.shape == (8000, 2)
    assert_moments(r, mean, std)
    # chains move: acceptance strictly inside (0, 1), every chain has spread
    acc = np.asarray(r.acceptance_rate)
    assert np.all(acc > 0.05) and np.all(acc < 0.999)
    assert np.all(np.asarray(r.chains).std(axis=1) > 0.1 * std)
    assert np.all(np.asarray(r.rhat) < 1.01)
    assert np.all(np.asarray(r.ess) > 500)


def test_rwmh_chains_pool_their_metric_estimates():
    """Correlated 4-D Gaussian (likelihood covariance eigenvalues 0.05-0.7), plain RWMH with a
    short 200-step warm-up: each chain's own window estimate is noisy, and without shrinking it
    towards the chains' average some chains barely move (min bulk ESS 484 of 5,000); with it
    2,480-2,690 over seeds 1-7, R-hat <= 1.03. The draws must also match the analytic posterior."""
    d = 4
    a = np.random.default_rng(0).normal(size=(d, d))
    cov = a @ a.T + 0.05 * np.eye(d)
    cov = 0.3 * cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))  # the likelihood's covariance
    precision = np.linalg.inv(cov)
    prior = dist.Normal(jnp.zeros(d), 5.0).to_event(1)
    model = ExactLikelihood(lambda th, x: -0.5 * (x - th) @ jnp.asarray(precision, jnp.float32) @ (x - th), (d,))
    x = np.array([0.5, -0.3, 0.2, 0.1])
    post_cov = np.linalg.inv(precision + np.eye(d) / 25.0)
    post_mean = post_cov @ precision @ x
    r = sample_posterior(jax.random.PRNGKey(1), model, prior, x, num_samples=5000, num_warmup=200,
                         independence_prob=0.0)
    assert np.min(np.asarray(r.ess)) > 1500 and np.max(np.asarray(r.rhat)) < 1.05
    assert_moments(r, post_mean, np.sqrt(np.diag(post_cov)))
    np.testing.assert_allclose(np.cov(np.asarray(r.samples).T), post_cov, atol=0.05 * np.max(np.diag(post_cov)))


def test_a_broken_chain_does_not_spoil_the_pooled_metric():
    """One chain starting at a non-finite position has a NaN window covariance; the other chains
    average only the finite ones, so their draws still follow the target (standard normal)."""
    start = jnp.zeros((20, 2)).at[0].set(jnp.nan)
    logdensity = lambda u: -0.5 * jnp.sum(u**2)
    sampler = RWMH(independence_prob=0.0).resolve(2)
    result = run_chains(jax.random.PRNGKey(0), logdensity, start, sampler, num_warmup=300, num_draws=400, thin=5)
    healthy = np.asarray(result.positions[1:]).reshape(-1, 2)
    assert np.all(np.isfinite(healthy))
    np.testing.assert_allclose(healthy.mean(0), 0.0, atol=0.1)
    np.testing.assert_allclose(healthy.std(0), 1.0, rtol=0.1)


def test_truncated_gaussian_in_box():
    """Box prior U(0, 1)^2 with a likelihood centred near a corner: a truncated normal."""
    prior = priors.box_uniform(0.0, [1.0, 1.0])
    x = jnp.array([0.1, 0.9])
    r = sample_posterior(jax.random.PRNGKey(2), MODEL, prior, x, method="hmc",
                         num_samples=8000, num_chains=32, num_warmup=400)
    samples = np.asarray(r.samples)
    assert np.all((samples >= 0) & (samples <= 1)) and np.isfinite(samples).all()
    a, b = (0 - np.asarray(x)) / SIGMA, (1 - np.asarray(x)) / SIGMA
    truth = stats.truncnorm(a, b, loc=np.asarray(x), scale=SIGMA)
    assert_moments(r, truth.mean(), truth.std())
    rw = sample_posterior(jax.random.PRNGKey(3), MODEL, prior, x, method="rwmh",
                          num_samples=8000, num_chains=64, num_warmup=400)
    assert np.all((np.asarray(rw.samples) >= 0) & (np.asarray(rw.samples) <= 1))
    assert_moments(rw, truth.mean(), truth.std())


def test_slcp_exact_likelihood_finds_all_four_modes():
    task = tasks.get("slcp")
    model = ExactLikelihood(task.log_likelihood, task.x_shape)
    r = sample_posterior(jax.random.PRNGKey(0), model, task.prior, task.default_observation,
                         method="hmc", num_samples=20000, num_chains=200, num_warmup=300)
    samples = np.asarray(r.samples)
    assert np.all(np.abs(samples) <= 3.0)
    # the likelihood depends on θ3², θ4²: the four sign modes carry equal mass
    mode = 2 * (samples[:, 2] > 0) + (samples[:, 3] > 0)
    fractions = np.bincount(mode, minlength=4) / len(mode)
    np.testing.assert_allclose(fractions, 0.25, atol=0.08)
    # moments of (θ1, θ2, |θ3|, |θ4|, θ5) agree with self-normalised importance sampling from the
    # prior (2·10^6 draws, effective sample size ≈ 270, so its standard error is ≈ 0.04)
    theta = task.prior.sample(jax.random.PRNGKey(9), (2_000_000,))
    log_w = jax.vmap(task.log_likelihood, (0, None))(theta, task.default_observation)
    w = np.exp(np.asarray(log_w - log_w.max()))
    w /= w.sum()
    assert 1.0 / np.sum(w**2) > 150
    fold = lambda t: np.concatenate([t[:, :2], np.abs(t[:, 2:4]), t[:, 4:]], axis=1)
    is_mean = (w[:, None] * fold(np.asarray(theta))).sum(0)
    np.testing.assert_allclose(fold(samples).mean(0), is_mean, atol=0.15)


def test_mixed_support_prior_never_leaves_support():
    prior = priors.independent([dist.Uniform(0.0, 1.0), dist.Normal(0.0, 2.0), dist.HalfNormal(1.0)])
    model = ExactLikelihood(lambda th, x: dist.Normal(th, 0.3).log_prob(x).sum(), (3,))
    x = jnp.array([0.95, -1.0, 0.05])  # near the edges of the bounded components
    for method in ("rwmh", "hmc"):
        r = sample_posterior(jax.random.PRNGKey(4), model, prior, x, method=method,
                             num_samples=4000, num_chains=32, num_warmup=300)
        s = np.asarray(r.samples)
        assert np.isfinite(s).all()
        assert np.all((s[:, 0] >= 0) & (s[:, 0] <= 1)) and np.all(s[:, 2] >= 0)
        assert 0.05 < float(r.acceptance_rate.mean()) < 0.999


def test_batch_agrees_with_separate_calls_and_does_not_recompile():
    xs = jnp.array([[1.0, -0.5], [-1.5, 0.0], [0.2, 2.0]])
    kw = dict(method="rwmh", num_samples=4000, num_chains=40, num_warmup=300)
    key = jax.random.PRNGKey(5)
    batch = sample_posterior(key, MODEL, PRIOR, xs, **kw)
    assert batch.samples.shape == (3, 4000, 2)
    assert batch.chains.shape[:2] == (3, 40)
    single = sample_posterior(key, MODEL, PRIOR, xs[0], **kw)  # uses fold_in(key, 0), as batch[0]
    np.testing.assert_allclose(batch.samples[0], single.samples, atol=1e-5)
    for i in range(3):
        alone = sample_posterior(jax.random.PRNGKey(10 + i), MODEL, PRIOR, xs[i], **kw)
        mean, std = gaussian_posterior(xs[i])
        assert_moments(alone, mean, std)
        sub = batch._replace(samples=batch.samples[i], ess=batch.ess[i])
        assert_moments(sub, mean, std)
    # a new batch of the same shape reuses the compiled program
    before = sample_batch._cache_size()
    sample_posterior(jax.random.PRNGKey(6), MODEL, PRIOR, xs + 0.3, **kw)
    assert sample_batch._cache_size() == before


def test_iid_observations_sum_log_likelihoods():
    """n i.i.d. draws of one θ: posterior mean Σx/(n+σ²), var σ²/(n+σ²)."""
    xs = jnp.array([[0.5, 0.0], [1.0, -0.5], [0.9, 0.1], [0.6, -0.2]])
    n = xs.shape[0]
    r = sample_posterior(jax.random.PRNGKey(7), MODEL, PRIOR, xs, iid=True, method="hmc",
                         num_samples=6000, num_chains=32, num_warmup=300)
    assert r.samples.shape == (6000, 2)
    mean = np.asarray(xs.sum(0)) / (n + SIGMA**2)
    std = np.sqrt(SIGMA**2 / (n + SIGMA**2)) * np.ones(2)
    assert_moments(r, mean, std)


def test_warmup_schedule_windows():
    slow, end = warmup_schedule(500)
    assert not slow[:75].any() and not slow[-50:].any() and slow[75:450].all()
    ends = np.flatnonzero(end)
    assert ends[-1] == 449 and np.all(slow[ends])
    assert list(np.diff(np.concatenate([[74], ends]))) == [25, 50, 100, 200]
    slow, end = warmup_schedule(100)
    assert slow.sum() == 75 and end.sum() >= 1
    assert not warmup_schedule(10)[0].any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x_obs=jnp.zeros(3)), r"x_obs must have shape \(2,\) or \(k, 2\), got \(3,\)"),
        (dict(x_obs=jnp.zeros((2, 2, 2))), r"x_obs must have shape"),
        (dict(method="slice"), r"method must be one of"),
        (dict(num_samples=0), r"num_samples must be a positive integer"),
        (dict(num_chains=2.5), r"num_chains must be an integer, got 2.5"),
        (dict(x_obs=jnp.array([jnp.nan, 0.0])), r"x_obs contains non-finite"),
        (dict(prior=dist.Normal(jnp.zeros(2), 1.0)), r"event_shape \(d,\).*to_event\(1\)"),
        (dict(prior="uniform"), r"prior must be a numpyro"),
        (dict(num_chains=10, num_init_candidates=5), r"num_init_candidates must be at least num_chains \(10\), got 5"),
    ],
)
def test_bad_input_gives_clear_errors(kwargs, match):
    args = dict(x_obs=jnp.zeros(2), prior=PRIOR)
    args.update(kwargs)
    prior, x_obs = args.pop("prior"), args.pop("x_obs")
    with pytest.raises((ValueError, TypeError), match=match):
        sample_posterior(jax.random.PRNGKey(0), MODEL, prior, x_obs, **args)


def test_estimator_and_prior_dimensions_must_agree():
    from aalr_jax.nn import NetworkConfig, init_estimator, standardization_from

    est = init_estimator(jax.random.PRNGKey(0), NetworkConfig(2, (2,), (8,)),
                         standardization_from(jnp.ones((4, 2)), jnp.ones((4, 2))))
    with pytest.raises(ValueError, match=r"theta of dimension 2 but the prior has event_shape \(3,\)"):
        sample_posterior(jax.random.PRNGKey(0), est, dist.Normal(jnp.zeros(3), 1.0).to_event(1), jnp.zeros(2))


def test_many_chains_still_start_in_the_posterior():
    """The ratio-weighted start takes the best of max(10⁴, 10·C) prior draws, so 10⁴ chains (as many
    as the former fixed 10⁴ candidates, which then all became starts: the prior) still start in the
    posterior's bulk. N(θ, 0.3² I) likelihood under a U(-3, 3)² prior: the 3σ disc around x holds
    π·0.9²/36 = 7 % of the prior, so prior starts would put 7 % of the chains there; the best 10⁴ of
    10⁵ candidates take about all 7,000 candidates inside it. No warm-up, one step per chain."""
    prior = dist.Uniform(-3.0 * jnp.ones(2), 3.0 * jnp.ones(2)).to_event(1)
    model = ExactLikelihood(lambda th, x: dist.Normal(th, 0.3).log_prob(x).sum(), (2,))
    x = jnp.array([0.5, -0.5])
    r = sample_posterior(jax.random.PRNGKey(0), model, prior, x, method="rwmh", independence_prob=0.0,
                         num_chains=10_000, num_samples=10_000, num_warmup=0, thin=1)
    inside = np.linalg.norm(np.asarray(r.samples) - np.asarray(x), axis=1) < 0.9
    assert inside.mean() > 0.5, inside.mean()


def test_one_draw_per_chain_is_a_posterior_sample():
    """num_samples == num_chains: each chain contributes its state after warm-up. There is no
    within-chain statistic (R-hat and ESS are NaN), but the draws are still the posterior's."""
    x = jnp.array([0.8, -0.3])
    r = sample_posterior(jax.random.PRNGKey(3), MODEL, PRIOR, x, method="rwmh",
                         num_samples=3000, num_chains=3000, num_warmup=300)
    assert r.chains.shape == (3000, 1, 2) and r.samples.shape == (3000, 2)
    assert np.all(np.isnan(np.asarray(r.ess))) and np.all(np.isnan(np.asarray(r.rhat)))
    mean, std = gaussian_posterior(x)
    samples = np.asarray(r.samples)  # independent chains: standard error std / sqrt(3000)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 4 * std / np.sqrt(3000))
    np.testing.assert_allclose(samples.std(0), std, rtol=0.08)


def test_auto_method_is_rwmh_in_low_and_hmc_in_high_dimension():
    """The default ``method="auto"``: RWMH (acceptance target 0.35 in 2-D; 0.2-0.55 per chain) for
    few parameters; HMC (target 0.8) in 10-D, where per-chain RWMH with the default warm-up does not converge
    (R-hat ≈ 1.3 on this problem, see choose_sampler.py) and HMC recovers the analytic posterior."""
    assert [resolve_sampler("auto", d).name for d in (1, 4, 5, 10)] == ["rwmh", "rwmh", "hmc", "hmc"]
    assert resolve_sampler("nuts", 2).name == "nuts" and resolve_sampler("rwmh", 10).name == "rwmh"
    with pytest.raises(ValueError, match="method must be one of"):
        resolve_sampler("slice", 2)
    # the random walk's own acceptance target (the default also mixes in independence moves)
    low = sample_posterior(jax.random.PRNGKey(8), MODEL, PRIOR, jnp.array([1.0, -0.5]), num_samples=4000,
                           independence_prob=0.0)
    assert 0.2 < float(low.acceptance_rate.mean()) < 0.45
    dim = 10
    prior = dist.Normal(jnp.zeros(dim), 1.0).to_event(1)
    model = ExactLikelihood(lambda th, x: dist.Normal(th, SIGMA).log_prob(x).sum(), (dim,))
    x = jnp.linspace(-1.5, 1.5, dim)
    high = sample_posterior(jax.random.PRNGKey(9), model, prior, x)
    assert 0.7 < float(high.acceptance_rate.mean()) < 0.97
    var = SIGMA**2 / (1 + SIGMA**2)
    assert_moments(high, np.asarray(x) / (1 + SIGMA**2), np.sqrt(var) * np.ones(dim))
    assert np.all(np.asarray(high.rhat) < 1.01) and np.all(np.asarray(high.ess) > 2000)


def _linear_head_estimator(theta_bound):
    """A 1-D estimator whose logit grows like +z(θ) for large θ (one SELU unit, unit weights)."""
    from aalr_jax.nn import NetworkConfig, Standardization, init_estimator

    config = NetworkConfig(1, (1,), (1,), theta_bound=theta_bound)
    std = Standardization(jnp.zeros(1), jnp.ones(1), jnp.zeros(1), jnp.ones(1))
    est = init_estimator(jax.random.PRNGKey(0), config, std)
    return dataclasses.replace(est, params=jax.tree.map(
        lambda p: jnp.ones_like(p) if p.ndim == 2 else jnp.zeros_like(p), est.params))


def test_bounded_theta_input_keeps_a_heavy_tailed_posterior_proper():
    """LogNormal(0, 1) prior times exp(f) with f ≈ 1.05·θ for large θ: improper (the chains run off
    to float32's limit, as they did on lotka_volterra) unless the head's θ input is bounded. With
    the default bound the posterior is proper, and the sampler matches its 1-D quadrature."""
    prior = dist.LogNormal(jnp.zeros(1), 1.0).to_event(1)
    x = jnp.zeros(1)
    unbounded = sample_posterior(jax.random.PRNGKey(0), _linear_head_estimator(None), prior, x,
                                 num_samples=2000, num_chains=20)
    assert not np.all(np.asarray(unbounded.samples) < 1e6)
    est = _linear_head_estimator(10.0)
    grid = np.linspace(1e-4, 400.0, 400_000)
    log_density = np.asarray(prior.log_prob(grid[:, None]) + est.log_ratio(grid[:, None], x))
    weights = np.exp(log_density - log_density.max())
    mean = np.sum(grid * weights) / weights.sum()
    std = np.sqrt(np.sum((grid - mean) ** 2 * weights) / weights.sum())
    r = sample_posterior(jax.random.PRNGKey(1), est, prior, x, num_samples=8000, num_chains=40)
    assert np.all(np.isfinite(np.asarray(r.samples))) and float(np.max(r.samples)) < 400.0
    assert_moments(r, np.array([mean]), np.array([std]), std_rtol=0.15)


def test_the_sampler_that_ran_is_recorded():
    """No caller recomputes the defaults: the result carries the resolved sampler, thin, warm-up
    and chains, and survives a tree map (the sampler value has no leaves)."""
    x = jnp.array([0.5, 0.0])
    r = sample_posterior(jax.random.PRNGKey(0), MODEL, PRIOR, x, num_samples=40, num_chains=4, num_warmup=30)
    assert r.sampler == RWMH(independence_prob=0.9, target_acceptance=0.35)
    assert (r.thin, r.num_warmup, r.num_chains) == (5, 30, 4)
    assert r.outside_training.shape == () and not r.outside_training
    assert jax.tree.map(np.asarray, r).sampler == r.sampler
    h = sample_posterior(jax.random.PRNGKey(0), MODEL, PRIOR, x, method="hmc", num_integration_steps=4,
                         num_samples=40, num_chains=4, num_warmup=30, thin=2)
    assert h.sampler == HMC(num_integration_steps=4, target_acceptance=0.8) and h.thin == 2


@pytest.mark.parametrize("sampler, num_chains", [(RWMH(), 32), (RWMH(independence_prob=0.0, dense_metric=False), 32),
                                                 (HMC(num_integration_steps=5), 16), (NUTS(max_num_doublings=5), 4)])
def test_sampler_values_run_through_the_posterior_object(sampler, num_chains):
    """Each sampler value, passed to Posterior.sample: chains move and the draws match the
    conjugate Gaussian posterior of a batch of two observations, (k, num_samples, d)."""
    import aalr_jax

    xs = jnp.array([[1.0, -0.5], [-0.4, 0.8]])
    post = aalr_jax.posterior(MODEL, PRIOR, xs)
    r = post.sample(jax.random.PRNGKey(11), 3000, sampler=sampler, num_chains=num_chains, num_warmup=300)
    assert r.samples.shape == (2, 3000, 2) and r.sampler.name == sampler.name
    for i in range(2):
        mean, std = gaussian_posterior(xs[i])
        assert_moments(r._replace(samples=r.samples[i], ess=r.ess[i]), mean, std)
        acc = np.asarray(r.acceptance_rate[i])
        assert np.all(acc > 0.05) and np.all(acc < 0.999)


def test_two_instances_of_a_task_share_one_compiled_program():
    """The prior is a traced pytree argument, not a static one keyed by identity: the registry's
    task, a freshly made task (a new prior object) and a prior with other parameters reuse the
    program compiled for the first."""
    from aalr_jax.tasks import gaussian_linear

    kw = dict(method="hmc", num_samples=8, num_chains=2, num_warmup=4, num_integration_steps=2)

    def run(task, prior=None):
        model = ExactLikelihood(gaussian_linear.log_likelihood, task.x_shape)
        return sample_posterior(jax.random.PRNGKey(0), model, prior or task.prior, task.default_observation, **kw)

    first = run(tasks.get("gaussian_linear"))
    before = sample_batch._cache_size()
    again = run(tasks.get("gaussian_linear"))
    fresh = gaussian_linear.make()
    assert fresh.prior is not tasks.get("gaussian_linear").prior
    same = run(fresh)
    wider = run(fresh, dist.Normal(jnp.zeros(10), 1.0).to_event(1))
    assert sample_batch._cache_size() == before
    np.testing.assert_array_equal(first.samples, again.samples)
    np.testing.assert_array_equal(first.samples, same.samples)
    assert np.std(np.asarray(wider.chains)) > np.std(np.asarray(same.chains))  # the new prior's scale is used


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(rng_key=0), TypeError, r"rng_key must be a JAX PRNG key, got the integer 0"),
        (dict(num_samples=None), TypeError, r"num_samples must be an integer, got None"),
        (dict(thin=1.5), TypeError, r"thin must be an integer, got 1.5"),
        (dict(num_warmup=-1), ValueError, r"num_warmup must be a non-negative integer"),
        (dict(init="uniform"), ValueError, r"init must be 'sir' or 'prior'"),
        (dict(method="rwmh", num_integration_steps=5), ValueError, r"num_integration_steps needs method='hmc'"),
        (dict(estimator=lambda t, x: 0.0), TypeError, r"estimator must be a ratio estimator"),
        (dict(x_obs=np.zeros((0, 2))), ValueError, r"x_obs must not be empty"),
        (dict(x_obs=np.zeros(2, complex)), TypeError, r"x_obs must be real"),
        (dict(strict="yes"), TypeError, r"strict must be True or False"),
    ],
)
def test_entry_point_names_the_bad_argument(kwargs, error, match):
    args = dict(rng_key=jax.random.PRNGKey(0), estimator=MODEL, prior=PRIOR, x_obs=jnp.zeros(2))
    args.update(kwargs)
    positional = [args.pop(name) for name in ("rng_key", "estimator", "prior", "x_obs")]
    with pytest.raises(error, match=match):
        sample_posterior(*positional, **args)


def test_observations_outside_the_training_data_are_flagged():
    """two_moons, an estimator standardised on a bank of 500 simulations: x = (1e20, 0) warns and
    sets outside_training (per observation in a batch), strict=True refuses it before sampling,
    and the task's default observation is not flagged."""
    from aalr_jax import simulate
    from aalr_jax.nn import NetworkConfig, init_estimator, standardization_from
    from aalr_jax.ood import OutOfDistributionWarning

    task = tasks.get("two_moons")
    bank = simulate(jax.random.PRNGKey(0), task, 500, progress=False)
    est = init_estimator(jax.random.PRNGKey(1), NetworkConfig(2, (2,), (8,)), standardization_from(bank.theta, bank.x))
    kw = dict(num_samples=8, num_chains=4, num_warmup=5)
    far = jnp.array([1e20, 0.0])
    with pytest.warns(OutOfDistributionWarning):
        r = sample_posterior(jax.random.PRNGKey(2), est, task.prior, jnp.stack([task.default_observation, far]), **kw)
    np.testing.assert_array_equal(r.outside_training, [False, True])
    with pytest.raises(ValueError, match="outside the range of the training simulations"):
        sample_posterior(jax.random.PRNGKey(2), est, task.prior, far, strict=True, **kw)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDistributionWarning)
        ok = sample_posterior(jax.random.PRNGKey(2), est, task.prior, task.default_observation, strict=True, **kw)
    assert ok.outside_training.shape == () and not ok.outside_training
