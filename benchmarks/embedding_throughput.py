"""Embedding throughput: MCMC with the observation embedded once vs at every step; training images/s.

Side by side, in one run, on a lensing observation (``aalr_jax.tasks.lensing``), with a CNN
estimator:

* **embed once** — the target of :func:`aalr_jax.sample_posterior`: ``features = embed(x_obs)``
  computed once, then every log-density evaluation runs only the head,
  ``log p(T(u)) + log|J_T(u)| + head(T(u), features)``;
* **embed every step** — the naive target ``log p(T(u)) + log|J_T(u)| + log_ratio(T(u), x_obs)``,
  which asks for the CNN on ``x_obs`` at every evaluation.

Three measurements:

1. *compiled chains*: both targets through :func:`aalr_jax.chains.run_chains` with identical
   settings, keys and initial positions, each under one ``jax.jit``; MCMC steps per second
   (chains × steps / seconds of a second, compiled call). XLA's while-loop-invariant code motion
   may hoist the naive target's embedding out of the sampler's loops by itself (``x_obs`` is a
   loop invariant), so
2. the same comparison is re-run in a subprocess with that pass disabled
   (``XLA_FLAGS=--xla_disable_hlo_passes=while-loop-invariant-code-motion``): the per-step cost
   that embedding once removes whatever the compiler does;
3. *one call per step* (a sampler driven from Python, or any host loop): a jitted evaluation of
   the log-density for all chains' positions, log-densities per second.

Training throughput: images per second of the compiled epoch of :func:`aalr_jax.train.build_trainer`
(the loop inside ``fit``) for the ``cnn`` and ``resnet`` embeddings.

Run: ``python benchmarks/embedding_throughput.py [--size 32] [--quick]``. Writes
``benchmarks/results/embedding_throughput.json`` and ``.md`` (device, versions, seeds, settings).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aalr_jax import SimulationBank, fit, io, priors, simulate
from aalr_jax.nn import NetworkConfig, init_estimator, standardization_from
from aalr_jax.logdensity import embed_observations, unconstrained_log_posterior
from aalr_jax.chains import run_chains
from aalr_jax.samplers import HMC, RWMH, resolve_sampler
from aalr_jax.tasks import lensing
from aalr_jax.train import build_trainer

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NO_LICM = "--xla_disable_hlo_passes=while-loop-invariant-code-motion"


def _time(fn, *args, repeats: int = 3) -> float:
    """Median wall time of ``fn(*args)`` after one compiling call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def naive_log_density(estimator, prior, x_obs, transform):
    """``u ↦ log p(T(u)) + log|J_T(u)| + log_ratio(T(u), x_obs)``: the CNN runs at every call."""

    def logdensity(u):
        theta = transform(u)
        value = priors.log_prob(prior, theta) + transform.log_abs_det_jacobian(u, theta)
        value = value + estimator.log_ratio(theta, x_obs)
        return jnp.where(jnp.isnan(value), -jnp.inf, value)

    return logdensity


class ChainSettings(NamedTuple):
    """One compiled-chain comparison: a sampler value and the chains' lengths."""

    sampler: object
    num_chains: int
    num_warmup: int
    num_draws: int
    thin: int = 1


