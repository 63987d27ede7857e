"""aalr_jax against sbi's NRE_A on the same bank and observation, side by side on this machine.

Both train with their defaults on one two_moons bank (same θ, x), then draw ``--num-samples``
posterior samples of one observation with their default MCMC (aalr_jax: RWMH, 100 chains; sbi:
vectorised slice sampling, 20 chains). sbi runs twice: with its default classifier (a residual
net of width 50) and with a network of our size (3×128 SELU MLP, ``--network same``), the pair
the speed target names. Ours also runs with ``--many-chains`` chains (100 draws each), the width at
which a vectorised sampler pays off. Reported: training seconds, sampling seconds, raw draws/s,
effective samples/s (each chain's own bulk ESS, summed over chains, min over θ dimensions), and
C2ST of each against two_moons' exact reference posterior (sbibm's protocol), with the ratios.

sbi runs in its own environment (PyTorch), given by ``--sbi-python``; it is optional and never
part of CI. Without it only the aalr_jax half runs.

    python benchmarks/compare_sbi.py --sbi-python "$SBI_VENV/bin/python"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

import aalr_jax
from aalr_jax import fit, sample_posterior, simulate, tasks

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import within_chain_ess  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def c2st_or_none(reference, samples, seed=1):
    try:
        from aalr_jax.diagnostics import c2st
    except ImportError:
        return None
    return float(c2st(np.asarray(reference), np.asarray(samples), seed=seed))


def run_sbi(args, bank, x_obs, reference, network: str) -> dict:
    """sbi's NRE_A in its own Python on the same bank and observation (``sbi_nre_a.py``)."""
    with tempfile.TemporaryDirectory() as tmp:
        bank_path = os.path.join(tmp, "bank.npz")
        np.savez(bank_path, theta=np.asarray(bank.theta), x=np.asarray(bank.x), x_obs=np.asarray(x_obs),
                 prior="box", a=-np.ones(2, np.float32), b=np.ones(2, np.float32))
        out, samples_path = os.path.join(tmp, "sbi.json"), os.path.join(tmp, "sbi_samples.npz")
        subprocess.run([args.sbi_python, os.path.join(HERE, "sbi_nre_a.py"), "--bank", bank_path,
                        "--num-samples", str(args.num_samples), "--seed", str(args.seed), "--network", network,
                        "--output", out, "--samples", samples_path], check=True)
        with open(out) as f:
            theirs = json.load(f)
        drawn = np.load(samples_path)
        theirs["c2st"] = c2st_or_none(reference, drawn["samples"])
        theirs["ess"] = within_chain_ess(drawn["chains"])
    theirs["ess_per_s"] = theirs["ess"] / theirs["sample_seconds"]
    return theirs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-simulations", type=int, default=10_000)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sbi-python", help="a Python with sbi installed (optional)")
    parser.add_argument("--sbi-networks", type=lambda v: v.split(","), default=["default", "same"],
                        help="sbi's default classifier and/or 'same': our 3x128 SELU MLP inside sbi")
    parser.add_argument("--many-chains", type=int, default=10_000,
                        help="also time our sampler with this many chains (0: skip)")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "compare_sbi.json"))
    args = parser.parse_args(argv)

    task = tasks.get("two_moons")
    key = jax.random.PRNGKey(args.seed)
    bank = simulate(jax.random.fold_in(key, 0), task, args.num_simulations, progress=False)
    x_obs = task.default_observation
    reference = task.reference_posterior(jax.random.fold_in(key, 3), x_obs, args.num_samples)

    start = time.perf_counter()
    estimator, history = fit(jax.random.fold_in(key, 1), bank, progress=False)
    ours_train = time.perf_counter() - start

    def ours(num_chains: int, num_samples: int) -> dict:
        """One compiled sample_posterior call, timed on its second run."""
        kwargs = dict(num_samples=num_samples, num_chains=num_chains)
        sample_posterior(jax.random.fold_in(key, 9), estimator, task.prior, x_obs, **kwargs).samples.block_until_ready()  # compile
        start = time.perf_counter()
        post = sample_posterior(jax.random.fold_in(key, 2), estimator, task.prior, x_obs, **kwargs)
        post.samples.block_until_ready()
        seconds = time.perf_counter() - start
        ess = within_chain_ess(np.asarray(post.chains))
        row = dict(num_chains=num_chains, num_samples=num_samples, sample_seconds=seconds,
                   samples_per_s=num_samples / seconds, ess=ess, ess_per_s=ess / seconds)
        return row, np.asarray(post.samples[: args.num_samples])

    runs, drawn = {}, {}
    runs["default"], drawn["default"] = ours(100, args.num_samples)
    if args.many_chains:  # the same sampler at accelerator-style width: many chains, 100 draws each
        runs["many_chains"], drawn["many_chains"] = ours(args.many_chains, 100 * args.many_chains)
    # C2ST only after every timing, so no scikit-learn work (and its BLAS threads) overlaps a timed call
    for name in runs:
        runs[name]["c2st"] = c2st_or_none(reference, drawn[name])
    result = dict(task="two_moons", num_simulations=args.num_simulations, num_samples=args.num_samples,
                  seed=args.seed, device=jax.devices()[0].device_kind, cpu_count=os.cpu_count(),
                  jax=jax.__version__, aalr_jax=aalr_jax.__version__,
                  aalr_jax_run=dict(train_seconds=ours_train, epochs=len(history.train_loss), sampling=runs))

    if args.sbi_python:
        result["sbi_nre_a"] = {network: run_sbi(args, bank, x_obs, reference, network) for network in args.sbi_networks}
        result["ratios"] = {
            f"ours_{mine}_vs_sbi_{network}": dict(
                train_speedup=theirs["train_seconds"] / ours_train,
                draws_per_s_speedup=runs[mine]["samples_per_s"] / theirs["samples_per_s"],
                ess_per_s_speedup=runs[mine]["ess_per_s"] / theirs["ess_per_s"])
            for network, theirs in result["sbi_nre_a"].items() for mine in runs}

    print(json.dumps(result, indent=1))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
