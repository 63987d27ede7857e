"""SLCP's four sign modes: which part of the pipeline finds them, and with which weights.

The SLCP posterior is invariant under θ_3 → −θ_3 and θ_4 → −θ_4 (the likelihood sees only θ_3²,
θ_4²; the prior is symmetric), so each quadrant of the (θ_3, θ_4) plane holds exactly ¼ of the
mass: the weights' truth needs no reference. For each observation (notebook 02's and fresh ones
drawn from the joint, seed 2718, never sbibm's) and each sampler setting (:data:`SETTINGS`), this
script reports the clusters of chains (``num_modes``) and the mode-aware R-hat of
:func:`aalr_jax.diagnostics.mcmc_report`, the R-hat of the folded chains
``(θ_1, θ_2, |θ_3|, |θ_4|, θ_5)`` (mixing within the modes, also where two modes touch), the
quadrant weights and their largest deviation from ¼, and the C2ST (JAX backend, ``--num-c2st``
draws a side) against ``task.reference_posterior`` (HMC on the exact likelihood with random signs).

Stages, cheapest first:

* ``exact``: the sampler alone, on ``ExactLikelihood(task.log_likelihood)``;
* ``estimator``: a ratio estimator trained with the package defaults (loaded from
  ``--estimator PATH``, or trained on 10^5 simulations with keys 0 and 1 as in notebook 02 and
  saved there when the file is missing): its log-ratio at the four sign images of θ (equal for
  an exact ratio) and the posterior sampled with each setting;
* ``sbibm``: the estimator's posterior of sbibm's observations (``--sbibm-observations``, with
  ``--sbibm-settings``), scored against sbibm's reference samples.

Each row is printed as a JSON line and the rows are written to ``--output``.

    python benchmarks/slcp_modes.py --stages exact,estimator,sbibm --estimator /tmp/slcp_1e5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

import aalr_jax
from aalr_jax import diagnostics, tasks
from aalr_jax.tasks import slcp
from aalr_jax.types import ExactLikelihood

HERE = os.path.dirname(os.path.abspath(__file__))
SIGNS = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float32)

# name -> sample_posterior keywords (the rest are the package defaults)
SETTINGS = {
    "default": dict(),
    "hmc prior-init": dict(method="hmc", init="prior"),
    "rwmh plain": dict(method="rwmh"),
    "rwmh + independence": dict(method="rwmh", independence_prob=0.9),
    # slcp.SignSymmetric (the ratio averaged over the sign images) sampled with the defaults, then
    # slcp.random_signs (chains folded, every draw given random signs of θ_3 and θ_4)
    "symmetric": dict(symmetric=True),
}


def sample(task, model, x, num_samples, label):
    """``sample_posterior`` with setting ``label`` (key 2; the defaults: 100 chains, 500 warm-up steps)."""
    options = dict(SETTINGS[label])
    symmetric = options.pop("symmetric", False)
    post = aalr_jax.sample_posterior(jax.random.PRNGKey(2), slcp.SignSymmetric(model) if symmetric else model,
                                     task.prior, x, num_samples=num_samples, **options)
    return slcp.random_signs(jax.random.PRNGKey(3), post) if symmetric else post


def quadrant_weights(samples) -> np.ndarray:
    """``(4,)`` mass in the quadrants (+,+), (+,−), (−,+), (−,−) of (θ_3, θ_4)."""
    s = np.sign(np.asarray(samples)[:, 2:4])
    return np.array([np.mean((s[:, 0] == a) & (s[:, 1] == b)) for a, b in SIGNS])


def observations(task, num_fresh: int):
    """``[(name, x, θ or None)]``: notebook 02's observation and ``num_fresh`` from the joint (seed 2718)."""
    out = [("notebook", np.asarray(task.default_observation), np.asarray(task.true_theta))]
    key = jax.random.PRNGKey(2718)
    theta = task.prior.sample(jax.random.fold_in(key, 0), (num_fresh,))
    xs = jax.vmap(task.simulator)(jax.random.split(jax.random.fold_in(key, 1), num_fresh), theta)
    out += [(f"fresh {i}", np.asarray(xs[i]), np.asarray(theta[i])) for i in range(num_fresh)]
    return out


