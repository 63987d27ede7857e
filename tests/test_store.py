"""Zarr bank stores: written chunk by chunk, resumed after SIGKILL to the same bank, foreign runs
refused, read lazily by ``load_bank`` (``.npz`` banks unchanged)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

import aalr_jax
from aalr_jax.data import save_bank, simulate
from aalr_jax.priors import box_uniform
from aalr_jax.store import ZarrBank, load_bank
from aalr_jax.types import SimulationBank

zarr = pytest.importorskip("zarr")

PRIOR = box_uniform(np.zeros(2, np.float32), np.ones(2, np.float32))
KEY = jax.random.PRNGKey(3)


def noisy(rng, theta):
    """Host simulator: x = (θ1, θ2, θ1 + θ2) + N(0, 0.1²), shape (3,)."""
    return np.append(theta, theta.sum()) + 0.1 * rng.normal(size=3)


def slow(rng, theta):
    """``noisy`` at 20 ms a call, so that a run can be killed half-way."""
    time.sleep(0.02)
    return noisy(rng, theta)


def as_np(bank):
    return np.asarray(bank.theta), np.asarray(bank.x)


def test_store_equals_in_memory_bank_and_loads_lazily(tmp_path):
    n = 103
    memory = simulate(KEY, (PRIOR, noisy), n, backend="local", progress=False)
    store = simulate(KEY, (PRIOR, noisy), n, backend="local", store=tmp_path / "b.zarr", chunk_size=10,
                     progress=False)
    assert isinstance(store, ZarrBank) and store.complete and store.num_chunks == 11
    # the same simulations whatever the chunking
    np.testing.assert_array_equal(as_np(store.to_memory())[0], as_np(memory)[0])
    np.testing.assert_array_equal(as_np(store.to_memory())[1], as_np(memory)[1])
    # x is θ plus noise: the noise is there and per-simulation
    resid = np.asarray(memory.x)[:, :2] - np.asarray(memory.theta)
    assert 0.05 < resid.std() < 0.2

    lazy = aalr_jax.load_bank(tmp_path / "b.zarr")
    assert isinstance(lazy, ZarrBank) and lazy.num_simulations == n
    assert isinstance(lazy.x, zarr.Array)  # not read until sliced
    np.testing.assert_array_equal(lazy.x[40:60], np.asarray(memory.x)[40:60])
    assert lazy.config["num_simulations"] == n and lazy.config["chunk_size"] == 10
    assert lazy.config["simulator"].endswith("noisy") and lazy.config["seed"] == [0, 3]
    assert dict(zarr.open_group(str(tmp_path / "b.zarr")).attrs)["completed_chunks"] == list(range(11))

    save_bank(str(tmp_path / "b.npz"), memory)  # .npz keeps working
    npz = load_bank(str(tmp_path / "b.npz"))
    assert isinstance(npz, SimulationBank)
    np.testing.assert_array_equal(np.asarray(npz.x), np.asarray(memory.x))


def test_foreign_configuration_is_refused(tmp_path):
    path = tmp_path / "b.zarr"
    simulate(KEY, (PRIOR, noisy), 30, backend="local", store=path, chunk_size=10, progress=False)
    before = ZarrBank.open(path).to_memory()
    for change, what in [
        (dict(rng_key=jax.random.PRNGKey(4)), "seed"),
        (dict(num_simulations=31), "num_simulations"),
        (dict(problem=(PRIOR, slow)), "simulator"),
        (dict(problem=(box_uniform(np.zeros(2, np.float32), 2 * np.ones(2, np.float32)), noisy)), "prior"),
        (dict(chunk_size=5), "chunk_size"),
    ]:
        args = dict(rng_key=KEY, problem=(PRIOR, noisy), num_simulations=30, chunk_size=10) | change
        with pytest.raises(ValueError, match=f"store=.*holds a different run.*{what}: store has"):
            simulate(args["rng_key"], args["problem"], args["num_simulations"], backend="local", store=path,
                     chunk_size=args["chunk_size"], progress=False)
    after = ZarrBank.open(path).to_memory()
    np.testing.assert_array_equal(np.asarray(after.x), np.asarray(before.x))  # left untouched
    # the same run again is a no-op resume; chunk_size=None adopts the store's
    again = simulate(KEY, (PRIOR, noisy), 30, backend="local", store=path, progress=False)
    np.testing.assert_array_equal(np.asarray(again.to_memory().x), np.asarray(before.x))
    with pytest.raises(ValueError, match="not an aalr_jax bank store"):
        zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
        load_bank(tmp_path / "other.zarr")


KILLED_RUN = textwrap.dedent("""
    import sys, jax
    sys.path.insert(0, {tests!r})
    from test_store import KEY, PRIOR, slow
    from aalr_jax.data import simulate
    simulate(KEY, (PRIOR, slow), 200, backend="local", store={path!r}, chunk_size=10, progress=False)
