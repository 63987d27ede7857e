r"""Gaussian linear (sbibm v1.1.0, Lueckmann et al. 2021): infer the mean of a Gaussian.

Definition, θ ∈ R^dim and x ∈ R^dim (dim = 10 in sbibm):

* prior ``θ ~ N(0, 0.1·I)`` (covariance 0.1, standard deviation √0.1);
* simulator ``x ~ N(θ, 0.1·I)``.

Posterior (conjugate). For n i.i.d. observations ``x_1..x_n`` the posterior precision is
``(10 + 10 n)·I``, so ``θ | x_1..x_n ~ N(Σ_i x_i / (n+1), 0.1/(n+1)·I)``; a single observation
gives ``N(x/2, 0.05·I)``. :func:`analytic_posterior` returns this mean and covariance, and
:func:`reference_posterior` draws from it exactly. :func:`log_likelihood` is the exact
``log N(x; θ, 0.1·I)`` (summed over the rows of an i.i.d. set ``x: (n, dim)``). Shapes:
``theta: (dim,)``, ``x: (dim,)``.

Default observation: for ``dim == 10``, sbibm observation 1 (numbers below, copied from
``sbibm/tasks/gaussian_linear/files/num_observation_1``; sbibm is MIT-licensed, © 2020 Lueckmann,
Boelts, Greenberg, Gonçalves, Macke). For other dims the true θ is sbibm's true θ repeated
cyclically and cut to ``dim`` entries, and the observation is simulated with ``observation_seed=1``.

AALR on this task (C2ST on sbibm's 10 observations at 10³–10⁵ simulations, with the options of
each row): ``benchmarks/README.md``, section "Accuracy against sbibm".
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from aalr_jax.tasks.base import Task

__all__ = ["make", "analytic_posterior", "log_likelihood", "simulator", "reference_posterior"]

PRIOR_VAR = 0.1
NOISE_VAR = 0.1

# sbibm v1.1.0, gaussian_linear, num_observation_1 (MIT license, Lueckmann et al. 2021).
TRUE_THETA = np.array(
    [0.27184236, 0.6762953, 0.17189318, -0.04218617, -0.82151634,
     0.024290232, -0.24255924, -0.16438946, -0.13595216, 0.26958188],
    dtype=np.float32,
)  # fmt: skip
OBSERVATION = np.array(
    [1.0471346, 0.5566712, -0.23618454, 0.027879834, -1.0051446,
     -0.007930746, 0.06117077, -0.29286885, -0.38539964, 0.2449614],
    dtype=np.float32,
)  # fmt: skip


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (dim,)`` from ``N(θ, 0.1·I)`` for ``theta: (dim,)``."""
    theta = jnp.asarray(theta)
    return theta + math.sqrt(NOISE_VAR) * jax.random.normal(rng_key, theta.shape)


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """``log p(x|θ)`` for ``theta: (dim,)`` and ``x: (dim,)``, a scalar.

    ``x: (n, dim)`` also works and gives the i.i.d. sum ``Σ_i log p(x_i|θ)``.
    """
    z2 = (jnp.asarray(x) - theta) ** 2 / NOISE_VAR
    return -0.5 * jnp.sum(z2 + math.log(2 * math.pi * NOISE_VAR))


def analytic_posterior(x_obs) -> tuple[jax.Array, jax.Array]:
    """Mean ``(dim,)`` and covariance ``(dim, dim)`` of ``p(θ | x_obs)``.

    Args:
        x_obs: one observation ``(dim,)`` or ``n`` i.i.d. observations ``(n, dim)``.
    """
    x = jnp.atleast_2d(jnp.asarray(x_obs, dtype=jnp.float32))
    n, dim = x.shape
    precision = 1.0 / PRIOR_VAR + n / NOISE_VAR
    mean = (jnp.sum(x, axis=0) / NOISE_VAR) / precision
    return mean, jnp.eye(dim) / precision


def reference_posterior(rng_key: jax.Array, x_obs, num_samples: int) -> jax.Array:
    """Exact posterior samples ``(num_samples, dim)`` for ``x_obs: (dim,)`` or ``(n, dim)``."""
    mean, cov = analytic_posterior(x_obs)
    z = jax.random.normal(rng_key, (num_samples, mean.shape[0]))
    return mean + z * jnp.sqrt(jnp.diag(cov))


def make(dim: int = 10) -> Task:
    """The sbibm Gaussian-linear task in ``dim`` dimensions (sbibm observation 1 when dim = 10)."""
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim}")
    sbibm = dim == 10
    return Task(
        name="gaussian_linear",
        prior=dist.Normal(jnp.zeros(dim), math.sqrt(PRIOR_VAR)).to_event(1),
        simulator=simulator,
        x_shape=(dim,),
        parameter_labels=tuple(f"parameter_{i + 1}" for i in range(dim)),
        true_theta=TRUE_THETA if sbibm else np.resize(TRUE_THETA, dim),
        observation_seed=1,
        observation=OBSERVATION if sbibm else None,
        log_likelihood=log_likelihood,
        reference_posterior=reference_posterior,
        description=(
            f"Gaussian linear (sbibm v1.1.0) in {dim} dimensions: θ ~ N(0, 0.1 I), x ~ N(θ, 0.1 I); "
            "conjugate posterior N(Σx/(n+1), 0.1/(n+1) I). Default observation: "
            + ("sbibm observation 1." if sbibm else
               "sbibm's true θ (cycled to dim entries), simulated with observation_seed=1.")
        ),
    )