def evaluate(post, reference, num_c2st: int) -> dict:
    """Mode count, mode-aware R-hat, quadrant weights and C2ST of one run."""
    report = diagnostics.mcmc_report(post)
    samples = np.asarray(post.samples)
    weights = quadrant_weights(samples)
    rng = np.random.default_rng(0)
    a = samples[rng.choice(len(samples), num_c2st, replace=False)]
    b = reference[rng.choice(len(reference), num_c2st, replace=False)]
    folded = np.asarray(post.chains, np.float32).copy()
    folded[..., 2:4] = np.abs(folded[..., 2:4])
    return dict(num_modes=report.num_modes, mode_chains=report.mode_chains.tolist(),
                mode_rhat_max=float(np.nanmax(report.mode_rhat)), rhat_max=float(np.nanmax(report.rhat)),
                folded_rhat_max=float(np.nanmax(diagnostics.mcmc_report(folded).rhat)),
                weights=weights.round(3).tolist(), weight_error=float(np.abs(weights - 0.25).max()),
                acceptance=float(np.nanmean(report.acceptance_rate)),
                c2st=float(diagnostics.c2st(b, a, backend="jax")))


def sign_images(estimator, x, theta) -> list[float]:
    """The learned log-ratio at the four sign images of ``theta`` (equal for an exact ratio)."""
    images = np.repeat(theta[None], 4, 0)
    images[:, 2:4] *= SIGNS
    return np.asarray(estimator.log_ratio(jnp.asarray(images), jnp.asarray(x)[None])).round(3).tolist()


def load_or_train(task, path: str):
    if os.path.exists(path):
        return aalr_jax.load_estimator(path)
    bank = aalr_jax.simulate(jax.random.PRNGKey(0), task, 100_000, progress=False)
    estimator, _ = aalr_jax.fit(jax.random.PRNGKey(1), bank, max_epochs=100, patience=10, progress=False)
    aalr_jax.save_estimator(path, estimator)
    return estimator


def run_settings(task, model, obs, refs, settings, args, rows, stage, extra=None):
    for name, x, theta in obs:
        for label in settings:
            start = time.perf_counter()
            post = sample(task, model, x, args.num_samples, label)
            row = dict(stage=stage, observation=name, setting=label, sampler=post.sampler.name,
                       **evaluate(post, refs[name], args.num_c2st), seconds=time.perf_counter() - start)
            if extra:
                row.update(extra(name, x, theta))
            rows.append(row)
            print(json.dumps(row), flush=True)
            yield


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default="exact,estimator")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--fresh", type=int, default=3, help="fresh observations from the joint")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--num-c2st", type=int, default=2000, help="samples per side of the C2ST")
    parser.add_argument("--estimator", default=os.path.join(tempfile.gettempdir(), "slcp_1e5_estimator"),
                        help="cached estimator (trained and saved there when missing; not in the repository)")
    parser.add_argument("--sbibm-observations", default="1-10")
    parser.add_argument("--sbibm-settings", default="default,symmetric")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "slcp_modes.json"))
    args = parser.parse_args(argv)
    task = tasks.get("slcp")
    stages, settings = args.stages.split(","), args.settings.split(",")
    obs = observations(task, args.fresh)
    rows = []
    refs = {}
    if "exact" in stages or "estimator" in stages:
        for i, (name, x, _) in enumerate(obs):
            refs[name] = np.asarray(task.reference_posterior(jax.random.PRNGKey(10 + i), x, 10_000))

    def save():
        with open(args.output, "w") as f:
            json.dump(dict(device=jax.devices()[0].device_kind, rows=rows), f, indent=1)

    if "exact" in stages:
        model = ExactLikelihood(task.log_likelihood, task.x_shape)
        for _ in run_settings(task, model, obs, refs, settings, args, rows, "exact"):
            save()
    if "estimator" in stages or "sbibm" in stages:
        estimator = load_or_train(task, args.estimator)
    if "estimator" in stages:
        extra = lambda name, x, theta: dict(log_ratio_at_sign_images=sign_images(estimator, x, theta))
        for _ in run_settings(task, estimator, obs, refs, settings, args, rows, "estimator", extra):
            save()
    if "sbibm" in stages:
        sys.path.insert(0, HERE)
        from sbibm import sbibm_observation, sbibm_wheel  # benchmarks/sbibm.py

        wheel = zipfile.ZipFile(sbibm_wheel(os.path.expanduser("~/.cache/aalr_jax_sbibm")))
        first, last = map(int, args.sbibm_observations.split("-"))
        for i in range(first, last + 1):
            x, ref = sbibm_observation(wheel, "slcp", i)
            for label in args.sbibm_settings.split(","):
                start = time.perf_counter()
                post = sample(task, estimator, x, args.num_samples, label)
                row = dict(stage="sbibm", observation=f"sbibm {i}", setting=label, sampler=post.sampler.name,
                           **evaluate(post, ref, args.num_c2st), seconds=time.perf_counter() - start)
                rows.append(row)
                print(json.dumps(row), flush=True)
                save()
    save()


if __name__ == "__main__":
    main()