""")


def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_bank(tmp_path):
    path = str(tmp_path / "killed.zarr")
    script = KILLED_RUN.format(tests=str(pathlib.Path(__file__).parent), path=path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pathlib.Path(__file__).parents[1]),
                                                      os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 240
        done = []
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                done = dict(zarr.open_group(path, mode="r").attrs)["completed_chunks"]
            except Exception:  # not created yet
                continue
            if len(done) >= 3:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = ZarrBank.open(path)
    assert 3 <= len(partial.completed_chunks) < partial.num_chunks, partial.completed_chunks

    resumed = simulate(KEY, (PRIOR, slow), 200, backend="local", store=path, progress=False)
    reference = simulate(KEY, (PRIOR, noisy), 200, backend="local", progress=False)
    assert resumed.complete and resumed.num_simulations == 200 and resumed.failures == []
    np.testing.assert_array_equal(np.asarray(resumed.to_memory().theta), np.asarray(reference.theta))
    np.testing.assert_array_equal(np.asarray(resumed.to_memory().x), np.asarray(reference.x))


CALLS = {"n": 0, "interrupt_at": None}


def interruptible(rng, theta):
    """``noisy``, raising KeyboardInterrupt (a Ctrl-C) at call ``CALLS["interrupt_at"]``."""
    CALLS["n"] += 1
    if CALLS["interrupt_at"] is not None and CALLS["n"] >= CALLS["interrupt_at"]:
        raise KeyboardInterrupt
    return noisy(rng, theta)


def test_ctrl_c_leaves_a_resumable_store(tmp_path):
    path = tmp_path / "c.zarr"
    CALLS.update(n=0, interrupt_at=45)
    with pytest.raises(KeyboardInterrupt):
        simulate(KEY, (PRIOR, interruptible), 100, backend="local", store=path, chunk_size=10, progress=False)
    assert ZarrBank.open(path).completed_chunks == [0, 1, 2, 3]
    CALLS.update(interrupt_at=None)
    resumed = simulate(KEY, (PRIOR, interruptible), 100, backend="local", store=path, progress=False)
    reference = simulate(KEY, (PRIOR, noisy), 100, backend="local", progress=False)
    np.testing.assert_array_equal(np.asarray(resumed.to_memory().x), np.asarray(reference.x))


def test_jax_task_in_a_store_equals_the_local_backend(tmp_path):
    task = aalr_jax.tasks.get("two_moons")
    store = simulate(KEY, task, 250, backend="jax", store=tmp_path / "t.zarr", chunk_size=50, progress=False)
    local = simulate(KEY, task, 250, backend="local", chunk_size=125, progress=False)  # other chunks, same bank
    np.testing.assert_array_equal(np.asarray(store.to_memory().x), np.asarray(local.x))
    assert store.config["contract"] == "jax" and store.config["simulator"] == "task:two_moons"
    assert np.unique(np.asarray(local.x), axis=0).shape[0] == 250  # 250 distinct simulations


def test_bad_arguments_name_themselves(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of .* got 'spark'"):
        simulate(KEY, (PRIOR, noisy), 10, backend="spark")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer or None, got 0"):
        simulate(KEY, (PRIOR, noisy), 10, backend="local", chunk_size=0)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        simulate(KEY, (PRIOR, noisy), 10, backend="local", timeout=0)
    with pytest.raises(ValueError, match="client and workers apply to backend='dask'"):
        simulate(KEY, (PRIOR, noisy), 10, backend="local", workers=2)


def test_cli_simulate_on_a_cluster_needs_a_zarr_store(capsys):
    from aalr_jax import cli

    assert cli.main(["simulate", "--num-simulations", "10", "--workers", "2", "--quiet"]) == 2
    assert "--store BANK.zarr is needed to simulate on a cluster, got None" in capsys.readouterr().err
    assert cli.main(["simulate", "--num-simulations", "10", "--store", "bank.npz", "--quiet"]) == 2
    assert "--store BANK.zarr is needed to simulate on a cluster, got 'bank.npz'" in capsys.readouterr().err
