"""Tests of the paper's tasks (M/G/1, Lotka–Volterra MJP, Weinberg) and the SLCP reference posterior,
against independent truths: NumPy/SciPy re-implementations of the same equations, exact
distributions of special cases, grids and importance sampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from aalr_jax import tasks
from aalr_jax.data import simulate
from aalr_jax.sampling import ExactLikelihood, sample_posterior
from aalr_jax.tasks import lotka_volterra_mjp as lv
from aalr_jax.tasks import mg1, weinberg

NAMES = ["mg1", "lotka_volterra_mjp", "weinberg"]


def _vmap_sim(fn, theta, n, seed=0):
    """``n`` draws of ``fn(key, theta)`` at a fixed θ (jit + vmap)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.jit(jax.vmap(fn, in_axes=(0, None)))(keys, jnp.asarray(theta, jnp.float32))


# ---------------------------------------------------------------- all three tasks


@pytest.mark.parametrize("name", NAMES)
def test_registry_shapes_and_bad_theta(name):
    task = tasks.get(name)
    assert task.name == name and name in tasks.names()
    d = task.theta_dim
    assert d == len(task.parameter_labels) == np.shape(task.true_theta)[0]
    assert np.isfinite(task.prior.log_prob(jnp.asarray(task.true_theta)))
    x_o = task.default_observation
    expected = (weinberg.NUM_OBSERVED_EVENTS, 1) if name == "weinberg" else task.x_shape
    assert x_o.shape == expected and np.all(np.isfinite(x_o))
    theta = task.prior.sample(jax.random.PRNGKey(0), (5,))
    x = jax.jit(jax.vmap(task.simulator))(jax.random.split(jax.random.PRNGKey(1), 5), theta)
    assert x.shape == (5,) + task.x_shape
    with pytest.raises(ValueError, match="shape"):
        task.simulator(jax.random.PRNGKey(0), jnp.zeros(d + 1))
    assert task.description


@pytest.mark.parametrize("name", NAMES)
def test_default_observation_is_reproducible(name):
    """The stored observations are what the documented seed gives (same JAX version)."""
    task = tasks.get(name)
    theta = jnp.asarray(task.true_theta)
    if name == "weinberg":
        again = _vmap_sim(task.simulator, theta, weinberg.NUM_OBSERVED_EVENTS, seed=1)
    else:
        again = task.simulator(jax.random.PRNGKey(1), theta)
    np.testing.assert_allclose(again, task.default_observation, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- M/G/1


def _mg1_numpy(service, inter_arrival):
    """SNL's event-by-event recursion in float64; the 0/25/50/75/100 % percentiles of δ."""
    arrivals = np.cumsum(inter_arrival)
    delta = np.empty_like(service)
    last_departure = 0.0
    for i in range(len(service)):
        delta[i] = service[i] + max(0.0, arrivals[i] - last_departure)
        last_departure += delta[i]
    return np.percentile(delta, [0, 25, 50, 75, 100])


def test_mg1_matches_numpy_queue_with_same_draws():
    rng = np.random.default_rng(0)
    thetas = np.concatenate([mg1.TRUE_THETA[None], rng.uniform(mg1.PRIOR_LOW, mg1.PRIOR_HIGH, (20, 3))])
    for i, theta in enumerate(thetas.astype(np.float32)):
        key = jax.random.PRNGKey(i)
        key_s, key_w = jax.random.split(key)  # the simulator's own draws
        u = np.asarray(jax.random.uniform(key_s, (mg1.NUM_CUSTOMERS,)), np.float64)
        e = np.asarray(jax.random.exponential(key_w, (mg1.NUM_CUSTOMERS,)), np.float64)
        t = theta.astype(np.float64)
        expected = _mg1_numpy(t[0] + t[1] * u, e / t[2])
        got = np.asarray(mg1.simulator(key, jnp.asarray(theta)), np.float64)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-5)


