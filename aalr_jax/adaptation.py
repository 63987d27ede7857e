r"""Warm-up: each chain adapts its own step size and metric in Stan's windows.

Warm-up never uses one covariance of all chains' positions: chains of a multimodal posterior sit
in different modes, and a covariance spanning two modes wrecks every chain's acceptance. Per chain,
over ``num_warmup`` steps of the sampler's kernel:

* a step size ``ε`` by dual averaging (Hoffman & Gelman 2014) towards the sampler's
  ``target_acceptance``, restarted at each window's end from the current ``ε``; the final ``ε`` is
  the averaged iterate;
* a metric ``Σ`` (``(d, d)`` dense or ``(d,)`` diagonal) from Welford estimates of the chain's own
  positions in Stan's doubling windows (:func:`warmup_schedule`), regularised as
  ``n/(n+5) Σ̂ + 10⁻³·5/(n+5) I``. For RWMH (``sampler.pools_metric``) each window estimate is first
  shrunk halfway to the average of the chains' finite estimates, ``Σ̂_c ← ½ Σ̂_c + ½ mean_c' Σ̂_c'``
  (:data:`RWMH_METRIC_POOLING`): a random walk's window holds few effective draws, so single-chain
  estimates are noisy, while the average of within-chain covariances never includes the spread
  between modes. The average runs over the vmap axis :data:`CHAIN_AXIS`, so
  :func:`window_adaptation` must be vmapped with ``axis_name=CHAIN_AXIS``.

After warm-up the step size and metric are frozen, so the kept draws are an exact MCMC. The
pooling weight was chosen on exact likelihoods, see benchmarks/README.md, "Choosing the sampler".
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import welford_algorithm
from blackjax.adaptation.step_size import dual_averaging_adaptation

__all__ = ["AdaptedChain", "CHAIN_AXIS", "RWMH_METRIC_POOLING", "warmup_schedule", "window_adaptation"]

CHAIN_AXIS = "chains"  # vmap axis name of the chains of one observation
RWMH_METRIC_POOLING = 0.5  # weight of the chains' average window covariance in each RWMH chain's metric
RECENT_SPACING = 5  # steps between the late warm-up positions a chain records


class AdaptedChain(NamedTuple):
    """One chain after warm-up.

    Attributes:
        state: the sampler's state at the last warm-up step.
        step_size: ``()`` frozen step size.
        metric: the sampler's prepared metric (RWMH: Cholesky factor ``(d, d)`` or ``(d,)``).
        recent: ``(R, d)`` positions at every 5th of the last warm-up steps, the last one first
            (the initial position fills in where the warm-up is shorter); ``R = 0`` unless asked.
    """

    state: object
    step_size: jax.Array
    metric: jax.Array
    recent: jax.Array


def warmup_schedule(num_warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Stan's windows: ``(slow, window_end)`` boolean arrays of length ``num_warmup``.

    A fast start (75 steps), doubling slow windows from 25 steps where the metric is estimated
    (``window_end`` marks their last step), and a fast end (50 steps); scaled to 15 % / 75 % / 10 %
    when ``num_warmup < 150``. Under 20 steps only the step size adapts.
    """
    slow = np.zeros(num_warmup, bool)
    end = np.zeros(num_warmup, bool)
    if num_warmup < 20:
        return slow, end
    first, last, window = 75, 50, 25
    if first + last + window > num_warmup:
        first, last = int(0.15 * num_warmup), int(0.1 * num_warmup)
        window = num_warmup - first - last
    start, stop = first, num_warmup - last
    while start < stop:
        size = window if start + 3 * window <= stop else stop - start
        slow[start : start + size] = True
        end[start + size - 1] = True
        start += size
        window *= 2
    return slow, end


def _recent_slots(num_warmup: int, num_recent: int) -> np.ndarray:
    """``(num_warmup,)``: the row of ``recent`` that each warm-up step writes, or -1."""
    slot = np.full(num_warmup, -1)
    for j in range(min(num_recent, -(-num_warmup // RECENT_SPACING))):
        slot[num_warmup - 1 - RECENT_SPACING * j] = j
    return slot


def _pooled(cov: jax.Array) -> jax.Array:
    """``cov`` shrunk towards the average of the chains' finite estimates (under the chain vmap)."""
    ok = jnp.all(jnp.isfinite(cov))
    total = jax.lax.psum(jnp.where(ok, cov, 0.0), CHAIN_AXIS)
    average = total / jnp.maximum(jax.lax.psum(ok.astype(cov.dtype), CHAIN_AXIS), 1.0)
    return (1.0 - RWMH_METRIC_POOLING) * cov + RWMH_METRIC_POOLING * average


def window_adaptation(rng_key, logdensity_fn: Callable, position: jax.Array, sampler, num_warmup: int,
                      num_recent: int = 0) -> AdaptedChain:
    """Adapt one chain from ``position: (d,)`` (vmap it with ``axis_name=CHAIN_AXIS``).

    Args:
        rng_key: PRNG key of this chain.
        logdensity_fn: ``(d,) -> ()`` unnormalised log-density in unconstrained space.
        position: ``(d,)`` initial position.
        sampler: a resolved sampler value (:mod:`aalr_jax.samplers`).
        num_warmup: adaptation steps (static).
        num_recent: late positions to record in :attr:`AdaptedChain.recent` (static).
    """
    dim = position.shape[-1]
    kernel = sampler.build_kernel()
    da_init, da_update, _ = dual_averaging_adaptation(sampler.target_acceptance)
    wf_init, wf_update, wf_final = welford_algorithm(not sampler.dense_metric)
    eye = jnp.eye(dim) if sampler.dense_metric else jnp.ones(dim)
    step0 = sampler.initial_step_size(dim)

    def close_window(args):
        wf, da, metric = args
        cov, n, _ = wf_final(wf)
        if sampler.pools_metric:
            cov = _pooled(cov)
        new_metric = (n / (n + 5.0)) * cov + 1e-3 * (5.0 / (n + 5.0)) * eye
        return wf_init(dim), da_init(jnp.exp(da.log_step_size)), sampler.prepare(new_metric)

    def warm(carry, inputs):
        state, da, wf, step_size, metric, recent = carry
        key, is_slow, is_end, at = inputs
        state, info = kernel(key, state, logdensity_fn, step_size, metric)
        if num_recent:
            recent = jnp.where(at >= 0, recent.at[at].set(state.position), recent)
        da = da_update(da, jnp.nan_to_num(info.acceptance_rate))
        wf = jax.lax.cond(is_slow, lambda w: wf_update(w, state.position), lambda w: w, wf)
        wf, da, metric = jax.lax.cond(is_end, close_window, lambda a: a, (wf, da, metric))
        return (state, da, wf, jnp.exp(da.log_step_size), metric, recent), None

    state = sampler.init(position, logdensity_fn)
    recent = jnp.broadcast_to(position, (num_recent, dim))
    carry = (state, da_init(step0), wf_init(dim), jnp.asarray(step0, jnp.float32), sampler.prepare(eye), recent)
    if not num_warmup:
        return AdaptedChain(state, carry[3], carry[4], recent)
    slow, window_end = warmup_schedule(num_warmup)
    inputs = (jax.random.split(rng_key, num_warmup), jnp.asarray(slow), jnp.asarray(window_end),
              jnp.asarray(_recent_slots(num_warmup, num_recent)))
    (state, da, _, _, metric, recent), _ = jax.lax.scan(warm, carry, inputs)
    return AdaptedChain(state, jnp.exp(da.log_step_size_avg), metric, recent)
