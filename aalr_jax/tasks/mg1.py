r"""M/G/1 queue (Papamakarios et al. 2019, SNL; one of the problems of Hermans et al. 2020).

Model, with service-time bounds ``θ_1 ≤ θ_2`` and arrival rate ``θ_3``: 50 customers arrive at a
single server; customer ``i = 1..50`` has

* service time ``s_i ~ U(θ_1, θ_2)``,
* inter-arrival time ``w_i ~ Exp(rate θ_3)`` (so arrival time ``a_i = Σ_{j≤i} w_j``),
* departure time ``d_i = s_i + max(a_i, d_{i−1})`` (``d_0 = 0``: first come, first served),

and ``x`` is the 5 equally spaced quantiles (0, 25, 50, 75, 100 %) of the 50 inter-departure times
``δ_i = d_i − d_{i−1} = s_i + max(0, a_i − d_{i−1})``, linear interpolation between order statistics
(``numpy.percentile``'s default, as in the SNL code), so ``x: (5,)``. No whitening (SNL whitens with
pilot-run statistics; our estimators standardise their inputs).

Parametrisation. SNL's prior is uniform on ``0 ≤ θ_1 ≤ 10``, ``0 ≤ θ_2 − θ_1 ≤ 10``,
``0 ≤ θ_3 ≤ 1/3`` (``simulators/mg1.py`` in the SNL code), which is not a box in
``(θ_1, θ_2, θ_3)``; a box ``U([0,0,0], [10,10,1/3])`` on ``(θ_1, θ_2, θ_3)`` itself, as some
implementations use, allows ``θ_2 < θ_1``. We use the SNL form: the task parameter is

.. math::  φ = (θ_1,\ θ_2 − θ_1,\ θ_3) \sim U([0, 0, 0], [10, 10, 1/3]),

a volume-preserving linear map of SNL's θ, so posteriors correspond one to one
(``θ_2 = φ_1 + φ_2``). The truth ``θ* = (1, 5, 0.2)`` is ``φ* = (1, 4, 0.2)``.

Edge cases (all jit/vmap-safe, no Python-level branching on values):

* ``θ_3 = 0`` (no arrivals, every δ infinite) lies in the closed prior box, and a float32 draw of
  ``U(0, 1/3)`` is exactly 0 with probability 2⁻²³ ≈ 1.2e-7 (about once in 10⁷ simulations). The
  rate is floored at ``1e-8``, below the smallest positive float32 draw (``2⁻²³/3 ≈ 4e-8``), so only
  the exact 0 is affected and every prior draw gives a finite x (of order 1e9 there).
* Outside the model's domain (``φ_1 < 0``, ``φ_2 < 0`` or ``φ_3 < 0``: negative service times or
  rate) the simulator returns NaN. Above the prior box (e.g. ``φ_1 > 10``) the queue is still
  well defined and is simulated.
* ``theta`` of a shape other than ``(3,)`` raises ``ValueError``.

No tractable likelihood (``log_likelihood = reference_posterior = None``).

Default observation: ``simulator(PRNGKey(1), φ*)`` under jax 0.10.2, stored as :data:`OBSERVATION`
(not SNL's observed data).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.priors import box_uniform
from aalr_jax.tasks._common import check_theta
from aalr_jax.tasks.base import Task

__all__ = ["NUM_CUSTOMERS", "inter_departure_times", "make", "simulator"]

NUM_CUSTOMERS = 50
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_RATE = 1e-8
PRIOR_LOW = np.array([0.0, 0.0, 0.0], dtype=np.float32)
PRIOR_HIGH = np.array([10.0, 10.0, 1.0 / 3.0], dtype=np.float32)
TRUE_THETA = np.array([1.0, 4.0, 0.2], dtype=np.float32)  # (θ1, θ2 − θ1, θ3) of SNL's (1, 5, 0.2)
# simulator(PRNGKey(1), TRUE_THETA), jax 0.10.2
OBSERVATION = np.array([1.1607914, 3.1443164, 4.272214, 6.463494, 22.363655], dtype=np.float32)


def inter_departure_times(service: jax.Array, inter_arrival: jax.Array) -> jax.Array:
    """``δ_i = s_i + max(0, a_i − d_{i−1})`` for ``service, inter_arrival: (n,)``; shape ``(n,)``.

    Scans over customers with carry ``(a_{i−1}, d_{i−1})``; ``a_0 = d_0 = 0``.
    """

    def step(carry, sw):
        arrival, departure = carry
        s, w = sw
        arrival = arrival + w
        delta = s + jnp.maximum(0.0, arrival - departure)
        return (arrival, departure + delta), delta

    zero = jnp.zeros((), service.dtype)
    _, delta = jax.lax.scan(step, (zero, zero), (service, inter_arrival))
    return delta


def _quantiles(v: jax.Array) -> jax.Array:
    """0, 25, 50, 75, 100 % quantiles of ``v: (n,)`` with linear interpolation, shape ``(5,)``."""
    v = jnp.sort(v)
    pos = np.asarray(QUANTILES) * (v.shape[0] - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, v.shape[0] - 1)
    frac = jnp.asarray(pos - lo, v.dtype)
    return v[lo] + frac * (v[hi] - v[lo])


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (5,)`` (quantiles of the inter-departure times) for ``theta = (θ1, θ2 − θ1, θ3)``."""
    theta = check_theta(theta, 3, "mg1", " = (θ1, θ2 − θ1, θ3)")
    low, width, rate = theta[0], theta[1], theta[2]
    key_s, key_w = jax.random.split(rng_key)
    service = low + width * jax.random.uniform(key_s, (NUM_CUSTOMERS,))
    inter_arrival = jax.random.exponential(key_w, (NUM_CUSTOMERS,)) / jnp.maximum(rate, MIN_RATE)
    x = _quantiles(inter_departure_times(service, inter_arrival))
    valid = (low >= 0) & (width >= 0) & (rate >= 0)
    return jnp.where(valid, x, jnp.nan)


def make() -> Task:
    """The M/G/1 task on ``(θ1, θ2 − θ1, θ3)``; default observation stored (seed 1 at φ* = (1, 4, 0.2))."""
    return Task(
        name="mg1",
        prior=box_uniform(PRIOR_LOW, PRIOR_HIGH),
        simulator=simulator,
        x_shape=(len(QUANTILES),),
        parameter_labels=("theta_1", "theta_2_minus_theta_1", "theta_3"),
        true_theta=TRUE_THETA,
        observation_seed=1,
        observation=OBSERVATION,
        log_likelihood=None,
        reference_posterior=None,
        description=(
            "M/G/1 queue (Papamakarios et al. 2019, SNL): 50 customers, service U(θ1, θ2), "
            "inter-arrival Exp(rate θ3); x = 0/25/50/75/100 % quantiles of the inter-departure "
            "times. Parameter (θ1, θ2 - θ1, θ3) ~ U([0,0,0], [10,10,1/3]) (SNL's prior as a box); "
            "truth (1, 4, 0.2), i.e. SNL's θ* = (1, 5, 0.2). Default observation: seed 1 (stored)."
        ),
    )
