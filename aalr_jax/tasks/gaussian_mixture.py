r"""Gaussian mixture (sbibm v1.1.0, Lueckmann et al. 2021; after Sisson et al. 2007).

Definition, θ ∈ [-10, 10]^dim and x ∈ R^dim (dim = 2 in sbibm):

* prior ``θ ~ U(-10, 10)^dim``;
* simulator: a mixture of two Gaussians with the same mean and weights 1/2,

  .. math::  x \sim \tfrac12 N(θ, I) + \tfrac12 N(θ, 0.01·I)

  (sbibm: ``mixture_scales = (1.0, 0.1)`` are standard deviations; one component index per
  draw, shared by all coordinates).

Posterior. The likelihood is symmetric in θ and x, so with the box prior

.. math::  p(θ|x) ∝ 1\{θ ∈ B\} \sum_k \tfrac12 N(θ; x, σ_k^2 I),\qquad σ = (1, 0.1),

a mixture of the two Gaussians, each truncated to the box ``B``, with weights
``∝ ½ Π_i [Φ((10 - x_i)/σ_k) - Φ((-10 - x_i)/σ_k)]`` (the component's mass inside the box).
:func:`reference_posterior` picks the component with these weights and draws each coordinate by
the inverse truncated-normal CDF: exact, and the same distribution as sbibm's rejection sampler
(mixture draws kept when inside the box). sbibm also rejects exact duplicates among its float32
draws; that changes nothing in distribution and is not done here.

Parameters outside the prior box. The simulator and :func:`log_likelihood` are defined for every
real θ (the box is not checked); the prior's ``log_prob`` is ``-inf`` outside it, and
``aalr_jax.data.simulate`` never draws such θ. A θ of the wrong shape raises ``ValueError``.

Default observation: for ``dim == 2``, sbibm observation 1 (numbers below, copied from
``sbibm/tasks/gaussian_mixture/files/num_observation_1``; sbibm is MIT-licensed, © 2020
Lueckmann, Boelts, Greenberg, Gonçalves, Macke). For other dims the true θ is sbibm's repeated
cyclically and the observation is simulated with ``observation_seed=1``.

AALR on this task (C2ST on sbibm's 10 observations at 10³–10⁵ simulations, with the options of
each row): ``benchmarks/README.md``, section "Accuracy against sbibm".
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.priors import box_uniform
from aalr_jax.tasks.base import Task
from aalr_jax.tasks.gaussian_linear_uniform import log_normal_interval_mass, truncated_normal

__all__ = ["make", "simulator", "log_likelihood", "reference_posterior", "posterior_component_log_weights"]

PRIOR_BOUND = 10.0
SCALES = (1.0, 0.1)  # component standard deviations
WEIGHTS = (0.5, 0.5)

# sbibm v1.1.0, gaussian_mixture, num_observation_1 (MIT license, Lueckmann et al. 2021).
TRUE_THETA = np.array([-9.527071, -1.4817104], dtype=np.float32)
OBSERVATION = np.array([-9.472713, -1.4950509], dtype=np.float32)


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (dim,)`` for ``theta: (dim,)``: pick σ ∈ {1, 0.1} w.p. 1/2, ``x ~ N(θ, σ² I)``."""
    theta = jnp.asarray(theta, jnp.float32)
    if theta.ndim != 1:
        raise ValueError(f"gaussian_mixture: theta must be a vector (dim,), got shape {theta.shape}")
    key_k, key_z = jax.random.split(rng_key)
    k = jax.random.choice(key_k, 2, p=jnp.asarray(WEIGHTS))
    scale = jnp.asarray(SCALES)[k]
    return theta + scale * jax.random.normal(key_z, theta.shape)


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """``log Σ_k ½ N(x; θ, σ_k² I)`` for ``theta: (dim,)``, ``x: (dim,)``; a scalar (any real θ)."""
    r2 = jnp.sum((jnp.asarray(x) - theta) ** 2)
    dim = jnp.shape(theta)[-1]
    terms = jnp.stack([
        math.log(w) - 0.5 * r2 / s**2 - dim * math.log(math.sqrt(2 * math.pi) * s)
        for w, s in zip(WEIGHTS, SCALES, strict=True)
    ])  # fmt: skip
    return jax.nn.logsumexp(terms)


def posterior_component_log_weights(x_obs) -> jax.Array:
    """Normalised log-weights ``(2,)`` of the two truncated components of ``p(θ|x_obs)``."""
    x = jnp.asarray(x_obs, jnp.float32)
    scales = jnp.asarray(SCALES)[:, None]
    log_mass = log_normal_interval_mass((-PRIOR_BOUND - x) / scales, (PRIOR_BOUND - x) / scales)
    logits = jnp.log(jnp.asarray(WEIGHTS)) + jnp.sum(log_mass, axis=-1)
    return logits - jax.nn.logsumexp(logits)


def reference_posterior(rng_key: jax.Array, x_obs, num_samples: int) -> jax.Array:
    """Exact posterior samples ``(num_samples, dim)`` for ``x_obs: (dim,)`` (see module docstring)."""
    x = jnp.asarray(x_obs, jnp.float32)
    if x.ndim != 1:
        raise ValueError(f"gaussian_mixture: x_obs must have shape (dim,), got {x.shape}")
    key_k, key_t = jax.random.split(rng_key)
    k = jax.random.categorical(key_k, posterior_component_log_weights(x), shape=(num_samples,))
    scale = jnp.asarray(SCALES)[k][:, None]
    return truncated_normal(key_t, x, scale, -PRIOR_BOUND, PRIOR_BOUND, (num_samples, x.shape[0]))


def make(dim: int = 2) -> Task:
    """The sbibm Gaussian-mixture task (sbibm observation 1 when ``dim == 2``)."""
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim}")
    sbibm = dim == 2

    def check(theta):
        theta = jnp.asarray(theta, jnp.float32)
        if theta.shape != (dim,):
            raise ValueError(f"gaussian_mixture: theta must have shape ({dim},), got {theta.shape}")
        return theta

    return Task(
        name="gaussian_mixture",
        prior=box_uniform(-PRIOR_BOUND, PRIOR_BOUND * np.ones(dim)),
        simulator=lambda rng_key, theta: simulator(rng_key, check(theta)),
        x_shape=(dim,),
        parameter_labels=tuple(f"parameter_{i + 1}" for i in range(dim)),
        true_theta=TRUE_THETA if sbibm else np.resize(TRUE_THETA, dim),
        observation_seed=1,
        observation=OBSERVATION if sbibm else None,
        log_likelihood=lambda theta, x: log_likelihood(check(theta), x),
        reference_posterior=reference_posterior,
        description=(
            f"Gaussian mixture (sbibm v1.1.0) in {dim} dimensions: θ ~ U(-10,10)^{dim}, "
            "x ~ ½ N(θ, I) + ½ N(θ, 0.01 I); posterior: the same mixture centred on x, truncated to "
            "the box (exact sampler). Default observation: "
            + ("sbibm observation 1." if sbibm else
               "sbibm's true θ (cycled to dim entries), simulated with observation_seed=1.")
        ),
    )
