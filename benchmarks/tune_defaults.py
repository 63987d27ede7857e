"""Choose training defaults on our own references, never on sbibm's observations.

For each candidate setting of ``fit`` and each budget, train on a fresh bank and score the
posterior of fresh observations drawn from the joint (seeds disjoint from every benchmark) by
C2ST against an exact reference: two_moons (exact sampler) and gaussian_linear (analytic).
Also reports the best validation loss and the AALR loss on 20,000 fresh test pairs, the other
selection criteria.

    python benchmarks/tune_defaults.py --budgets 1000,10000 --observations 3
"""

from __future__ import annotations

import argparse
import json
import os
import time

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aalr_jax import fit, fit_ensemble, sample_posterior, simulate, tasks
from aalr_jax.tasks import gaussian_mixture as gm
from aalr_jax.tasks.gaussian_linear import NOISE_VAR, PRIOR_VAR
from aalr_jax.tasks.gaussian_linear_uniform import log_normal_interval_mass
from aalr_jax.train import default_batch_size, default_learning_rate, evaluate
from sbibm import c2st_scores

HERE = os.path.dirname(os.path.abspath(__file__))


def candidates(budget: int) -> dict:
    """Named ``fit`` keyword sets; optimizers that need the step count get it from the budget."""
    steps = lambda batch: max(1, int(0.9 * budget) // batch)
    cosine = lambda batch, epochs, lr=1e-3, wd=0.0: optax.adamw(
        optax.cosine_decay_schedule(lr, epochs * steps(batch), alpha=0.01), weight_decay=wd)
    batch = default_batch_size(int(0.9 * budget))  # fit's defaults for its 90 % training split
    lr = default_learning_rate(batch)
    return {
        # cosine decay to 1 % over 300 epochs, batch n/16 in [64, 512], patience 50, the parameters' moving
        # average over min(1000, steps / 10) steps, ratio weighting α = ½. In a result file, "default" is
        # fit's default when that file was written: benchmarks/README.md gives its settings beside each table
        "default": dict(),
        "no ema": dict(ema_decay=0.0),
        "constant lr1e-3 b256 patience 20": dict(optimizer=optax.adamw(1e-3, weight_decay=0.0), batch_size=256,
                                                 patience=20),
        "3x256": dict(hidden_features=(256, 256, 256)),
        "5x128": dict(hidden_features=(128,) * 5),
        "b128": dict(batch_size=128),
        "cosine 100ep": dict(max_epochs=100),  # the default schedule, decayed over 100 epochs
        "cosine 150ep": dict(max_epochs=150),
        "wd 1e-4": dict(optimizer=cosine(batch, 300, lr, 1e-4)),  # decoupled weight decay (AdamW)
        "wd 1e-3": dict(optimizer=cosine(batch, 300, lr, 1e-3)),
        "lr/4": dict(learning_rate=lr / 4),
        "b2048 lr*2": dict(batch_size=2048, learning_rate=2 * lr),
        "cosine 300ep b256": dict(optimizer=cosine(256, 300), patience=300),
        "cosine 300ep b256 patience 50": dict(optimizer=cosine(256, 300), patience=50),
        "cosine 300ep b512 lr2e-3 patience 50": dict(batch_size=512, optimizer=cosine(512, 300, 2e-3), patience=50),
        "cosine 300ep b64 lr1e-3 patience 50": dict(batch_size=64, optimizer=cosine(64, 300), patience=50),
        "ensemble 2": dict(ensemble=2),  # fit_ensemble(num_members=2): the default network, logits averaged
        "ensemble 4": dict(ensemble=4),
        "ensemble 8": dict(ensemble=8),
        "negatives 4": dict(num_negatives=4),  # every x meets 4 independent θ per batch
        "negatives 16": dict(num_negatives=16),
        "negatives 4 lr/4": dict(num_negatives=4, learning_rate=lr / 4),
        # each pair's loss weighted by (1 + r̂)^α; α = ½ is fit's default: every candidate without
        # ratio_weighting trains with it. In the result files up to tune_defaults_alpha.json ("default",
        # "quadratic", "no ema", ...) candidates without it trained with α = 0, the "ratio 0" here
        "ratio 0": dict(ratio_weighting=0.0),
        "ratio 0.25": dict(ratio_weighting=0.25),
        "ratio 0.5": dict(ratio_weighting=0.5),
        "ratio 0.75": dict(ratio_weighting=0.75),
        "ensemble 4 ratio 0.5": dict(ensemble=4, ratio_weighting=0.5),
        # the plain validation loss barely sees what the weighting improves: no early stopping
        "patience 300": dict(patience=300),
        "ratio 0.25 patience 300": dict(ratio_weighting=0.25, patience=300),
        "ratio 0.5 patience 300": dict(ratio_weighting=0.5, patience=300),
        "ensemble 4 ratio 0.5 patience 300": dict(ensemble=4, ratio_weighting=0.5, patience=300),
        "ensemble 8 ratio 0.5 patience 300": dict(ensemble=8, ratio_weighting=0.5, patience=300),
        # gaussian_linear at 10^5 stops near epoch 65 of 300, at nearly the peak rate: less SGD noise there
        "ratio 0.5 lr/4": dict(ratio_weighting=0.5, learning_rate=lr / 4),
        "ratio 0.5 cosine 100ep": dict(ratio_weighting=0.5, max_epochs=100),
        "ratio 0.5 negatives 4": dict(ratio_weighting=0.5, num_negatives=4),
        "ratio 0.5 ema 0.99": dict(ratio_weighting=0.5, ema_decay=0.99),
        "ratio 0.5 ema 0.999": dict(ratio_weighting=0.5, ema_decay=0.999),
        "ratio 0.5 ema 0.9999": dict(ratio_weighting=0.5, ema_decay=0.9999),
        "ema 0.999": dict(ema_decay=0.999),
        "ensemble 8 ratio 0.5 ema 0.999": dict(ensemble=8, ratio_weighting=0.5, ema_decay=0.999),
        # learned quadratic terms in θ added to the logit (fit(quadratic=True)); fit's default tries the
        # network without and with them and keeps the lower held-out loss. Up to
        # tune_defaults_quadratic.json, "default" trained without them: "no quadratic" here
        # fit's default chooses the number of networks (up to 4; on a CPU as many as the first network's epochs
        # leave room for, train.member_candidates) by held-out loss; up to tune_defaults_quadratic_choice.json
        # "default" trained one network; up to tune_defaults_members_choice.json a CPU trained networks x training
        # simulations within 50,000 (one network at 10^5 whatever its epochs)
        "one network": dict(num_members=1),
        "quadratic": dict(quadratic=True),
        "no quadratic": dict(quadratic=False),
        "ratio 0.5 quadratic": dict(ratio_weighting=0.5, quadratic=True),
    }


class GaussianLinearRatio(NamedTuple):
    """The exact log-ratio of gaussian_linear, log N(x; θ, σ²·I) - log N(x; 0, (τ² + σ²)·I), with the
    ``embed``/``head`` interface of an estimator: its loss is the Bayes loss, the floor of any fit."""

    def embed(self, x):
        return x

    def head(self, theta, x):
        log_normal = lambda v, var: -0.5 * jnp.sum(v**2 / var + jnp.log(2 * jnp.pi * var), axis=-1)
        return log_normal(x - theta, NOISE_VAR) - log_normal(x, PRIOR_VAR + NOISE_VAR)


class GaussianMixtureRatio(NamedTuple):
    """The exact log-ratio of gaussian_mixture, log Σ_k ½ N(x; θ, σ_k² I) - log p(x), where
    p(x) = Σ_k ½ Π_i [Φ((10 - x_i)/σ_k) - Φ((-10 - x_i)/σ_k)] / 20 under the U(-10, 10) prior."""

    def embed(self, x):
        return x

    def head(self, theta, x):
        dim = x.shape[-1]
        log_lik = jnp.vectorize(gm.log_likelihood, signature="(d),(d)->()")(theta, x)
        log_evidence = jax.nn.logsumexp(jnp.stack([
            jnp.log(w) + jnp.sum(log_normal_interval_mass((-gm.PRIOR_BOUND - x) / s, (gm.PRIOR_BOUND - x) / s), axis=-1)
            for w, s in zip(gm.WEIGHTS, gm.SCALES, strict=True)]), axis=0) - dim * jnp.log(2 * gm.PRIOR_BOUND)  # fmt: skip
        return log_lik - log_evidence


EXACT_RATIOS = {"gaussian_linear": GaussianLinearRatio, "gaussian_mixture": GaussianMixtureRatio}


def fresh_observations(task, key, num_obs, num_samples, reference_fn):
    """``num_obs`` observations drawn from the joint, ``(num_obs, *x_shape)``, and reference samples
    of their posteriors, ``(num_obs, num_samples, d)``: computed once per task and budget, shared by
    every candidate and seed."""
    theta = task.prior.sample(jax.random.fold_in(key, 0), (num_obs,))
    keys = jax.random.split(jax.random.fold_in(key, 1), num_obs)
    xs = jax.vmap(task.simulator)(keys, theta)
    refs = np.stack([np.asarray(reference_fn(jax.random.fold_in(key, 10 + i), xs[i], num_samples))
                     for i in range(num_obs)])
    return xs, refs


def score(task, estimator, key, xs, refs, backend="sklearn"):
    """C2ST of the estimator's posterior of each of ``xs`` against ``refs`` (one score per observation)."""
    post = sample_posterior(jax.random.fold_in(key, 2), estimator, task.prior, xs, num_samples=refs.shape[1])
    return c2st_scores(refs, np.asarray(post.samples), backend, batch=len(xs))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="two_moons,gaussian_linear")
    parser.add_argument("--budgets", default="1000,10000")
    parser.add_argument("--observations", type=int, default=3, help="fresh observations scored by C2ST (0: losses only)")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--configs", default="", help="comma-separated subset of candidate names")
    parser.add_argument("--seeds", type=lambda v: [int(i) for i in v.split(",")], default=[7],
                        help="training seeds per candidate; losses are averaged over them")
    parser.add_argument("--c2st-backend", choices=("sklearn", "jax"), default="sklearn",
                        help="jax: the same C2ST protocol, about 2x faster on 10-D tasks")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "tune_defaults.json"))
    args = parser.parse_args(argv)
    rows = []
    for name in args.tasks.split(","):
        task = tasks.get(name)
        for budget in map(int, args.budgets.split(",")):
            bank = simulate(jax.random.PRNGKey(1000 + budget), task, budget, progress=False)
            # fresh pairs for the loss every candidate is compared on (not the split fit selects on)
            test_bank = simulate(jax.random.PRNGKey(3000 + budget), task, 20_000, progress=False)
            bayes = evaluate(EXACT_RATIOS[name](), test_bank) if name in EXACT_RATIOS else None
            fresh = None  # (observations, references), made on first use
            if bayes is not None:
                print(f"{name:16s} {budget:6d} Bayes loss on the test pairs {bayes:.4f}", flush=True)
            for label, kwargs in candidates(budget).items():
                if args.configs and label not in args.configs.split(","):
                    continue
                start = time.perf_counter()
                test_losses, best_vals, epochs, scores, chosen = [], [], 0, [], []
                for seed in args.seeds:  # the training seed: its spread is the noise to beat
                    if "ensemble" in kwargs:
                        options = {k: v for k, v in kwargs.items() if k != "ensemble"}
                        estimator, histories, best_val = fit_ensemble(jax.random.PRNGKey(seed), bank, kwargs["ensemble"],
                                                                      progress=False, **options)
                    else:
                        estimator, history = fit(jax.random.PRNGKey(seed), bank, progress=False, **kwargs)
                        histories, best_val = [history], float(history.validation_loss.min())
                    test_losses.append(evaluate(estimator, test_bank))
                    best_vals.append(float(best_val))
                    epochs += sum(len(h.train_loss) for h in histories)
                    chosen.append(histories[0].choices)  # what fit chose itself (None: nothing)
                    if args.observations:
                        if fresh is None:
                            fresh = fresh_observations(task, jax.random.PRNGKey(2000 + budget), args.observations,
                                                       args.num_samples, task.reference_posterior)
                        scores.append(score(task, estimator, jax.random.PRNGKey(2000 + budget), *fresh, args.c2st_backend))
                seconds = time.perf_counter() - start
                test_loss = float(np.mean(test_losses))
                # C2ST: mean over the fresh observations and the seeds; c2st_all[s][i]: seed s, observation i
                row = dict(task=name, budget=budget, config=label, c2st=float(np.mean(scores)) if scores else None,
                           c2st_all=[list(map(float, v)) for v in scores],
                           c2st_per_seed=[float(np.mean(v)) for v in scores],
                           best_val=float(np.mean(best_vals)), test_loss=test_loss, test_loss_per_seed=test_losses,
                           seeds=args.seeds, bayes_loss=bayes, epochs=epochs, train_seconds=seconds, choices=chosen)
                rows.append(row)
                spread = f" ({' '.join(f'{v:.4f}' for v in test_losses)})" if len(test_losses) > 1 else ""
                c2st_spread = f" ({' '.join(f'{v:.3f}' for v in row['c2st_per_seed'])})" if len(scores) > 1 else ""
                print(f"{name:16s} {budget:6d} {label:32s} C2ST {row['c2st'] or float('nan'):.3f}{c2st_spread}  val {row['best_val']:.4f}  "
                      f"test {test_loss:.4f}{spread}  epochs {row['epochs']:4d}  {seconds:5.0f}s", flush=True)
                with open(args.output, "w") as f:
                    json.dump(dict(device=jax.devices()[0].device_kind, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
