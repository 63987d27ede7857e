"""Choose the posterior sampler per task on exact likelihoods and fresh observations.

The C2ST of an AALR posterior mixes two errors: the ratio estimator's and the sampler's. This
script isolates the sampler's: for each task it samples the EXACT-likelihood posterior
(``ExactLikelihood(task.log_likelihood)``) of fresh observations drawn from the joint (seed
31337, disjoint from every benchmark; never sbibm's observations) with each candidate sampler at
the settings ``sample_posterior`` uses by default, and scores it by C2ST (sbibm's protocol, JAX
backend) against the task's own reference posterior. These floors set ``method="auto"``, the
default of ``sample_posterior``: RWMH up to 4 parameters, HMC beyond.

    python benchmarks/choose_sampler.py --tasks slcp,two_moons --observations 4
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time

import jax
import numpy as np

from aalr_jax import sample_posterior, tasks
from aalr_jax.adaptation import RWMH_METRIC_POOLING
from aalr_jax.samplers import resolve_sampler
from aalr_jax.sampling import ExactLikelihood
from sbibm import c2st_scores

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 31337


def floor(task, sampler: str, xs, refs, key, c2st_batch: int) -> tuple[list, float, float]:
    """C2ST per observation, mean acceptance and seconds of one batched exact-likelihood call.

    ``sampler`` is ``method[:thin[:independence_prob[:num_warmup]]]`` (``hmc:3``, ``rwmh:10:0``,
    ``rwmh:5:0.9:250``); what is left out or empty takes ``sample_posterior``'s default.
    """
    method, thin, prob, warmup = parse_sampler(sampler, task.theta_dim)
    model = ExactLikelihood(task.log_likelihood, task.x_shape)
    start = time.perf_counter()
    post = sample_posterior(key, model, task.prior, xs, method=method, num_samples=refs.shape[1],
                            thin=thin, independence_prob=prob, num_warmup=warmup)
    post.samples.block_until_ready()
    seconds = time.perf_counter() - start
    return c2st_scores(refs, np.asarray(post.samples), "jax", c2st_batch), float(post.acceptance_rate.mean()), seconds


def parse_sampler(sampler: str, dim: int) -> tuple[str, int, float, int]:
    """``method[:thin[:independence_prob[:num_warmup]]]`` -> (method, thin, prob, num_warmup), defaults filled in."""
    method, thin, prob, warmup = (sampler.split(":") + ["", "", ""])[:4]
    sampler = resolve_sampler(method, dim, **({"independence_prob": float(prob)} if prob else {}))
    prob = getattr(sampler, "independence_prob", 0.0)
    warmup = int(warmup) if warmup else inspect.signature(sample_posterior).parameters["num_warmup"].default
    return method, int(thin) if thin else sampler.default_thin, prob, warmup


def markdown(rows) -> str:
    lines = ["| task | observations | sampler (thin) | RWMH metric pooling | C2ST mean | max | acceptance |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        for sampler, r in row["samplers"].items():
            pooling = "" if r.get("rwmh_metric_pooling") is None else r["rwmh_metric_pooling"]
            lines.append(f"| {row['task']} | {row['observations']} | {sampler} ({r['thin']}) | {pooling} | "
                         f"{r['c2st_mean']:.3f} | {max(r['c2st']):.3f} | {r['acceptance']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="two_moons,gaussian_mixture,slcp,sir,gaussian_linear,bernoulli_glm")
    parser.add_argument("--observations", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--samplers", default="rwmh,hmc",
                        help="method[:thin[:independence_prob[:num_warmup]]], comma-separated (e.g. hmc:1,hmc:3,rwmh:10:0,rwmh::0.9:250)")
    parser.add_argument("--c2st-batch", type=int, default=1, help="observations per JAX C2ST call (4 on a GPU)")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "choose_sampler.json"))
    args = parser.parse_args(argv)
    rows = []
    if os.path.exists(args.output):  # extend an earlier run, keyed by task
        with open(args.output) as f:
            rows = json.load(f)["rows"]
    key = jax.random.PRNGKey(SEED)
    for name in args.tasks.split(","):
        task = tasks.get(name)
        theta = task.prior.sample(jax.random.fold_in(key, 0), (args.observations,))
        xs = jax.vmap(task.simulator)(jax.random.split(jax.random.fold_in(key, 1), args.observations), theta)
        refs = np.stack([np.asarray(task.reference_posterior(jax.random.fold_in(key, 10 + i), xs[i], args.num_samples))
                         for i in range(args.observations)])
        old = next((r for r in rows if r["task"] == name and r["observations"] == args.observations), {})
        row = dict(task=name, observations=args.observations, samplers=dict(old.get("samplers", {})))
        for sampler in args.samplers.split(","):
            scores, accept, seconds = floor(task, sampler, xs, refs, jax.random.fold_in(key, 2), args.c2st_batch)
            method, thin, prob, warmup = parse_sampler(sampler, task.theta_dim)
            row["samplers"][sampler] = dict(c2st=scores, c2st_mean=float(np.mean(scores)), acceptance=accept,
                                            thin=thin, independence_prob=prob, num_warmup=warmup,
                                            rwmh_metric_pooling=RWMH_METRIC_POOLING if method == "rwmh" else None,
                                            sample_seconds=seconds,
                                            device=jax.devices()[0].device_kind)
            print(f"{name:18s} {sampler:7s} C2ST {np.round(scores, 3)} mean {np.mean(scores):.3f}  "
                  f"accept {accept:.2f}  {seconds:.0f} s", flush=True)
        rows = [r for r in rows if r["task"] != name] + [row]
        meta = dict(device=jax.devices()[0].device_kind, cpu_count=os.cpu_count(), jax=jax.__version__, seed=SEED,
                    num_samples=args.num_samples)
        with open(args.output, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
        with open(os.path.splitext(args.output)[0] + ".md", "w") as f:
            f.write(markdown(rows))


if __name__ == "__main__":
    main()