def mcmc_rates(estimator, prior, x_obs, config: ChainSettings, seed: int) -> dict:
    transform = priors.support_transform(prior)
    key_init, key_run = jax.random.split(jax.random.PRNGKey(seed))
    u0 = transform.inv(prior.sample(key_init, (config.num_chains,)))
    sampler = resolve_sampler(config.sampler, prior.event_shape[0])
    run = lambda fn, u: run_chains(key_run, fn, u, sampler, num_warmup=config.num_warmup,
                                   num_draws=config.num_draws, thin=config.thin)

    @jax.jit
    def embed_once(estimator, x_obs, u0):
        features = embed_observations(estimator, x_obs, iid=False)
        return run(unconstrained_log_posterior(estimator, prior, features, transform), u0)

    @jax.jit
    def embed_every_step(estimator, x_obs, u0):
        return run(naive_log_density(estimator, prior, x_obs, transform), u0)

    steps = config.num_chains * (config.num_warmup + config.num_draws * config.thin)
    once = _time(embed_once, estimator, x_obs, u0)
    every = _time(embed_every_step, estimator, x_obs, u0)
    a, b = embed_once(estimator, x_obs, u0), embed_every_step(estimator, x_obs, u0)
    return {
        "method": sampler.name,
        "num_chains": config.num_chains,
        "steps_per_chain": config.num_warmup + config.num_draws * config.thin,
        "num_integration_steps": getattr(sampler, "num_integration_steps", None),
        "embed_once_steps_per_s": steps / once,
        "embed_every_step_steps_per_s": steps / every,
        "speedup": every / once,
        "max_abs_position_difference": float(jnp.abs(a.positions - b.positions).max()),
    }


def call_rates(estimator, prior, x_obs, num_chains: int, seed: int) -> dict:
    """Log-densities per second of one jitted call evaluating all chains' positions."""
    transform = priors.support_transform(prior)
    u = transform.inv(prior.sample(jax.random.PRNGKey(seed), (num_chains,)))

    @jax.jit
    def once(estimator, x_obs, u):
        features = embed_observations(estimator, x_obs, iid=False)
        return jax.vmap(unconstrained_log_posterior(estimator, prior, features, transform))(u)

    @jax.jit
    def every(estimator, x_obs, u):
        return jax.vmap(naive_log_density(estimator, prior, x_obs, transform))(u)

    t_once, t_every = _time(once, estimator, x_obs, u, repeats=20), _time(every, estimator, x_obs, u, repeats=20)
    return {"num_chains": num_chains, "embed_once_evals_per_s": num_chains / t_once,
            "embed_every_step_evals_per_s": num_chains / t_every, "speedup": t_every / t_once}


def sampler_configs(quick: bool) -> list[ChainSettings]:
    chains, warmup, draws = (8, 20, 20) if quick else (100, 100, 100)
    return [  # the plain random walk and HMC: the same per-step cost with and without the embedding
        ChainSettings(RWMH(independence_prob=0.0), chains, warmup, draws),
        ChainSettings(HMC(num_integration_steps=5), chains, warmup // 2, draws // 2),
    ]


def _mcmc_without_licm(estimator_path: str, size: int, quick: bool, seed: int) -> list[dict]:
    """Run the compiled-chain comparison in a subprocess with XLA's loop-invariant code motion off."""
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + NO_LICM).strip())
    cmd = [sys.executable, os.path.abspath(__file__), "--child", estimator_path, "--size", str(size), "--seed", str(seed)]
    out = subprocess.run(cmd + (["--quick"] if quick else []), env=env, capture_output=True, text=True)
    if out.returncode != 0:  # e.g. a backend whose XLA lacks the pass: report it, keep the other rows
        print(f"warning: the run without loop-invariant code motion failed ({NO_LICM}):\n"
              + "\n".join(out.stderr.strip().splitlines()[-5:]), file=sys.stderr)
        return []
    return json.loads(out.stdout.strip().splitlines()[-1])


