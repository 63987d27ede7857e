r"""Weinberg: the forward–backward asymmetry of e+e− → μ+μ− (Hermans et al. 2020, after the toy
model of L. Heinrich and K. Cranmer).

Definition, θ = (G_F,) ∈ [0.25, 2] and one event x = (cos θ,) ∈ [-1, 1]:

* prior ``G_F ~ U(0.25, 2)``;
* the angular distribution of one event, normalised on ``c = cos θ ∈ [-1, 1]``
  (``∫_{-1}^{1} (1 + c² + A c) dc = 8/3``):

  .. math::  p(c | G_F) = \tfrac38 \bigl(1 + c^2 + A_{FB}\, c\bigr), \qquad
             A_{FB} = 2 \tanh\!\Bigl(10\,\frac{\sqrt s - M_Z}{M_Z}\Bigr)\,\frac{G_F}{G_{F,nom}},

  with ``√s = 2 E_beam``, ``M_Z = 90``, ``G_F,nom = 1``.

Beam energy. The authors' code defaults to ``E_beam = 45`` GeV, where ``A_FB = 0`` for every G_F
(G_F is not identifiable). ``p`` is a density iff ``|A_FB| ≤ 2``; for the whole prior (G_F ≤ 2)
that needs ``|tanh(10 (2 E_beam − 90)/90)| ≤ 1/2``, i.e. ``E_beam ∈ 45 ± 2.47`` GeV. We use
**E_beam = 43 GeV**: ``A_FB = 2 tanh(−4/9) G_F ≈ −0.8346 G_F``, so ``|A_FB| ≤ 1.67`` on the prior.

One simulation is ONE event: ``simulator(key, θ) -> x: (1,)`` (``x_shape = (1,)``). An observation
is a SET of ``n`` i.i.d. events ``(n, 1)``, combined as ``Σ_i log r̂(x_i|θ)``: sample it with
``sample_posterior(..., iid=True)``. The task's ``observation`` field holds such a set:
:data:`OBSERVATION`, ``(100, 1)``, 100 events simulated at the truth ``G_F = 1`` with
``jax.vmap(simulator)(jax.random.split(PRNGKey(1), 100), [1.0])`` under jax 0.10.2 and stored, so
it does not change with JAX's random-number generator. (So ``task.default_observation`` has shape
``(100, 1)``, not ``x_shape``.)

Simulator: exact inverse-CDF sampling (not the authors' rejection sampling). With
``F(c) = (3/8)[(c+1) + (c³+1)/3 + A (c²−1)/2]``, ``F(c) = u`` is the cubic
``c³ + (3A/2) c² + 3c + (4 − 3A/2 − 8u) = 0``. Its derivative ``3(1 + c² + A c)`` is positive for
every real c when ``|A| < 2``, so it has one real root; with ``c = s − A/2`` it is the depressed
cubic ``s³ + p s + q = 0``, ``p = 3 − 3A²/4 > 0``, ``q = A³/4 − 3A + 4 − 8u``, whose root is
``s = w − p/(3w)``, ``w = −sign(q) ∛(|q|/2 + √(q²/4 + p³/27))`` (Cardano, written without
cancellation). One Newton step on ``F(c) − u`` polishes it to float precision; the result is
clipped to [-1, 1].

Likelihood: exact, :func:`log_likelihood` (``-inf`` for ``|c| > 1``). Reference posterior:
:func:`reference_posterior`, inversion of the posterior CDF on a grid of the prior interval (exact to
grid precision). Outside ``|A_FB| < 2`` (``|G_F| ≳ 2.396``, outside the prior) the model is no
density: the simulator and the log-likelihood return NaN there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.priors import box_uniform
from aalr_jax.tasks._common import check_theta
from aalr_jax.tasks.base import Task

__all__ = ["asymmetry", "cdf", "log_likelihood", "make", "reference_posterior", "simulator"]

BEAM_ENERGY = 43.0
M_Z = 90.0
GF_NOMINAL = 1.0
PRIOR_LOW, PRIOR_HIGH = 0.25, 2.0
TRUE_THETA = np.array([1.0], dtype=np.float32)
NUM_OBSERVED_EVENTS = 100
OBSERVATION = np.array(  # jax.vmap(simulator)(jax.random.split(PRNGKey(1), 100), [1.0]), jax 0.10.2
    [
        0.12923637, -0.51679766, -0.23568569, -0.84151894, 0.045755025, -0.9555673, 0.41088864, 0.3935159,
        0.12574622, -0.13360891, 0.93448365, 0.22492465, 0.79298323, 0.22451636, 0.9370959, -0.20280072,
        -0.77854115, -0.30201152, -0.6480692, 0.48079202, 0.9741572, 0.07247308, -0.51428246, -0.3316984,
        -0.047227234, -0.44592667, -0.6417262, -0.752494, -0.41363636, -0.93680394, -0.13894932, -0.807845,
        -0.49476573, -0.35757157, -0.84557885, -0.789504, -0.0720388, -0.5266279, -0.9135869, 0.70628965,
        -0.77769625, -0.8144271, 0.5368458, -0.34074363, -0.8856424, -0.4808442, -0.7474939, 0.5548615,
        -0.7224305, -0.7690254, -0.97522587, -0.3750262, -0.43036914, -0.52904224, -0.95383877, -0.99174947,
        0.049637362, -0.89102775, -0.93089056, -0.6823341, 0.7118967, -0.65115535, -0.11337218, -0.7864659,
        0.59725547, -0.529781, 0.46820197, -0.7337994, 0.45744362, -0.21694513, -0.88853776, -0.020065002,
        -0.98150796, -0.12720782, -0.8199684, -0.35772756, -0.9347003, -0.7152721, -0.89859885, -0.5457306,
        -0.2674782, 0.8761112, -0.17030367, -0.99980843, -0.6992941, -0.18783733, -0.61788386, 0.7810721,
        -0.22772305, -0.99232644, -0.6106898, -0.3308387, 0.44266102, -0.5666206, 0.50854915, -0.7048629,
        0.85600686, -0.5425911, 0.23237178, -0.25601634,
    ],
    dtype=np.float32,
).reshape(NUM_OBSERVED_EVENTS, 1)  # fmt: skip


def asymmetry(theta: jax.Array) -> jax.Array:
    """``A_FB = 2 tanh(10 (2 E_beam − M_Z)/M_Z) G_F / G_F,nom`` for ``theta: (1,)``; a scalar."""
    return 2.0 * math.tanh(10.0 * (2.0 * BEAM_ENERGY - M_Z) / M_Z) * theta[0] / GF_NOMINAL


def cdf(c: jax.Array, a: jax.Array) -> jax.Array:
    """``F(c) = (3/8)[(c+1) + (c³+1)/3 + A (c²−1)/2]`` for ``c ∈ [-1, 1]`` (broadcasts)."""
    return 0.375 * ((c + 1.0) + (c**3 + 1.0) / 3.0 + 0.5 * a * (c**2 - 1.0))


def _inverse_cdf(u: jax.Array, a: jax.Array) -> jax.Array:
    """The root ``c ∈ [-1, 1]`` of ``F(c) = u`` (see the module docstring)."""
    p = 3.0 - 0.75 * a**2
    q = 0.25 * a**3 - 3.0 * a + 4.0 - 8.0 * u
    w = jnp.where(q >= 0, -1.0, 1.0) * jnp.cbrt(0.5 * jnp.abs(q) + jnp.sqrt(0.25 * q**2 + p**3 / 27.0))
    c = w - p / (3.0 * w) - 0.5 * a
    c = jnp.clip(c, -1.0, 1.0)
    c = c - (cdf(c, a) - u) / (0.375 * (1.0 + c**2 + a * c))  # one Newton step
    return jnp.clip(c, -1.0, 1.0)


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One event ``x = (cos θ,)``, shape ``(1,)``, for ``theta = (G_F,)``, shape ``(1,)``."""
    theta = check_theta(theta, 1, "weinberg", " (G_F)")
    a = asymmetry(theta)
    u = jax.random.uniform(rng_key)
    c = _inverse_cdf(u, a)
    return jnp.where(jnp.abs(a) < 2.0, c, jnp.nan)[None]


