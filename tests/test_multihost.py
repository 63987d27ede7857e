"""Two processes on CPU with ``jax.distributed`` train in lockstep and sample their shares.

Each process is started with the ``AALR_JAX_*`` environment variables (a localhost coordinator)
and calls :func:`aalr_jax.sharding.initialize_distributed`; CPU collectives go through gloo. Each
passes its rows of the bank (:func:`aalr_jax.sharding.process_rows`) to ``fit`` and
``fit_ensemble`` with the default mesh (both processes' devices), then samples its share of the
observations on its own device. A third process, alone, runs the same script on the whole bank
and all the shares; the results agree up to floating-point order.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

WORKER = r"""
import inspect, json, os, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from aalr_jax import sharding

# before anything starts JAX's backend (importing blackjax does, through aalr_jax.sampling)
started = sharding.initialize_distributed()  # AALR_JAX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID
import numpy as np
import aalr_jax
from aalr_jax.tasks import gaussian_linear
from aalr_jax.sampling import sample_posterior
from aalr_jax.train import fit, fit_ensemble
task = gaussian_linear.make(dim=2)
bank = aalr_jax.simulate(jax.random.PRNGKey(0), task, 1024, progress=False)  # every process: the same
mine = sharding.process_rows(1024)  # ... of which it passes its own rows
local = aalr_jax.SimulationBank(bank.theta[mine], bank.x[mine])
options = dict(batch_size=64, hidden_features=(16, 16), progress=False)
single = fit(jax.random.PRNGKey(1), local, max_epochs=3, **options)
ensemble = fit_ensemble(jax.random.PRNGKey(4), local, 2, max_epochs=1, **options)
obs = aalr_jax.simulate(jax.random.PRNGKey(2), task, 4, progress=False).x
local_only = {"mesh": False} if "mesh" in inspect.signature(sample_posterior).parameters else {}
shares = [jax.process_index()] if started else range(2)  # the reference runs both shares
means, stds = [], []
for p in shares:  # share p: observations process_rows(4, p, 2), key fold_in(key, p)
    rows = sharding.process_rows(4, p, 2)
    draws = sample_posterior(jax.random.fold_in(jax.random.PRNGKey(3), p), single.estimator, task.prior,
                             obs[rows], num_samples=200, num_chains=4, num_warmup=100, **local_only)
    means += np.asarray(draws.samples).mean(1).tolist()
    stds += np.asarray(draws.samples).std(1).tolist()
out = {
    "process_count": jax.process_count(),
    "device_count": jax.device_count(),
    "params": [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(single.estimator)],  # every network fit kept
    "train_loss": single.history.train_loss.tolist(),
    "validation_loss": single.history.validation_loss.tolist(),
    "ensemble_loss": ensemble.validation_loss,
    "means": means,
    "stds": stds,
}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(tmp_path, name: str, extra_env: dict) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AALR_JAX_") and k != "XLA_FLAGS"}
    env |= {"JAX_PLATFORMS": "cpu", **extra_env}
    out = str(tmp_path / f"{name}.json")
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-c", WORKER, out], env=env, stdout=log, stderr=subprocess.STDOUT), out


def _wait(procs, tmp_path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        for name, (proc, _) in procs.items():
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert rc == 0, f"{name} failed:\n" + (tmp_path / f"{name}.log").read_text()[-4000:]
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_processes_train_in_lockstep_and_agree_with_one(tmp_path):
    port = _free_port()
    procs = {f"process{i}": _launch(tmp_path, f"process{i}", {
        "AALR_JAX_COORDINATOR": f"localhost:{port}", "AALR_JAX_NUM_PROCESSES": "2", "AALR_JAX_PROCESS_ID": str(i)})
        for i in range(2)}
    procs["alone"] = _launch(tmp_path, "alone", {})
    _wait(procs, tmp_path, timeout=900)
    results = {name: json.loads(open(out).read()) for name, (_, out) in procs.items()}
    first, second, alone = results["process0"], results["process1"], results["alone"]
    assert (first["process_count"], first["device_count"]) == (2, 2)
    assert (alone["process_count"], alone["device_count"]) == (1, 1)
    for key in ("params", "train_loss", "validation_loss"):  # lockstep: the same numbers on both
        for a, b in zip(first[key], second[key]):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(first["params"], alone["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first["train_loss"], alone["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(first["validation_loss"], alone["validation_loss"], rtol=1e-5)
    np.testing.assert_allclose(first["ensemble_loss"], alone["ensemble_loss"], rtol=1e-5)
    assert first["ensemble_loss"] == second["ensemble_loss"]
    # each process's share, in process order: the same chains from estimators equal up to float
    # order, so the posterior means agree far within their Monte Carlo error
    shared = np.asarray(first["means"] + second["means"])
    assert np.all(np.abs(shared - np.asarray(alone["means"])) <= 0.1 * np.asarray(alone["stds"]))
