r"""Posterior log-densities from a ratio estimator, in constrained and unconstrained space.

For one observation ``x`` or an i.i.d. set ``X = {x_1..x_n}`` (the evidence cancels in MCMC):

.. math::  \log p(θ|X) = \log p(θ) + \sum_i \hat f(θ, x_i) + \text{const}.

The observations are embedded once (``features = estimator.embed(X)``, ``(n, f)``); the target
only evaluates the head. Samplers run in unconstrained space, ``θ = T(u)`` with
``T = support_transform(prior)``:

.. math::  \log p_U(u) = \log p(T(u)) + \log|\det J_T(u)| + \sum_i \hat f(T(u), x_i).

Outside the prior's support the constrained density is ``-inf`` (never NaN); a NaN anywhere in the
unconstrained density (e.g. an overflowing transform) is also mapped to ``-inf`` so that the
proposal is rejected. These are the pure builders behind :class:`aalr_jax.ratio_posterior.Posterior`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from aalr_jax import priors

__all__ = [
    "embed_observations",
    "log_posterior",
    "observation_batch_shape",
    "unconstrained_log_posterior",
]


def observation_batch_shape(x_obs, x_shape: tuple, *, iid: bool) -> tuple:
    """Leading batch shape of ``x_obs``: ``()`` for one observation (set), ``(k,)`` for k of them.

    Accepted shapes: ``x_shape`` or ``(k, *x_shape)``; with ``iid=True``, ``(n, *x_shape)`` or
    ``(k, n, *x_shape)`` (n i.i.d. observations sharing one θ).

    Raises:
        ValueError: naming ``x_obs``, its shape and the shapes expected.
    """
    shape = tuple(jnp.shape(x_obs))
    core = len(x_shape) + (1 if iid else 0)
    ok = len(shape) in (core, core + 1) and shape[len(shape) - len(x_shape):] == tuple(x_shape)
    if not ok or (iid and shape[len(shape) - core] < 1):
        if iid:
            expected = f"(n, {', '.join(map(str, x_shape))}) or (k, n, ...)"
        else:
            expected = f"{tuple(x_shape)} or (k, {', '.join(map(str, x_shape))})"
        raise ValueError(f"x_obs must have shape {expected}, got {shape}")
    return shape[: len(shape) - core]


def embed_observations(estimator, x_obs: jax.Array, *, iid: bool) -> jax.Array:
    """Features of one observation (set): ``(n, f)``, with n = 1 when ``iid`` is False."""
    x_obs = jnp.asarray(x_obs, jnp.float32)
    if not iid:
        x_obs = x_obs[None]
    return estimator.embed(x_obs)


def log_posterior(estimator, prior, features: jax.Array, theta: jax.Array) -> jax.Array:
    """Unnormalised ``log p(θ) + Σ_i f(θ, x_i)``; ``-inf`` outside the support.

    Args:
        estimator: a :class:`aalr_jax.nn.RatioEstimator`.
        prior: numpyro distribution with event shape ``(d,)``.
        features: ``(n, f)`` embedded observations (see :func:`embed_observations`).
        theta: ``(..., d)``.

    Returns:
        ``(...,)``.
    """
    log_prior = priors.log_prob(prior, theta)
    inside = jnp.isfinite(log_prior)
    safe = jnp.where(inside[..., None], theta, prior.support.feasible_like(theta))
    log_ratio = estimator.head(safe[..., None, :], features).sum(-1)
    total = jnp.where(inside, log_prior + log_ratio, -jnp.inf)
    return jnp.where(jnp.isnan(total), -jnp.inf, total)


def unconstrained_log_posterior(estimator, prior, features: jax.Array, transform=None) -> Callable:
    """``u ↦ log p(T(u)) + log|det J_T(u)| + Σ_i f(T(u), x_i)`` for ``u: (d,)`` (returns ``()``)."""
    transform = priors.support_transform(prior) if transform is None else transform

    def logdensity(u):
        theta = transform(u)
        value = log_posterior(estimator, prior, features, theta) + transform.log_abs_det_jacobian(u, theta)
        return jnp.where(jnp.isnan(value), -jnp.inf, value)

    return logdensity
