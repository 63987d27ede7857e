"""Simulation throughput of every built-in task: ``simulate(key, task, n, progress=False)``.

For each task (all of ``aalr_jax.tasks.names()`` at run time unless ``--tasks`` is given) one
warm-up call of ``simulate`` with the same ``n`` compiles the chunked ``vmap`` of the simulator;
a second call with another key is timed (wall clock, results on the host). ``simulate`` wraps
``jax.jit(jax.vmap(simulator))`` anew on every call, which recompiles; so this script turns on a
temporary persistent compilation cache, from which the timed call loads the program compiled by
the warm-up call: the timed figure excludes compilation (``warmup_seconds`` includes it). Simulations that return
non-finite values (e.g. Lotka–Volterra MJP runs past the event budget) are dropped
(``on_invalid="drop"``) and their fraction is reported; they count as simulations done.

Usage::

    python benchmarks/simulation_throughput.py                       # 1e5 per task, all tasks
    python benchmarks/simulation_throughput.py --tasks mg1,weinberg --num-simulations 10000

Writes ``benchmarks/results/simulation_throughput.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import warnings

import jax
import numpy as np

import aalr_jax
from aalr_jax import tasks
from aalr_jax.data import simulate

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(name: str, num_simulations: int, seed: int) -> dict:
    """Throughput of one task: warm-up call, then a timed call."""
    task = tasks.get(name)
    key_warm, key_run = jax.random.split(jax.random.PRNGKey(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dropped invalid simulations
        start = time.perf_counter()
        simulate(key_warm, task, num_simulations, progress=False, on_invalid="drop")
        warm = time.perf_counter() - start
        start = time.perf_counter()
        bank = simulate(key_run, task, num_simulations, progress=False, on_invalid="drop")
        np.asarray(bank.x)
        seconds = time.perf_counter() - start
    return {
        "task": name,
        "load_average_1min": os.getloadavg()[0],
        "num_simulations": num_simulations,
        "seconds": seconds,
        "simulations_per_second": num_simulations / seconds,
        "warmup_seconds": warm,
        "invalid_fraction": 1.0 - bank.num_simulations / num_simulations,
        "theta_dim": task.theta_dim,
        "x_shape": list(task.x_shape),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: all registered)")
    parser.add_argument("--num-simulations", type=int, default=100_000, help="simulations per task (default 1e5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "simulation_throughput.json"))
    args = parser.parse_args(argv)
    names = tasks.names() if args.tasks is None else [n.strip() for n in args.tasks.split(",") if n.strip()]
    unknown = sorted(set(names) - set(tasks.names()))
    if unknown:
        parser.error(f"unknown tasks {unknown}; available: {', '.join(tasks.names())}")

    cache_dir = tempfile.mkdtemp(prefix="aalr_jax_xla_cache_")
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    rows = []
    print(f"{'task':<26}{'simulations/s':>16}{'seconds':>10}{'invalid':>9}")
    for name in names:
        row = measure(name, args.num_simulations, args.seed)
        rows.append(row)
        print(f"{name:<26}{row['simulations_per_second']:>16,.0f}{row['seconds']:>10.2f}"
              f"{row['invalid_fraction']:>9.2%}", flush=True)  # fmt: skip
    shutil.rmtree(cache_dir, ignore_errors=True)

    result = {
        "benchmark": "simulation_throughput",
        "device": str(jax.devices()[0]),
        "platform": jax.devices()[0].platform,
        "jax_version": jax.__version__,
        "aalr_jax_version": getattr(aalr_jax, "__version__", "unknown"),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "seed": args.seed,
        "note": "wall clock on a shared machine; load_average_1min (per task) shows other work running",
        "num_simulations": args.num_simulations,
        "registered_tasks": tasks.names(),
        "results": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