def training_rate(bank, embedding: str, batch_size: int, seed: int) -> dict:
    n = (bank.num_simulations // batch_size) * batch_size
    theta, x = bank.theta[:n], bank.x[:n]
    config = NetworkConfig(1, tuple(x.shape[1:]), (64, 64), embedding=embedding, embedding_features=64)
    estimator = init_estimator(jax.random.PRNGKey(seed), config, standardization_from(theta, x))
    optimizer = optax.adamw(1e-3, weight_decay=0.0)
    trainer = build_trainer(optimizer, batch_size)
    bank = SimulationBank(theta, x)
    seconds = _time(lambda s: trainer.epoch(jax.random.PRNGKey(0), s, bank)[1].loss, trainer.init(estimator))
    num_params = sum(int(p.size) for p in jax.tree.leaves(estimator.params))
    return {"embedding": embedding, "batch_size": batch_size, "images_per_s": n / seconds, "num_params": num_params}


def _versions() -> dict:
    names = ["jax", "jaxlib", "flax", "optax", "blackjax", "numpyro", "numpy"]
    return {"python": platform.python_version(), **{p: md.version(p) for p in names}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="image side (pixels)")
    parser.add_argument("--quick", action="store_true", help="smaller settings, for a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(RESULTS, "embedding_throughput"))
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: estimator file, print MCMC JSON
    args = parser.parse_args(argv)
    seed, task = args.seed, lensing.make(size=args.size)
    x_obs = task.default_observation

    if args.child:
        estimator = io.load_estimator(args.child)
        print(json.dumps([mcmc_rates(estimator, task.prior, x_obs, c, seed) for c in sampler_configs(args.quick)]))
        return None

    num_sims, epochs = (512, 1) if args.quick else (4096, 3)
    bank = simulate(jax.random.PRNGKey(seed), task, num_sims, progress=False)
    estimator = fit(jax.random.PRNGKey(seed + 1), bank, embedding="cnn", hidden_features=(64, 64), quadratic=False,
                    num_members=1, batch_size=128, max_epochs=epochs, progress=False).estimator
    configs = sampler_configs(args.quick)
    mcmc = [mcmc_rates(estimator, task.prior, x_obs, c, seed) for c in configs]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "estimator.npz")
        io.save_estimator(path, estimator)
        mcmc_no_licm = _mcmc_without_licm(path, args.size, args.quick, seed)
    per_call = call_rates(estimator, task.prior, x_obs, configs[0].num_chains, seed)
    training = [training_rate(bank, e, 128, seed) for e in ("cnn", "resnet")]

    device = jax.devices()[0]
    report = {
        "benchmark": "embedding_throughput",
        "device": {"platform": device.platform, "kind": device.device_kind, "cpu_count": os.cpu_count(),
                   "load_average_1min_at_end": os.getloadavg()[0]},
        "versions": _versions(),
        "seeds": {"seed": seed},
        "settings": {"task": "lensing", "image_size": args.size, "training_simulations": num_sims,
                     "estimator": f"cnn, head (64, 64), fit for {epochs} epochs", "quick": args.quick},
        "mcmc_compiled": mcmc,
        "mcmc_compiled_without_loop_invariant_code_motion": mcmc_no_licm,
        "one_call_per_step": per_call,
        "training": training,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=2)

    lines = [
        f"# Embedding throughput ({device.platform}: {device.device_kind}, {os.cpu_count()} CPU cores, "
        f"lensing {args.size}x{args.size}, jax {report['versions']['jax']})",
        "",
        "MCMC steps/s (chains × steps / s); embed once = `sample_posterior`'s target.",
        "",
        "| MCMC | chains × steps | embed once | embed every step | ratio |",
        "|---|---|---|---|---|",
    ]
    for label, rows in (("", mcmc), (", XLA loop-invariant code motion off", mcmc_no_licm)):
        for r in rows:
            name = r["method"] + (f" (L={r['num_integration_steps']})" if r["num_integration_steps"] else "") + label
            lines.append(f"| {name} | {r['num_chains']} × {r['steps_per_chain']} | {r['embed_once_steps_per_s']:.0f} | "
                         f"{r['embed_every_step_steps_per_s']:.0f} | {r['speedup']:.1f}× |")
    r = per_call
    lines.append(f"| one jitted call per step ({r['num_chains']} chains), log-densities/s | | "
                 f"{r['embed_once_evals_per_s']:.0f} | {r['embed_every_step_evals_per_s']:.0f} | {r['speedup']:.1f}× |")
    lines += ["", "| training | batch | images/s | parameters |", "|---|---|---|---|"]
    for r in training:
        lines.append(f"| {r['embedding']} | {r['batch_size']} | {r['images_per_s']:.0f} | {r['num_params']} |")
    table = "\n".join(lines)
    with open(args.out + ".md", "w") as f:
        f.write(table + "\n")
    print(table)
    return report


if __name__ == "__main__":
    main()
