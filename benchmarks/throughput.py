"""Posterior-sampling and training throughput, against the machine's own float32 matmul rate.

For a fixed 3×128 SELU ratio network trained briefly on two_moons (so the posterior is a real
one), this measures in one run:

* chain-steps/s and effective samples/s of plain RWMH, RWMH with independence moves (the default
  on 2-D two_moons, :mod:`aalr_jax.independence`) and HMC against the number of chains
  (1 … 10,000) and of observations sampled at once;
* training examples/s (each example is one dependent and one independent pair);
* the float32 matrix-multiply rate of the device (a large square matmul), and each figure above
  as a fraction of the FLOP bound: network FLOPs per evaluation × evaluations/s ÷ matmul FLOP/s.

ESS is summed over chains from each chain's own bulk ESS (``min`` over θ dimensions), which
measures sampler efficiency even where chains sit in different modes (two_moons has two).
Timings exclude compilation: each configuration runs once to compile, then ``--repeats`` times
(3 by default), and the fastest run counts (as ``timeit`` does), since a shared machine only ever
slows a run down.

Usage::

    python benchmarks/throughput.py                       # full sweep, writes results/throughput.json
    python benchmarks/throughput.py --methods rwmh --chains 1000,10000 --observations 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

import aalr_jax
from aalr_jax import fit, sample_posterior, simulate, tasks
from aalr_jax.train import build_trainer

HERE = os.path.dirname(os.path.abspath(__file__))


def matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 FLOP/s of a ``size × size`` matmul (best of ``repeats``)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best


def network_flops(estimator) -> float:
    """FLOPs of one head evaluation: ``2 Σ fan_in·fan_out`` over the dense layers."""
    kernels = [leaf for leaf in jax.tree.leaves(estimator.params) if leaf.ndim == 2]
    return float(sum(2 * k.shape[0] * k.shape[1] for k in kernels))


def within_chain_ess(chains: np.ndarray) -> float:
    """Σ over chains of each chain's bulk ESS, ``min`` over dimensions; ``chains: (C, S, d)``."""
    per_chain = jax.vmap(lambda c: blackjax.ess(c[None], chain_axis=0, sample_axis=1))(jnp.asarray(chains))
    return float(jnp.sum(per_chain, axis=0).min())


SAMPLERS = {"rwmh": dict(method="rwmh", independence_prob=0.0),  # the plain random walk
            "rwmh+ind": dict(method="rwmh"),  # the default: with independence moves (p = 0.9)
            "hmc": dict(method="hmc")}


def time_sampling(estimator, prior, x_obs, *, sampler, num_chains, num_warmup, num_draws, leapfrog, repeats):
    """Seconds of the fastest of ``repeats`` compiled ``sample_posterior`` calls, its chains and acceptance.

    ``sampler``: a key of :data:`SAMPLERS`."""
    kwargs = dict(**SAMPLERS[sampler], num_chains=num_chains, num_warmup=num_warmup, thin=1,
                  num_samples=num_chains * num_draws, num_init_candidates=num_chains,
                  num_integration_steps=leapfrog)
    sample_posterior(jax.random.PRNGKey(0), estimator, prior, x_obs, **kwargs).samples.block_until_ready()
    seconds = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = sample_posterior(jax.random.PRNGKey(1), estimator, prior, x_obs, **kwargs)
        result.samples.block_until_ready()
        seconds = min(seconds, time.perf_counter() - start)
    chains = np.asarray(result.chains).reshape((-1,) + result.chains.shape[-2:])
    return seconds, chains, float(np.mean(result.acceptance_rate))


