r"""The posterior of a ratio estimator as a value: ``aalr_jax.posterior(estimator, prior, x_obs)``.

For an observation ``x`` (or an i.i.d. set ``X = {x_1..x_n}`` with ``iid=True``) and a prior
``p(θ)`` on ``θ ∈ R^d``,

.. math::  \log p(θ|X) = \log p(θ) + \sum_i \hat f(θ, x_i) + \text{const},

where ``f̂ = log r̂`` is the estimator's logit. A :class:`Posterior` holds the estimator, the prior,
the bijection ``T: R^d → support(prior)`` (:func:`aalr_jax.priors.support_transform`), the
observations and their features, embedded once. It is a pytree (estimator and prior parameters,
observations and features are leaves), so it passes through ``jax.jit``, ``vmap`` and ``grad`` as an
argument and composes with other JAX code:

* :meth:`Posterior.log_prob` ``(θ)``: the constrained log-density above, ``-inf`` outside the support;
* :meth:`Posterior.unconstrained_logdensity` ``(u)``:
  ``log p(T(u)) + log|det J_T(u)| + Σ_i f̂(T(u), x_i)``, the target of any BlackJAX or numpyro kernel;
* :meth:`Posterior.sample`: many adapted chains for every observation in one compiled program
  (:mod:`aalr_jax.chains`, samplers in :mod:`aalr_jax.samplers`).

Batches: ``x_obs`` of shape ``(k, *x_shape)`` (``(k, n, *x_shape)`` with ``iid=True``) gives a
posterior with ``batch_shape == (k,)``; ``posterior[i]`` is the posterior of observation ``i``, and
``sample`` returns ``(k, num_samples, d)`` draws.

Devices: with several devices (or a ``mesh`` passed to ``sample``) the ``k × C`` chains are laid
over them in one compiled program (:func:`aalr_jax.chains.chain_mesh`); results are
``jax.Array`` s split over the devices as the chains are (``.sharding``), and ``np.asarray`` gathers
them. On one device nothing is placed.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from aalr_jax import chains, ood, priors, samplers, sharding
from aalr_jax.logdensity import embed_observations, log_posterior, observation_batch_shape
from aalr_jax.types import check_ratio_model
from aalr_jax.validation import check_key, check_real_array, nonnegative_int, positive_int

__all__ = ["Posterior", "posterior", "run_settings"]


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["estimator", "prior", "transform", "x_obs", "features"], meta_fields=["iid"])
@dataclasses.dataclass(frozen=True)
class Posterior:
    """``p(θ|x_obs) ∝ p(θ) Π_i r̂(x_i|θ)``; build it with :func:`posterior`.

    Attributes:
        estimator: the ratio model (:class:`aalr_jax.types.RatioModel`).
        prior: numpyro distribution with event shape ``(d,)``.
        transform: the bijection ``T: R^d → support(prior)``.
        x_obs: ``(*batch_shape, [n,] *x_shape)`` the observations, float32.
        features: ``(*batch_shape, ..., n, f)`` their embeddings (an ensemble adds a member axis
            after the batch axis).
        iid: whether the axis before ``x_shape`` is a set of i.i.d. observations of one θ.
    """

    estimator: object
    prior: object
    transform: object
    x_obs: jax.Array
    features: jax.Array
    iid: bool = False

    @property
    def dim(self) -> int:
        """``d``, the number of parameters."""
        return int(self.prior.event_shape[0])

    @property
    def batch_shape(self) -> tuple:
        """``()`` for one observation (set), ``(k,)`` for a batch of k."""
        core = len(tuple(self.estimator.x_shape)) + (1 if self.iid else 0)
        return tuple(self.x_obs.shape[: self.x_obs.ndim - core])

    def replace(self, **fields) -> "Posterior":
        return dataclasses.replace(self, **fields)

    def __getitem__(self, index) -> "Posterior":
        """The posterior of observation ``index`` of a batched posterior."""
        if not self.batch_shape:
            raise IndexError("this posterior has one observation (batch_shape ()); there is nothing to index")
        return self.replace(x_obs=self.x_obs[index], features=self.features[index])

    def log_prob(self, theta: jax.Array) -> jax.Array:
        """Unnormalised ``log p(θ) + Σ_i f̂(θ, x_i)``; ``-inf`` outside the prior's support.

        Args:
            theta: ``(..., d)``; for a batched posterior ``(..., k, d)`` or anything broadcasting
                to it (numpyro's convention: the batch axis sits just before the event axis).

        Returns:
            ``(...,)``, or ``(..., k)`` for a batched posterior.
        """
        theta = jnp.asarray(theta)
        if not self.batch_shape:
            return log_posterior(self.estimator, self.prior, self.features, theta)
        theta = jnp.broadcast_to(theta, jnp.broadcast_shapes(theta.shape, self.batch_shape + (self.dim,)))
        one = lambda t, x, f: self.replace(x_obs=x, features=f).log_prob(t)
        return jax.vmap(one, in_axes=(-2, 0, 0), out_axes=-1)(theta, self.x_obs, self.features)

    def unconstrained_logdensity(self, u: jax.Array) -> jax.Array:
        """``log p(T(u)) + log|det J_T(u)| + Σ_i f̂(T(u), x_i)``; NaN is mapped to ``-inf``.

        Args:
            u: ``(..., d)`` unconstrained coordinates (``(..., k, d)`` when batched).

        Returns:
            ``(...,)`` (``(..., k)`` when batched); a scalar for ``u: (d,)`` and one observation, as
            BlackJAX and numpyro kernels expect.
        """
        theta = self.transform(u)
        value = self.log_prob(theta) + self.transform.log_abs_det_jacobian(u, theta)
        return jnp.where(jnp.isnan(value), -jnp.inf, value)

    def sample(self, rng_key: jax.Array, num_samples: int = 10_000, *, sampler="auto", num_chains: int = 100,
               num_warmup: int = 500, thin: int | None = None, init: str = "sir",
               num_init_candidates: int | None = None, strict: bool = False, mesh=None,
               **options) -> chains.PosteriorSamples:
        """Draw ``num_samples`` per observation with ``num_chains`` adapted chains each.

        Args:
            rng_key: PRNG key; observation ``i`` of a batch uses ``fold_in(rng_key, i)``, one
                observation ``fold_in(rng_key, 0)``.
            num_samples: draws returned per observation (``ceil(num_samples / num_chains)`` per chain).
            sampler: ``"auto"``, ``"rwmh"``, ``"hmc"``, ``"nuts"`` or a sampler value
                (:func:`aalr_jax.samplers.resolve_sampler`).
            num_chains: independent chains per observation.
            num_warmup: adaptation steps per chain (discarded).
            thin: keep every ``thin``-th step after warm-up; default ``sampler.default_thin``.
            init: ``"sir"`` (ratio-weighted resampling of prior draws) or ``"prior"``.
            num_init_candidates: prior draws for ``init``, at least ``num_chains``; default
                ``max(10_000, 10 * num_chains)``.
            strict: raise instead of warning when an observation lies outside the training data.
            mesh: devices to lay the ``k × num_chains`` chains over (:func:`aalr_jax.sharding.resolve_mesh`):
                ``None`` all devices of this process when there are several (in a multi-process
                run each process samples the observations it passes), ``False`` one device, a
                number of devices, a device sequence or a one-axis mesh. ``k · num_chains`` must be a
                multiple of the device count (see :func:`aalr_jax.chains.chain_mesh`); the results
                stay on the devices, split as the chains are.
            **options: sampler fields, e.g. ``num_integration_steps=5`` (see ``resolve_sampler``).

        Returns:
            :class:`~aalr_jax.chains.PosteriorSamples`; ``samples`` is ``(num_samples, d)`` or
            ``(k, num_samples, d)``, and the resolved sampler, ``thin``, ``num_warmup`` and
            ``num_chains`` are recorded.
        """
        rng_key = check_key("rng_key", rng_key)
        sampler, settings = run_settings(self.dim, sampler, num_samples=num_samples, num_chains=num_chains,
                                         num_warmup=num_warmup, thin=thin, init=init,
                                         num_init_candidates=num_init_candidates, **options)
        return self._run(rng_key, positive_int("num_samples", num_samples), sampler, settings, strict, mesh)

    def _run(self, rng_key, num_samples: int, sampler, settings: chains.RunSettings, strict,
             mesh=None) -> chains.PosteriorSamples:
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}")
        outside = ood.check_observations(self.estimator, self.x_obs, iid=self.iid, strict=strict)
        batched = self if self.batch_shape else self.replace(x_obs=self.x_obs[None], features=self.features[None])
        grid = chains.chain_mesh(sharding.resolve_mesh(_sampling_devices(mesh)), batched.x_obs.shape[0],
                                 settings.num_chains, explicit=mesh is not None)
        if grid is not None:
            rng_key, batched = _place(rng_key, batched, grid)
        stats = chains.sample_batch(rng_key, batched, sampler, settings, grid)
        samples, stats = chains.interleave(stats, num_samples, not self.batch_shape, grid)
        return chains.PosteriorSamples(samples, *stats, outside_training=outside, sampler=sampler, thin=settings.thin,
                                       num_warmup=settings.num_warmup, num_chains=settings.num_chains)


def _sampling_devices(mesh):
    """``mesh``, with the default (``None``) meaning this process's devices: sampling takes each
    process's own observations, unlike training, whose default mesh spans every process."""
    if mesh is None and jax.process_count() > 1:
        return jax.local_devices()
    return mesh


def _place(rng_key, posterior: Posterior, grid):
    """The key and the posterior on the devices of ``grid``: observations and features split over its
    first axis, everything else (estimator and prior parameters) copied to every device."""
    rows = NamedSharding(grid, PartitionSpec(chains.MESH_AXES[0]))
    rng_key, posterior = sharding.replicate((rng_key, posterior), grid)
    return rng_key, posterior.replace(x_obs=jax.device_put(posterior.x_obs, rows),
                                      features=jax.device_put(posterior.features, rows))


def run_settings(dim: int, sampler="auto", *, num_samples=10_000, num_chains=100, num_warmup=500, thin=None,
                 init="sir", num_init_candidates=None, **options) -> tuple[object, chains.RunSettings]:
    """Validate everything :meth:`Posterior.sample` takes, naming the bad argument; run nothing.

    Returns:
        ``(sampler, settings)``: the resolved sampler value and the static :class:`~aalr_jax.chains.RunSettings`.
    """
    sampler = samplers.resolve_sampler(sampler, dim, **options)
    num_samples = positive_int("num_samples", num_samples)
    num_chains = positive_int("num_chains", num_chains)
    if init not in ("sir", "prior"):
        raise ValueError(f"init must be 'sir' or 'prior', got {init!r}")
    if num_init_candidates is None:
        num_init_candidates = max(10_000, 10 * num_chains)
    num_init_candidates = positive_int("num_init_candidates", num_init_candidates)
    if num_init_candidates < num_chains:
        raise ValueError(f"num_init_candidates must be at least num_chains ({num_chains}), got {num_init_candidates}")
    thin = positive_int("thin", sampler.default_thin if thin is None else thin)
    return sampler, chains.RunSettings(num_chains, nonnegative_int("num_warmup", num_warmup),
                                       -(-num_samples // num_chains), thin, init, num_init_candidates)


def _check_observations(x_obs, x_shape: tuple, iid: bool) -> jax.Array:
    """``x_obs`` as float32 after the checks that name it (values only when they are concrete)."""
    if not isinstance(x_obs, jax.core.Tracer):
        array = check_real_array("x_obs", x_obs)
        if not np.isfinite(array).all():
            raise ValueError("x_obs contains non-finite values")
        x_obs = array
    x_obs = jnp.asarray(x_obs, jnp.float32)
    observation_batch_shape(x_obs, x_shape, iid=iid)
    return x_obs


def posterior(estimator, prior, x_obs, *, iid: bool = False) -> Posterior:
    """The posterior of ``x_obs`` under ``prior`` and the ratio ``estimator``; embeds ``x_obs`` once.

    Args:
        estimator: a trained ratio estimator or ensemble (from ``fit``, ``fit_ensemble`` or
            ``load_estimator``) or an :class:`~aalr_jax.types.ExactLikelihood`.
        prior: the continuous numpyro prior the estimator was trained with, event shape ``(d,)``.
        x_obs: ``x_shape`` (one observation) or ``(k, *x_shape)`` (k of them). With ``iid=True``:
            ``(n, *x_shape)``, n i.i.d. observations of one θ, or ``(k, n, *x_shape)``.
        iid: treat the axis before ``x_shape`` as i.i.d. draws (their log-ratios add up).

    Returns:
        A :class:`Posterior` with ``batch_shape`` ``()`` or ``(k,)``.

    Raises:
        TypeError, ValueError: naming ``estimator``, ``prior`` or ``x_obs``.
    """
    check_ratio_model(estimator)
    dim = priors.validate_prior(prior)
    theta_dim = getattr(estimator, "theta_dim", dim)
    if theta_dim != dim:
        raise ValueError(f"the estimator takes theta of dimension {theta_dim} but the prior has event_shape ({dim},)")
    if not isinstance(iid, bool):
        raise TypeError(f"iid must be True or False, got {iid!r}")
    x_obs = _check_observations(x_obs, tuple(estimator.x_shape), iid)
    batch = observation_batch_shape(x_obs, tuple(estimator.x_shape), iid=iid)
    embed = lambda x: embed_observations(estimator, x, iid=iid)
    features = jax.vmap(embed)(x_obs) if batch else embed(x_obs)
    return Posterior(estimator, prior, priors.support_transform(prior), x_obs, features, iid)
