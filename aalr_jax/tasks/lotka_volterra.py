r"""Lotka–Volterra predator–prey ODE (sbibm v1.1.0, Lueckmann et al. 2021; after the Stan case study).

θ = (α, β, γ, δ) ∈ (0, ∞)^4; x ∈ (0, ∞)^20.

* prior: independent log-normals, ``α, γ ~ LogNormal(-0.125, 0.5²)``, ``β, δ ~ LogNormal(-3, 0.5²)``;
* dynamics: prey ``u`` and predators ``v`` from ``(u, v)(0) = (30, 1)``,

  .. math::  \dot u = α u - β u v,\qquad \dot v = -γ v + δ u v,

  solved on ``[0, 20]`` and read at ``t_k = 2.1 k``, ``k = 0..9`` (sbibm saves every 0.1 and keeps
  every 21st point, ``us[:, :, ::21]``: t = 0, 2.1, ..., 18.9);
* noise: ``x = (x^u_0..x^u_9, x^v_0..x^v_9)`` (prey first, as sbibm's reshape) with
  ``x^u_k ~ LogNormal(log clip(u(t_k), 10⁻¹⁰, 10⁴), 0.1²)``, likewise for ``v``, independently.

Numerics. sbibm solves with Julia's Tsit5 (reltol = abstol = 10⁻⁸, float64). Here diffrax's Tsit5
solves the same system for ``(log u, log v)``, i.e. ``d log u/dt = α - β v``, ``d log v/dt = -γ + δ u``,
in float32 with ``rtol = atol = 10⁻⁶`` (relative accuracy for populations that get very small
or large), only up to t = 18.9 (nothing later is observed), jit- and vmap-friendly: at most
:data:`MAX_STEPS` adaptive steps, no exceptions. The noise-free trajectories agree with SciPy's
``solve_ivp`` (float64, rtol 10⁻¹⁰) to ~10⁻⁴ relative (tested), far below the 10 % noise.

Failed solves. sbibm returns NaN for a whole simulation whose solver stopped early (its
``u.shape`` check). Likewise :func:`simulator` returns twenty NaN when the solve does not succeed
within :data:`MAX_STEPS` steps (1 in 2·10⁵ prior draws, in the extreme-cycle tail), and
:func:`log_likelihood` is ``-inf`` there. ``aalr_jax.data.simulate`` raises on NaN simulations
unless ``on_invalid="drop"``, which mirrors sbibm's handling.

Parameters outside the prior's support. θ with a component ``≤ 0`` or non-finite: the simulator
returns NaN and :func:`log_likelihood` ``-inf`` (the prior is ``-inf`` there too; the prior never
draws such θ). A θ of the wrong shape raises ``ValueError``; :func:`log_likelihood` is ``-inf`` if
some ``x ≤ 0``.

Reference posterior: NUTS on the exact likelihood (ODE solution + log-normal noise), through
:func:`aalr_jax.sampling.sample_posterior` with an ``ExactLikelihood`` (gradients by forward-mode
sensitivities through the solver). sbibm's reference uses slice sampling on the same likelihood,
then rejection sampling.

Default observation: sbibm observation 1 (numbers below, copied from
``sbibm/tasks/lotka_volterra/files/num_observation_1``; sbibm is MIT-licensed, © 2020 Lueckmann,
Boelts, Greenberg, Gonçalves, Macke).

AALR on this task (C2ST on sbibm's 10 observations at 10³–10⁵ simulations, with the options of
each row): ``benchmarks/README.md``, section "Accuracy against sbibm".
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from aalr_jax.types import ExactLikelihood
from aalr_jax.tasks._common import check_theta, nuts_reference
from aalr_jax.tasks._ode import forward_mode_gradient, solve_at, solve_positive
from aalr_jax.tasks.base import Task

__all__ = ["make", "simulator", "log_likelihood", "populations", "reference_posterior"]

U0 = (30.0, 1.0)
TIMES = np.round(np.arange(0, 201) * 0.1, 10)[::21]  # 0, 2.1, ..., 18.9 (sbibm: saveat=0.1, ::21)
NOISE_SCALE = 0.1
CLIP = (1e-10, 1e4)
RTOL, ATOL = 1e-6, 1e-6
MAX_STEPS = 4096
PRIOR_LOC = (-0.125, -3.0, -0.125, -3.0)
PRIOR_SCALE = 0.5

# sbibm v1.1.0, lotka_volterra, num_observation_1 (MIT license, Lueckmann et al. 2021).
TRUE_THETA = np.array([0.6859157, 0.10761319, 0.88789904, 0.116794825], dtype=np.float32)
OBSERVATION = np.array(
    [31.783262, 1.1971166, 0.29703617, 0.71145046, 2.9415865,
     11.482614, 36.09036, 0.46229604, 0.38081983, 0.9173736,
     0.8910395, 27.039942, 4.356176, 0.78444487, 0.17100818,
     0.1325878, 8.727008, 16.97251, 2.7902339, 0.47567415],
    dtype=np.float32,
)  # fmt: skip

_PRIOR = dist.LogNormal(jnp.asarray(PRIOR_LOC), PRIOR_SCALE * jnp.ones(4)).to_event(1)


def _vector_field(t, log_uv, theta):
    alpha, beta, gamma, delta = theta[0], theta[1], theta[2], theta[3]
    u, v = jnp.exp(log_uv[0]), jnp.exp(log_uv[1])
    return jnp.stack([alpha - beta * v, -gamma + delta * u])


@forward_mode_gradient
def _solve(theta: jax.Array) -> jax.Array:
    """``(log u(t_k), log v(t_k))``, shape ``(10, 2)``, for positive ``theta: (4,)``; NaN if the solve fails."""
    y0 = jnp.log(jnp.asarray(U0, jnp.float32))
    return solve_at(_vector_field, y0, theta, TIMES, rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS)


def _log_populations(theta: jax.Array):
    """``(log u(t_k), log v(t_k))``, shape ``(2, 10)``, and a success flag ``()`` (NaN if not)."""
    theta = check_theta(theta, 4, "lotka_volterra", " = (alpha, beta, gamma, delta)")
    log_uv, ok = solve_positive(_solve, theta, TRUE_THETA)
    return log_uv.T, ok


def populations(theta: jax.Array):
    """Noise-free ``(u(t_k), v(t_k))``, shape ``(2, 10)``, and a success flag ``()``.

    The flag is False (and the populations NaN) for a failed solve or θ outside ``(0, ∞)^4``.
    """
    log_uv, ok = _log_populations(theta)
    return jnp.exp(log_uv), ok


def _log_median(theta):
    """``log clip(populations, 1e-10, 1e4)`` flattened prey-first ``(20,)`` and the success flag.

    Clipped in log space (the same numbers), so gradients stay finite for huge populations.
    """
    log_uv, ok = _log_populations(theta)
    loc = jnp.clip(jnp.where(ok, log_uv, 0.0), math.log(CLIP[0]), math.log(CLIP[1]))
    return loc.reshape(-1), ok


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (20,)`` for ``theta = (α, β, γ, δ): (4,)``; NaN if the solve fails."""
    loc, ok = _log_median(theta)
    x = jnp.exp(loc + NOISE_SCALE * jax.random.normal(rng_key, loc.shape))
    return jnp.where(ok, x, jnp.nan)


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Exact ``Σ log LogNormal(x_j; log clip(u_j), 0.1²)`` for ``theta: (4,)``, ``x: (20,)``; a scalar."""
    x = jnp.asarray(x, jnp.float32)
    if x.shape != (2 * len(TIMES),):
        raise ValueError(f"lotka_volterra: x must have shape ({2 * len(TIMES)},), got {x.shape}")
    loc, ok = _log_median(theta)
    positive = jnp.all(x > 0)
    log_x = jnp.log(jnp.where(positive, x, 1.0))
    z = (log_x - loc) / NOISE_SCALE
    ll = jnp.sum(-0.5 * z**2 - log_x - math.log(NOISE_SCALE * math.sqrt(2 * math.pi)))
    return jnp.where(ok & positive, ll, -jnp.inf)


_LIKELIHOOD = ExactLikelihood(log_likelihood, (2 * len(TIMES),))


def reference_posterior(rng_key: jax.Array, x_obs, num_samples: int, **kwargs) -> jax.Array:
    """Posterior samples ``(num_samples, 4)`` for ``x_obs: (20,)`` by NUTS on the exact likelihood.

    Keyword arguments go to :func:`aalr_jax.tasks._common.nuts_reference` (``num_chains=10``,
    ``num_warmup=1000``, then those of :func:`aalr_jax.sampling.sample_posterior`).
    """
    return nuts_reference(rng_key, _LIKELIHOOD, _PRIOR, x_obs, num_samples, **kwargs)


def make() -> Task:
    """The sbibm Lotka–Volterra task with sbibm observation 1 as default observation."""
    return Task(
        name="lotka_volterra",
        prior=_PRIOR,
        simulator=simulator,
        x_shape=(2 * len(TIMES),),
        parameter_labels=(r"$\alpha$", r"$\beta$", r"$\gamma$", r"$\delta$"),  # sbibm's labels
        true_theta=TRUE_THETA,
        observation_seed=1,
        observation=OBSERVATION,
        log_likelihood=log_likelihood,
        reference_posterior=reference_posterior,
        description=(
            "Lotka–Volterra (sbibm v1.1.0): θ = (α, β, γ, δ), log-normal priors (means -0.125, -3, "
            "-0.125, -3; sd 0.5); predator–prey ODE from (30, 1), prey and predators read at "
            "t = 0, 2.1, ..., 18.9 with log-normal noise (sd 0.1) (diffrax Tsit5). Exact "
            "likelihood; reference by NUTS. Default observation: sbibm observation 1."
        ),
    )
