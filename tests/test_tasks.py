"""Tests of the built-in tasks against independent truths (closed forms, NumPy/SciPy, grids)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from aalr_jax import tasks
from aalr_jax.tasks import gaussian_linear, slcp, two_moons

NAMES = ["two_moons", "gaussian_linear", "slcp"]


def _simulate(task, theta, n, seed=0):
    """``n`` simulator draws at fixed θ, as a float64 NumPy array ``(n,) + x_shape``."""
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    sim = jax.jit(jax.vmap(task.simulator, in_axes=(0, None)))
    return np.asarray(sim(keys, jnp.asarray(theta, jnp.float32)), dtype=np.float64)


# ---------------------------------------------------------------- all tasks


@pytest.mark.parametrize("name", NAMES)
def test_registry_and_shapes(name):
    task = tasks.get(name)
    assert task.name == name and tasks.get(name) is task
    d = task.theta_dim
    assert d == len(task.parameter_labels) == np.shape(task.true_theta)[0]
    theta = task.prior.sample(jax.random.PRNGKey(0), (7,))
    assert theta.shape == (7, d)
    assert np.all(np.isfinite(task.prior.log_prob(theta)))
    x_o = task.default_observation
    assert x_o.shape == task.x_shape and np.all(np.isfinite(x_o))
    x = task.simulator(jax.random.PRNGKey(1), theta[0])
    assert x.shape == task.x_shape
    ll = jax.jit(task.log_likelihood)(jnp.asarray(task.true_theta), x_o)
    assert ll.shape == () and np.isfinite(ll)
    assert task.description


# ---------------------------------------------------------------- two moons


# sbibm v1.1.0, two_moons/files/num_observation_1: observation.csv and true_parameters.csv.
SBIBM_TWO_MOONS_OBS1 = (-0.6396706, 0.16234657)
SBIBM_TWO_MOONS_THETA1 = (-0.8176656, -0.5756806)


def test_two_moons_default_observation_is_sbibm_obs1():
    task = tasks.get("two_moons")
    np.testing.assert_allclose(task.default_observation, SBIBM_TWO_MOONS_OBS1, rtol=0, atol=1e-7)
    np.testing.assert_allclose(task.true_theta, SBIBM_TWO_MOONS_THETA1, rtol=0, atol=1e-7)


def test_two_moons_default_observation_is_a_draw_of_the_simulator_at_true_theta():
    """Invert the simulator's definition in NumPy: x_o at θ* must come from a plausible noise draw
    (r ~ N(0.1, 0.01²), a ~ U(-π/2, π/2)), and the task's log-likelihood must equal its density."""
    task = tasks.get("two_moons")
    theta = np.asarray(SBIBM_TWO_MOONS_THETA1, np.float64)
    x_o = np.asarray(task.default_observation, np.float64)
    shift = np.array([-abs(theta[0] + theta[1]) / math.sqrt(2), (theta[1] - theta[0]) / math.sqrt(2)])
    q = x_o - shift - np.array([0.25, 0.0])  # = (r cos a, r sin a)
    r, a = math.hypot(q[0], q[1]), math.atan2(q[1], q[0])
    assert abs(r - 0.1) < 4 * 0.01 and abs(a) < math.pi / 2
    # density of (r, a) times the Jacobian 1/r of the polar map
    expected = stats.norm(0.1, 0.01).logpdf(r) - math.log(math.pi) - math.log(r)
    got = float(task.log_likelihood(jnp.asarray(theta, jnp.float32), jnp.asarray(x_o, jnp.float32)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_two_moons_simulator_moments():
    task = tasks.get("two_moons")
    theta = np.array([0.3, -0.6])
    n = 200_000
    x = _simulate(task, theta, n)
    # Closed form: E[r] = 0.1, E[r²] = 0.0101, E[cos a] = 2/π, E[cos² a] = E[sin² a] = 1/2.
    e_rcos = 0.1 * 2 / math.pi
    mean = np.array([e_rcos + 0.25 - abs(theta.sum()) / math.sqrt(2), (theta[1] - theta[0]) / math.sqrt(2)])
    var = np.array([0.0101 / 2 - e_rcos**2, 0.0101 / 2])
    se = np.sqrt(var / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * se)
    np.testing.assert_allclose(x.var(0), var, rtol=0.03)
    assert abs(np.corrcoef(x.T)[0, 1]) < 5 / math.sqrt(n)


def test_two_moons_likelihood_normalised():
    task = tasks.get("two_moons")
    theta = jnp.array([0.3, -0.6])
    centre = np.asarray(two_moons._shift(theta)) + np.array([0.25, 0.0])
    h = 5e-4
    g0 = np.arange(-0.01, 0.18, h) + centre[0]
    g1 = np.arange(-0.18, 0.18, h) + centre[1]
    xs = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2)
    ll = jax.jit(jax.vmap(task.log_likelihood, in_axes=(None, 0)))(theta, jnp.asarray(xs))
    total = np.exp(np.asarray(ll, np.float64)).sum() * h * h
    assert abs(total - 1.0) < 1e-2
    assert np.all(np.isneginf(ll[xs[:, 0] < centre[0] - 1e-3]))


def test_two_moons_likelihood_grad_finite():
    task = tasks.get("two_moons")
    x_o = task.default_observation
    for theta in ([-0.8176656, -0.5756806], [0.9, 0.9]):  # on the moon, off it (-inf)
        g = jax.grad(task.log_likelihood)(jnp.asarray(theta), x_o)
        assert np.all(np.isfinite(g))


def test_two_moons_reference_posterior_matches_grid():
    task = tasks.get("two_moons")
    x_o = task.default_observation
    n = 20_000
    sample = jax.jit(task.reference_posterior, static_argnums=2)
    s = np.asarray(sample(jax.random.PRNGKey(3), x_o, n), dtype=np.float64)
    assert s.shape == (n, 2) and np.all(np.abs(s) <= 1.0)
    # Grid posterior: exp(log-likelihood) on a fine grid of the prior box (uniform prior).
    g = np.linspace(-1.0, 1.0, 1001)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    ll = jax.jit(jax.vmap(task.log_likelihood, in_axes=(0, None)))(jnp.asarray(grid), x_o)
    w = np.exp(np.asarray(ll, np.float64) - np.max(ll))
    w /= w.sum()
    mean = w @ grid
    std = np.sqrt(w @ (grid - mean) ** 2)
    corr = (w @ ((grid[:, 0] - mean[0]) * (grid[:, 1] - mean[1]))) / std.prod()
    se = std / math.sqrt(n)
    np.testing.assert_array_less(np.abs(s.mean(0) - mean), 5 * se)
    np.testing.assert_allclose(s.std(0), std, rtol=0.03)
    assert abs(np.corrcoef(s.T)[0, 1] - corr) < 0.03
    # Both branches (θ1+θ2 ≷ 0) carry posterior mass as on the grid.
    frac_grid = w[grid.sum(1) > 0].sum()
    assert abs(np.mean(s.sum(1) > 0) - frac_grid) < 5 * math.sqrt(0.25 / n)


def test_two_moons_reference_posterior_raises_when_unreachable():
    task = tasks.get("two_moons")
    with pytest.raises(RuntimeError):
        task.reference_posterior(jax.random.PRNGKey(0), jnp.array([5.0, 5.0]), 10, max_rounds=3)


# ---------------------------------------------------------------- Gaussian linear


def _conjugate_numpy(x, prior_var=0.1, noise_var=0.1):
    """Posterior mean/cov of θ for N(0, prior_var I) prior and x_i ~ N(θ, noise_var I), x: (n, d)."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    n, d = x.shape
    prior_prec = np.linalg.inv(prior_var * np.eye(d))
    lik_prec = np.linalg.inv(noise_var * np.eye(d))
    cov = np.linalg.inv(prior_prec + n * lik_prec)
    mean = cov @ (lik_prec @ x.sum(0))
    return mean, cov


def test_gaussian_linear_default_observation_is_sbibm_obs1():
    task = tasks.get("gaussian_linear")
    assert task.theta_dim == 10 and task.x_shape == (10,)
    np.testing.assert_allclose(task.default_observation[:2], [1.0471346, 0.5566712])
    np.testing.assert_allclose(task.true_theta[-1], 0.26958188)
    prior_var = np.asarray(task.prior.variance)
    np.testing.assert_allclose(prior_var, 0.1 * np.ones(10), rtol=1e-6)


def test_gaussian_linear_simulator_moments():
    task = tasks.get("gaussian_linear")
    theta = np.linspace(-0.5, 0.5, 10)
    n = 50_000
    x = _simulate(task, theta, n)
    np.testing.assert_array_less(np.abs(x.mean(0) - theta), 5 * math.sqrt(0.1 / n))
    cov = np.cov(x.T)
    np.testing.assert_allclose(np.diag(cov), 0.1, rtol=0.04)
    assert np.max(np.abs(cov - np.diag(np.diag(cov)))) < 5 * 0.1 / math.sqrt(n)


def test_gaussian_linear_log_likelihood():
    task = tasks.get("gaussian_linear")
    rng = np.random.default_rng(0)
    theta, x = rng.normal(size=10) * 0.3, rng.normal(size=(3, 10)) * 0.4
    expected = stats.multivariate_normal(theta, 0.1 * np.eye(10)).logpdf(x)
    got = task.log_likelihood(jnp.asarray(theta, jnp.float32), jnp.asarray(x[0], jnp.float32))
    np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-4)
    got_set = task.log_likelihood(jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got_set, expected.sum(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dim,n", [(10, None), (3, 5)])
def test_gaussian_linear_analytic_posterior(dim, n):
    task = gaussian_linear.make(dim)
    rng = np.random.default_rng(dim)
    x = rng.normal(size=(dim,) if n is None else (n, dim)).astype(np.float32)
    mean, cov = gaussian_linear.analytic_posterior(x)
    mean_np, cov_np = _conjugate_numpy(x)
    assert mean.shape == (dim,) and cov.shape == (dim, dim)
    np.testing.assert_allclose(mean, mean_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, cov_np, rtol=1e-5, atol=1e-8)
    num = 40_000
    s = np.asarray(task.reference_posterior(jax.random.PRNGKey(5), x, num), np.float64)
    assert s.shape == (num, dim)
    sd = np.sqrt(np.diag(cov_np))
    np.testing.assert_array_less(np.abs(s.mean(0) - mean_np), 5 * sd / math.sqrt(num))
    np.testing.assert_allclose(np.cov(s.T), cov_np, atol=5 * cov_np[0, 0] * math.sqrt(2 / num))


def test_gaussian_linear_other_dim():
    task = gaussian_linear.make(3)
    assert task.theta_dim == 3 and task.x_shape == (3,) and task.observation is None
    np.testing.assert_allclose(task.true_theta, [0.27184236, 0.6762953, 0.17189318])
    assert task.default_observation.shape == (3,)


# ---------------------------------------------------------------- SLCP


def _slcp_cov(theta):
    s1, s2, rho = theta[2] ** 2, theta[3] ** 2, np.tanh(theta[4])
    return np.array([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]]) + 1e-6 * np.eye(2)


def test_slcp_log_likelihood_matches_scipy():
    task = tasks.get("slcp")
    thetas = np.asarray(task.prior.sample(jax.random.PRNGKey(0), (20,)), np.float64)
    thetas = np.concatenate([thetas, slcp.TRUE_THETA[None].astype(np.float64)])
    keys = jax.random.split(jax.random.PRNGKey(1), len(thetas))
    xs = np.asarray(jax.vmap(task.simulator)(keys, jnp.asarray(thetas, jnp.float32)), np.float64)
    xs = np.concatenate([xs, xs + 0.5])  # at simulated points and away from the mean
    thetas = np.concatenate([thetas, thetas])
    got = jax.vmap(task.log_likelihood)(jnp.asarray(thetas, jnp.float32), jnp.asarray(xs, jnp.float32))
    expected = [
        stats.multivariate_normal(t[:2], _slcp_cov(t)).logpdf(x.reshape(4, 2)).sum()
        for t, x in zip(thetas, xs)
    ]
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-2)
    g = jax.grad(task.log_likelihood)(jnp.asarray(slcp.TRUE_THETA), task.default_observation)
    assert np.all(np.isfinite(g))


def test_slcp_simulator_moments():
    task = tasks.get("slcp")
    theta = np.array([0.7, -2.9, -1.0, -0.9, 0.6])
    n = 50_000
    x = _simulate(task, theta, n).reshape(n * 4, 2)  # rows: points (x_j1, x_j2)
    sd = np.array([theta[2] ** 2, theta[3] ** 2])
    rho = np.tanh(theta[4])
    m = 4 * n
    np.testing.assert_array_less(np.abs(x.mean(0) - theta[:2]), 5 * sd / math.sqrt(m))
    np.testing.assert_allclose(x.std(0), sd, rtol=5 * math.sqrt(1 / (2 * m)))
    assert abs(np.corrcoef(x.T)[0, 1] - rho) < 5 * (1 - rho**2) / math.sqrt(m)
    # The four points of one draw are independent of each other.
    per_draw = _simulate(task, theta, n).reshape(n, 4, 2)
    assert abs(np.corrcoef(per_draw[:, 0, 0], per_draw[:, 1, 0])[0, 1]) < 5 / math.sqrt(n)


def test_slcp_default_observation():
    task = tasks.get("slcp")
    assert task.observation_seed == 1
    np.testing.assert_allclose(task.true_theta, [0.7, -2.9, -1.0, -0.9, 0.6])
    x_o = task.default_observation
    assert x_o.shape == (8,) and np.all(np.isfinite(x_o))
    # stored once from simulator(PRNGKey(1), θ*); the simulator reproduces it on this JAX version
    expected = task.simulator(jax.random.PRNGKey(1), jnp.asarray(task.true_theta))
    np.testing.assert_allclose(x_o, expected, rtol=1e-5, atol=1e-5)
