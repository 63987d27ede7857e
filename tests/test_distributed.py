"""``simulate(backend="dask")`` on a real LocalCluster of 2 single-threaded worker processes.

The bank equals a 1-worker run and ``backend="local"`` to the bit; raising, NaN-returning and hanging
simulations are recorded with their θ and follow ``on_invalid``; an interrupted Dask run cancels
its tasks and resumes to the same bank; the CLI runs on a scheduler address; a NumPy M/G/1
simulator (written as a user would) goes end to end and its posterior moves towards the truth.
"""

from __future__ import annotations

import sys
import time

import cloudpickle
import jax
import numpy as np
import pytest

import aalr_jax
from aalr_jax import cli, tasks
from aalr_jax.data import simulate
from aalr_jax.distributed import default_chunk_size
from aalr_jax.priors import box_uniform
from aalr_jax.store import ZarrBank

distributed = pytest.importorskip("dask.distributed")

# The workers cannot import this test module: its simulators travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PRIOR = box_uniform(np.zeros(2, np.float32), np.ones(2, np.float32))
KEY = jax.random.PRNGKey(11)


def noisy(rng, theta):
    """x = (θ1, θ2, θ1 + θ2) + N(0, 0.1²): (3,)."""
    return np.append(theta, theta.sum()) + 0.1 * rng.normal(size=3)


def flaky(rng, theta):
    """``noisy`` that raises for θ1 > 0.85, returns NaN for θ2 > 0.85 and hangs for θ1 < 0.08."""
    if theta[0] > 0.85:
        raise RuntimeError(f"solver diverged at {theta[0]:.3f}")
    if theta[1] > 0.85:
        return np.full(3, np.nan)
    if theta[0] < 0.08:
        time.sleep(3.0)
    return noisy(rng, theta)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        yield c


def arrays(bank):
    return np.asarray(bank.theta), np.asarray(bank.x)


def test_bank_is_the_same_on_two_workers_one_worker_and_locally(client):
    n = 150
    local = arrays(simulate(KEY, (PRIOR, noisy), n, backend="local", progress=False))
    two = arrays(simulate(KEY, (PRIOR, noisy), n, backend="dask", client=client, progress=False))
    one = arrays(simulate(KEY, (PRIOR, noisy), n, backend="dask", workers=1, progress=False))  # its own cluster
    assert default_chunk_size(n, 1, "host") != default_chunk_size(n, 2, "host")  # chunked differently
    for other in (two, one):
        np.testing.assert_array_equal(other[0], local[0])
        np.testing.assert_array_equal(other[1], local[1])
    another_key = arrays(simulate(jax.random.PRNGKey(12), (PRIOR, noisy), n, backend="local", progress=False))
    assert not np.allclose(another_key[1], local[1])
    assert 0.05 < (local[1][:, :2] - local[0]).std() < 0.2  # noise drawn per simulation


def test_failures_are_recorded_with_their_theta(client, tmp_path):
    n = 80
    with pytest.raises(ValueError, match=r"simulations failed: #\d+ theta=\[") as raised:
        simulate(KEY, (PRIOR, flaky), n, backend="dask", client=client, timeout=0.5, progress=False)
    assert "pass on_invalid='drop'" in str(raised.value)

    with pytest.warns(UserWarning, match="simulations failed.*dropped"):
        store = simulate(KEY, (PRIOR, flaky), n, backend="dask", client=client, timeout=0.5, on_invalid="drop",
                         store=tmp_path / "f.zarr", progress=False)
    theta = np.asarray(store.theta[:])
    raises, nans = theta[:, 0] > 0.85, (theta[:, 0] <= 0.85) & (theta[:, 1] > 0.85)
    hangs = ~raises & ~nans & (theta[:, 0] < 0.08)
    assert raises.any() and nans.any() and hangs.any()
    by_index = {f["index"]: f for f in store.failures}
    assert set(by_index) == set(np.flatnonzero(raises | nans | hangs).tolist())
    for i, f in by_index.items():
        np.testing.assert_allclose(f["theta"], theta[i], rtol=1e-6)  # the θ that failed
        expected = ("RuntimeError: solver diverged" if raises[i] else
                    "non-finite" if nans[i] else "SimulationTimeout: no result within timeout=0.5 s")
        assert expected in f["error"], f
    # the valid ones are exactly the simulations of a clean run at the same indices
    clean = arrays(simulate(KEY, (PRIOR, noisy), n, backend="local", progress=False))
    valid = store.valid_mask()
    assert store.num_simulations == valid.sum() == n - len(by_index)
    np.testing.assert_array_equal(np.asarray(store.x[:])[valid], clean[1][valid])
    assert np.isnan(np.asarray(store.x[:])[~valid]).all()


