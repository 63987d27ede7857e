r"""Gaussian linear with a uniform prior (sbibm v1.1.0, Lueckmann et al. 2021).

Definition, θ ∈ [-1, 1]^dim and x ∈ R^dim (dim = 10 in sbibm):

* prior ``θ ~ U(-1, 1)^dim``;
* simulator ``x ~ N(θ, 0.1·I)`` (covariance 0.1, standard deviation √0.1; sbibm's
  ``simulator_scale=0.1`` is the noise *variance*: it sets ``precision_matrix = inverse(0.1·I)``).

Posterior. The likelihood is symmetric in θ and x, so

.. math::  p(θ|x) ∝ 1\{θ ∈ [-1,1]^{dim}\}\, N(θ; x, 0.1·I) = \prod_i N(θ_i; x_i, 0.1)\,1\{|θ_i| ≤ 1\}:

independent coordinates, each a normal ``N(x_i, 0.1)`` truncated to ``[-1, 1]``.
:func:`reference_posterior` draws them exactly by the inverse CDF (:func:`truncated_normal`), which
is the same distribution as sbibm's rejection sampler (Gaussian draws kept when inside the box)
without its acceptance rate ``Π_i P(|θ_i| ≤ 1)``.

Parameters outside the prior box. The simulator is defined for every real θ (it returns the
Gaussian draw, the box is not checked); :func:`log_likelihood` is the Gaussian density for any θ;
the prior's ``log_prob`` (see :func:`aalr_jax.priors.log_prob`) is what is ``-inf`` outside the box,
and ``aalr_jax.data.simulate`` never draws such θ. A θ of the wrong shape raises ``ValueError``.

Default observation: for ``dim == 10``, sbibm observation 1 (numbers below, copied from
``sbibm/tasks/gaussian_linear_uniform/files/num_observation_1``; sbibm is MIT-licensed, © 2020
Lueckmann, Boelts, Greenberg, Gonçalves, Macke). For other dims the true θ is sbibm's true θ
repeated cyclically and cut to ``dim`` entries, and the observation is simulated with
``observation_seed=1``.

AALR on this task (C2ST on sbibm's 10 observations at 10³–10⁵ simulations, with the options of
each row): ``benchmarks/README.md``, section "Accuracy against sbibm".
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtri

from aalr_jax.priors import box_uniform
from aalr_jax.tasks._common import check_theta
from aalr_jax.tasks.base import Task

__all__ = [
    "make",
    "simulator",
    "log_likelihood",
    "reference_posterior",
    "truncated_normal",
    "log_normal_interval_mass",
]

PRIOR_BOUND = 1.0
NOISE_VAR = 0.1

# sbibm v1.1.0, gaussian_linear_uniform, num_observation_1 (MIT license, Lueckmann et al. 2021).
TRUE_THETA = np.array(
    [-0.95270705, -0.14817107, 0.9824493, 0.41320384, 0.99042416,
     -0.74023414, 0.7862458, 0.043799043, -0.6261761, -0.76511395],
    dtype=np.float32,
)  # fmt: skip
OBSERVATION = np.array(
    [-0.53739023, -0.23864163, 0.81923723, 0.6407443, 0.41616207,
     -0.09746933, 1.1292295, -0.05842293, -0.97055256, -0.9423423],
    dtype=np.float32,
)  # fmt: skip


def _standard_interval(a, b):
    """Flip ``[a, b]`` to ``[-b, -a]`` where that puts it further into the lower tail (accuracy)."""
    flip = a + b > 0
    return jnp.where(flip, -b, a), jnp.where(flip, -a, b), flip


def log_normal_interval_mass(a, b) -> jax.Array:
    """``log(Φ(b) - Φ(a))`` for standardised bounds ``a < b`` (any shape), accurate in both tails."""
    lo, hi, _ = _standard_interval(jnp.asarray(a), jnp.asarray(b))
    log_hi, log_lo = log_ndtr(hi), log_ndtr(lo)
    return log_hi + jnp.log1p(-jnp.exp(log_lo - log_hi))


def _ndtri_from_log(log_p):
    """``Φ⁻¹(exp(log_p))``, also where ``exp(log_p)`` underflows float32 (Newton on ``log Φ``)."""
    tail = log_p < -80.0
    lt = jnp.minimum(log_p, -80.0)
    # log Φ(z) ≈ -z²/2 - log(-z) - log(2π)/2 for z → -∞, then two Newton steps on log Φ(z) = lt.
    z = -jnp.sqrt(-2.0 * lt - jnp.log(-2.0 * lt) - math.log(2.0 * math.pi))
    for _ in range(2):
        log_pdf = -0.5 * z**2 - 0.5 * math.log(2.0 * math.pi)
        z = z - (log_ndtr(z) - lt) * jnp.exp(log_ndtr(z) - log_pdf)
    return jnp.where(tail, z, ndtri(jnp.exp(jnp.maximum(log_p, -80.0))))


def truncated_normal(rng_key, loc, scale, low, high, shape=None) -> jax.Array:
    """Exact draws of ``N(loc, scale²)`` truncated to ``[low, high]`` by the inverse CDF.

    Arguments broadcast to ``shape`` (default: their broadcast shape). The interval is mirrored into
    the lower tail and the CDF is inverted in log space, ``log u = log Φ(b) + log(U + (1-U) Φ(a)/Φ(b))``,
    so float32 stays accurate however far the interval lies from ``loc``; the result is clipped to
    ``[low, high]``.
    """
    a = (jnp.asarray(low) - loc) / scale
    b = (jnp.asarray(high) - loc) / scale
    if shape is None:
        shape = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b))
    lo, hi, flip = _standard_interval(a, b)
    log_lo, log_hi = log_ndtr(lo), log_ndtr(hi)
    u = jax.random.uniform(rng_key, shape)
    log_u = log_hi + jnp.log(u + (1.0 - u) * jnp.exp(log_lo - log_hi))
    z = jnp.clip(_ndtri_from_log(log_u), lo, hi)
    return loc + scale * jnp.where(flip, -z, z)


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (dim,)`` from ``N(θ, 0.1·I)`` for ``theta: (dim,)``."""
    theta = jnp.asarray(theta, jnp.float32)
    if theta.ndim != 1:
        raise ValueError(f"gaussian_linear_uniform: theta must be a vector (dim,), got shape {theta.shape}")
    return theta + math.sqrt(NOISE_VAR) * jax.random.normal(rng_key, theta.shape)


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """``log N(x; θ, 0.1·I)`` for ``theta: (dim,)``, ``x: (dim,)``; a scalar (any real θ)."""
    z2 = (jnp.asarray(x) - theta) ** 2 / NOISE_VAR
    return -0.5 * jnp.sum(z2 + math.log(2 * math.pi * NOISE_VAR))


