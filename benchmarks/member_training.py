"""fit's networks after the first trained at once (vmap) against one after the other, side by side.

``fit`` trains up to 4 networks and keeps the average of the first m (``train.member_candidates``).
Networks 1..M-1 share the first one's architecture, so they can train in one compiled program,
``jax.vmap`` over their stacked optimizer states (``train._train_together``), each with its own
initialisation, minibatch order and early stop: the same steps each takes alone. Which way ``fit``
goes is ``train._together(backend)``; this script forces each way in turn on the same bank and
key and reports, per task and budget:

* wall seconds of ``fit(num_members=M, quadratic=False)`` both ways (compilation included, as a
  user pays it), the first run of each discarded as a warm-up of JAX's other caches;
* the ratio one-after-the-other / together (above 1: together is faster);
* the held-out loss of both results on 20,000 fresh simulations (they should agree to float order).

Usage::

    python benchmarks/member_training.py                                  # two_moons, gaussian_linear at 10^4
    python benchmarks/member_training.py --tasks gaussian_linear --budgets 10000,100000 --output results/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax

import aalr_jax
from aalr_jax import fit, simulate, tasks
from aalr_jax import train as train_module

HERE = os.path.dirname(os.path.abspath(__file__))


def run(task_name: str, budget: int, members: int, repeats: int) -> dict:
    task = tasks.get(task_name)
    bank = simulate(jax.random.PRNGKey(0), task, budget, progress=False)
    test = simulate(jax.random.PRNGKey(5), task, 20_000, progress=False)
    original = train_module._together
    row = {"task": task_name, "num_simulations": budget, "num_members": members}
    try:
        for way, together in [("warm-up", False)] + [("together", True), ("one after the other", False)] * repeats:
            train_module._together = lambda backend, together=together: together
            start = time.perf_counter()
            result = fit(jax.random.PRNGKey(1), bank, num_members=members, quadratic=False, progress=False)
            seconds = time.perf_counter() - start
            if way == "warm-up":
                continue
            row.setdefault(way, {"seconds": []})["seconds"].append(round(seconds, 2))
            row[way]["held_out_loss"] = round(train_module.evaluate(result.estimator, test), 5)
    finally:
        train_module._together = original
    best = {way: min(row[way]["seconds"]) for way in ("together", "one after the other")}
    row["ratio"] = round(best["one after the other"] / best["together"], 2)
    print(f"{task_name} {budget}: together {best['together']:.1f} s, one after the other "
          f"{best['one after the other']:.1f} s, ratio {row['ratio']}", flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="two_moons,gaussian_linear")
    parser.add_argument("--budgets", default="10000")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each way (the fastest counts)")
    parser.add_argument("--output", default=None,
                        help="results JSON (default: results/member_training_<platform>.json)")
    args = parser.parse_args()
    device = jax.devices()[0]
    rows = [run(t, int(b), args.members, args.repeats) for t in args.tasks.split(",") for b in args.budgets.split(",")]
    out = {"device": f"{device.platform}: {device.device_kind}", "cpu_count": os.cpu_count(),
           "jax": jax.__version__, "aalr_jax": aalr_jax.__version__, "python": platform.python_version(),
           "command": "python benchmarks/member_training.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "output"),
           "rows": rows}
    path = args.output or os.path.join(HERE, "results", f"member_training_{device.platform}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
