r"""Two moons (sbibm v1.1.0, Lueckmann et al. 2021; after Greenberg et al. 2019).

Definition, θ ∈ [-1, 1]^2 and x ∈ R^2:

* prior ``θ ~ U(-1, 1)^2``;
* simulator: ``a ~ U(-π/2, π/2)``, ``r ~ N(0.1, 0.01²)``, ``p = (r cos a + 0.25, r sin a)`` and

  .. math::  x = p + \bigl(-|θ_1 + θ_2| / \sqrt2,\ (-θ_1 + θ_2) / \sqrt2\bigr).

Likelihood. With ``q = x - (-|θ_1+θ_2|/√2, (-θ_1+θ_2)/√2) - (0.25, 0)`` written in polar form
``q = (ρ cos φ, ρ sin φ)``, the density of ``p - (0.25, 0)`` is the density of ``(r, a)`` times the
Jacobian ``1/ρ`` of the polar map:

.. math::  \log p(x|θ) = \log N(ρ; 0.1, 0.01^2) - \log π - \log ρ,  \quad q_x > 0,

and ``-inf`` where ``q_x ≤ 0`` (``|a| ≥ π/2``). (Draws with ``r < 0``, probability ~1e-23, are
ignored.) sbibm's own ``_likelihood`` keeps only the ``N(ρ; ...)`` factor; the posterior, its
reference sampler and the data here are those of sbibm.

Reference posterior (exact). For a fixed x, ``θ ↦ x - p`` is a two-to-one map that is, on each
half plane ``θ_1 + θ_2 ≷ 0``, a rotation (volume preserving). So drawing ``p`` from the simulator
noise, solving ``|u| = p_1 - x_1`` (rejected if negative), ``v = x_2 - p_2`` for
``u = (θ_1+θ_2)/√2, v = (θ_2-θ_1)/√2``, picking the sign of ``u`` with probability 1/2 and keeping
the draw if θ lies in the prior box gives θ with density ∝ ``1{θ ∈ box} p(x|θ)``.

Default observation: sbibm observation 1, ``x_o = (-0.6396706, 0.16234657)``, generated from
``θ = (-0.8176656, -0.5756806)``. These numbers are copied from sbibm's data files
(``sbibm/tasks/two_moons/files/num_observation_1``; sbibm is MIT-licensed, © 2020 Lueckmann,
Boelts, Greenberg, Gonçalves, Macke).

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

__all__ = ["make", "simulator", "log_likelihood", "reference_posterior"]

R_LOC, R_SCALE, OFFSET = 0.1, 0.01, 0.25
_SQRT2 = math.sqrt(2.0)

# sbibm v1.1.0, two_moons, num_observation_1 (MIT license, Lueckmann et al. 2021).
TRUE_THETA = np.array([-0.8176656, -0.5756806], dtype=np.float32)
OBSERVATION = np.array([-0.6396706, 0.16234657], dtype=np.float32)


def _shift(theta: jax.Array) -> jax.Array:
    """``(-|θ1+θ2|/√2, (-θ1+θ2)/√2)`` for ``theta: (2,)``, shape ``(2,)``."""
    return jnp.stack([-jnp.abs(theta[0] + theta[1]) / _SQRT2, (theta[1] - theta[0]) / _SQRT2])


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (2,)`` for ``theta: (2,)``."""
    key_a, key_r = jax.random.split(rng_key)
    a = jax.random.uniform(key_a, minval=-math.pi / 2, maxval=math.pi / 2)
    r = R_LOC + R_SCALE * jax.random.normal(key_r)
    p = jnp.stack([r * jnp.cos(a) + OFFSET, r * jnp.sin(a)])
    return p + _shift(jnp.asarray(theta))


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Exact ``log p(x|θ)`` for ``theta: (2,)``, ``x: (2,)``; a scalar, ``-inf`` off the moon's half plane."""
    q = jnp.asarray(x) - _shift(jnp.asarray(theta)) - jnp.array([OFFSET, 0.0])
    inside = q[0] > 0
    q = jnp.where(inside, q, jnp.array([R_LOC, 0.0]))  # keeps gradients finite outside
    rho = jnp.sqrt(jnp.sum(q**2))
    log_r = -0.5 * ((rho - R_LOC) / R_SCALE) ** 2 - math.log(math.sqrt(2 * math.pi) * R_SCALE)
    ll = log_r - math.log(math.pi) - jnp.log(rho)
    return jnp.where(inside, ll, -jnp.inf)


