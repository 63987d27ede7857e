r"""MCMC over the AALR posterior with BlackJAX: many chains, many observations, one compiled program.

Every chain runs in unconstrained space ``u`` (see :mod:`aalr_jax.posterior`) with BlackJAX kernels:
random-walk Metropolis–Hastings (``"rwmh"``), HMC (``"hmc"``) or NUTS (``"nuts"``). The default
``"auto"`` is RWMH up to :data:`AUTO_RWMH_MAX_DIM` parameters and HMC beyond: on exact likelihoods
and fresh observations (``benchmarks/choose_sampler.py``) the two matched on 2-D posteriors, while
from 5-D on RWMH's per-chain metric, estimated from a handful of effective warm-up draws, left
C2ST at 0.62–0.64 where HMC reached 0.535 at thin 1 and 0.50–0.52 at its default thin 3.

Warm-up adapts each chain, never with one covariance of all chains' positions: chains of a
multimodal posterior sit in different modes, and a covariance spanning two modes wrecks every
chain's acceptance (seen on two_moons: a pooled RWMH proposal accepted 4 % of moves). Per chain:

* a step size ``ε`` by dual averaging (Hoffman & Gelman 2014) towards a target acceptance rate
  (RWMH: 0.44 in 1-D down to 0.234 from 5-D on, Roberts & Rosenthal 2001; HMC and NUTS: 0.8);
* a metric ``Σ`` (dense by default) from Welford estimates of the chain's own positions in
  Stan-style doubling windows, regularised as ``n/(n+5) Σ̂ + 10⁻³·5/(n+5) I``. For RWMH the
  window estimate is first shrunk halfway to the average of all chains' window estimates (of one
  observation), ``Σ̂_c ← ½ Σ̂_c + ½ mean_c' Σ̂_c'`` (:data:`RWMH_METRIC_POOLING`): a random walk's
  window holds few effective draws, so single-chain estimates are noisy and a chain with a poor
  one barely moves; the average of within-chain covariances never includes the spread between
  modes, and each chain keeps half of its own shape (:data:`RWMH_METRIC_POOLING` has the numbers).

RWMH proposes ``u' = u + ε L z`` with ``L Lᵀ = Σ``, ``z ~ N(0, I)``. After warm-up, RWMH on up to
4 parameters also makes independence moves (probability 0.9 per step, :mod:`aalr_jax.independence`):
jumps drawn from a kernel density of all chains' late warm-up positions, with the Metropolis–Hastings
correction: the chains share a proposal built from all of them, and a jump can land in any mode, so
chains move between modes. On exact 2-D and 4-D posteriors
(100 chains, thin 5 against the plain walk's 10) it gave 2.5-6× the effective samples per step
(two_moons 0.026 → 0.147, gaussian_mixture 0.045 → 0.176, sir 0.075 → 0.187, lotka_volterra
0.024 → 0.128) at no loss in C2ST (numbers at :data:`THIN_WITH_INDEPENDENCE`). HMC and NUTS use ``Σ`` as the
inverse mass matrix; the HMC trajectory has a random number of leapfrog steps, uniform on
``{1, ..., 2L - 1}``, because a fixed length can resonate with the target's scale (a Gaussian's
half-period) and freeze the chains. After warm-up the parameters are frozen, so the draws are an exact MCMC.

Initial positions (``init="sir"``) are drawn without replacement (Gumbel top-k) from
``num_init_candidates`` prior draws weighted by the estimated ratio ``exp Σ_i f(θ, x_i)``: the
sampling-importance-resampling start of sbi, which puts chains into every mode they should visit.
The default is ``max(10⁴, 10·C)`` candidates for C chains: with as many candidates as chains every
candidate is taken and the start is the prior. On two_moons (10⁴ simulations, one network) with
10⁴ chains, 10⁴ candidates left the worst chain accepting 3 % of its steps after warm-up, 10⁵
candidates 40 % (mean 0.39 → 0.48), with 14 % more effective samples.

``sample_posterior`` vmaps chains inside a ``lax.scan`` and vmaps observations around that, all
under one ``jax.jit`` keyed on the static configuration, so a new batch of observations of the same
shape, or a new estimator of the same architecture, reuses the compiled program. Observation ``i``
of a batch uses the key ``fold_in(rng_key, i)``; one unbatched observation uses ``fold_in(rng_key, 0)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import welford_algorithm
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.mcmc import random_walk

from aalr_jax import independence, priors
from aalr_jax.types import ExactLikelihood
from aalr_jax.posterior import embed_observations, log_posterior, observation_batch_shape, unconstrained_log_posterior

__all__ = [
    "ChainResult",
    "PosteriorSamples",
    "SamplerConfig",
    "ExactLikelihood",
    "default_thin",
    "resolve_independence",
    "resolve_method",
    "run_chains",
    "sample_posterior",
    "warmup_schedule",
]

METHODS = ("auto", "rwmh", "hmc", "nuts")
# Kept draws must be nearly independent, or a C2ST classifier learns the clumps: on an exact 10-D
# gaussian_linear posterior HMC scored C2ST 0.529 at thin 1, 0.507 at 2, 0.497 at 3 and 0.499 at 5,
# against 0.501 for two sets of exact draws (benchmarks/choose_sampler.py --samplers hmc:1,hmc:3).
DEFAULT_THIN = {"rwmh": 10, "hmc": 3, "nuts": 1}
# With independence moves an accepted step can land anywhere in the posterior, but a rejected one
# repeats the draw, and repeats are clumps a C2ST classifier learns. Exact likelihoods, 100 chains,
# C2ST against reference draws: two_moons 0.512 at thin 1, 0.497 at 3; lotka_volterra (4-D,
# acceptance 0.28) 0.530 at thin 3, 0.520 at 5 (plain RWMH at thin 10: 0.526); thin 5 gave
# 0.489-0.506 on two_moons, gaussian_mixture and sir with 10 and 100 chains.
THIN_WITH_INDEPENDENCE = 5
DEFAULT_INDEPENDENCE_PROB = 0.9
MAX_RECENT = 10  # late warm-up positions kept per chain for the independence proposal
INDEPENDENCE_INFLATION = 2.0
# Weight of the chains' average window covariance in each RWMH chain's metric (0: each chain alone).
# Exact likelihoods, 100 chains, sbibm observation 1, min bulk ESS of 10,000 draws, 0 -> 0.5:
# lotka_volterra (4-D) 5,231 -> 9,147 with independence moves, 248 -> 3,740 (R-hat 1.21 -> 1.02)
# for the plain walk; two_moons 7,557 -> 7,630; gaussian_mixture 9,587 -> 8,841 (seed 1: 9,478 ->
# 8,835). Weight 1 (the plain average) gave lotka_volterra 9,273 but gaussian_mixture 8,354; HMC
# gained nothing from it (gaussian_linear 9,448 -> 9,679, slcp unchanged), so it adapts alone.
RWMH_METRIC_POOLING = 0.5
CHAIN_AXIS = "chains"  # vmap axis name of the chains of one observation
AUTO_RWMH_MAX_DIM = 4  # measured: RWMH ≈ HMC at 2-D, RWMH far worse at 5-D and 10-D; at 4-D RWMH
# reached C2ST 0.501 on lotka_volterra (HMC not run there: gradients through its ODE solver); 3-D untested


def resolve_independence(method: str, dim: int, prob: float | None) -> float:
    """The independence-move probability for the resolved ``method`` (see :mod:`aalr_jax.independence`).

    ``None``: :data:`DEFAULT_INDEPENDENCE_PROB` for RWMH on up to :data:`AUTO_RWMH_MAX_DIM`
    parameters, else 0 (in 5-D a kernel density of the warm-up positions is too poor a proposal:
    slcp's exact posterior, 100 chains, accepted 5 % of the jumps).
    """
    if prob is None:
        return DEFAULT_INDEPENDENCE_PROB if method == "rwmh" and dim <= AUTO_RWMH_MAX_DIM else 0.0
    if isinstance(prob, bool) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"independence_prob must lie in [0, 1], got {prob!r}")
    if prob > 0.0 and method != "rwmh":
        raise ValueError(f"independence_prob > 0 needs method='rwmh' (the independence move is an RWMH step), got method={method!r}")
    return float(prob)


def default_thin(method: str, independence_prob: float = 0.0) -> int:
    """Thinning when ``thin`` is not given: :data:`DEFAULT_THIN`, or :data:`THIN_WITH_INDEPENDENCE`."""
    return THIN_WITH_INDEPENDENCE if independence_prob > 0.0 else DEFAULT_THIN[method]


def resolve_method(method: str, dim: int) -> str:
    """The kernel that ``method`` names for ``dim`` parameters (``"auto"``: RWMH up to 4-D, else HMC)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    return "rwmh" if dim <= AUTO_RWMH_MAX_DIM else "hmc"


class SamplerConfig(NamedTuple):
    """Static sampler settings (hashable: part of the compilation key)."""

    method: str = "rwmh"
    num_chains: int = 100
    num_warmup: int = 500
    num_draws: int = 100
    thin: int = 1
    num_integration_steps: int = 10
    max_num_doublings: int = 10
    dense_metric: bool = True
    target_acceptance: float | None = None
    init: str = "sir"
    num_init_candidates: int = 10_000  # resolved by sample_posterior: at least num_chains
    independence_prob: float = 0.0
    independence_components: int = 128
    independence_bandwidth: float | None = None
    independence_defensive: float = 0.2


class ChainResult(NamedTuple):
    """Output of :func:`run_chains` for C chains of S kept draws in R^d (unconstrained space).

    Attributes:
        positions: ``(C, S, d)``.
        acceptance_rate: ``(C,)`` mean Metropolis acceptance probability of the kept steps.
        num_divergent: ``(C,)`` divergent transitions after warm-up (always 0 for RWMH).
        step_size: ``(C,)`` adapted step size.
    """

    positions: jax.Array
    acceptance_rate: jax.Array
    num_divergent: jax.Array
    step_size: jax.Array


class PosteriorSamples(NamedTuple):
    """Posterior samples with per-chain health; a leading ``(k,)`` axis when x_obs was batched.

    Attributes:
        samples: ``([k,] num_samples, d)`` draws of θ, interleaved across chains.
        chains: ``([k,] C, S, d)`` the same draws by chain (S = ceil(num_samples / C)).
        acceptance_rate: ``([k,] C)``.
        num_divergent: ``([k,] C)``.
        step_size: ``([k,] C)``.
        rhat: ``([k,] d)`` split R-hat over all chains (NaN with fewer than 4 draws per chain).
        ess: ``([k,] d)`` bulk effective sample size over all chains (NaN with one draw per chain).
    """

    samples: jax.Array
    chains: jax.Array
    acceptance_rate: jax.Array
    num_divergent: jax.Array
    step_size: jax.Array
    rhat: jax.Array
    ess: jax.Array


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


def _target_acceptance(config: SamplerConfig, dim: int) -> float:
    if config.target_acceptance is not None:
        return config.target_acceptance
    if config.method == "rwmh":
        return {1: 0.44, 2: 0.35, 3: 0.31, 4: 0.27}.get(dim, 0.234)
    return 0.8


def _build_step(logdensity_fn: Callable, config: SamplerConfig):
    """``(init, step, prepare)``: ``step(key, state, step_size, prepare(metric)) -> (state, (acceptance, divergent))``.

    ``prepare`` runs once per adaptation window, not per step (RWMH: the Cholesky factor of Σ).
    """
    if config.method == "rwmh":
        kernel = random_walk.build_additive_step()

        def prepare(metric):
            return jnp.linalg.cholesky(metric) if metric.ndim == 2 else jnp.sqrt(metric)

        def step(key, state, step_size, chol):
            def move(k, position):
                z = jax.random.normal(k, position.shape, position.dtype)
                return step_size * (chol @ z if chol.ndim == 2 else chol * z)

            state, info = kernel(key, state, logdensity_fn, move)
            return state, (info.acceptance_rate, jnp.zeros((), bool))

        return functools.partial(random_walk.init, logdensity_fn=logdensity_fn), step, prepare

    if config.method == "hmc":
        kernel = blackjax.hmc.build_kernel()

        def step(key, state, step_size, metric):
            key_length, key_move = jax.random.split(key)
            # jittered length: uniform on {1, ..., 2L - 1} (mean L) breaks the periodic orbits of
            # a fixed trajectory length, which otherwise leave chains nearly frozen
            length = jax.random.randint(key_length, (), 1, 2 * config.num_integration_steps)
            state, info = kernel(key_move, state, logdensity_fn, step_size, metric, length)
            return state, (info.acceptance_rate, info.is_divergent)

        return functools.partial(blackjax.hmc.init, logdensity_fn=logdensity_fn), step, lambda m: m

    kernel = blackjax.nuts.build_kernel()

    def step(key, state, step_size, metric):
        state, info = kernel(key, state, logdensity_fn, step_size, metric, config.max_num_doublings)
        return state, (info.acceptance_rate, info.is_divergent)

    return functools.partial(blackjax.nuts.init, logdensity_fn=logdensity_fn), step, lambda m: m


class _Adapted(NamedTuple):
    """One chain after warm-up: its state, frozen step size and prepared metric."""

    state: object
    step_size: jax.Array
    metric: jax.Array
    recent: jax.Array


def _warmup_one_chain(rng_key, logdensity_fn, position, config: SamplerConfig, num_recent: int = 0) -> _Adapted:
    """Adapt one chain from ``position: (d,)``: step size by dual averaging, metric in Stan's windows.

    Runs under ``vmap(axis_name=CHAIN_AXIS)``: RWMH shrinks each window's covariance towards the
    average of the chains' finite ones (:data:`RWMH_METRIC_POOLING`), so a broken chain (a
    non-finite position) stays its own problem.

    ``recent: (num_recent, d)`` keeps the positions at every 5th of the last warm-up steps
    (the last one first); where the warm-up is shorter, the initial position fills in. With
    ``num_recent=0`` (no independence moves) nothing is recorded.
    """
    dim = position.shape[-1]
    init, step, prepare = _build_step(logdensity_fn, config)
    da_init, da_update, _ = dual_averaging_adaptation(_target_acceptance(config, dim))
    wf_init, wf_update, wf_final = welford_algorithm(not config.dense_metric)
    eye = jnp.eye(dim) if config.dense_metric else jnp.ones(dim)
    step0 = 2.38 / math.sqrt(dim) if config.method == "rwmh" else 1.0
    slow, window_end = warmup_schedule(config.num_warmup)

    slot = np.full(config.num_warmup, -1)
    for j in range(min(num_recent, -(-config.num_warmup // 5))):
        slot[config.num_warmup - 1 - 5 * j] = j

    def warm(carry, inputs):
        state, da, wf, step_size, metric, recent = carry
        key, is_slow, is_end, at = inputs
        state, (accept, _) = step(key, state, step_size, metric)
        if num_recent:
            recent = jnp.where(at >= 0, recent.at[at].set(state.position), recent)
        da = da_update(da, jnp.nan_to_num(accept))
        step_size = jnp.exp(da.log_step_size)
        wf = jax.lax.cond(is_slow, lambda w: wf_update(w, state.position), lambda w: w, wf)

        def close_window(args):
            wf, da, metric = args
            cov, n, _ = wf_final(wf)
            if config.method == "rwmh":  # average over the chains whose estimate is finite
                ok = jnp.all(jnp.isfinite(cov))
                total = jax.lax.psum(jnp.where(ok, cov, 0.0), CHAIN_AXIS)
                average = total / jnp.maximum(jax.lax.psum(ok.astype(cov.dtype), CHAIN_AXIS), 1.0)
                cov = (1.0 - RWMH_METRIC_POOLING) * cov + RWMH_METRIC_POOLING * average
            new_metric = (n / (n + 5.0)) * cov + 1e-3 * (5.0 / (n + 5.0)) * eye
            return wf_init(dim), da_init(jnp.exp(da.log_step_size)), prepare(new_metric)

        wf, da, metric = jax.lax.cond(is_end, close_window, lambda a: a, (wf, da, metric))
        return (state, da, wf, jnp.exp(da.log_step_size), metric, recent), None

    state = init(position)
    recent = jnp.broadcast_to(position, (num_recent, dim))
    carry = (state, da_init(step0), wf_init(dim), jnp.asarray(step0, jnp.float32), prepare(eye), recent)
    if not config.num_warmup:
        return _Adapted(state, carry[3], carry[4], recent)
    keys = jax.random.split(rng_key, config.num_warmup)
    inputs = (keys, jnp.asarray(slow), jnp.asarray(window_end), jnp.asarray(slot))
    carry, _ = jax.lax.scan(warm, carry, inputs)
    state, da, _, _, metric, recent = carry
    return _Adapted(state, jnp.exp(da.log_step_size_avg), metric, recent)


def _draw_one_chain(rng_key, logdensity_fn, adapted: _Adapted, config: SamplerConfig, step=None):
    """``num_draws`` kept draws, every ``thin``-th step, with the warm-up's parameters frozen."""
    if step is None:
        _, step, _ = _build_step(logdensity_fn, config)

    def draw(state, key):
        def inner(state, k):
            return step(k, state, adapted.step_size, adapted.metric)

        state, (accept, divergent) = jax.lax.scan(inner, state, jax.random.split(key, config.thin))
        return state, (state.position, accept.mean(), divergent.sum())

    _, (positions, accept, divergent) = jax.lax.scan(draw, adapted.state, jax.random.split(rng_key, config.num_draws))
    return ChainResult(positions, jnp.nan_to_num(accept).mean(), divergent.sum(), adapted.step_size)


def run_chains(rng_key: jax.Array, logdensity_fn: Callable, initial_positions: jax.Array, config: SamplerConfig) -> ChainResult:
    """Run ``C`` adapted chains on ``logdensity_fn: (d,) -> ()`` (vmapped, not jitted).

    Every chain adapts its own step size and metric (RWMH's metric shrunk towards the chains'
    average, :data:`RWMH_METRIC_POOLING`); with ``config.independence_prob > 0`` (RWMH only) the
    chains then share one independence proposal built from all of their warm-ups
    (:mod:`aalr_jax.independence`).

    Args:
        rng_key: PRNG key.
        logdensity_fn: unnormalised log-density on R^d.
        initial_positions: ``(C, d)``.
        config: static settings; ``num_chains`` is taken from ``initial_positions``.

    Returns:
        :class:`ChainResult` with ``positions: (C, num_draws, d)``.
    """
    num = initial_positions.shape[0]
    chain_keys = jax.vmap(jax.random.split)(jax.random.split(rng_key, num))
    warm_keys, draw_keys = chain_keys[:, 0], chain_keys[:, 1]
    key_mix = jax.random.fold_in(rng_key, 1)
    use_independence = config.method == "rwmh" and config.independence_prob > 0.0
    num_recent = min(MAX_RECENT, -(-config.independence_components // num)) if use_independence else 0
    warmup = lambda k, p: _warmup_one_chain(k, logdensity_fn, p, config, num_recent)
    adapted = jax.vmap(warmup, axis_name=CHAIN_AXIS)(warm_keys, initial_positions)
    if not use_independence:
        return jax.vmap(lambda k, a: _draw_one_chain(k, logdensity_fn, a, config))(draw_keys, adapted)
    points = adapted.recent.reshape(num * num_recent, -1)
    chols = jnp.repeat(adapted.metric, num_recent, axis=0)
    proposal = independence.fit(key_mix, points, chols, config.independence_components,
                                config.independence_bandwidth, config.independence_defensive, INDEPENDENCE_INFLATION)
    step = independence.build_step(logdensity_fn, proposal, config.independence_prob)

    def one(k, a):
        a = a._replace(state=independence.init(a.state, proposal))
        return _draw_one_chain(k, logdensity_fn, a, config, step)

    return jax.vmap(one)(draw_keys, adapted)


def _initial_positions(rng_key, model, prior, features, config: SamplerConfig):
    """``(C, d)`` starting points in constrained space."""
    num = config.num_init_candidates
    key_prior, key_pick = jax.random.split(rng_key)
    candidates = prior.sample(key_prior, (num,))
    if config.init == "prior":
        return candidates[: config.num_chains]
    log_weights = log_posterior(model, prior, features, candidates) - priors.log_prob(prior, candidates)
    log_weights = jnp.where(jnp.isfinite(log_weights), log_weights, -jnp.inf)
    gumbel = jax.random.gumbel(key_pick, log_weights.shape)
    _, idx = jax.lax.top_k(log_weights + gumbel, config.num_chains)
    return candidates[idx]


def _split_rhat(chains):
    """Split R-hat of ``(C, S, d)`` draws: each chain is cut in two halves."""
    half = chains.shape[1] // 2
    split = jnp.concatenate([chains[:, :half], chains[:, half : 2 * half]], axis=0)
    return blackjax.diagnostics.potential_scale_reduction(split, chain_axis=0, sample_axis=1)


def _sample_one(rng_key, model, prior, x_obs, config: SamplerConfig, iid: bool):
    transform = priors.support_transform(prior)
    features = embed_observations(model, x_obs, iid=iid)
    logdensity = unconstrained_log_posterior(model, prior, features, transform)
    key_init, key_run = jax.random.split(rng_key)
    theta0 = _initial_positions(key_init, model, prior, features, config)
    u0 = transform.inv(theta0)
    result = run_chains(key_run, logdensity, u0, config)
    chains = transform(result.positions)
    nan = jnp.full(chains.shape[-1:], jnp.nan)  # too few draws per chain for the statistic
    # BlackJAX squeezes a single parameter's axis away: keep the documented (d,)
    rhat = _split_rhat(chains).reshape(nan.shape) if chains.shape[1] >= 4 else nan
    ess = blackjax.diagnostics.effective_sample_size(chains, chain_axis=0, sample_axis=1).reshape(nan.shape) if chains.shape[1] >= 2 else nan
    return chains, result.acceptance_rate, result.num_divergent, result.step_size, rhat, ess


@functools.partial(jax.jit, static_argnames=("prior", "config", "iid"))
def _sample_batch(rng_key, model, x_obs, prior, config: SamplerConfig, iid: bool):
    """All observations ``x_obs: (k, ...)`` at once; observation i uses ``fold_in(rng_key, i)``."""
    keys = jax.vmap(lambda i: jax.random.fold_in(rng_key, i))(jnp.arange(x_obs.shape[0]))
    return jax.vmap(lambda k, x: _sample_one(k, model, prior, x, config, iid))(keys, x_obs)


def _init_candidates(value, num_chains: int) -> int:
    """``num_init_candidates`` resolved: default ``max(10⁴, 10·num_chains)``, else at least ``num_chains``."""
    if value is None:
        return max(10_000, 10 * num_chains)
    value = _positive_int("num_init_candidates", value)
    if value < num_chains:
        raise ValueError(f"num_init_candidates must be at least num_chains ({num_chains}), got {value}")
    return value


def _positive_int(name, value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def sample_posterior(
    rng_key: jax.Array,
    estimator,
    prior,
    x_obs,
    *,
    method: str = "auto",
    num_samples: int = 10_000,
    num_chains: int = 100,
    num_warmup: int = 500,
    thin: int | None = None,
    iid: bool = False,
    num_integration_steps: int = 10,
    max_num_doublings: int = 10,
    dense_metric: bool = True,
    target_acceptance: float | None = None,
    init: str = "sir",
    num_init_candidates: int | None = None,
    independence_prob: float | None = None,
    independence_components: int = 128,
    independence_bandwidth: float | None = None,
    independence_defensive: float = 0.2,
) -> PosteriorSamples:
    """Sample ``p(θ|x_obs) ∝ p(θ) Π_i r̂(x_i|θ)`` for one observation or a batch of them.

    Args:
        rng_key: PRNG key.
        estimator: a trained :class:`aalr_jax.nn.RatioEstimator` (or :class:`ExactLikelihood`).
        prior: the numpyro prior the estimator was trained with, event shape ``(d,)``.
        x_obs: ``x_shape`` (one observation) or ``(k, *x_shape)`` (k observations, sampled at once).
            With ``iid=True``: ``(n, *x_shape)`` — n i.i.d. observations of one θ — or
            ``(k, n, *x_shape)``.
        method: ``"auto"`` (default), ``"rwmh"``, ``"hmc"`` or ``"nuts"`` (NUTS: keep
            ``num_chains`` small). ``"auto"`` is RWMH for up to 4 parameters and HMC beyond: RWMH is
            the fastest per effective sample on low-dimensional posteriors, but beyond a few
            parameters it mixes slowly within the default warm-up (measurements in the module
            docstring).
        num_samples: draws returned per observation (``ceil(num_samples / num_chains)`` per chain).
        num_chains: independent chains per observation.
        num_warmup: adaptation steps per chain (discarded).
        thin: keep every ``thin``-th step after warm-up; default 5 for RWMH with independence
            moves, else :data:`DEFAULT_THIN` of the method (10 for plain RWMH, whose steps are
            strongly autocorrelated, 3 for HMC, 1 for NUTS).
        iid: treat the leading axis of one observation as i.i.d. draws (sum of log-ratios).
        num_integration_steps: mean leapfrog steps per HMC transition (jittered uniformly on
            ``{1, ..., 2L - 1}``).
        max_num_doublings: NUTS tree depth limit.
        dense_metric: adapt a dense (True) or diagonal metric.
        target_acceptance: override the default acceptance target of the step-size adaptation.
        init: ``"sir"`` (ratio-weighted resampling of prior draws) or ``"prior"``.
        num_init_candidates: prior draws for ``init="sir"``, at least ``num_chains``; default
            ``max(10_000, 10 * num_chains)``.
        independence_prob: RWMH only: probability that a step after warm-up proposes from a
            kernel density of all chains' late warm-up positions instead of the random walk
            (:mod:`aalr_jax.independence`). Default: 0.9 for RWMH on up to 4 parameters, else 0.
        independence_components: at most this many kernels in that density.
        independence_bandwidth: kernel ``k``'s covariance is ``bandwidth²`` times its chain's metric;
            default Silverman's rule for the number of kernels and parameters (0.45 for 128 kernels
            in 2-D, 0.52 in 4-D).
        independence_defensive: weight of the broad Gaussian (the positions' mean and twice their
            spread) mixed into it, in ``[0, 1)``.

    Returns:
        :class:`PosteriorSamples`; ``samples`` is ``(num_samples, d)`` or ``(k, num_samples, d)``.
    """
    dim = priors.validate_prior(prior)
    if not (hasattr(estimator, "embed") and hasattr(estimator, "head") and hasattr(estimator, "x_shape")):
        raise TypeError(f"estimator must be a RatioEstimator (from fit or load), got {type(estimator).__name__}")
    theta_dim = getattr(estimator, "theta_dim", dim)
    if theta_dim != dim:
        raise ValueError(f"the estimator takes theta of dimension {theta_dim} but the prior has event_shape ({dim},)")
    method = resolve_method(method, dim)
    independence_prob = resolve_independence(method, dim, independence_prob)
    if independence_bandwidth is not None and not 0.0 < independence_bandwidth < math.inf:
        raise ValueError(f"independence_bandwidth must be positive and finite, got {independence_bandwidth!r}")
    if not 0.0 <= independence_defensive < 1.0:
        raise ValueError(f"independence_defensive must lie in [0, 1), got {independence_defensive!r}")
    if init not in ("sir", "prior"):
        raise ValueError(f"init must be 'sir' or 'prior', got {init!r}")
    num_samples = _positive_int("num_samples", num_samples)
    num_chains = _positive_int("num_chains", num_chains)
    thin = default_thin(method, independence_prob) if thin is None else thin
    thin = _positive_int("thin", thin)
    if isinstance(num_warmup, bool) or int(num_warmup) != num_warmup or num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative integer, got {num_warmup!r}")
    if target_acceptance is not None and not 0.0 < target_acceptance < 1.0:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance}")
    x_obs = jnp.asarray(x_obs, jnp.float32)
    batch = observation_batch_shape(x_obs, tuple(estimator.x_shape), iid=iid)
    if not bool(jnp.isfinite(x_obs).all()):
        raise ValueError("x_obs contains non-finite values")

    config = SamplerConfig(
        method=method,
        num_chains=num_chains,
        num_warmup=int(num_warmup),
        num_draws=-(-num_samples // num_chains),
        thin=thin,
        num_integration_steps=_positive_int("num_integration_steps", num_integration_steps),
        max_num_doublings=_positive_int("max_num_doublings", max_num_doublings),
        dense_metric=bool(dense_metric),
        target_acceptance=target_acceptance,
        init=init,
        num_init_candidates=_init_candidates(num_init_candidates, num_chains),
        independence_prob=independence_prob,
        independence_components=_positive_int("independence_components", independence_components),
        independence_bandwidth=None if independence_bandwidth is None else float(independence_bandwidth),
        independence_defensive=float(independence_defensive),
    )
    xs = x_obs if batch else x_obs[None]
    chains, accept, divergent, step_size, rhat, ess = _sample_batch(rng_key, estimator, xs, prior, config, iid)
    k, c, s, d = chains.shape
    samples = jnp.swapaxes(chains, 1, 2).reshape(k, s * c, d)[:, :num_samples]
    out = PosteriorSamples(samples, chains, accept, divergent, step_size, rhat, ess)
    return out if batch else jax.tree.map(lambda a: a[0], out)