def log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Exact ``log p(x|G_F)`` for ``theta: (1,)`` and one event ``x: (1,)``; a scalar.

    ``x: (n, 1)`` also works and gives the i.i.d. sum ``Σ_i log p(x_i|G_F)``. ``-inf`` for an event
    with ``|cos θ| > 1``; NaN where ``|A_FB| ≥ 2`` (no density).
    """
    theta = check_theta(theta, 1, "weinberg", " (G_F)")
    c = jnp.asarray(x, jnp.float32)[..., 0]
    a = asymmetry(theta)
    inside = jnp.abs(c) <= 1.0
    c = jnp.where(inside, c, 0.0)
    ll = jnp.log(0.375 * (1.0 + c**2 + a * c))
    ll = jnp.where(inside, ll, -jnp.inf)
    return jnp.where(jnp.abs(a) < 2.0, jnp.sum(ll), jnp.nan)


def reference_posterior(
    rng_key: jax.Array, x_obs: jax.Array, num_samples: int, num_grid: int = 20_001
) -> jax.Array:
    """Posterior samples ``(num_samples, 1)`` of G_F given a set of events ``x_obs: (n, 1)``.

    The log-posterior (uniform prior) is evaluated at the midpoints of ``num_grid − 1`` equal cells
    of ``[0.25, 2]``; a cell is drawn with probability ∝ its midpoint density (inverting the
    cumulative sum) and a point uniformly inside it (a piecewise-constant density: exact up to the cell width 1.75/(num_grid − 1)).
    One event ``(1,)`` counts as a set of one. jit-able with ``num_samples`` and ``num_grid`` static.
    """
    x = jnp.asarray(x_obs, jnp.float32).reshape(-1, 1)
    edges = jnp.linspace(PRIOR_LOW, PRIOR_HIGH, num_grid)
    mids = 0.5 * (edges[1:] + edges[:-1])
    logp = jax.vmap(lambda g: log_likelihood(g[None], x))(mids)
    cdf = jnp.cumsum(jnp.exp(logp - jnp.max(logp)))
    key_cell, key_u = jax.random.split(rng_key)
    cell = jnp.searchsorted(cdf, jax.random.uniform(key_cell, (num_samples,)) * cdf[-1], side="right")
    cell = jnp.minimum(cell, num_grid - 2)
    u = jax.random.uniform(key_u, (num_samples,))
    return (edges[cell] + u * (edges[cell + 1] - edges[cell]))[:, None]


def make() -> Task:
    """The Weinberg task at E_beam = 43 GeV; ``observation``: a stored set of 100 events, (100, 1)."""
    return Task(
        name="weinberg",
        prior=box_uniform(PRIOR_LOW, PRIOR_HIGH),
        simulator=simulator,
        x_shape=(1,),
        parameter_labels=("G_F",),
        true_theta=TRUE_THETA,
        observation_seed=1,
        observation=OBSERVATION,
        log_likelihood=log_likelihood,
        reference_posterior=reference_posterior,
        iid=True,
        description=(
            "Weinberg (Hermans et al. 2020): forward-backward asymmetry of e+e- -> mu+mu-; "
            "p(cos θ|G_F) ∝ 1 + cos²θ + A_FB cos θ, A_FB = 2 tanh(10(2E_beam - 90)/90) G_F, "
            "E_beam = 43 GeV, G_F ~ U(0.25, 2), truth 1. One simulation = one event, x_shape (1,); "
            "the default observation is a SET of 100 i.i.d. events, shape (100, 1): sample with "
            "iid=True. Exact inverse-CDF simulator, exact likelihood, grid reference posterior."
        ),
    )