def test_mg1_distribution_matches_numpy_monte_carlo():
    """Independent NumPy RNG, SNL's θ = (1, 5, 0.2): quantile summaries agree in distribution."""
    n = 4000
    rng = np.random.default_rng(1)
    sts = rng.uniform(1.0, 5.0, (n, 50))
    iats = rng.exponential(1 / 0.2, (n, 50))
    ref = np.array([_mg1_numpy(s, w) for s, w in zip(sts, iats)])
    got = np.asarray(_vmap_sim(mg1.simulator, mg1.TRUE_THETA, n), np.float64)
    assert np.all(np.diff(got, axis=1) >= 0) and np.all(got[:, 0] >= 1.0 - 1e-6)
    for j in range(5):
        assert stats.ks_2samp(got[:, j], ref[:, j]).pvalue > 1e-3, j


def test_mg1_edge_cases():
    key = jax.random.PRNGKey(0)
    x = mg1.simulator(key, jnp.array([1.0, 4.0, 0.0]))  # θ3 = 0 lies in the closed prior box
    assert np.all(np.isfinite(x)) and x[0] > 1e4  # inter-arrival times ~ Exp(rate 1e-8)
    for bad in ([-0.1, 4.0, 0.2], [1.0, -1.0, 0.2], [1.0, 4.0, -0.1]):
        assert np.all(np.isnan(mg1.simulator(key, jnp.array(bad))))
    # a degenerate service time U(2, 2) and very frequent arrivals: every δ is exactly 2
    np.testing.assert_allclose(mg1.simulator(key, jnp.array([2.0, 0.0, 1e4])), 2.0, rtol=1e-5)


# ---------------------------------------------------------------- Lotka–Volterra MJP


def _snl_summaries(xy):
    """SNL's ``Stats._calc_one_datapoint`` (without whitening), float64."""
    n = xy.shape[0]
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    mx, my = x.mean(), y.mean()
    s2x, s2y = x.var(ddof=1), y.var(ddof=1)
    x, y = (x - mx) / np.sqrt(s2x), (y - my) / np.sqrt(s2y)
    acx = [np.dot(x[:-lag], x[lag:]) / (n - 1) for lag in (1, 2)]
    acy = [np.dot(y[:-lag], y[lag:]) / (n - 1) for lag in (1, 2)]
    return np.array([mx, my, np.log(s2x + 1), np.log(s2y + 1)] + acx + acy + [np.dot(x, y) / (n - 1)])


