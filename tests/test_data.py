"""Simulation banks: chunked simulation, invalid simulations, user problems, files."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from aalr_jax import priors, simulate, tasks
from aalr_jax.data import SimulationBank, load_bank, save_bank, split_bank


def gaussian_simulator(key, theta):
    return theta + 0.1 * jax.random.normal(key, theta.shape)


USER_PRIOR = priors.independent([dist.Uniform(0.0, 1.0), dist.Normal(0.0, 1.0)])


def test_user_prior_and_simulator_work_like_a_task():
    bank = simulate(jax.random.PRNGKey(0), (USER_PRIOR, gaussian_simulator), 5000, progress=False)
    assert bank.theta.shape == (5000, 2) and bank.x.shape == (5000, 2)
    assert bank.theta.dtype == jnp.float32
    residual = np.asarray(bank.x - bank.theta)
    np.testing.assert_allclose(residual.std(0), 0.1, rtol=0.05)
    np.testing.assert_allclose(residual.mean(0), 0.0, atol=0.01)
    assert np.all((np.asarray(bank.theta[:, 0]) >= 0) & (np.asarray(bank.theta[:, 0]) <= 1))


def test_chunking_does_not_change_the_bank():
    task = tasks.get("two_moons")
    a = simulate(jax.random.PRNGKey(1), task, 1000, chunk_size=1000, progress=False)
    b = simulate(jax.random.PRNGKey(1), task, 1000, chunk_size=300, progress=False)  # padded last chunk
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_allclose(a.x, b.x, atol=1e-6)
    c = simulate(jax.random.PRNGKey(2), task, 1000, progress=False)
    assert not np.allclose(a.x, c.x)


def nan_simulator(key, theta):
    x = gaussian_simulator(key, theta)
    return jnp.where(theta[1] > 1.5, jnp.nan, x)


def test_non_finite_simulations_raise_or_are_dropped():
    with pytest.raises(ValueError, match=r"\d+ of 2000 simulations returned non-finite values \(first at indices \["):
        simulate(jax.random.PRNGKey(0), (USER_PRIOR, nan_simulator), 2000, progress=False)
    with pytest.warns(UserWarning, match="dropped"):
        bank = simulate(jax.random.PRNGKey(0), (USER_PRIOR, nan_simulator), 2000, on_invalid="drop", progress=False)
    expected = int((np.asarray(USER_PRIOR.sample(jax.random.split(jax.random.PRNGKey(0))[0], (2000,)))[:, 1] > 1.5).sum())
    assert bank.num_simulations == 2000 - expected and expected > 0
    assert np.isfinite(np.asarray(bank.x)).all() and np.all(np.asarray(bank.theta[:, 1]) <= 1.5)


@pytest.mark.parametrize(
    "problem, match, error",
    [
        ((USER_PRIOR, lambda k, t: jnp.sum(t)), r"shape \(m,\)", ValueError),
        ((USER_PRIOR, lambda k, t: (t, t)), "one array", TypeError),
        ((USER_PRIOR, lambda t: t), r"simulator\(rng_key, theta\) failed", TypeError),
        (("prior", gaussian_simulator), "numpyro", TypeError),
        ((dist.Normal(jnp.zeros(2), 1.0), gaussian_simulator), "event_shape", ValueError),
        (object(), "Task or a \\(prior, simulator\\) pair", TypeError),
    ],
)
def test_bad_problems_are_named(problem, match, error):
    with pytest.raises(error, match=match):
        simulate(jax.random.PRNGKey(0), problem, 10, progress=False)


def test_task_simulator_shape_is_checked():
    task = tasks.get("two_moons")
    from dataclasses import replace

    wrong = replace(task, simulator=lambda k, t: jnp.zeros(3))
    with pytest.raises(ValueError, match=r"returned shape \(3,\) for one theta, expected \(2,\)"):
        simulate(jax.random.PRNGKey(0), wrong, 10, progress=False)


def test_bad_counts():
    with pytest.raises(ValueError, match="num_simulations must be a positive integer"):
        simulate(jax.random.PRNGKey(0), tasks.get("two_moons"), 0, progress=False)
    with pytest.raises(ValueError, match="on_invalid"):
        simulate(jax.random.PRNGKey(0), tasks.get("two_moons"), 10, on_invalid="ignore", progress=False)


def test_split_and_files(tmp_path):
    bank = simulate(jax.random.PRNGKey(0), tasks.get("two_moons"), 1000, progress=False)
    train, val = split_bank(jax.random.PRNGKey(1), bank, 0.2)
    assert train.num_simulations == 800 and val.num_simulations == 200
    both = np.sort(np.concatenate([np.asarray(train.theta[:, 0]), np.asarray(val.theta[:, 0])]))
    np.testing.assert_array_equal(both, np.sort(np.asarray(bank.theta[:, 0])))
    path = tmp_path / "bank.npz"
    save_bank(str(path), bank)
    loaded = load_bank(str(path))
    np.testing.assert_array_equal(loaded.theta, bank.theta)
    np.testing.assert_array_equal(loaded.x, bank.x)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a simulation bank"):
        load_bank(str(tmp_path / "junk.npz"))
    assert isinstance(loaded, SimulationBank)


def test_repeated_simulation_does_not_recompile():
    from aalr_jax.data import _batched

    task = tasks.get("two_moons")
    simulate(jax.random.PRNGKey(0), task, 500, progress=False)
    before = _batched(task.simulator)._cache_size()
    simulate(jax.random.PRNGKey(1), task, 500, progress=False)
    assert _batched(task.simulator)._cache_size() == before
