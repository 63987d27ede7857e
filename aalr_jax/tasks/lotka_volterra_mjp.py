r"""Lotka–Volterra as a Markov jump process (Papamakarios et al. 2019, SNL; one of the problems of
Hermans et al. 2020).

Model. Predators X and prey Y start at ``(X, Y) = (50, 100)`` and change by four reactions with
rates ``θ = (θ_1, .., θ_4) > 0``:

=============================  ==================  ===========
reaction                       propensity          effect
=============================  ==================  ===========
a predator is born             ``θ_1 X Y``         X ← X + 1
a predator dies                ``θ_2 X``           X ← X − 1
a prey is born                 ``θ_3 Y``           Y ← Y + 1
a prey is eaten                ``θ_4 X Y``         Y ← Y − 1
=============================  ==================  ===========

simulated exactly with Gillespie's algorithm (waiting time ``Exp(Σ propensities)``, reaction drawn
∝ its propensity) for 30 time units. The path is recorded at ``t_k = 0.2 k``, ``k = 0..150``
(151 points per species), as the right-continuous state ``(X(t_k), Y(t_k))`` (all events at times
``≤ t_k`` applied). (The SNL code records, at each ``t_k``, the state just after the first event
past ``t_k``, one event late; we record the state of the process.)

Summaries, ``x: (9,)``, exactly as the SNL code (``simulators/lotka_volterra.py``, ``Stats``), with
``N = 151``, ``m = mean``, ``v = Σ (·−m)²/(N−1)`` and the standardised series ``X̃ = (X − m_X)/√v_X``:

.. math::  x = \bigl(m_X,\ m_Y,\ \log(v_X + 1),\ \log(v_Y + 1),\
           ρ_X(1),\ ρ_X(2),\ ρ_Y(1),\ ρ_Y(2),\ ρ_{XY}\bigr),
           \quad ρ_X(\ell) = \frac{1}{N-1}\sum_{k=0}^{N-1-\ell} X̃_k X̃_{k+\ell},
           \quad ρ_{XY} = \frac{1}{N-1}\sum_k X̃_k Ỹ_k

(autocorrelations at lags 0.2 and 0.4 time units, normalised by the series' own variance, and
the lag-0 cross-correlation). Some descriptions of the task speak of the log mean and
log variance; SNL's code takes the means as they are and ``log(variance + 1)`` (finite for a
constant series), and we follow the code. No whitening (SNL whitens with pilot-run statistics;
our estimators standardise their inputs).

Parameter. The task parameter is ``log θ`` (natural log), with the SNL prior
``log θ ~ U(−5, 2)^4``; the truth is ``log θ* = log(0.01, 0.5, 1, 0.01)``.

Event budget and invalid runs (jit/vmap-able: one ``lax.while_loop`` of at most
``MAX_EVENTS + 151`` iterations, each either one event or one recording). Like SNL, a run is
aborted when more than ``MAX_EVENTS = 10,000`` events (counting the one that first crosses t = 30)
would be needed; an aborted run returns NaN for all 9 summaries, and
``simulate(..., on_invalid="drop")`` discards it. This restricts the effective prior exactly as in
SNL. It is common (≈ 13 % of prior draws, ≈ 0.5 % of runs at θ*): whenever the predators die
out while prey remain, the prey grow exponentially and the budget is exceeded. Once both species
are extinct (``X = Y = 0``, the only state with total propensity 0: the prey died first, then the
predators) the state is absorbing and is recorded until t = 30 (a valid run). A constant series (possible only without any event, which the prior makes
vanishingly unlikely) has no correlations (0/0): all 9 summaries are NaN too. Non-finite
``theta`` gives NaN; ``theta`` of a shape other than ``(4,)`` raises ``ValueError``.

The likelihood is intractable (``log_likelihood = reference_posterior = None``).

Speed. The simulator updates the summaries on the fly (Welford-type running moments, see
:func:`_record_moments`) rather than storing the path: under ``vmap`` every iteration of a
``while_loop`` re-selects the whole carry, so a (151, 2) path in the carry doubles the cost.
:func:`simulate_path` runs the same loop on the same random stream and returns the path;
``summaries(path)`` (two-pass) equals ``simulator`` to float32 rounding (checked in the tests).

Time is accumulated in float32 (rounding ≤ 2e-6 per event at t ≤ 30, negligible against
waiting times of order 1e-3 and more).

Default observation: ``simulator(PRNGKey(1), log θ*)`` under jax 0.10.2, stored as
:data:`OBSERVATION` (not SNL's observed data). In this run
the prey die out between t = 16 and 18 and the predators follow; at θ* about 45 % of runs lose
the prey before t = 30.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.priors import box_uniform
from aalr_jax.tasks._common import check_theta
from aalr_jax.tasks.base import Task

__all__ = ["MAX_EVENTS", "make", "simulate_path", "simulator", "summaries"]

INITIAL_STATE = (50.0, 100.0)
DT = 0.2
NUM_RECORDS = 151  # t = 0, 0.2, ..., 30
T_END = DT * (NUM_RECORDS - 1)
MAX_EVENTS = 10_000
LOG_PRIOR_LOW, LOG_PRIOR_HIGH = -5.0, 2.0
TRUE_THETA = np.log(np.array([0.01, 0.5, 1.0, 0.01])).astype(np.float32)  # the task parameter: log θ*
OBSERVATION = np.array(  # simulator(PRNGKey(1), TRUE_THETA), jax 0.10.2
    [82.32454, 34.357613, 9.441438, 8.582914, 0.9780205, 0.9233441, 0.9642511, 0.8789052, 0.08630261],
    dtype=np.float32,
)
_TIMES = np.arange(NUM_RECORDS, dtype=np.float32) * np.float32(DT)  # (151,)
# reaction k changes (X, Y) by _CHANGE[k]
_CHANGE = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=np.float32)


def _run(rng_key, log_theta, record, acc, max_events):
    """Gillespie loop; ``record(acc, k, state)`` is called for grid point ``k = 0..150`` in order.

    Each ``lax.while_loop`` iteration either records the next grid point, if its time comes before
    the pending event, or applies the pending event and draws the next one: event ``n = 1, 2, ..``
    uses ``u = uniform(fold_in(rng_key, n − 1), (2,))``, waiting time ``−log(1 − u_0)/Σ prop`` and
    reaction ``min{k : u_1 Σ prop < Σ_{j≤k} prop_j}``. Returns ``(acc, valid)``; ``valid`` is False
    when the event crossing t = 30 would be event number ``max_events + 1`` or later (as in SNL,
    reaching the absorbing state, ``Σ prop = 0``, is no event).
    """
    rates = jnp.exp(check_theta(log_theta, 4, "lotka_volterra_mjp", " (log rates)"))
    change, times = jnp.asarray(_CHANGE), jnp.asarray(_TIMES)

    def propensities(state):
        xy = state[0] * state[1]
        return rates * jnp.stack([xy, state[0], state[1], xy])

    def draw(n, t, state):  # (time of the next event, its reaction uniform); inf if absorbing
        u = jax.random.uniform(jax.random.fold_in(rng_key, n), (2,))
        total = jnp.sum(propensities(state))
        alive = total > 0
        return jnp.where(alive, t - jnp.log1p(-u[0]) / jnp.where(alive, total, 1.0), jnp.inf), u[1]

    def cond(carry):
        _, _, _, k, n, _ = carry
        return (k < NUM_RECORDS) & (n <= max_events)

    def body(carry):
        state, t_next, u_react, k, n, acc = carry
        is_record = times[jnp.minimum(k, NUM_RECORDS - 1)] < t_next
        acc_recorded = record(acc, k, state)
        prop = propensities(state)
        reaction = jnp.sum(u_react * jnp.sum(prop) >= jnp.cumsum(prop))
        reaction = jnp.minimum(reaction, 3 - jnp.argmax(prop[::-1] > 0))  # never one of propensity 0
        moved = state + change[reaction]
        t_new, u_new = draw(n, t_next, moved)
        pick = lambda a, b: jax.tree.map(lambda p, q: jnp.where(is_record, p, q), a, b)
        return (pick(state, moved), pick(t_next, t_new), pick(u_react, u_new),
                jnp.where(is_record, k + 1, k), jnp.where(is_record, n, n + jnp.isfinite(t_new)), pick(acc_recorded, acc))  # fmt: skip

    state = jnp.asarray(INITIAL_STATE, jnp.float32)
    t_next, u_react = draw(0, jnp.float32(0.0), state)
    init = (state, t_next, u_react, jnp.int32(0), jnp.int32(1), acc)
    _, _, _, k, n, acc = jax.lax.while_loop(cond, body, init)
    return acc, (k == NUM_RECORDS) & (n <= max_events) & jnp.all(jnp.isfinite(log_theta))


def simulate_path(rng_key: jax.Array, log_theta: jax.Array, max_events: int = MAX_EVENTS):
    """The recorded path ``(151, 2)`` of ``(X, Y)`` at ``t = 0, 0.2, .., 30`` and ``valid: ()``.

    Same random stream as :func:`simulator` (``summaries(path)`` equals the simulator's output up
    to float32 rounding); rows not reached are 0 when ``valid`` is False. ``max_events`` is static.
    """
    record = lambda path, k, state: path.at[k].set(state, mode="drop")
    return _run(rng_key, log_theta, record, jnp.zeros((NUM_RECORDS, 2)), max_events)


def summaries(path: jax.Array) -> jax.Array:
    """The 9 SNL summaries ``(9,)`` of a recorded path ``(N, 2)`` (two-pass; see the module docstring)."""
    n = path.shape[0]
    mean = path.mean(0)
    centred = path - mean
    var = jnp.sum(centred**2, 0) / (n - 1)
    z = centred / jnp.sqrt(var)
    auto = [jnp.sum(z[:-lag] * z[lag:], 0) / (n - 1) for lag in (1, 2)]  # each (2,) = (X, Y)
    cross = jnp.sum(z[:, 0] * z[:, 1]) / (n - 1)
    return jnp.stack([mean[0], mean[1], jnp.log1p(var[0]), jnp.log1p(var[1]),
                      auto[0][0], auto[1][0], auto[0][1], auto[1][1], cross])  # fmt: skip


def _record_moments(acc, k, v):
    """Welford update of the running moments with the value ``v = (X_k, Y_k)`` of grid point ``k``.

    ``acc = (m, M, C, prev, a, b, Q)``: mean ``m (2,)``, ``M = Σ (v − m)² (2,)``, cross co-moment
    ``C = Σ (X − m_X)(Y − m_Y)``, the last two values ``prev (2, 2)``, and for lags ℓ = 1, 2 (rows)
    the means ``a, b (2, 2)`` of the pairs ``(v_{j}, v_{j+ℓ})`` and their co-moment
    ``Q = Σ (v_j − a)(v_{j+ℓ} − b)`` (bivariate Welford). Carrying these instead of the path keeps
    the loop carry small, which halves the cost of the vmapped loop.
    """
    m, M, C, prev, a, b, Q = acc
    count = (k + 1).astype(jnp.float32)
    d = v - m
    m = m + d / count
    M = M + d * (v - m)
    C = C + d[0] * (v[1] - m[1])
    pairs = (k - jnp.arange(1, 3) + 1).astype(jnp.float32)[:, None]  # (2, 1): pairs so far, per lag
    has_pair = pairs > 0
    da = prev - a
    a_new = a + da / jnp.maximum(pairs, 1.0)
    b_new = b + (v - b) / jnp.maximum(pairs, 1.0)
    Q_new = Q + da * (v - b_new)
    a, b, Q = (jnp.where(has_pair, new, old) for new, old in ((a_new, a), (b_new, b), (Q_new, Q)))
    return m, M, C, jnp.stack([v, prev[0]]), a, b, Q


def _finish_moments(acc) -> jax.Array:
    """The 9 summaries from the running moments: ``Σ_j (v_j − m)(v_{j+ℓ} − m) = Q + (N−ℓ)(a − m)(b − m)``."""
    m, M, C, _, a, b, Q = acc
    n = NUM_RECORDS
    lagged = Q + jnp.array([[n - 1.0], [n - 2.0]]) * (a - m) * (b - m)  # (lag, species)
    rho = lagged / M
    cross = C / jnp.sqrt(M[0] * M[1])
    return jnp.stack([m[0], m[1], jnp.log1p(M[0] / (n - 1)), jnp.log1p(M[1] / (n - 1)),
                      rho[0, 0], rho[1, 0], rho[0, 1], rho[1, 1], cross])  # fmt: skip


def simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    """One draw ``x: (9,)`` for ``theta = log θ: (4,)``; all NaN when the event budget is exceeded.

    Computes the summaries on the fly (:func:`_record_moments`) instead of storing the path.
    """
    z2, z22 = jnp.zeros(2), jnp.zeros((2, 2))
    acc, valid = _run(rng_key, theta, _record_moments, (z2, z2, jnp.float32(0.0), z22, z22, z22, z22), MAX_EVENTS)
    valid = valid & jnp.all(acc[1] > 0)  # a constant series has no correlations
    return jnp.where(valid, _finish_moments(acc), jnp.nan)


def make() -> Task:
    """The Lotka–Volterra MJP task on ``log θ``; default observation stored (seed 1 at log θ*)."""
    return Task(
        name="lotka_volterra_mjp",
        prior=box_uniform(LOG_PRIOR_LOW, np.full(4, LOG_PRIOR_HIGH)),
        simulator=simulator,
        x_shape=(9,),
        parameter_labels=("log_theta_1", "log_theta_2", "log_theta_3", "log_theta_4"),
        true_theta=TRUE_THETA,
        observation_seed=1,
        observation=OBSERVATION,
        log_likelihood=None,
        reference_posterior=None,
        description=(
            "Lotka-Volterra Markov jump process (Papamakarios et al. 2019, SNL): (X, Y) from "
            "(50, 100), propensities θ1XY, θ2X, θ3Y, θ4XY, Gillespie over 30 time units recorded "
            "every 0.2; x = means, log(var+1), lag-1/2 autocorrelations and cross-correlation "
            "(SNL code). Parameter log θ ~ U(-5, 2)^4, truth log(0.01, 0.5, 1, 0.01). Runs past "
            "10,000 events return NaN (use simulate(..., on_invalid='drop'))."
        ),
    )