def _paths(log_theta, n, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    path, valid = jax.jit(jax.vmap(lv.simulate_path, in_axes=(0, None)))(keys, jnp.asarray(log_theta, jnp.float32))
    return np.asarray(path, np.float64), np.asarray(valid)


def test_lv_pure_death_is_binomial():
    """Only predator deaths (rate θ2 X): X(t) ~ Binomial(50, exp(−θ2 t)) exactly, Y stays 100."""
    mu = 0.1
    path, valid = _paths([-30.0, math.log(mu), -30.0, -30.0], 4000)
    assert valid.all() and np.all(path[:, :, 1] == 100) and np.all(path[:, 0] == [50, 100])
    for k in (5, 50, 150):
        p = math.exp(-mu * 0.2 * k)
        counts = np.bincount(path[:, k, 0].astype(int), minlength=51)
        expected = stats.binom(50, p).pmf(np.arange(51)) * len(path)
        keep = expected > 5  # chi-square on the well-populated cells, the tails pooled
        obs = np.append(counts[keep], counts[~keep].sum())
        exp = np.append(expected[keep], expected[~keep].sum())
        assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3, k


def test_lv_yule_prey_is_negative_binomial():
    """Only prey births (rate θ3 Y): Y(t) − 100 ~ NegBin(100, exp(−θ3 t)) (Yule process)."""
    lam = 0.05
    path, valid = _paths([-30.0, -30.0, math.log(lam), -30.0], 4000, seed=1)
    assert valid.all() and np.all(path[:, :, 0] == 50)
    for k in (25, 150):
        q = math.exp(-lam * 0.2 * k)
        grown = path[:, k, 1] - 100
        dist = stats.nbinom(100, q)
        assert abs(grown.mean() - dist.mean()) < 5 * dist.std() / math.sqrt(len(grown))
        support = np.arange(int(grown.max()) + 1)
        ecdf = np.searchsorted(np.sort(grown), support, side="right") / len(grown)
        assert np.max(np.abs(ecdf - dist.cdf(support))) < 1.63 / math.sqrt(len(grown))  # KS, 1 %


def test_lv_linear_birth_death_moments():
    """Competing predator births (θ1 X Y, Y fixed at 100) and deaths (θ2 X): linear birth–death,
    E X(t) = n0 e^{(λ−μ)t}, Var X(t) = n0 (λ+μ)/(λ−μ) e^{(λ−μ)t} (e^{(λ−μ)t} − 1)."""
    lam, mu, n0 = 0.25, 0.2, 50
    path, valid = _paths([math.log(lam / 100), math.log(mu), -30.0, -30.0], 4000, seed=2)
    assert valid.all() and np.all(path[:, :, 1] == 100)
    for k in (50, 150):
        g = math.exp((lam - mu) * 0.2 * k)
        mean, var = n0 * g, n0 * (lam + mu) / (lam - mu) * g * (g - 1)
        x = path[:, k, 0]
        assert abs(x.mean() - mean) < 5 * math.sqrt(var / len(x)), k
        assert abs(x.var() / var - 1) < 0.15, k


def test_lv_summaries_match_snl_formula_and_path():
    """Streaming summaries = two-pass summaries of the path = SNL's NumPy formula (float64)."""
    theta = jnp.asarray(lv.TRUE_THETA)
    n = 200
    keys = jax.random.split(jax.random.PRNGKey(3), n)
    x = np.asarray(jax.jit(jax.vmap(lv.simulator, in_axes=(0, None)))(keys, theta), np.float64)
    path, valid = _paths(theta, n, seed=3)
    assert valid.mean() > 0.95
    assert np.array_equal(np.isnan(x).any(1), ~valid) and np.all(np.isnan(x[~valid]))
    ref = np.array([_snl_summaries(p) for p in path[valid]])
    np.testing.assert_allclose(x[valid], ref, rtol=1e-4, atol=1e-4)
    two_pass = np.asarray(jax.vmap(lv.summaries)(jnp.asarray(path[valid], jnp.float32)), np.float64)
    np.testing.assert_allclose(two_pass, ref, rtol=1e-4, atol=1e-4)


def test_lv_event_budget_and_extinction():
    key = jax.random.PRNGKey(0)
    # Predators die fast, prey grow at rate e² ≈ 7.4: e^{7.4 · 30} prey → far past 10,000 events.
    assert np.all(np.isnan(lv.simulator(key, jnp.array([-5.0, 2.0, 2.0, -5.0]))))
    path, valid = lv.simulate_path(key, jnp.array([-5.0, 2.0, 2.0, -5.0]))
    assert not valid
    # At θ* a run needs thousands of events: a budget of 100 makes it invalid.
    _, valid_small = lv.simulate_path(key, jnp.asarray(lv.TRUE_THETA), max_events=100)
    assert not valid_small
    # Prey eaten fast, then predators die out: absorbing (0, 0), a valid run.
    path, valid = lv.simulate_path(key, jnp.array([-5.0, 1.0, -5.0, 0.0]))
    assert valid and np.all(path[-1] == 0)
    assert np.all(np.isfinite(lv.simulator(key, jnp.array([-5.0, 1.0, -5.0, 0.0]))))
    assert np.all(np.isnan(lv.simulator(key, jnp.array([jnp.nan, 0.0, 0.0, 0.0]))))
    # simulate(..., on_invalid="drop") drops the aborted runs, "raise" reports them.
    with pytest.warns(UserWarning, match="non-finite"):
        bank = simulate(jax.random.PRNGKey(4), tasks.get("lotka_volterra_mjp"), 200, on_invalid="drop", progress=False)
    assert 100 < bank.num_simulations < 200 and np.all(np.isfinite(bank.x))


def _gillespie_numpy(rates, rng, max_events=lv.MAX_EVENTS):
    """Independent NumPy Gillespie, right-continuous record at t = 0.2 k; None past the budget."""
    state = np.array([50.0, 100.0])
    change = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])
    times = 0.2 * np.arange(151)
    out = np.empty((151, 2))
    t, k, events = 0.0, 0, 0
    while k < 151:
        xy = state[0] * state[1]
        prop = rates * np.array([xy, state[0], state[1], xy])
        total = prop.sum()
        t_next = t + rng.exponential(1 / total) if total > 0 else np.inf
        events += total > 0
        if events > max_events:  # as SNL: the event that crosses t = 30 counts
            return None
        while k < 151 and times[k] < t_next:
            out[k] = state
            k += 1
        if total > 0:
            state = state + change[rng.choice(4, p=prop / total)]
        t = t_next
    return out


