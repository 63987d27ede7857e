"""A tiny end-to-end run of the installed aalr_jax: what CI's floor and old-stack steps execute.

Covers every direct dependency at least once: simulate (jax, numpyro), fit with a CNN embedding
and the default one (flax NNX, optax, tqdm), sample_posterior with RWMH and HMC (blackjax),
mcmc_report (blackjax.diagnostics), an ODE task (diffrax), coverage (scipy), a corner plot
(matplotlib), save/load (numpy). Prints the versions it ran with; exits non-zero on any error.
"""

import importlib.metadata as md
import os
import sys
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")

import jax
import jax.numpy as jnp
import numpy as np

import aalr_jax
from aalr_jax import diagnostics, plotting, tasks

DEPS = ("jax", "jaxlib", "flax", "optax", "blackjax", "numpyro", "numpy", "scipy", "matplotlib", "tqdm", "diffrax")
print("aalr_jax", aalr_jax.__version__, "from", os.path.dirname(aalr_jax.__file__))
print(" ".join(f"{name}=={md.version(name)}" for name in DEPS))

key = jax.random.PRNGKey(0)
task = tasks.get("two_moons")
bank = aalr_jax.simulate(key, task, 512)
estimator, history = aalr_jax.fit(jax.random.PRNGKey(1), bank, hidden_features=(16, 16), max_epochs=2, progress=False)
for method in ("rwmh", "hmc"):
    post = aalr_jax.sample_posterior(jax.random.PRNGKey(2), estimator, task.prior, task.default_observation,
                                     method=method, num_samples=64, num_chains=4, num_warmup=20)
    assert post.samples.shape == (64, 2), post.samples.shape
    assert np.all(np.isfinite(post.samples)), method
    report = diagnostics.mcmc_report(post)
    print(method, "acceptance", np.round(np.asarray(post.acceptance_rate), 2), "R-hat", np.round(np.asarray(report.rhat), 2))

# images through the CNN embedding (flax nnx.List, GroupNorm, avg_pool)
images = aalr_jax.SimulationBank(theta=bank.theta[:128], x=jnp.tile(bank.x[:128, :, None, None], (1, 1, 8, 8)))
cnn, _ = aalr_jax.fit(jax.random.PRNGKey(3), images, embedding="cnn", embedding_features=8, hidden_features=(8,),
                      max_epochs=1, progress=False)

# an ODE task (diffrax)
ode = tasks.get("lotka_volterra")
ode_bank = aalr_jax.simulate(jax.random.PRNGKey(4), ode, 8)
assert ode_bank.x.shape[0] == 8

# expected coverage (scipy), a corner plot (matplotlib), save and load (numpy)
coverage = diagnostics.coverage_from_credibility(np.random.default_rng(0).uniform(size=(50,)))
ranks = diagnostics.sbc(np.zeros((20, 2)), np.random.default_rng(1).normal(size=(20, 30, 2)))
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "estimator.npz")
    aalr_jax.save_estimator(path, estimator)
    again = aalr_jax.load_estimator(path)
    theta, x = bank.theta[:5], bank.x[:5]
    np.testing.assert_allclose(np.asarray(again.log_ratio(theta, x)), np.asarray(estimator.log_ratio(theta, x)), rtol=1e-6)
    plotting.save_figure(plotting.corner(np.asarray(post.samples), labels=task.labels if hasattr(task, "labels") else None), os.path.join(tmp, "corner.png"))
print("smoke: ok")