def reference_posterior(rng_key: jax.Array, x_obs, num_samples: int) -> jax.Array:
    """Exact posterior samples ``(num_samples, dim)`` for ``x_obs: (dim,)``: ``N(x, 0.1)`` on ``[-1, 1]``."""
    x = jnp.asarray(x_obs, jnp.float32)
    if x.ndim != 1:
        raise ValueError(f"gaussian_linear_uniform: x_obs must have shape (dim,), got {x.shape}")
    return truncated_normal(
        rng_key, x, math.sqrt(NOISE_VAR), -PRIOR_BOUND, PRIOR_BOUND, (num_samples, x.shape[0])
    )


def make(dim: int = 10) -> Task:
    """The sbibm Gaussian-linear-uniform task (sbibm observation 1 when ``dim == 10``)."""
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim}")
    sbibm = dim == 10

    def sim(rng_key, theta):
        return simulator(rng_key, check_theta(theta, dim, "gaussian_linear_uniform"))

    def loglik(theta, x):
        return log_likelihood(check_theta(theta, dim, "gaussian_linear_uniform"), x)

    return Task(
        name="gaussian_linear_uniform",
        prior=box_uniform(-PRIOR_BOUND, PRIOR_BOUND * np.ones(dim)),
        simulator=sim,
        x_shape=(dim,),
        parameter_labels=tuple(f"parameter_{i + 1}" for i in range(dim)),
        true_theta=TRUE_THETA if sbibm else np.resize(TRUE_THETA, dim),
        observation_seed=1,
        observation=OBSERVATION if sbibm else None,
        log_likelihood=loglik,
        reference_posterior=reference_posterior,
        description=(
            f"Gaussian linear uniform (sbibm v1.1.0) in {dim} dimensions: θ ~ U(-1,1)^{dim}, "
            "x ~ N(θ, 0.1 I); posterior N(x, 0.1 I) truncated to the box (exact inverse-CDF sampler). "
            "Default observation: "
            + ("sbibm observation 1." if sbibm else
               "sbibm's true θ (cycled to dim entries), simulated with observation_seed=1.")
        ),
    )