@pytest.mark.slow
def test_lv_matches_numpy_gillespie_at_truth():
    rng = np.random.default_rng(0)
    rates = np.exp(lv.TRUE_THETA.astype(np.float64))
    ref = [_gillespie_numpy(rates, rng) for _ in range(400)]
    ref = np.array([_snl_summaries(p) for p in ref if p is not None])
    x = np.asarray(_vmap_sim(lv.simulator, lv.TRUE_THETA, 4000, seed=5), np.float64)
    x = x[np.isfinite(x).all(1)]
    for j in range(9):
        assert stats.ks_2samp(x[:, j], ref[:, j]).pvalue > 1e-3, j


# ---------------------------------------------------------------- Weinberg


def _weinberg_pdf(c, a):
    return 0.375 * (1 + c**2 + a * c)


def test_weinberg_asymmetry_and_window():
    a = float(weinberg.asymmetry(jnp.array([1.0])))
    assert a == pytest.approx(2 * math.tanh(10 * (86 - 90) / 90), rel=1e-6)
    assert a == pytest.approx(-0.8346, abs=1e-4)
    assert abs(float(weinberg.asymmetry(jnp.array([2.0])))) < 2  # positive density on the prior
    x = weinberg.simulator(jax.random.PRNGKey(0), jnp.array([3.0]))  # |A_FB| > 2: not a density
    assert np.isnan(x).all() and np.isnan(weinberg.log_likelihood(jnp.array([3.0]), jnp.zeros(1)))


@pytest.mark.parametrize("gf", [0.25, 1.0, 2.0])
def test_weinberg_simulator_is_exact_inverse_cdf(gf):
    a = float(weinberg.asymmetry(jnp.array([gf])))
    x = np.asarray(_vmap_sim(weinberg.simulator, [gf], 100_000, seed=int(10 * gf)), np.float64)[:, 0]
    assert np.all(np.abs(x) <= 1)
    cdf = lambda c: integrate.quad(_weinberg_pdf, -1, c, args=(a,))[0]
    assert stats.kstest(x, np.vectorize(cdf)).pvalue > 1e-3
    u = jnp.linspace(0.0, 1.0, 10_001)
    c = weinberg._inverse_cdf(u, jnp.float32(a))
    np.testing.assert_allclose(weinberg.cdf(c, a), u, atol=1e-6)


def test_weinberg_likelihood_is_normalised_density():
    for gf in (0.25, 1.0, 2.0):
        a = float(weinberg.asymmetry(jnp.array([gf])))
        f = lambda c, gf=gf: float(jnp.exp(weinberg.log_likelihood(jnp.array([gf]), jnp.array([c]))))
        assert integrate.quad(f, -1, 1)[0] == pytest.approx(1.0, abs=1e-6)
        c = np.linspace(-1, 1, 7)
        got = jax.vmap(lambda ci, gf=gf: weinberg.log_likelihood(jnp.array([gf]), ci[None]))(jnp.asarray(c))
        np.testing.assert_allclose(got, np.log(_weinberg_pdf(c, a)), rtol=1e-5, atol=1e-6)
    assert weinberg.log_likelihood(jnp.array([1.0]), jnp.array([1.5])) == -np.inf
    x_set = weinberg.OBSERVATION
    total = weinberg.log_likelihood(jnp.array([1.0]), jnp.asarray(x_set))
    np.testing.assert_allclose(total, np.log(_weinberg_pdf(x_set[:, 0].astype(np.float64), a=float(
        weinberg.asymmetry(jnp.array([1.0]))))).sum(), rtol=1e-5)