def _propose(rng_key: jax.Array, x_obs: jax.Array, n: int):
    """``n`` candidate θ ``(n, 2)`` and their acceptance mask ``(n,)`` (see module docstring)."""
    key_p, key_s = jax.random.split(rng_key)
    p = jax.vmap(simulator, in_axes=(0, None))(jax.random.split(key_p, n), jnp.zeros(2))
    abs_u = p[:, 0] - x_obs[0]
    u = jnp.where(jax.random.bernoulli(key_s, 0.5, (n,)), abs_u, -abs_u)
    v = x_obs[1] - p[:, 1]
    theta = jnp.stack([(u - v) / _SQRT2, (u + v) / _SQRT2], axis=-1)
    ok = (abs_u >= 0) & jnp.all(jnp.abs(theta) <= 1.0, axis=-1)
    return theta, ok


def reference_posterior(
    rng_key: jax.Array, x_obs: jax.Array, num_samples: int, max_rounds: int = 1000
) -> jax.Array:
    """Exact posterior samples ``(num_samples, 2)`` for ``x_obs: (2,)``.

    Rejection in rounds of ``2 * num_samples + 256`` candidates inside a ``lax.while_loop``;
    jit-able with ``num_samples`` (and ``max_rounds``) static. Rows not filled after ``max_rounds``
    rounds are NaN; called outside ``jit`` this raises instead.
    """
    x_obs = jnp.asarray(x_obs, dtype=jnp.float32)
    batch = 2 * num_samples + 256

    def cond(state):
        _, count, i, _ = state
        return (count < num_samples) & (i < max_rounds)

    def body(state):
        key, count, i, out = state
        key, sub = jax.random.split(key)
        theta, ok = _propose(sub, x_obs, batch)
        slot = jnp.where(ok, count + jnp.cumsum(ok) - 1, num_samples)  # num_samples = dropped
        out = out.at[slot].set(theta, mode="drop")
        return key, jnp.minimum(count + jnp.sum(ok), num_samples), i + 1, out

    init = (rng_key, jnp.int32(0), jnp.int32(0), jnp.full((num_samples, 2), jnp.nan))
    _, count, _, out = jax.lax.while_loop(cond, body, init)
    if not isinstance(count, jax.core.Tracer) and int(count) < num_samples:
        raise RuntimeError(
            f"two_moons reference posterior: only {int(count)} of {num_samples} samples accepted "
            f"in {max_rounds} rounds; is x_obs reachable from the prior box?"
        )
    return out


def make() -> Task:
    """The sbibm two-moons task with sbibm observation 1 as default observation."""
    return Task(
        name="two_moons",
        prior=box_uniform(-1.0, np.ones(2)),
        simulator=simulator,
        x_shape=(2,),
        parameter_labels=("parameter_1", "parameter_2"),
        true_theta=TRUE_THETA,
        observation=OBSERVATION,
        log_likelihood=log_likelihood,
        reference_posterior=reference_posterior,
        description=(
            "Two moons (sbibm v1.1.0): θ ~ U(-1,1)^2; a ~ U(-π/2,π/2), r ~ N(0.1, 0.01²), "
            "x = (r cos a + 0.25 - |θ1+θ2|/√2, r sin a + (θ2-θ1)/√2). Crescent-shaped bimodal "
            "posterior. Default observation: sbibm observation 1."
        ),
    )