def run(args, save) -> dict:
    """The sweep; ``save(result)`` is called after every row so an interrupted run keeps its rows."""
    task = tasks.get("two_moons")
    bank = simulate(jax.random.PRNGKey(0), task, args.num_simulations, progress=False)
    estimator, history = fit(jax.random.PRNGKey(1), bank, hidden_features=(128, 128, 128), quadratic=False,
                             num_members=1, max_epochs=args.train_epochs, progress=False)  # one network
    flops_eval = network_flops(estimator)
    peak = matmul_flops()
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), "
          f"float32 matmul: {peak / 1e9:.1f} GFLOP/s, network: {flops_eval / 1e3:.1f} kFLOP/eval")

    rows = []
    result = dict(
        device=str(jax.devices()[0].device_kind), platform=jax.devices()[0].platform,
        cpu_count=os.cpu_count(), python=platform.python_version(), jax=jax.__version__,
        aalr_jax=aalr_jax.__version__, blackjax=blackjax.__version__,
        matmul_gflops=peak / 1e9, network_kflops_per_eval=flops_eval / 1e3,
        training_epochs=len(history.train_loss), repeats=args.repeats, warmup=args.warmup,
        draws_per_chain=args.draws,
        hmc_mean_leapfrog=args.leapfrog, sampling=rows, training=None,
    )
    x_o = task.default_observation
    for method in args.methods:
        # gradient ≈ 3 forward passes; HMC takes `leapfrog` gradients per step on average. The
        # independence proposal's density (129 Gaussians) is not counted: the bound is the network's.
        evals_per_step = 3.0 * args.leapfrog if method == "hmc" else 1.0
        for num_obs in args.observations:
            xs = x_o if num_obs == 1 else simulate(jax.random.PRNGKey(2), task, num_obs, progress=False).x
            for num_chains in args.chains:
                if num_obs > 1 and num_chains != args.obs_chains:
                    continue
                seconds, chains, accept = time_sampling(
                    estimator, task.prior, xs, sampler=method, num_chains=num_chains,
                    num_warmup=args.warmup, num_draws=args.draws, leapfrog=args.leapfrog,
                    repeats=args.repeats)
                total_chains = num_chains * num_obs
                steps = total_chains * (args.warmup + args.draws)
                rate = steps / seconds
                row = dict(method=method, observations=num_obs, chains=num_chains, seconds=seconds,
                           chain_steps_per_s=rate, draws_per_s=total_chains * args.draws / seconds,
                           ess_per_s=within_chain_ess(chains) / seconds, acceptance=accept,
                           flop_fraction=rate * evals_per_step * flops_eval / peak)
                rows.append(row)
                save(result)
                print(f"{method:8s} obs={num_obs:4d} chains={num_chains:6d}  {rate:12.0f} steps/s  "
                      f"{row['ess_per_s']:10.0f} ESS/s  acc={accept:.2f}  {100 * row['flop_fraction']:5.1f}% of FLOP bound")

    # training throughput: one compiled epoch over the bank, timed after compilation
    import optax

    optimizer = optax.adamw(1e-3, weight_decay=0.0)
    trainer = build_trainer(optimizer, args.batch_size)
    state = trainer.init(estimator)
    state, _ = trainer.epoch(jax.random.PRNGKey(0), state, bank)
    jax.block_until_ready(state)
    seconds = np.inf
    for i in range(args.repeats):
        start = time.perf_counter()
        state, info = trainer.epoch(jax.random.PRNGKey(i + 1), state, bank)
        info.loss.block_until_ready()
        seconds = min(seconds, time.perf_counter() - start)
    train_rate = (bank.num_simulations // args.batch_size) * args.batch_size / seconds
    # per example: 2 pairs (dependent + independent), forward + backward ≈ 3 forward passes each
    train = dict(batch_size=args.batch_size, examples_per_s=train_rate,
                 flop_fraction=train_rate * 2 * 3 * flops_eval / peak)
    print(f"training: {train_rate:.0f} examples/s (batch {args.batch_size}), "
          f"{100 * train['flop_fraction']:.1f}% of FLOP bound")

    result["training"] = train
    # The bound is the fastest matmul the machine showed: measured again after the sweep, the larger
    # rate divides every figure, so a slow first measurement cannot inflate the fractions.
    final_peak = max(peak, matmul_flops())
    for row in rows + [train]:
        row["flop_fraction"] *= peak / final_peak
    result["matmul_gflops"] = final_peak / 1e9
    result["matmul_gflops_first"] = peak / 1e9
    save(result)
    print(f"final FLOP bound {final_peak / 1e9:.1f} GFLOP/s (start {peak / 1e9:.1f}); % of it:")
    for row in rows:
        print(f"  {row['method']:8s} obs={row['observations']:4d} chains={row['chains']:6d}  "
              f"{100 * row['flop_fraction']:5.1f}%")
    print(f"  training {100 * train['flop_fraction']:5.1f}%")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ints = lambda s: [int(v) for v in s.split(",")]
    parser.add_argument("--methods", type=lambda s: s.split(","), default=list(SAMPLERS),
                        help=f"comma-separated, of {', '.join(SAMPLERS)} (rwmh: the plain random walk; "
                             "rwmh+ind: with independence moves, the default)")
    parser.add_argument("--chains", type=ints, default=[1, 10, 100, 1000, 10000])
    parser.add_argument("--observations", type=ints, default=[1, 10, 100],
                        help="observations sampled at once (each with --obs-chains chains)")
    parser.add_argument("--obs-chains", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--leapfrog", type=int, default=10, help="mean HMC leapfrog steps")
    parser.add_argument("--num-simulations", type=int, default=10_000)
    parser.add_argument("--train-epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row; the fastest counts")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "throughput.json"))
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)

    def save(result):
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)

    run(args, save)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
