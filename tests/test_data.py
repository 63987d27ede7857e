"""Simulation banks: chunked simulation, invalid simulations, user problems, files."""

import os

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


def test_bad_arguments_are_refused_before_simulating():
    problem = (USER_PRIOR, gaussian_simulator)
    key = jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match="chunk_size must be an integer, got 1.5"):
        simulate(key, problem, 10, chunk_size=1.5, progress=False)
    with pytest.raises(ValueError, match="num_simulations must be a positive integer, got 0"):
        simulate(key, problem, 0, progress=False)
    with pytest.raises(TypeError, match=r"rng_key must be a JAX PRNG key, got the integer 0; pass jax.random.PRNGKey\(0\)"):
        simulate(0, problem, 10, progress=False)
    with pytest.raises(TypeError, match="simulator must return real numbers.*complex64"):
        simulate(key, (USER_PRIOR, lambda k, t: t.astype(jnp.complex64)), 10, progress=False)
    with pytest.raises(TypeError, match="simulator must return real numbers.*bool"):
        simulate(key, (USER_PRIOR, lambda k, t: t > 0), 10, progress=False)


def test_an_all_invalid_bank_is_an_error_even_when_dropping():
    always_nan = lambda k, t: jnp.full((2,), jnp.nan)
    with pytest.raises(ValueError, match="10 of 10 simulations returned non-finite values.*no valid simulation"):
        simulate(jax.random.PRNGKey(0), (USER_PRIOR, always_nan), 10, on_invalid="drop", progress=False)
    half = lambda k, t: jnp.where(t[0] > 0.5, jnp.nan, 1.0) * t
    with pytest.warns(UserWarning, match="dropped"):
        bank = simulate(jax.random.PRNGKey(0), (USER_PRIOR, half), 200, on_invalid="drop", progress=False)
    assert 0 < bank.num_simulations < 200 and np.all(np.asarray(bank.theta[:, 0]) <= 0.5)


def test_a_bank_records_its_task_and_prior_and_follows_the_umask(tmp_path):
    from aalr_jax.data import describe_prior, load_bank_metadata

    task = tasks.get("two_moons")
    bank = simulate(jax.random.PRNGKey(0), task, 100, progress=False)
    metadata = {"task": "two_moons", "prior": describe_prior(task.prior)}
    old = os.umask(0o022)
    try:
        save_bank(str(tmp_path / "b.npz"), bank, metadata=metadata)
    finally:
        os.umask(old)
    assert (tmp_path / "b.npz").stat().st_mode & 0o777 == 0o644  # banks were written 0600
    assert load_bank_metadata(str(tmp_path / "b.npz")) == metadata
    assert metadata["prior"]["base"] == {"type": "Uniform", "params": {"high": [1.0, 1.0], "low": [-1.0, -1.0]}}
    np.testing.assert_array_equal(load_bank(str(tmp_path / "b.npz")).x, bank.x)
    np.savez(tmp_path / "plain.npz", theta=np.zeros((3, 1)), x=np.ones((3, 2)))  # a bank without a header
    assert load_bank_metadata(str(tmp_path / "plain.npz")) == {}
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a simulation bank.*one array"):
        load_bank(str(tmp_path / "one.npy"))
    with pytest.raises(FileNotFoundError, match="bank file not found"):
        load_bank(str(tmp_path / "missing.npz"))
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_bank(str(tmp_path / "c.npz"), bank, metadata={"prior": object()})


KILLED_WRITER = """
import sys
import numpy as np
from aalr_jax.data import save_bank
from aalr_jax.types import SimulationBank
bank = SimulationBank(np.zeros((1 << 19, 2), np.float32), np.ones((1 << 19, 4), np.float32))
i = 0
while True:
    i += 1
    save_bank(sys.argv[1], bank, metadata={"version": i})
    print(i, flush=True)
"""


def test_save_bank_killed_midway_leaves_no_temporary_file(tmp_path):
    """save_bank used a named temporary file (tmp*.npz), orphaned by a kill."""
    import signal
    import subprocess
    import sys
    import time

    from aalr_jax.data import load_bank_metadata

    target = tmp_path / "bank.npz"
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"1"
        time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert os.listdir(tmp_path) == ["bank.npz"]
    assert load_bank_metadata(str(target))["version"] >= 1 and load_bank(str(target)).num_simulations == 1 << 19
