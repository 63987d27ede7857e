"""Data-parallel training on 8 CPU devices: the same numbers as one device, arrays really split.

JAX fixes its device count when it starts, so each test runs a snippet in a fresh Python with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and reads back the JSON it prints last.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

PRELUDE = """
import json
import jax, numpy as np, optax
import aalr_jax
from aalr_jax import tasks
from aalr_jax.train import build_trainer, fit, fit_ensemble
assert jax.device_count() == 8, jax.devices()
bank = aalr_jax.simulate(jax.random.PRNGKey(0), tasks.get("gaussian_linear"), 1000, progress=False)
"""


def run_on_eight_devices(snippet: str, timeout: float = 240) -> dict:
    """Run ``PRELUDE + snippet`` with 8 host devices; the JSON of its last line of output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AALR_JAX_")}
    env |= {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(snippet)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_eight_devices_fit_as_one():
    """fit with mesh=8 gives one device's parameters and losses up to float order."""
    out = run_on_eight_devices("""
        runs = {}
        for mesh in (False, 8):
            single = fit(jax.random.PRNGKey(1), bank, max_epochs=2, mesh=mesh, batch_size=64, hidden_features=(16, 16),
                         progress=False)
            runs[str(mesh)] = {
                "params": [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(single.estimator)],
                "devices": sorted({len(a.sharding.device_set) for a in jax.tree.leaves(single.estimator)}),
                "train_loss": single.history.train_loss.tolist(),
                "validation_loss": single.history.validation_loss.tolist(),
                "best_epoch": single.history.best_epoch,
            }
        print(json.dumps(runs))
    """)
    one, eight = out["False"], out["8"]
    assert one["devices"] == eight["devices"] == [1]  # the estimator comes back on one device
    for a, b in zip(one["params"], eight["params"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eight["train_loss"], one["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(eight["validation_loss"], one["validation_loss"], rtol=1e-5)
    assert eight["best_epoch"] == one["best_epoch"]


def test_eight_devices_fit_an_ensemble_as_one():
    """fit_ensemble with mesh=8 (each member data-parallel) gives one device's losses."""
    out = run_on_eight_devices("""
        runs = {}
        for mesh in (False, 8):
            result = fit_ensemble(jax.random.PRNGKey(2), bank, 2, max_epochs=1, mesh=mesh, batch_size=64,
                                  hidden_features=(16, 16), progress=False)
            runs[str(mesh)] = [result.validation_loss] + [h.validation_loss.tolist() for h in result.histories]
        print(json.dumps(runs))
    """)
    np.testing.assert_allclose(out["8"][0], out["False"][0], rtol=1e-5)
    np.testing.assert_allclose(out["8"][1:], out["False"][1:], rtol=1e-5)


def test_batches_are_split_and_state_replicated():
    """Inside a trainer on 8 devices: each minibatch has batch_size / 8 rows per device, the
    parameters, optimizer state and average are whole on every device, gradients are all-reduced."""
    out = run_on_eight_devices("""
        from aalr_jax.nn import NetworkConfig, init_estimator, standardization_from
        from aalr_jax.train import _minibatches
        from aalr_jax.sharding import resolve_mesh
        mesh = resolve_mesh(8)
        config = NetworkConfig(theta_dim=10, x_shape=(10,), hidden_features=(16,)).validate()
        estimator = init_estimator(jax.random.PRNGKey(1), config, standardization_from(bank.theta, bank.x))
        trainer = build_trainer(optax.adam(1e-3), 64, mesh=mesh)
        state = trainer.init(estimator)
        key = jax.random.PRNGKey(2)
        after, info = trainer.epoch(key, state, bank)
        batches = jax.jit(lambda k, b: _minibatches(k, b, 64, mesh))(key, bank)
        leaves = jax.tree.leaves((state, after))
        hlo = trainer.epoch.lower(key, state, bank).compile().as_text()
        print(json.dumps({
            "state_replicated": all(a.sharding.is_fully_replicated and len(a.sharding.device_set) == 8
                                    for a in leaves),
            "batch_spec": [str(p) for p in batches[0].sharding.spec],
            "batch_shape": list(batches[0].shape),
            "shard_shapes": sorted({tuple(s.data.shape) for s in batches[0].addressable_shards}),
            "shard_devices": len(batches[0].sharding.device_set),
            "all_reduce": "all-reduce" in hlo,
            "loss": float(info.loss),
        }))
    """)
    assert out["state_replicated"]
    assert out["batch_spec"] == ["None", "devices"]
    assert out["batch_shape"] == [1000 // 64, 64, 10]
    assert out["shard_shapes"] == [[1000 // 64, 8, 10]] and out["shard_devices"] == 8
    assert out["all_reduce"] and np.isfinite(out["loss"])


def test_batch_size_must_split_over_the_devices(tmp_path):
    """An explicit batch size that 8 devices cannot split is refused by name; the default batch
    size is rounded down to a multiple of the devices; a Zarr store streams onto 8 devices as onto one."""
    out = run_on_eight_devices("""
        store = aalr_jax.simulate(jax.random.PRNGKey(0), tasks.get("two_moons"), 1200, store=STORE,
                                  chunk_size=200, progress=False)
        streamed = [fit(jax.random.PRNGKey(1), store, batch_size=64, max_epochs=2, mesh=mesh, hidden_features=(8,),
                        progress=False).history.validation_loss.tolist() for mesh in (False, 8)]
        errors = {}
        for name, call in {
            "fit": lambda: fit(jax.random.PRNGKey(1), bank, batch_size=60, mesh=8, progress=False),
            "trainer": lambda: build_trainer(optax.adam(1e-3), 60, mesh=8),
        }.items():
            try:
                call()
            except ValueError as err:
                errors[name] = str(err)
        three = fit(jax.random.PRNGKey(1), bank, max_epochs=1, mesh=3, hidden_features=(8,), progress=False)
        print(json.dumps({"errors": errors, "batch_size_on_3": three.history.batch_size, "streamed": streamed}))
    """.replace("STORE", repr(str(tmp_path / "bank.zarr"))))
    for message in out["errors"].values():
        assert message.startswith("batch_size: expected a multiple of the number of devices (8)")
        assert "got 60" in message
    assert set(out["errors"]) == {"fit", "trainer"}
    assert out["batch_size_on_3"] == 63  # default_batch_size(900) = 64, rounded down to 3 · 21
    np.testing.assert_allclose(out["streamed"][1], out["streamed"][0], rtol=1e-5)