def test_interrupted_dask_run_cancels_and_resumes(client, tmp_path, monkeypatch):
    path = tmp_path / "i.zarr"
    write = ZarrBank.write_chunk
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C while results arrive
        return write(self, *args, **kwargs)

    monkeypatch.setattr(ZarrBank, "write_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simulate(KEY, (PRIOR, noisy), 200, backend="dask", client=client, store=path, chunk_size=10, progress=False)
    monkeypatch.setattr(ZarrBank, "write_chunk", write)
    assert len(ZarrBank.open(path).completed_chunks) == 3
    deadline = time.monotonic() + 30
    while client.processing() and any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(client.processing().values())  # nothing left running for the cancelled run
    resumed = simulate(KEY, (PRIOR, noisy), 200, backend="dask", client=client, store=path, progress=False)
    reference = arrays(simulate(KEY, (PRIOR, noisy), 200, backend="local", progress=False))
    np.testing.assert_array_equal(np.asarray(resumed.to_memory().x), reference[1])


def test_cli_simulates_into_a_store_on_a_scheduler_and_trains_from_it(client, tmp_path, capsys):
    store = str(tmp_path / "cli.zarr")
    args = ["simulate", "--task", "two_moons", "--num-simulations", "640", "--store", store,
            "--scheduler", client.scheduler.address, "--quiet"]
    assert cli.main(args) == 0
    assert cli.main(args) == 0  # resuming a complete store does nothing and agrees
    bank = ZarrBank.open(store)
    assert bank.complete and bank.num_simulations == 640 and bank.config["simulator"] == "task:two_moons"
    in_process = simulate(cli._key(cli.build_parser().parse_args(args), "simulate"), tasks.get("two_moons"), 640,
                          backend="local", progress=False)
    np.testing.assert_array_equal(np.asarray(bank.to_memory().x), np.asarray(in_process.x))
    assert cli.main(["train", "--bank", store, "--output", str(tmp_path / "trained"), "--max-epochs", "2",
                     "--hidden", "16,16", "--quiet"]) == 0
    assert "trained 4 networks" in capsys.readouterr().out  # fit's choice on 576 training simulations
    assert cli.main(["simulate", "--task", "two_moons", "--store", store, "--scheduler", "tcp://x:1",
                     "--workers", "2", "--quiet"]) == 2  # --workers sizes a local cluster only


# ----------------------------------------------------------------------------- M/G/1 in NumPy


def mg1_numpy(rng, theta):
    """M/G/1 queue as a user writes it: θ = (θ1, θ2 − θ1, θ3); 5 quantiles of 50 inter-departure times."""
    low, width, rate = (float(t) for t in theta)
    service = rng.uniform(low, low + width, size=50)
    arrivals = np.cumsum(rng.exponential(1.0 / max(rate, 1e-8), size=50))
    departures = np.empty(50)
    last = 0.0
    for i in range(50):
        last = service[i] + max(arrivals[i], last)
        departures[i] = last
    return np.percentile(np.diff(departures, prepend=0.0), [0, 25, 50, 75, 100])


@pytest.mark.slow
def test_numpy_mg1_end_to_end_on_dask(client, tmp_path):
    task = tasks.get("mg1")  # the prior box on (θ1, θ2 − θ1, θ3) and the truth; the simulator is ours
    store = simulate(KEY, (task.prior, mg1_numpy), 2000, backend="dask", client=client,
                     store=tmp_path / "mg1.zarr", progress=False)
    assert store.complete and store.num_simulations == 2000 and store.config["contract"] == "host"
    truth = np.asarray(task.true_theta)
    x_obs = mg1_numpy(np.random.default_rng(5), truth).astype(np.float32)
    estimator, history = aalr_jax.fit(jax.random.PRNGKey(1), store, max_epochs=30, batch_size=64,
                                      learning_rate=3e-3, hidden_features=(64, 64), progress=False)
    assert history.validation_loss.min() < 0.85 * np.log(4)  # below chance, 2 log 2 for the pair loss
    post = aalr_jax.sample_posterior(jax.random.PRNGKey(2), estimator, task.prior, x_obs, method="rwmh",
                                     num_samples=1000, num_chains=8, num_warmup=100)
    prior_mean = np.asarray(task.prior.mean)
    post_mean = np.asarray(post.samples).mean(0)
    scale = np.asarray(task.prior.variance) ** 0.5
    # the minimum service time θ1 is pinned by the smallest inter-departure time; the whole vector moves too
    assert abs(post_mean[0] - truth[0]) < 0.3 * abs(prior_mean[0] - truth[0])
    assert np.linalg.norm((post_mean - truth) / scale) < 0.6 * np.linalg.norm((prior_mean - truth) / scale)
