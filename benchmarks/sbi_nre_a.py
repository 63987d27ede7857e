"""sbi's NRE_A on a given bank, with sbi's defaults: train once, then sample each observation by MCMC.

Writes timings as JSON and the samples and per-chain draws as .npz; the caller computes ESS with
the same estimator it uses for aalr_jax, so the two are compared like for like. ``x_obs`` of shape
``(m,)`` gives samples ``(n, d)`` and that observation's chains; ``(k, m)`` gives samples ``(k, n, d)``
(and the first observation's chains).

Runs under a Python that has sbi and PyTorch (never aalr_jax's environment, never CI); called by
``compare_sbi.py`` (one observation, ESS) and ``sbibm.py --sbi-python`` (sbibm's 10 observations),
which hand it the same bank and observations as aalr_jax gets and read the JSON it writes.

    python sbi_nre_a.py --bank bank.npz --output sbi.json --samples sbi_samples.npz
"""

import argparse
import json
import time

import numpy as np
import torch


def same_size_classifier(batch_theta, batch_x):
    """aalr_jax's default network in sbi's clothes: z-scored inputs, 3 hidden SELU layers of 128."""
    from torch import nn

    from sbi.neural_nets.ratio_estimators import RatioEstimator
    from sbi.utils.sbiutils import standardizing_net

    width, inputs = 128, batch_theta.shape[1] + batch_x.shape[1]
    net = nn.Sequential(nn.Linear(inputs, width), nn.SELU(), nn.Linear(width, width), nn.SELU(),
                        nn.Linear(width, width), nn.SELU(), nn.Linear(width, 1))
    return RatioEstimator(net=net, theta_shape=batch_theta[0].shape, x_shape=batch_x[0].shape,
                          embedding_net_theta=standardizing_net(batch_theta),
                          embedding_net_x=standardizing_net(batch_x))


def torch_prior(data):
    """The bank's prior as a torch distribution: ``prior`` names the family, ``a`` and ``b`` hold
    its parameters, each ``(d,)`` or, for ``mvn``'s covariance, ``(d, d)``.

    ``box`` (a = low, b = high: sbi's BoxUniform), ``normal`` and ``lognormal`` (independent, a =
    loc, b = scale), ``mvn`` (a = mean, b = covariance).
    """
    from torch.distributions import Independent, LogNormal, MultivariateNormal, Normal

    from sbi.utils import BoxUniform

    kind, a, b = str(data["prior"]), torch.as_tensor(data["a"]), torch.as_tensor(data["b"])
    if kind == "box":
        return BoxUniform(a, b)
    if kind == "normal":
        return Independent(Normal(a, b), 1)
    if kind == "lognormal":
        return Independent(LogNormal(a, b), 1)
    if kind == "mvn":
        return MultivariateNormal(a, covariance_matrix=b)
    raise ValueError(f"unknown prior family {kind!r} in the bank")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bank", required=True, help=".npz with theta (n, d), x (n, m), x_obs (m,) or (k, m) "
                        "and the prior (see torch_prior)")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    parser.add_argument("--samples", help="where to write the posterior samples (.npz)")
    parser.add_argument("--network", choices=["default", "same"], default="default",
                        help="sbi's default classifier (residual net, width 50) or aalr_jax's 3x128 SELU MLP")
    args = parser.parse_args()

    import sbi
    from sbi.inference import NRE_A

    torch.manual_seed(args.seed)
    data = np.load(args.bank)
    prior = torch_prior(data)
    theta, x = torch.as_tensor(data["theta"]), torch.as_tensor(data["x"])
    inference = NRE_A(prior=prior, classifier=same_size_classifier if args.network == "same" else "resnet")
    start = time.perf_counter()
    estimator = inference.append_simulations(theta, x).train()
    train_s = time.perf_counter() - start
    posterior = inference.build_posterior(estimator)
    xs = torch.as_tensor(data["x_obs"])
    single = xs.ndim == 1
    all_samples, chains, sample_s = [], None, 0.0
    for x_obs in xs[None] if single else xs:
        start = time.perf_counter()
        all_samples.append(posterior.sample((args.num_samples,), x=x_obs[None], show_progress_bars=False).numpy())
        sample_s += time.perf_counter() - start
        if chains is None:
            # the slice sampler keeps every chain (C, warm-up + draws, d); sbi drops its first warmup_steps
            chains = np.asarray(posterior.posterior_sampler.get_samples(group_by_chain=True))
            chains = chains[:, posterior.warmup_steps :]
    samples = all_samples[0] if single else np.stack(all_samples)
    num_samples = args.num_samples * len(all_samples)
    result = dict(
        sbi=sbi.__version__, network=args.network, torch=torch.__version__, threads=torch.get_num_threads(),
        epochs=len(inference.summary["training_loss"]), train_seconds=train_s,
        sample_seconds=sample_s, num_samples=num_samples,
        samples_per_s=num_samples / sample_s, num_chains=int(chains.shape[0]),
        mcmc_method=posterior.method if hasattr(posterior, "method") else "slice_np_vectorized",
    )
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    if args.samples:
        np.savez(args.samples, samples=samples, chains=chains)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
