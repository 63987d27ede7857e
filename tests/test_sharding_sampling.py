"""Sampling over 8 forced CPU devices against one device and the exact posterior.

JAX fixes the number of devices when it starts, and this pytest process has one: each test runs its
body in a fresh Python with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and reads back the
JSON it prints. The target is gaussian_linear (d = 2) with its exact likelihood, whose posterior for
one observation ``x`` is ``N(x/2, 0.05·I)``.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = """
import json, warnings
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding
from aalr_jax import sample_posterior
from aalr_jax.sampling import ExactLikelihood
from aalr_jax.tasks import gaussian_linear
assert jax.device_count() == 8, jax.devices()
TASK = gaussian_linear.make(dim=2)
MODEL = ExactLikelihood(gaussian_linear.log_likelihood, TASK.x_shape)
X = jnp.array([[0.3, -0.4], [-0.2, 0.5]])

def layout(a):
    s = a.sharding
    return {"named": isinstance(s, NamedSharding), "devices": len(s.device_set),
            "spec": [None if p is None else str(p) for p in getattr(s, "spec", ())],
            "mesh": dict(s.mesh.shape) if isinstance(s, NamedSharding) else None,
            "shard": list(s.shard_shape(a.shape))}

def run(x, mesh, **kw):
    opts = dict(method="rwmh", num_samples=512, num_chains=32, num_warmup=100)
    opts.update(kw)
    return sample_posterior(jax.random.PRNGKey(3), MODEL, TASK.prior, x, mesh=mesh, **opts)
"""


def run_in_8_devices(body: str, timeout: float = 300) -> dict:
    """Run ``PRELUDE + body`` with 8 forced CPU devices; ``body`` prints one JSON line last."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = PRELUDE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_observation_chains_split_over_8_devices_match_one_device_and_exact_posterior():
    # num_warmup=0: nothing adapts, so the run is not chaotic and the draws of the two layouts agree
    # to rounding; the independence proposal (from the ratio-weighted starts) makes the chains mix
    out = run_in_8_devices("""
        one, eight = run(X[0], False, num_warmup=0), run(X[0], 8, num_warmup=0)
        print(json.dumps({
            "one": np.asarray(one.samples).tolist(), "eight": np.asarray(eight.samples).tolist(),
            "ess": np.asarray(eight.ess).tolist(), "samples": layout(eight.samples),
            "chains": layout(eight.chains), "step": layout(eight.step_size), "rhat": layout(eight.rhat),
            "single": layout(one.samples)}))
    """)
    one, eight = np.asarray(out["one"]), np.asarray(out["eight"])
    np.testing.assert_allclose(eight, one, atol=1e-5)  # every key is the same whatever the layout
    mean, cov = np.array([0.15, -0.2]), 0.05 * np.eye(2)  # N(x/2, 0.05 I)
    se = np.sqrt(0.05 / np.asarray(out["ess"]))
    np.testing.assert_array_less(np.abs(eight.mean(0) - mean), 4 * se)
    np.testing.assert_allclose(np.cov(eight.T), cov, atol=0.02)
    chains = out["chains"]  # (C, S, d) = (32, 16, 2): 4 chains on each of 8 devices
    assert chains["named"] and chains["devices"] == 8 and chains["spec"][0] == "chain_blocks"
    assert chains["mesh"] == {"observations": 1, "chain_blocks": 8} and chains["shard"] == [4, 16, 2]
    assert out["step"]["devices"] == 8 and out["step"]["shard"] == [4]
    assert out["samples"]["devices"] == 8 and out["samples"]["shard"] == [64, 2]  # 512 draws / 8
    assert out["rhat"]["devices"] == 8 and out["rhat"]["shard"] == [2]  # (d,) copied to every device
    assert out["single"]["devices"] == 1


def test_two_observations_on_a_2_by_4_grid_adapt_to_the_exact_posterior_like_one_device():
    # adaptive warm-up amplifies last-bit differences between the per-device programs (as a 1e-7
    # change of the starting points would): the two layouts agree in distribution, not draw by draw
    out = run_in_8_devices("""
        kw = dict(method="hmc", num_samples=512, num_chains=16, num_warmup=60)
        one, eight = run(X, False, **kw), run(X, 8, **kw)
        print(json.dumps({"one": np.asarray(one.samples).tolist(), "eight": np.asarray(eight.samples).tolist(),
                          "ess_one": np.asarray(one.ess).tolist(), "ess": np.asarray(eight.ess).tolist(),
                          "chains": layout(eight.chains), "samples": layout(eight.samples),
                          "rhat": layout(eight.rhat)}))
    """)
    one, eight = np.asarray(out["one"]), np.asarray(out["eight"])
    exact = np.array([[0.15, -0.2], [-0.1, 0.25]])
    se_one, se = np.sqrt(0.05 / np.asarray(out["ess_one"])), np.sqrt(0.05 / np.asarray(out["ess"]))
    np.testing.assert_array_less(np.abs(eight.mean(1) - exact), 4 * se)
    np.testing.assert_array_less(np.abs(eight.mean(1) - one.mean(1)), 4 * np.hypot(se, se_one))
    for draws in eight:
        np.testing.assert_allclose(np.cov(draws.T), 0.05 * np.eye(2), atol=0.02)
    chains = out["chains"]
    assert chains["mesh"] == {"observations": 2, "chain_blocks": 4} and chains["devices"] == 8
    assert chains["spec"][:2] == ["observations", "chain_blocks"] and chains["shard"] == [1, 4, 32, 2]
    assert out["samples"]["shard"] == [1, 128, 2]
    assert out["rhat"]["shard"] == [1, 2]


