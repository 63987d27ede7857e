r"""SLCP: simple likelihood, complex posterior (sbibm v1.1.0; the tractable problem of
Hermans et al. 2020, after Papamakarios et al. 2019).

Definition, θ ∈ [-3, 3]^5 and x ∈ R^8:

* prior ``θ ~ U(-3, 3)^5``;
* simulator: 4 i.i.d. draws ``x_j ~ N(m, S)``, ``j = 1..4``, with ``m = (θ_1, θ_2)``,
  ``s_1 = θ_3²``, ``s_2 = θ_4²``, ``ρ = tanh(θ_5)`` and

  .. math::  S = \begin{pmatrix} s_1^2 + ε & ρ s_1 s_2 \\ ρ s_1 s_2 & s_2^2 + ε \end{pmatrix},
             \quad ε = 10^{-6}

  (sbibm adds ε to keep S positive definite when θ_3 or θ_4 is 0); flattened as
  ``x = (x_{1,1}, x_{1,2}, x_{2,1}, x_{2,2}, ..., x_{4,2})`` like sbibm.

The likelihood ``Σ_j log N(x_j; m, S)`` is exact (:func:`log_likelihood`). The posterior has
four modes (the signs of θ_3 and θ_4). No reference sampler yet (``reference_posterior=None``);
the plan is NUTS on the exact likelihood.

Default observation: the paper's ``θ* = (0.7, -2.9, -1.0, -0.9, 0.6)``, simulated once with
``simulator(PRNGKey(1), θ*)`` under jax 0.10.2 and stored as :data:`OBSERVATION`, so that it does
not change with JAX's random-number generator. This is not one of sbibm's observations.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.priors import box_uniform
from aalr_jax.tasks.base import Task

__all__ = ["make", "simulator", "log_likelihood"]

NUM_POINTS = 4
EPS = 1e-6
TRUE_THETA = np.array([0.7, -2.9, -1.0, -0.9, 0.6], dtype=np.float32)  # Hermans et al. 2020
OBSERVATION = np.array(  # simulator(PRNGKey(1), TRUE_THETA), jax 0.10.2
    [0.54556274, -2.9093032, 0.56401944, -3.0650856, 1.9666679, -2.2476587, 2.8415613, -1.283296],
    dtype=np.float32,
)


def _gaussian(theta: jax.Array):
    """Mean ``(2,)``, covariance entries ``a = S11, b = S12, d = S22`` and ``det S``, from ``theta: (5,)``."""
    theta = jnp.asarray(theta)
    s1, s2 = theta[2] ** 2, theta[3] ** 2
    rho = jnp.tanh(theta[4])
    a, d, b = s1**2 + EPS, s2**2 + EPS, rho * s1 * s2
    # det = a d - b² written without cancellation (1 - tanh² = 1 / cosh²).
    det = (s1 * s2 / jnp.cosh(theta[4])) ** 2 + EPS * (s1**2 + s2**2) + EPS**2
    return theta[:2], a, b, d, det


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (8,)`` (4 points of R², flattened point by point) for ``theta: (5,)``."""
    m, a, b, _, det = _gaussian(theta)
    z = jax.random.normal(rng_key, (NUM_POINTS, 2))
    l11 = jnp.sqrt(a)  # Cholesky factor of S
    x1 = m[0] + l11 * z[:, 0]
    x2 = m[1] + (b / l11) * z[:, 0] + jnp.sqrt(det / a) * z[:, 1]
    return jnp.stack([x1, x2], axis=-1).reshape(2 * NUM_POINTS)


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Exact ``log p(x|θ) = Σ_j log N(x_j; m, S)`` for ``theta: (5,)``, ``x: (8,)``; a scalar."""
    m, a, b, d, det = _gaussian(theta)
    u = jnp.asarray(x).reshape(NUM_POINTS, 2) - m
    quad = (d * u[:, 0] ** 2 - 2 * b * u[:, 0] * u[:, 1] + a * u[:, 1] ** 2) / det
    return -0.5 * jnp.sum(quad) - NUM_POINTS * (math.log(2 * math.pi) + 0.5 * jnp.log(det))


def make() -> Task:
    """The SLCP task; default observation: the paper's θ* simulated with seed 1 (stored)."""
    return Task(
        name="slcp",
        prior=box_uniform(-3.0, 3.0 * np.ones(5)),
        simulator=simulator,
        x_shape=(2 * NUM_POINTS,),
        parameter_labels=tuple(f"parameter_{i + 1}" for i in range(5)),
        true_theta=TRUE_THETA,
        observation_seed=1,
        observation=OBSERVATION,
        log_likelihood=log_likelihood,
        reference_posterior=None,
        description=(
            "SLCP (sbibm v1.1.0; Hermans et al. 2020): θ ~ U(-3,3)^5; x = 4 i.i.d. 2-D Gaussian "
            "draws with mean (θ1, θ2), std (θ3², θ4²), correlation tanh(θ5) (+1e-6 on the "
            "covariance diagonal, as sbibm). Four-mode posterior. Default observation: "
            "θ* = (0.7, -2.9, -1.0, -0.9, 0.6) simulated with observation_seed=1 (stored)."
        ),
    )
