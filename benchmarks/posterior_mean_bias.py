"""Where a ratio estimator's posterior means go wrong on gaussian_linear, and whether the bank or the
network is to blame.

gaussian_linear's posterior is exactly N(x/2, 0.05·I) (prior N(0, 0.1·I), noise N(0, 0.1·I)). For
each bank seed and network setting, one network is trained on ``--budget`` simulations; then, on
``--observations`` fresh observations, the learned posterior p(θ) r̂(x|θ) is importance-sampled
from the exact one (weights r̂/r, self-normalised; no MCMC error) and its mean compared with x/2 in
posterior standard deviations, ``z = (m̂(x) - x/2) / √0.05``. Printed per network: the mean of
|z| (norm over the dimensions) overall and by tercile of |x|, the slope of z on x (0 for an
unbiased mean, negative: means shrunk towards the prior), the variance ratio to 0.05, and the
importance sampler's smallest effective sample size. Then the correlation of the offsets of every
pair of networks: as high across banks as within one bank means a bias of the network, not noise
of the bank.

    python benchmarks/posterior_mean_bias.py --banks 1,2 --configs plain,quadratic
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax import fit, simulate
from aalr_jax.tasks import gaussian_linear

HERE = os.path.dirname(os.path.abspath(__file__))
POSTERIOR_VAR = 0.05
CONFIGS = {  # fit keywords on top of ratio_weighting=--ratio-weighting
    "plain": {},
    "quadratic": dict(quadratic=True),
    "no bound": dict(theta_bound=None),
    "no ema": dict(ema_decay=0.0),
    "alpha 0": dict(ratio_weighting=0.0),
    "patience 300": dict(patience=300),
    "3x256": dict(hidden_features=(256, 256, 256)),
    "5x128": dict(hidden_features=(128,) * 5),
    "gelu": dict(activation="gelu"),
}


def offsets(estimator, x: jax.Array, num_draws: int, key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z (k, d), variance ratio (k, d), IS effective sample size (k,))`` for observations ``x (k, d)``."""
    eps = jax.random.normal(key, (num_draws, x.shape[-1]))

    def one(xo):
        theta = xo / 2 + jnp.sqrt(POSTERIOR_VAR) * eps
        exact = -jnp.sum((xo - theta) ** 2, -1) / 0.2  # log r(x|θ) up to a constant in θ
        w = jax.nn.softmax(estimator.log_ratio(theta, jnp.broadcast_to(xo, theta.shape)) - exact)
        mean = w @ theta
        return (mean - xo / 2) / jnp.sqrt(POSTERIOR_VAR), (w @ (theta - mean) ** 2) / POSTERIOR_VAR, 1 / jnp.sum(w**2)

    return tuple(np.asarray(a) for a in jax.lax.map(one, x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--banks", default="1,2", help="bank seeds")
    parser.add_argument("--seeds", default="7", help="training seeds per bank")
    parser.add_argument("--configs", default="plain,quadratic", help=f"subset of {sorted(CONFIGS)}")
    parser.add_argument("--ratio-weighting", type=float, default=0.5, help="fit's α for every network")
    parser.add_argument("--observations", type=int, default=50)
    parser.add_argument("--draws", type=int, default=20_000, help="importance draws per observation")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "posterior_mean_bias.json"))
    args = parser.parse_args(argv)
    task = gaussian_linear.make(dim=10)
    x = jnp.asarray(simulate(jax.random.PRNGKey(99), task, args.observations, progress=False).x)
    norms = np.linalg.norm(np.asarray(x), axis=1)
    terciles = np.array_split(np.argsort(norms), 3)
    rows, z_all = [], {}
    for config, bank_seed, seed in itertools.product(args.configs.split(","), map(int, args.banks.split(",")),
                                                     map(int, args.seeds.split(","))):
        bank = simulate(jax.random.PRNGKey(bank_seed), task, args.budget, progress=False)
        result = fit(jax.random.PRNGKey(seed), bank, progress=False,
                     **{"ratio_weighting": args.ratio_weighting, **CONFIGS[config]})
        z, var_ratio, ess = offsets(result.estimator, x, args.draws, jax.random.PRNGKey(5))
        size = np.linalg.norm(z, axis=1)
        slope = float(np.sum(z * np.asarray(x)) / np.sum(np.asarray(x) ** 2))
        label = f"{config} bank {bank_seed} seed {seed}"
        z_all[label] = z
        rows.append(dict(config=config, bank=bank_seed, seed=seed, mean_abs_z=float(size.mean()),
                         abs_z_by_tercile=[float(size[t].mean()) for t in terciles], slope=slope,
                         variance_ratio=float(var_ratio.mean()), min_ess=float(ess.min()),
                         best_epoch=int(result.history.best_epoch)))
        print(f"{label:28s} |z| {size.mean():.3f} (by |x| tercile {' '.join(f'{v:.3f}' for v in rows[-1]['abs_z_by_tercile'])})"
              f"  slope {slope:+.3f}  variance ratio {rows[-1]['variance_ratio']:.3f}  IS ess ≥ {ess.min():.0f}", flush=True)
    pairs = []
    for a, b in itertools.combinations(z_all, 2):
        corr = float(np.corrcoef(z_all[a].ravel(), z_all[b].ravel())[0, 1])
        pairs.append(dict(a=a, b=b, correlation=corr))
        print(f"corr({a}, {b}) = {corr:.2f}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(dict(device=jax.devices()[0].device_kind, budget=args.budget, observations=args.observations,
                       ratio_weighting=args.ratio_weighting, rows=rows, correlations=pairs), f, indent=1)


if __name__ == "__main__":
    main()
