r"""``sample_posterior``: MCMC over the AALR posterior in one call, for one observation or thousands.

``sample_posterior(rng_key, estimator, prior, x_obs, method=..., **options)`` is
``aalr_jax.posterior(estimator, prior, x_obs, iid=iid).sample(rng_key, num_samples, sampler=method, ...)``
(:mod:`aalr_jax.ratio_posterior`). The pieces live in their own modules:

* :mod:`aalr_jax.samplers`: the sampler values :class:`~aalr_jax.samplers.RWMH`,
  :class:`~aalr_jax.samplers.HMC`, :class:`~aalr_jax.samplers.NUTS`, their kernels, and
  :func:`~aalr_jax.samplers.resolve_sampler` (``"auto"``: RWMH with independence moves up to 4
  parameters, HMC beyond);
* :mod:`aalr_jax.adaptation`: per-chain step size and metric in Stan's windows;
* :mod:`aalr_jax.chains`: initial positions, :func:`~aalr_jax.chains.run_chains` and the jitted
  driver over chains and observations, :class:`~aalr_jax.chains.PosteriorSamples`.

The flat method-specific keywords (``num_integration_steps``, ``max_num_doublings``,
``independence_*``, ``dense_metric``, ``target_acceptance``) are fields of the sampler value; one
that belongs to another method is refused unless it is that method's default. The result records
the sampler that ran, ``thin``, ``num_warmup`` and ``num_chains``.

``mesh`` spreads the ``observations × chains`` axis over devices (:mod:`aalr_jax.sharding`,
:func:`aalr_jax.chains.chain_mesh`): one compiled program, results left split over the devices.
"""

from __future__ import annotations

import jax

from aalr_jax.chains import PosteriorSamples
from aalr_jax.ratio_posterior import posterior, run_settings
from aalr_jax.samplers import METHODS, resolve_sampler
from aalr_jax.types import ExactLikelihood
from aalr_jax.validation import check_key, positive_int

__all__ = ["ExactLikelihood", "METHODS", "PosteriorSamples", "resolve_sampler", "sample_posterior"]


def sample_posterior(rng_key: jax.Array, estimator, prior, x_obs, *, method="auto", num_samples: int = 10_000,
                     num_chains: int = 100, num_warmup: int = 500, thin: int | None = None, iid: bool = False,
                     init: str = "sir", num_init_candidates: int | None = None, strict: bool = False,
                     mesh=None, **options) -> PosteriorSamples:
    """Sample ``p(θ|x_obs) ∝ p(θ) Π_i r̂(x_i|θ)`` for one observation or a batch of them.

    Args:
        rng_key: PRNG key (``jax.random.PRNGKey(seed)`` or ``jax.random.key(seed)``).
        estimator: a trained ratio estimator or ensemble, or an :class:`ExactLikelihood`.
        prior: the continuous numpyro prior the estimator was trained with, event shape ``(d,)``.
        x_obs: ``x_shape`` (one observation) or ``(k, *x_shape)`` (k observations, sampled at once).
            With ``iid=True``: ``(n, *x_shape)`` — n i.i.d. observations of one θ — or
            ``(k, n, *x_shape)``.
        method: ``"auto"`` (default: RWMH up to 4 parameters, HMC beyond), ``"rwmh"``, ``"hmc"``,
            ``"nuts"`` (keep ``num_chains`` small) or a sampler value (:mod:`aalr_jax.samplers`).
        num_samples: draws returned per observation (``ceil(num_samples / num_chains)`` per chain).
        num_chains: independent chains per observation.
        num_warmup: adaptation steps per chain (discarded).
        thin: keep every ``thin``-th step after warm-up; default the sampler's ``default_thin``
            (5 for RWMH with independence moves, 10 for the plain walk, 3 for HMC, 1 for NUTS).
        iid: treat the axis before ``x_shape`` as i.i.d. draws (sum of log-ratios).
        init: ``"sir"`` (ratio-weighted resampling of prior draws) or ``"prior"``.
        num_init_candidates: prior draws for ``init="sir"``, at least ``num_chains``; default
            ``max(10_000, 10 * num_chains)``.
        strict: raise a ``ValueError`` (instead of an ``OutOfDistributionWarning``) when an
            observation lies outside the estimator's training data (:mod:`aalr_jax.ood`).
        mesh: devices for the ``k × num_chains`` chains (:meth:`Posterior.sample
            <aalr_jax.ratio_posterior.Posterior.sample>`): ``None`` all of this process's devices when
            there are several (the largest number of them that divides ``k · num_chains``, with a
            warning when that is not all), ``False`` one device, a number of devices, a device
            sequence or a one-axis :class:`jax.sharding.Mesh` (then ``k · num_chains`` must be a
            multiple of its size).
        **options: sampler fields (:class:`~aalr_jax.samplers.RWMH`: ``independence_prob``,
            ``independence_components``, ``independence_bandwidth``, ``independence_defensive``;
            :class:`~aalr_jax.samplers.HMC`: ``num_integration_steps``;
            :class:`~aalr_jax.samplers.NUTS`: ``max_num_doublings``; all: ``dense_metric``,
            ``target_acceptance``).

    Returns:
        :class:`PosteriorSamples`; ``samples`` is ``(num_samples, d)`` or ``(k, num_samples, d)``.
    """
    rng_key = check_key("rng_key", rng_key)
    post = posterior(estimator, prior, x_obs, iid=iid)
    sampler, settings = run_settings(post.dim, method, num_samples=num_samples, num_chains=num_chains,
                                     num_warmup=num_warmup, thin=thin, init=init,
                                     num_init_candidates=num_init_candidates, **options)
    return post._run(rng_key, positive_int("num_samples", num_samples), sampler, settings, strict, mesh)
