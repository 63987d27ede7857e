"""Expected coverage over 1,000 test pairs of a 2-D task, timed phase by phase.

Two moons (θ ∈ [-1, 1]², a bimodal posterior): a ratio estimator is trained quickly, then
``num_pairs`` pairs ``(θ*, x) ~ p(θ, x)`` are drawn and the HPD credibility of each θ* is computed

* from posterior samples of ONE batched ``sample_posterior`` call over all observations
  (RWMH, ``num_chains`` chains per observation), and
* by grid integration (exact normalisation on a ``resolution²`` grid over the prior box);

and, as a reference on the same pairs, from the exact likelihood (``ExactLikelihood``), whose
coverage must be nominal. SBC ranks and the batched MCMC health report come from the same draws.
Every phase is timed as a user sees it, compilation included (each runs once). Output: a table
on stdout and ``results/coverage_timing.json`` (device, versions, seeds, settings, seconds, numbers).

Usage::

    python benchmarks/coverage_timing.py                # 1,000 pairs
    python benchmarks/coverage_timing.py --num-pairs 100 --max-epochs 5   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time

import jax
import numpy as np

import aalr_jax
from aalr_jax import ExactLikelihood, diagnostics, fit, sample_posterior, simulate, tasks

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-pairs", type=int, default=1000)
    parser.add_argument("--num-simulations", type=int, default=20_000)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--hidden", default="64,64,64")
    parser.add_argument("--num-chains", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-warmup", type=int, default=300)
    parser.add_argument("--num-init-candidates", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "coverage_timing.json"))
    args = parser.parse_args()

    task = tasks.get("two_moons")
    key = jax.random.PRNGKey(args.seed)
    k_bank, k_fit, k_pairs, k_sample, k_exact = jax.random.split(key, 5)
    seconds, numbers = {}, {}

    @contextlib.contextmanager
    def phase(name):
        start = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - start, 2)
        print(f"  {name:<28s} {seconds[name]:8.2f} s", flush=True)

    device = jax.devices()[0]
    print(f"coverage timing: two_moons, {args.num_pairs} pairs, {device.platform} ({device.device_kind}), "
          f"{os.cpu_count()} CPU cores, jax {jax.__version__}")
    with phase("simulate bank"):
        bank = simulate(k_bank, task, args.num_simulations, progress=False)
        jax.block_until_ready(bank)
    with phase("train estimator"):
        result = fit(k_fit, bank, hidden_features=tuple(int(h) for h in args.hidden.split(",")),
                     batch_size=512, max_epochs=args.max_epochs, patience=10, quadratic=False, num_members=1,
                     progress=False)
        estimator = jax.block_until_ready(result.estimator)
    numbers["training"] = {"epochs": len(result.history.train_loss), "best_epoch": int(result.history.best_epoch),
                           "best_validation_loss": float(result.history.validation_loss[result.history.best_epoch])}
    with phase("simulate pairs"):
        pairs = jax.block_until_ready(simulate(k_pairs, task, args.num_pairs, progress=False))

    sampler = dict(num_samples=args.num_samples, num_chains=args.num_chains, num_warmup=args.num_warmup,
                   num_init_candidates=args.num_init_candidates)
    with phase("sample posteriors (batched)"):
        post = sample_posterior(k_sample, estimator, task.prior, pairs.x, **sampler)
        jax.block_until_ready(post)
    with phase("credibility from samples"):
        cred = diagnostics.sample_credibility(estimator, task.prior, pairs.x, pairs.theta, post.samples)
    coverage = diagnostics.coverage_from_credibility(cred)
    with phase("credibility on a grid"):
        grid = diagnostics.grid_credibility(estimator, task.prior, pairs.x, pairs.theta, resolution=args.resolution)
    coverage_grid = diagnostics.coverage_from_credibility(grid)
    with phase("SBC ranks and tests"):
        sbc = diagnostics.sbc(np.asarray(pairs.theta), np.asarray(post.samples), num_draws=min(args.num_samples, 100))
    with phase("MCMC health (classic)"):
        health = diagnostics.mcmc_report(post, rank_normalized=False)

    exact = ExactLikelihood(task.log_likelihood, task.x_shape)
    with phase("exact: sample (batched)"):
        post_exact = jax.block_until_ready(sample_posterior(k_exact, exact, task.prior, pairs.x, **sampler))
    with phase("exact: credibility"):
        cred_exact = diagnostics.sample_credibility(exact, task.prior, pairs.x, pairs.theta, post_exact.samples)
    coverage_exact = diagnostics.coverage_from_credibility(cred_exact)
    health_exact = diagnostics.mcmc_report(post_exact, rank_normalized=False)

    def summary(c):
        return {"verdict": c.verdict, "conservative": c.conservative,
                "max_abs_deviation": float(np.max(np.abs(c.coverage - c.levels))),
                "coverage": np.round(c.coverage, 4).tolist()}

    def health_summary(reports):
        return {"observations_with_warnings": int(sum(not r.ok for r in reports)),
                "median_across_chain_rhat": float(np.median([np.max(r.rhat) for r in reports])),
                "median_within_mode_rhat": float(np.median([np.max(r.mode_rhat) for r in reports])),
                "observations_by_num_modes": {str(m): int(n) for m, n in
                                              zip(*np.unique([r.num_modes for r in reports], return_counts=True))}}

    numbers.update({
        "levels": coverage.levels.tolist(),
        "coverage_samples": summary(coverage),
        "coverage_grid": summary(coverage_grid),
        "coverage_exact_likelihood": summary(coverage_exact),
        "credibility_samples_vs_grid_max_abs": float(np.max(np.abs(cred - grid))),
        "sbc": {"chi2_pvalue": sbc.chi2_pvalue.tolist(), "ks_pvalue": sbc.ks_pvalue.tolist(),
                "dispersion": sbc.dispersion.tolist(), "uniform": sbc.uniform},
        "mcmc_health": health_summary(health),
        "mcmc_health_exact": health_summary(health_exact),
    })
    sampling_total = seconds["sample posteriors (batched)"] + seconds["credibility from samples"]
    numbers["ratio_sample_path_over_grid_path"] = round(sampling_total / seconds["credibility on a grid"], 2)
    print(f"coverage (samples): {coverage.verdict}, max |coverage - level| "
          f"{numbers['coverage_samples']['max_abs_deviation']:.3f}; grid: {coverage_grid.verdict} "
          f"({numbers['coverage_grid']['max_abs_deviation']:.3f}); exact likelihood: {coverage_exact.verdict} "
          f"({numbers['coverage_exact_likelihood']['max_abs_deviation']:.3f})")
    print(f"sample path / grid path time: {numbers['ratio_sample_path_over_grid_path']}; "
          f"total {sum(seconds.values()):.1f} s")

    record = {
        "benchmark": "coverage_timing", "task": "two_moons", "num_pairs": args.num_pairs, "seed": args.seed,
        "settings": {**vars(args), "output": None, "sampler": {"method": "rwmh", **sampler}},
        "device": {"platform": device.platform, "kind": device.device_kind, "cpu_count": os.cpu_count(),
                   "machine": platform.machine(), "processor": platform.processor()},
        "versions": {"aalr_jax": aalr_jax.__version__, "jax": jax.__version__, "python": platform.python_version()},
        "seconds": seconds, "seconds_total": round(sum(seconds.values()), 2), "note": "compilation included",
        "numbers": numbers,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
