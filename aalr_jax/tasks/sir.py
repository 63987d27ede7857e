r"""SIR epidemic model (sbibm v1.1.0, Lueckmann et al. 2021; after Kermack & McKendrick 1927).

θ = (β, γ): contact rate and mean recovery rate (1/days). x ∈ {0..1000}^10.

* prior: independent log-normals, ``β ~ LogNormal(log 0.4, 0.5²)``, ``γ ~ LogNormal(log 0.125, 0.2²)``;
* dynamics: for a population ``N = 10⁶`` starting from ``(S, I, R) = (N - 1, 1, 0)``,

  .. math::  \dot S = -β S I / N,\quad \dot I = β S I / N - γ I,\quad \dot R = γ I,

  solved on days 0..160 and read on days ``t_k = 17 k``, ``k = 0..9`` (sbibm saves every day and
  keeps every 17th point, ``us[:, 1, ::17]``: days 0, 17, ..., 153);
* noise: ``x_k ~ Binomial(1000, clip(I(t_k)/N, 0, 1))`` independently.

Numerics. sbibm solves with Julia's Tsit5 (reltol = abstol = 10⁻⁸, float64). Here diffrax's Tsit5
solves the same system for the fractions ``(i, r) = (I, R)/N`` (with ``s = 1 - i - r``) in float32
with ``rtol = 10⁻⁶``, ``atol = 10⁻¹²`` (relative accuracy for ``i`` down from ``i(0) = 10⁻⁶``), and
only up to day 153 (nothing later is observed), jit- and vmap-friendly: at most
:data:`MAX_STEPS` adaptive steps, no exceptions. The noise-free ``I(t_k)/N`` agree with SciPy's
``solve_ivp`` (float64, rtol 10⁻¹⁰) to ~10⁻⁴ relative or better (tested), far below the
binomial noise.

Failed solves. sbibm returns NaN for a whole simulation whose solver stopped early (its
``u.shape`` check). Likewise :func:`simulator` returns ten NaN when the solve does not succeed within
:data:`MAX_STEPS` steps (none in 2·10⁵ prior draws), and :func:`log_likelihood` is ``-inf`` there.
``aalr_jax.data.simulate`` raises on NaN simulations unless ``on_invalid="drop"``.

Parameters outside the prior's support. θ with a component ``≤ 0`` or non-finite: the simulator
returns NaN and :func:`log_likelihood` ``-inf`` (the prior is ``-inf`` there too; the prior never
draws such θ). A θ of the wrong shape raises ``ValueError``. :func:`log_likelihood` is ``-inf`` for an
``x`` that is not a vector of integers in ``[0, 1000]``.

Reference posterior: NUTS on the exact likelihood (ODE solution + binomial noise), through
:func:`aalr_jax.sampling.sample_posterior` with an ``ExactLikelihood`` (gradients by forward-mode
sensitivities through the solver). sbibm's reference uses slice sampling on the same likelihood,
then rejection sampling.

Default observation: sbibm observation 1 (numbers below, copied from
``sbibm/tasks/sir/files/num_observation_1``; sbibm is MIT-licensed, © 2020 Lueckmann, Boelts,
Greenberg, Gonçalves, Macke).

AALR on this task (C2ST on sbibm's 10 observations at 10³–10⁵ simulations, with the options of
each row): ``benchmarks/README.md``, section "Accuracy against sbibm".
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import gammaln, xlog1py, xlogy

from aalr_jax.types import ExactLikelihood
from aalr_jax.tasks._common import check_theta, nuts_reference
from aalr_jax.tasks._ode import forward_mode_gradient, solve_at, solve_positive
from aalr_jax.tasks.base import Task

__all__ = ["make", "simulator", "log_likelihood", "infected_fraction", "reference_posterior"]

POPULATION = 1e6
I0, R0 = 1.0, 0.0
TOTAL_COUNT = 1000
TIMES = np.arange(0.0, 161.0, 1.0)[::17]  # days 0, 17, ..., 153 (sbibm: saveat=1, ::17)
RTOL, ATOL = 1e-6, 1e-12
MAX_STEPS = 4096
PRIOR_LOC = (math.log(0.4), math.log(0.125))
PRIOR_SCALE = (0.5, 0.2)

# sbibm v1.1.0, sir, num_observation_1 (MIT license, Lueckmann et al. 2021).
TRUE_THETA = np.array([0.61479264, 0.19172086], dtype=np.float32)
OBSERVATION = np.array([0.0, 1.0, 352.0, 40.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)

_PRIOR = dist.LogNormal(jnp.asarray(PRIOR_LOC), jnp.asarray(PRIOR_SCALE)).to_event(1)


def _vector_field(t, y, theta):
    i, r = y[0], y[1]
    infection = theta[0] * (1.0 - i - r) * i
    return jnp.stack([infection - theta[1] * i, theta[1] * i])


@forward_mode_gradient
def _solve(theta: jax.Array) -> jax.Array:
    """``i(t_k)``, ``(10,)``, for positive ``theta: (2,)``; NaN if the solve fails."""
    y0 = jnp.asarray([I0 / POPULATION, R0 / POPULATION], jnp.float32)
    return solve_at(_vector_field, y0, theta, TIMES, rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS)[:, 0]


def infected_fraction(theta: jax.Array):
    """Noise-free ``I(t_k)/N`` at the 10 observation days, ``(10,)``, and a success flag ``()``.

    The flag is False (and the fractions NaN) for a failed solve or θ outside ``(0, ∞)²``.
    """
    theta = check_theta(theta, 2, "sir", " = (beta, gamma)")
    return solve_positive(_solve, theta, [0.4, 0.125])


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (10,)`` (counts as float32) for ``theta = (β, γ): (2,)``; NaN if the solve fails."""
    frac, ok = infected_fraction(theta)
    p = jnp.clip(jnp.where(ok, frac, 0.0), 0.0, 1.0)
    x = jax.random.binomial(rng_key, TOTAL_COUNT, p, shape=p.shape).astype(jnp.float32)
    return jnp.where(ok, x, jnp.nan)


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Exact ``Σ_k log Binomial(x_k; 1000, clip(I(t_k)/N, 0, 1))`` for ``theta: (2,)``, ``x: (10,)``."""
    x = jnp.asarray(x, jnp.float32)
    if x.shape != (len(TIMES),):
        raise ValueError(f"sir: x must have shape ({len(TIMES)},), got {x.shape}")
    frac, ok = infected_fraction(theta)
    p = jnp.clip(jnp.where(ok, frac, 0.5), 0.0, 1.0)
    n = float(TOTAL_COUNT)
    log_binom = gammaln(n + 1.0) - gammaln(x + 1.0) - gammaln(n - x + 1.0)
    ll = jnp.sum(log_binom + xlogy(x, p) + xlog1py(n - x, -p))
    x_ok = jnp.all((x >= 0) & (x <= n) & (x == jnp.round(x)))
    return jnp.where(ok & x_ok, ll, -jnp.inf)


_LIKELIHOOD = ExactLikelihood(log_likelihood, (len(TIMES),))


def reference_posterior(rng_key: jax.Array, x_obs, num_samples: int, **kwargs) -> jax.Array:
    """Posterior samples ``(num_samples, 2)`` for ``x_obs: (10,)`` by NUTS on the exact likelihood.

    Keyword arguments go to :func:`aalr_jax.tasks._common.nuts_reference` (``num_chains=10``,
    ``num_warmup=1000``, then those of :func:`aalr_jax.sampling.sample_posterior`).
    """
    return nuts_reference(rng_key, _LIKELIHOOD, _PRIOR, x_obs, num_samples, **kwargs)


def make() -> Task:
    """The sbibm SIR task with sbibm observation 1 as default observation."""
    return Task(
        name="sir",
        prior=_PRIOR,
        simulator=simulator,
        x_shape=(len(TIMES),),
        parameter_labels=(r"$\beta$", r"$\gamma$"),  # sbibm's labels
        true_theta=TRUE_THETA,
        observation_seed=1,
        observation=OBSERVATION,
        log_likelihood=log_likelihood,
        reference_posterior=reference_posterior,
        description=(
            "SIR (sbibm v1.1.0): β ~ LogNormal(log 0.4, 0.5²), γ ~ LogNormal(log 0.125, 0.2²); SIR "
            "ODE with N = 10⁶, one initial infection; x_k ~ Binomial(1000, I(t_k)/N) on days "
            "0, 17, ..., 153 (diffrax Tsit5). Exact likelihood; reference by NUTS. Default "
            "observation: sbibm observation 1."
        ),
    )
