"""Sampling and training against the number of devices, and the communication each step needs.

For ``D`` in ``--devices`` (1, 2, 4, 8 by default) a fresh Python with ``D`` devices (on a CPU host
``XLA_FLAGS=--xla_force_host_platform_device_count=D``: ``D`` XLA devices that share the same cores)
measures:

* chain-steps/s of the compiled program that ``sample_posterior(..., mesh=D)`` runs, for each
  ``--layouts`` entry ``k×C`` (``k`` observations of ``C`` chains: ``8x64`` puts whole
  observations on each device, ``1x512`` splits one observation's chains, so its pooled metric
  is a cross-device sum), on two_moons with a 3×64 SELU ratio network trained for one epoch (a
  real network evaluation per step; the posterior's quality does not matter for throughput), for
  RWMH with independence moves (the default on two_moons) and HMC (5 leapfrog steps on average);
* training examples/s of ``aalr_jax.fit(key, bank, mesh=D, max_epochs=...)`` ("not available"
  while ``fit`` takes no ``mesh``);
* the collectives of the partitioned sampling program, read from its compiled HLO
  (``jax.jit(...).lower(...).compile().as_text()``): each all-reduce, all-gather, all-to-all,
  collective-permute and reduce-scatter with its bytes and how many loops enclose it. Bytes in
  the program's body run once per call; bytes inside the step loops run at most once per step
  (those under a ``conditional``, such as the window-end metric pooling, only when it fires).

Timings exclude compilation: each configuration runs once to compile, then ``--repeats`` times,
and the fastest run counts. On forced CPU devices every device shares the same cores, so the
numbers show the cost of partitioning (overhead), not a speed-up.

Usage::

    python benchmarks/device_scaling.py                     # writes results/device_scaling_cpu.json
    python benchmarks/device_scaling.py --devices 1,8 --layouts 1x64 --methods hmc --warmup 50
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
DTYPE_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s64": 8, "s32": 4, "u32": 4, "u64": 8, "pred": 1,
               "s8": 1, "u8": 1}


def collectives(hlo: str) -> list:
    """``[{op, bytes, computation, loops}]`` for every collective of a compiled HLO module.

    ``loops`` counts the ``while`` loops (body or condition) between the entry computation and the
    op's computation (0: once per call; 1: at most once per iteration of a loop; 2: per iteration of
    a loop inside a loop, such as HMC's leapfrog loop inside the step loop).
    """
    comp, calls, found = None, {}, []
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head and not line.startswith(" "):
            comp = head.group(1)
            calls[comp] = []
            if line.startswith("ENTRY"):
                entry = comp
            continue
        for kind, names in re.findall(r"(body|condition|to_apply|calls|branch_computations|true_computation|"
                                      r"false_computation)=(\{[^}]*\}|%?[\w.\-]+)", line):
            for name in re.findall(r"%?([\w.\-]+)", names):
                calls[comp].append((name, kind in ("body", "condition")))
        op = re.search(r"= (.*?) (" + "|".join(COLLECTIVES) + r")(?:-start)?\(", line)
        if op:
            shapes = re.findall(r"(\w+)\[([\d,]*)\]", op.group(1))
            size = sum(DTYPE_BYTES.get(t, 4) * _prod(dims) for t, dims in shapes)
            found.append(dict(op=op.group(2), bytes=size, computation=comp))
    depth = {entry: 0}
    stack = [entry]
    while stack:
        parent = stack.pop()
        for child, is_body in calls.get(parent, ()):
            d = depth[parent] + is_body
            if depth.get(child, -1) < d:
                depth[child] = d
                stack.append(child)
    for row in found:
        row["loops"] = depth.get(row["computation"], -1)
    return found


def _prod(dims: str) -> int:
    n = 1
    for d in filter(None, dims.split(",")):
        n *= int(d)
    return n


def _timed(fn, repeats):
    """Fastest of ``repeats`` calls of ``fn()`` (after one compiling call); ``fn`` blocks."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_layout(args, estimator, prior, xs, method, num_chains, devices) -> dict:
    """Chain-steps/s and collectives of the sampling program for ``k = len(xs)`` observations."""
    import jax

    from aalr_jax import chains, sharding
    from aalr_jax.ratio_posterior import _place, posterior, run_settings

    extra = dict(num_integration_steps=5) if method == "hmc" else {}
    post = posterior(estimator, prior, xs)
    observations = xs.shape[0]
    sampler, settings = run_settings(post.dim, method.split("+")[0], num_samples=num_chains * args.draws,
                                     num_chains=num_chains, num_warmup=args.warmup, thin=1,
                                     num_init_candidates=num_chains, **extra)
    grid = chains.chain_mesh(sharding.resolve_mesh(devices), observations, num_chains)
    key = jax.random.PRNGKey(3)
    if grid is not None:
        key, post = _place(key, post, grid)
    # the program sample_posterior(..., mesh=devices) runs: compiled once, timed, read for collectives
    compiled = chains.sample_batch.lower(key, post, sampler=sampler, settings=settings, mesh=grid).compile()
    seconds = _timed(lambda: jax.block_until_ready(compiled(key, post)), args.repeats)
    ops = collectives(compiled.as_text())
    by_depth = {}
    for op in ops:
        by_depth[op["loops"]] = by_depth.get(op["loops"], 0) + op["bytes"]
    row = dict(method=method, observations=observations, chains=num_chains, seconds=seconds,
               chain_steps_per_s=observations * num_chains * (args.warmup + args.draws) / seconds,
               mesh=None if grid is None else dict(grid.shape), collectives=ops,
               bytes_by_loop_depth={str(k): v for k, v in sorted(by_depth.items())})
    print(f"D={devices} {method:8s} {observations}x{num_chains}: {row['chain_steps_per_s']:10.0f} chain-steps/s, "
          f"collective bytes by loop depth {row['bytes_by_loop_depth']}", file=sys.stderr)
    return row


