"""Host simulators on Dask: simulations per second against workers, and the engine's overhead.

Three measurements, all with ``simulate(key, (prior, simulator), n, backend=...)`` and a LocalCluster
of single-threaded worker processes that is started (and warmed with one small run) before timing:

1. Scaling: a simulator of about 10 ms a call (``time.sleep(0.01)`` plus a little NumPy) run by
   ``backend="local"`` (serial, in process: the reference) and by ``backend="dask"`` on 1, 2, ...
   workers (``--workers``) in the same chunks (``--chunk-size``, so that only the workers change);
   simulations per second and the speed-up over ``local``.
2. Per-simulation overhead: a ~0 ms simulator (two normal draws) in default chunks; seconds per
   simulation of ``local`` and of ``dask`` on one worker, and their difference (what the engine adds).
3. Per-task overhead: the same simulator with ``chunk_size=1``, one Dask task per simulation; the
   seconds per task bound the tasks per second a scheduler sustains and so the chunk size needed
   to keep it out of the way (``aalr_jax.distributed.default_chunk_size``).

Plus the cost of a Zarr store (``store=``) against memory, per chunk written, on ``local``.

Usage::

    python benchmarks/simulation_scaling.py                    # workers 1,2; n = 400 at 10 ms
    python benchmarks/simulation_scaling.py --workers 1,2,4,8 --num-simulations 2000

Writes ``benchmarks/results/simulation_scaling.json`` (``--output``). Wall clock on this machine;
ratios measured in the same run, never against fixed times.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time

import jax
import numpy as np

from aalr_jax.data import simulate
from aalr_jax.files import atomic_write
from aalr_jax.priors import box_uniform

HERE = os.path.dirname(os.path.abspath(__file__))
PRIOR = box_uniform(np.zeros(2, np.float32), np.ones(2, np.float32))


def ten_ms(rng, theta):
    """About 10 ms: a sleep (an external program's wait) plus a little NumPy; x: (3,)."""
    time.sleep(0.01)
    z = rng.normal(size=256)
    return np.array([theta[0], theta[1], float(np.sort(z)[128])])


def zero_ms(rng, theta):
    """As close to 0 ms as a Python call gets; x: (2,)."""
    return theta + rng.normal(size=2)


def timed(n: int, simulator, repeats: int = 2, **kwargs) -> float:
    """Best wall time of ``repeats`` runs of ``simulate`` (a shared machine only ever slows a run down)."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        simulate(jax.random.PRNGKey(0), (PRIOR, simulator), n, progress=False, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    from dask.distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--num-simulations", type=int, default=400, help="10 ms simulations per run (default 400)")
    parser.add_argument("--overhead-simulations", type=int, default=20_000,
                        help="~0 ms simulations for the per-simulation overhead (default 20000)")
    parser.add_argument("--chunk-size", type=int, default=25,
                        help="simulations per task in the scaling runs, the same for every worker count (default 25)")
    parser.add_argument("--tasks", type=int, default=200, help="one-simulation tasks for the per-task overhead")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "simulation_scaling.json"))
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    n = args.num_simulations

    timed(4, ten_ms, repeats=1, backend="local")  # warm: compiles the θ draw in JAX
    local_seconds = timed(n, ten_ms, backend="local")
    local_zero = timed(args.overhead_simulations, zero_ms, backend="local")
    scaling, overhead = [], {}
    print(f"{'backend':<8}{'workers':>8}{'sims/s':>10}{'speed-up':>10}   (10 ms simulator, n={n})")
    print(f"{'local':<8}{1:>8}{n / local_seconds:>10.1f}{1.0:>10.2f}")
    for workers in counts:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            timed(4 * workers, ten_ms, repeats=1, backend="dask", client=client)  # warm: workers up and serving
            seconds = timed(n, ten_ms, backend="dask", client=client, chunk_size=args.chunk_size)
            row = {"workers": workers, "num_simulations": n, "chunk_size": args.chunk_size, "seconds": seconds,
                   "simulations_per_second": n / seconds, "speedup_over_local": local_seconds / seconds,
                   "load_average_1min": os.getloadavg()[0]}
            scaling.append(row)
            print(f"{'dask':<8}{workers:>8}{row['simulations_per_second']:>10.1f}{row['speedup_over_local']:>10.2f}",
                  flush=True)
            if workers == 1:
                dask_zero = timed(args.overhead_simulations, zero_ms, backend="dask", client=client)
                per_task = timed(args.tasks, zero_ms, backend="dask", client=client, chunk_size=1)
                overhead = {
                    "num_simulations": args.overhead_simulations,
                    "local_seconds_per_simulation": local_zero / args.overhead_simulations,
                    "dask_seconds_per_simulation": dask_zero / args.overhead_simulations,
                    "engine_seconds_per_simulation": (dask_zero - local_zero) / args.overhead_simulations,
                    "num_tasks": args.tasks,
                    "dask_seconds_per_task": per_task / args.tasks,
                    "tasks_per_second": args.tasks / per_task,
                }

    folder = tempfile.mkdtemp(prefix="aalr_scaling_")
    try:
        chunk = 100
        memory = timed(args.overhead_simulations, zero_ms, backend="local", chunk_size=chunk)
        stored = timed(args.overhead_simulations, zero_ms, backend="local", chunk_size=chunk,
                       store=os.path.join(folder, "bank.zarr"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    num_chunks = args.overhead_simulations // chunk
    overhead["zarr_seconds_per_chunk"] = (stored - memory) / num_chunks
    overhead["zarr_chunk_size"] = chunk
    print(f"per simulation: local {overhead['local_seconds_per_simulation'] * 1e6:.0f} µs, dask (1 worker) "
          f"{overhead['dask_seconds_per_simulation'] * 1e6:.0f} µs; per task (chunk_size=1): "
          f"{overhead['dask_seconds_per_task'] * 1e3:.1f} ms = {overhead['tasks_per_second']:.0f} tasks/s; "
          f"Zarr store: {overhead['zarr_seconds_per_chunk'] * 1e3:.1f} ms per chunk of {chunk}")

    result = dict(
        benchmark="simulation_scaling",
        versions={name: importlib.metadata.version(name) for name in ("aalr-jax", "jax", "dask", "distributed", "zarr")},
        host={"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        seed=0,
        note="wall clock on a shared machine (load_average_1min shows other work running); LocalCluster of "
             "single-threaded worker processes, warmed before timing; best of 2 runs",
        local={"num_simulations": n, "seconds": local_seconds, "simulations_per_second": n / local_seconds},
        scaling=scaling,
        overhead=overhead,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_write(args.output, lambda f: f.write(json.dumps(result, indent=2).encode()))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