def _weinberg_grid_posterior(x_set):
    """NumPy float64 posterior of G_F on a fine grid: (grid, normalised density)."""
    g = np.linspace(0.25, 2.0, 200_001)
    a = 2 * math.tanh(10 * (2 * 43.0 - 90) / 90) * g
    c = x_set[:, 0].astype(np.float64)
    logp = np.log(1 + c[None] ** 2 + a[:, None] * c[None]).sum(1)
    p = np.exp(logp - logp.max())
    return g, p / integrate.trapezoid(p, g)


def test_weinberg_reference_posterior_matches_numpy_grid():
    task = tasks.get("weinberg")
    x_set = np.asarray(task.default_observation)
    n = 40_000
    s = np.asarray(jax.jit(task.reference_posterior, static_argnums=2)(jax.random.PRNGKey(0), x_set, n))
    assert s.shape == (n, 1) and np.all((s >= 0.25) & (s <= 2.0))
    g, p = _weinberg_grid_posterior(x_set)
    mean = integrate.trapezoid(g * p, g)
    sd = math.sqrt(integrate.trapezoid((g - mean) ** 2 * p, g))
    assert abs(s.mean() - mean) < 5 * sd / math.sqrt(n)
    assert s.std() == pytest.approx(sd, rel=0.03)
    cdf = integrate.cumulative_trapezoid(p, g, initial=0.0)
    assert stats.kstest(s[:, 0], lambda v: np.interp(v, g, cdf)).pvalue > 1e-3


def test_weinberg_iid_sampling_matches_reference():
    """The observation is a set: sample_posterior(iid=True) on the exact likelihood agrees."""
    task = tasks.get("weinberg")
    x_set = task.default_observation
    model = ExactLikelihood(task.log_likelihood, task.x_shape)
    out = sample_posterior(jax.random.PRNGKey(1), model, task.prior, x_set, iid=True, method="rwmh",
                           num_samples=4000, num_chains=20, num_warmup=300)  # fmt: skip
    g, p = _weinberg_grid_posterior(np.asarray(x_set))
    mean = integrate.trapezoid(g * p, g)
    sd = math.sqrt(integrate.trapezoid((g - mean) ** 2 * p, g))
    assert abs(float(out.samples.mean()) - mean) < 0.1 * sd
    assert float(out.samples.std()) == pytest.approx(sd, rel=0.1)


# ---------------------------------------------------------------- SLCP reference posterior


def _fold(theta):
    """(θ1, θ2, |θ3|, |θ4|, θ5): the coordinates that all four modes share."""
    theta = np.asarray(theta, np.float64)
    return np.concatenate([theta[:, :2], np.abs(theta[:, 2:4]), theta[:, 4:]], axis=1)


def test_slcp_reference_posterior_matches_importance_sampling():
    task = tasks.get("slcp")
    x_o = task.default_observation
    # Self-normalised importance sampling from the prior: 2e6 draws, ESS ≈ 285.
    theta = task.prior.sample(jax.random.PRNGKey(11), (2_000_000,))
    ll = np.asarray(jax.jit(jax.vmap(task.log_likelihood, in_axes=(0, None)))(theta, x_o), np.float64)
    w = np.exp(ll - ll.max())
    w /= w.sum()
    ess = 1 / np.sum(w**2)
    assert ess > 150
    folded = _fold(theta)
    mean = w @ folded
    sd = np.sqrt(w @ (folded - mean) ** 2)

    n = 4000
    s = np.asarray(task.reference_posterior(jax.random.PRNGKey(0), x_o, n))
    assert s.shape == (n, 5) and np.all(np.abs(s) <= 3)
    fs = _fold(s)
    np.testing.assert_array_less(np.abs(fs.mean(0) - mean), 4 * sd / math.sqrt(ess) + 4 * sd / math.sqrt(n / 5))
    np.testing.assert_allclose(fs.std(0), sd, rtol=0.2)
    # the four sign modes carry 1/4 each
    quadrant = (s[:, 2] > 0).astype(int) * 2 + (s[:, 3] > 0)
    frac = np.bincount(quadrant, minlength=4) / n
    np.testing.assert_array_less(np.abs(frac - 0.25), 5 * math.sqrt(0.25 * 0.75 / n))
    with pytest.raises(ValueError, match="shape"):
        task.reference_posterior(jax.random.PRNGKey(0), jnp.zeros(7), 10)
