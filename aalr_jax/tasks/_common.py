"""Pieces shared by several built-in tasks: the θ shape check, i.i.d. observation sets and the
exact-likelihood NUTS reference posterior."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp


def check_theta(theta, dim: int, task: str, meaning: str = "") -> jax.Array:
    """``theta`` as float32 ``(dim,)``; a ``ValueError`` naming ``task`` for any other shape.

    ``meaning`` follows the expected shape in the message, e.g. ``" = (beta, gamma)"``.
    """
    theta = jnp.asarray(theta, jnp.float32)
    if theta.shape != (dim,):
        raise ValueError(f"{task}: theta must have shape ({dim},){meaning}, got {theta.shape}")
    return theta


def iid_set(simulator: Callable, theta: jax.Array, config, num: int, seed: int) -> jax.Array:
    """``(num, *x_shape)`` draws ``simulator(key_i, theta, config)`` at one ``theta: (d,)``.

    ``key_i = fold_in(PRNGKey(seed), i)``, so the first n draws of a larger set are the set of n.
    ``config`` (hashable) is static: one compiled program per ``simulator`` and ``config``.
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(num))
    return _simulate_many(simulator, keys, theta, config)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _simulate_many(simulator, keys, theta, config):
    return jax.vmap(simulator, in_axes=(0, None, None))(keys, theta, config)


def nuts_reference(
    rng_key: jax.Array,
    likelihood,
    prior,
    x_obs,
    num_samples: int,
    *,
    num_chains: int = 10,
    num_warmup: int = 1000,
    **sampler_kwargs,
) -> jax.Array:
    """Posterior samples ``(num_samples, d)`` (``(k, num_samples, d)`` for ``x_obs: (k, *x_shape)``)
    by NUTS on an exact likelihood.

    ``likelihood`` is an :class:`~aalr_jax.sampling.ExactLikelihood`, the same object on every call
    (its function keys the compiled program; the prior is a traced argument). Extra keyword
    arguments go to :func:`aalr_jax.sampling.sample_posterior`.
    """
    from aalr_jax.sampling import sample_posterior  # lazy: keeps task imports light

    out = sample_posterior(
        rng_key, likelihood, prior, jnp.asarray(x_obs, jnp.float32), method="nuts",
        num_samples=num_samples, num_chains=num_chains, num_warmup=num_warmup, **sampler_kwargs,
    )  # fmt: skip
    return out.samples