def test_pooled_metric_over_chains_split_across_devices_and_indivisible_chain_counts():
    out = run_in_8_devices("""
        from jax.sharding import Mesh, PartitionSpec
        from aalr_jax import adaptation
        # 32 chains' window covariances, two of them non-finite (left out of the average)
        cov = jax.random.normal(jax.random.PRNGKey(0), (32, 2, 2))
        cov = cov @ jnp.swapaxes(cov, 1, 2) + jnp.eye(2)
        cov = cov.at[5, 0, 0].set(jnp.nan).at[20, 1, 1].set(jnp.inf)
        pool = jax.jit(jax.vmap(adaptation._pooled, axis_name=adaptation.CHAIN_AXIS))
        split = NamedSharding(Mesh(np.array(jax.devices()), ("d",)), PartitionSpec("d"))
        lowered = pool.lower(jax.device_put(cov, split))
        one, eight = pool(cov), pool(jax.device_put(cov, split))
        try:
            run(X[0], 8, num_chains=100)
            error = None
        except ValueError as err:
            error = str(err)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run(X[0], None, num_chains=12, num_samples=24, num_warmup=0)
        print(json.dumps({"cov": np.asarray(cov).tolist(), "one": np.asarray(one).tolist(),
                          "eight": np.asarray(eight).tolist(), "eight_layout": layout(eight),
                          "all_reduce": "all-reduce" in lowered.compile().as_text(),
                          "error": error, "warnings": [str(w.message) for w in caught],
                          "chains": layout(result.chains)}))
    """)
    cov, one, eight = (np.asarray(out[k]) for k in ("cov", "one", "eight"))
    finite = np.isfinite(cov).all(axis=(1, 2))
    expected = 0.5 * cov + 0.5 * cov[finite].mean(0)
    np.testing.assert_allclose(one[finite], expected[finite], rtol=1e-5)
    np.testing.assert_allclose(eight[finite], one[finite], rtol=1e-6)  # 4 chains per device, same average
    assert out["eight_layout"]["devices"] == 8 and out["eight_layout"]["shard"] == [4, 2, 2]
    assert out["all_reduce"]  # the average is one cross-device reduction
    assert out["error"] is not None and out["error"].startswith("num_chains")
    assert "multiple of the number of devices (8)" in out["error"] and "100" in out["error"]
    assert any("sampling on 4 of them" in w for w in out["warnings"])
    assert out["chains"]["devices"] == 4 and out["chains"]["shard"][0] == 3


def test_coverage_streams_each_device_block_of_samples_to_disk(tmp_path):
    out = run_in_8_devices(f"""
        from aalr_jax.diagnostics import expected_coverage
        result = expected_coverage(jax.random.PRNGKey(5), MODEL, TASK, num_pairs=16, num_samples=64,
                                   output={str(tmp_path)!r}, batch_size=8, mesh=8,
                                   num_chains=8, num_warmup=0)
        print(json.dumps({{"credibility": result.credibility.tolist()}}))
    """)
    from aalr_jax.diagnostics import sample_credibility
    from aalr_jax.sampling import ExactLikelihood
    from aalr_jax.tasks import gaussian_linear

    files = sorted(tmp_path.glob("*.npz"))
    # 2 batches of 8 observations, one observation (all 64 draws) per device
    assert [f.name for f in files][:2] == ["pairs_00000000-00000001_draws_00000000-00000064.npz",
                                           "pairs_00000001-00000002_draws_00000000-00000064.npz"]
    assert len(files) == 16
    blocks = [dict(np.load(f)) for f in files]
    assert all(b["samples"].shape == (1, 64, 2) for b in blocks)
    rows = np.concatenate([b["rows"] for b in blocks])
    np.testing.assert_array_equal(rows, np.arange(16))
    # credibilities recomputed on one device from the files equal those expected_coverage returned
    task = gaussian_linear.make(dim=2)
    model = ExactLikelihood(gaussian_linear.log_likelihood, task.x_shape)
    x, theta, samples, stored = (np.concatenate([b[k] for b in blocks]) for k in ("x", "theta", "samples",
                                                                                     "credibility"))
    np.testing.assert_allclose(stored, out["credibility"], atol=1e-6)
    again = sample_credibility(model, task.prior, x, theta, samples)
    np.testing.assert_allclose(again, out["credibility"], atol=1e-6)


def test_default_mesh_in_a_multi_process_run_is_this_process_s_devices(monkeypatch):
    """Sampling takes each process's own observations: the default mesh stays on the process's
    devices (a mesh over every process's devices would join their different inputs into one
    program), while an explicit mesh is kept as given."""
    import jax

    from aalr_jax import ratio_posterior

    assert ratio_posterior._sampling_devices(None) is None  # one process: resolve_mesh decides
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert ratio_posterior._sampling_devices(None) == jax.local_devices()
    assert ratio_posterior._sampling_devices(False) is False
    assert ratio_posterior._sampling_devices(4) == 4