def worker(args) -> dict:
    """One device count: this process's ``jax.device_count()``."""
    import jax

    from aalr_jax import fit, simulate, tasks

    devices = jax.device_count()
    task = tasks.get("two_moons")
    bank = simulate(jax.random.PRNGKey(0), task, args.num_simulations, progress=False)
    estimator, _ = fit(jax.random.PRNGKey(1), bank, hidden_features=(64, 64, 64), quadratic=False, num_members=1,
                       max_epochs=1, progress=False)
    rows = []
    for layout in [] if args.training_only else args.layouts.split(","):
        observations, num_chains = (int(v) for v in layout.split("x"))
        xs = simulate(jax.random.PRNGKey(2), task, observations, progress=False).x
        for method in args.methods.split(","):
            rows.append(time_layout(args, estimator, task.prior, xs, method, num_chains, devices))
    return dict(devices=devices, sampling=rows, training=training(args, bank, devices))


def training(args, bank, devices) -> dict:
    """Training examples/s of ``fit(..., mesh=devices)``, or why it could not be measured."""
    import jax

    from aalr_jax import fit

    if "mesh" not in inspect.signature(fit).parameters:
        return dict(available=False, reason="aalr_jax.fit takes no mesh keyword")
    options = dict(hidden_features=(64, 64, 64), batch_size=args.batch_size, validation_fraction=0.1,
                   patience=10**6, progress=False, mesh=devices)
    if "num_members" in inspect.signature(fit).parameters:  # one network: its examples/s, not fit's choices
        options.update(quadratic=False, num_members=1)
    run = lambda epochs: fit(jax.random.PRNGKey(4), bank, max_epochs=epochs, **options)
    try:
        run(1)  # compiles
        start = time.perf_counter()
        run(1 + args.train_epochs)
        seconds = time.perf_counter() - start
        one = time.perf_counter()
        run(1)
        seconds -= time.perf_counter() - one  # the set-up that every fit pays once
    except (TypeError, ValueError) as err:
        return dict(available=False, reason=f"{type(err).__name__}: {err}")
    examples = args.train_epochs * int(0.9 * bank.num_simulations) // args.batch_size * args.batch_size
    return dict(available=True, batch_size=args.batch_size, examples_per_s=examples / max(seconds, 1e-9))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts")
    parser.add_argument("--layouts", default="8x64,1x512",
                        help="comma-separated OBSERVATIONSxCHAINS: 8x64 splits observations, 1x512 one "
                             "observation's chains (its pooled metric crosses devices)")
    parser.add_argument("--methods", default="rwmh+ind,hmc", help="rwmh+ind (the default on two_moons), hmc")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-simulations", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "device_scaling_cpu.json"))
    parser.add_argument("--append", action="store_true",
                        help="keep the runs of other device counts already in --output")
    parser.add_argument("--training-only", action="store_true",
                        help="measure training only; with --append the saved sampling rows are kept")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return None
    counts = [int(v) for v in args.devices.split(",")]
    runs, saved = [], {}
    if args.append and os.path.exists(args.output):
        with open(args.output) as f:
            saved = {run["devices"]: run for run in json.load(f)["runs"]}
        runs = [run for d, run in saved.items() if d not in counts]
    for d in counts:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}", JAX_PLATFORMS="cpu",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        argv_d = [a for a in (argv if argv is not None else sys.argv[1:])] + ["--worker"]
        done = subprocess.run([sys.executable, os.path.abspath(__file__), *argv_d], env=env, text=True,
                              stdout=subprocess.PIPE, check=True)
        run = json.loads(done.stdout.strip().splitlines()[-1])
        if args.training_only and d in saved:  # the saved sampling rows, the new training row
            run = dict(saved[d], training=run["training"])
        runs.append(run)
    import jax

    result = dict(machine=f"{os.cpu_count()} CPU cores ({platform.machine()}), forced XLA host devices sharing "
                          "them; shared with other jobs", python=platform.python_version(), jax=jax.__version__,
                  layouts=args.layouts, methods=args.methods, warmup=args.warmup,
                  draws=args.draws, repeats=args.repeats, runs=sorted(runs, key=lambda run: run["devices"]))
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    for run in runs:
        for row in run["sampling"]:
            print(f"D={run['devices']}  {row['method']:8s} {row['observations']}x{row['chains']}  "
                  f"{row['chain_steps_per_s']:10.0f} chain-steps/s  bytes by loop depth {row['bytes_by_loop_depth']}")
        print(f"D={run['devices']}  training: {run['training']}")
    return result


if __name__ == "__main__":
    main()
